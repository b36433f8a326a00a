#!/usr/bin/env bash
# grpcurl (built by tests/gotools/build.sh) against a real kiln-worker, through
# server reflection alone, as people explore an unfamiliar gRPC server:
#   - `list` names every served service, Health and both reflection versions
#     included, with grpcurl 1.9 (reflection v1) and 1.8.7 (v1alpha only);
#   - `describe` of every service and of a message works with both;
#   - Health.Check of the whole server and of each REAPI service by name is
#     SERVING (an unknown name NOT_FOUND), invoked through reflection;
#   - a REAPI call (GetCapabilities) made from reflection alone succeeds;
#   - the v1alpha service answers when called directly, too.
set -euo pipefail
BIN_DIR=$(cd "${1:?usage: $0 BIN_DIR}" && pwd)
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d /tmp/kiln-grpcurl.XXXXXX)
source "$ROOT/tests/start_worker.sh"
cleanup() {
  stop_worker
  rm -rf "$WORK"
}
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

GOTOOLS=$("$ROOT/tests/gotools/build.sh") || fail "building the Go tools"
start_worker "$WORK/w" --concurrency=1 || fail "worker did not start"
ADDRESS=127.0.0.1:$GRPC_PORT

EXPECTED="build.bazel.remote.execution.v2.ActionCache
build.bazel.remote.execution.v2.Capabilities
build.bazel.remote.execution.v2.ContentAddressableStorage
build.bazel.remote.execution.v2.Execution
google.bytestream.ByteStream
google.longrunning.Operations
grpc.health.v1.Health
grpc.reflection.v1.ServerReflection
grpc.reflection.v1alpha.ServerReflection"

for tool in grpcurl grpcurl-v1alpha; do
  echo "--- $tool"
  grpcurl() { "$GOTOOLS/$tool" -plaintext -max-time 20 "$@"; }
  listed=$(grpcurl "$ADDRESS" list) || fail "$tool list"
  [[ "$(sort <<< "$listed")" == "$EXPECTED" ]] || fail "$tool list gave:"$'\n'"$listed"
  while read -r service; do
    grpcurl "$ADDRESS" describe "$service" > "$WORK/describe.txt" || fail "$tool describe $service"
    grep -q "^$service is a service:" "$WORK/describe.txt" || { cat "$WORK/describe.txt" >&2; fail "$tool describe $service"; }
  done <<< "$EXPECTED"
  grpcurl "$ADDRESS" describe build.bazel.remote.execution.v2.Command.OutputDirectoryFormat |
    grep -q "DIRECTORY_ONLY" || fail "$tool describe of an enum"
  grpcurl "$ADDRESS" describe google.bytestream.ReadRequest | grep -q "resource_name" ||
    fail "$tool describe of a message"

  [[ "$(grpcurl "$ADDRESS" grpc.health.v1.Health/Check)" == *'"SERVING"'* ]] || fail "$tool: the server is not SERVING"
  for service in build.bazel.remote.execution.v2.Execution build.bazel.remote.execution.v2.ContentAddressableStorage \
                 build.bazel.remote.execution.v2.Capabilities build.bazel.remote.execution.v2.ActionCache \
                 google.bytestream.ByteStream google.longrunning.Operations; do
    answer=$(grpcurl -d "{\"service\": \"$service\"}" "$ADDRESS" grpc.health.v1.Health/Check) ||
      fail "$tool Health.Check $service"
    [[ "$answer" == *'"SERVING"'* ]] || fail "$tool Health.Check $service: $answer"
  done
  if grpcurl -d '{"service": "no.such.Service"}' "$ADDRESS" grpc.health.v1.Health/Check 2> "$WORK/unknown.txt"; then
    fail "$tool: an unknown service was reported healthy"
  fi
  grep -q "NotFound" "$WORK/unknown.txt" || { cat "$WORK/unknown.txt" >&2; fail "$tool: unknown service is not NOT_FOUND"; }

  caps=$(grpcurl "$ADDRESS" build.bazel.remote.execution.v2.Capabilities/GetCapabilities) || fail "$tool GetCapabilities"
  [[ "$caps" == *'"SHA256"'* && "$caps" == *'"minor": 11'* ]] || fail "$tool GetCapabilities: $caps"
done

echo "--- the v1alpha service called directly"
answer=$("$GOTOOLS/grpcurl" -plaintext -max-time 20 -d '{"file_containing_symbol": "grpc.health.v1.Health"}' \
  "$ADDRESS" grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo) || fail "v1alpha ServerReflectionInfo"
[[ "$answer" == *file_descriptor_response* ]] || fail "v1alpha answered: $answer"
echo "PASS"
