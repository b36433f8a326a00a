#!/usr/bin/env bash
# Bazel 4.2.3 (Debian's bazel-bootstrap) building and testing remotely on a
# fresh kiln-worker with --remote_executor:
#   - genrules, a cc_library, a cc_binary and a cc_test build and test remotely;
#   - the outputs are byte-identical to a local build;
#   - a genrule sees hostname "localhost" and a small PID;
#   - a failing test shows its log; a test that sleeps past --test_timeout is
#     reported as TIMEOUT;
#   - after bazel clean, the second build is all remote cache hits.
set -euo pipefail

BIN_DIR=$(cd "${1:?usage: $0 BIN_DIR}" && pwd)
SOURCE_WS=$(cd "$(dirname "$0")/bazel_workspace" && pwd)
WORK=$(mktemp -d /tmp/kiln-bazel-exec.XXXXXX)
source "$(dirname "$0")/start_worker.sh"
cleanup() {
  stop_worker
  chmod -R u+w "$WORK" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; [[ -f "$WORK/w/worker.log" ]] && tail -20 "$WORK/w/worker.log" >&2; exit 1; }

start_worker "$WORK/w" --metrics_listen= --concurrency=2 || fail "kiln-worker did not start"
PORT=$GRPC_PORT

cp -r "$SOURCE_WS" "$WORK/ws"
cd "$WORK/ws"
# Offline Bazel 4.2.3 needs these four repositories overridden with local ones.
cat > .bazelrc <<RC
build --override_repository=rules_cc=$WORK/ws/repos/rules_cc
build --override_repository=remote_coverage_tools=$WORK/ws/repos/remote_coverage_tools
build --override_repository=platforms=/usr/share/bazel/platforms
build --override_repository=rules_java=/usr/share/bazel/rules/java
build:remote --remote_executor=grpc://127.0.0.1:$PORT --remote_timeout=120
RC

bz() { bazel --batch --output_user_root="$WORK/bazel-root" "$@"; }
TARGETS=(//pkg:where //pkg:greet //pkg:hello //pkg:hello_out)
sums() { (cd bazel-bin/pkg && sha256sum libgreet.a hello hello.out); }

echo "== local build (Bazel's own sandbox)"
bz build "${TARGETS[@]}" > "$WORK/local.log" 2>&1 || { cat "$WORK/local.log"; fail "local build failed"; }
LOCAL=$(sums)
bz clean 2> /dev/null

echo "== remote build on kiln-worker port $PORT"
bz build --config=remote "${TARGETS[@]}" > "$WORK/remote.log" 2>&1 || { cat "$WORK/remote.log"; fail "remote build failed"; }
grep "processes:" "$WORK/remote.log"
grep -q "remote" <(grep "processes:" "$WORK/remote.log") || fail "nothing ran remotely"
[[ "$(sums)" == "$LOCAL" ]] || { echo "local:"; echo "$LOCAL"; echo "remote:"; sums; fail "remote outputs differ from the local build"; }
[[ "$(cat bazel-bin/pkg/hello.out)" == "Hello, kiln!" ]] || fail "hello printed $(cat bazel-bin/pkg/hello.out)"
HOST=$(sed -n 1p bazel-bin/pkg/where.txt)
PID=$(sed -n 2p bazel-bin/pkg/where.txt)
[[ "$HOST" == "localhost" ]] || fail "the genrule saw hostname $HOST"
[[ "$PID" -lt 10 ]] || fail "the genrule's shell had PID $PID, not a small one"
echo "genrule saw hostname=$HOST pid=$PID"

echo "== remote test"
bz test --config=remote //pkg:greet_test > "$WORK/test.log" 2>&1 || { cat "$WORK/test.log"; fail "greet_test failed remotely"; }
grep -q "//pkg:greet_test.*PASSED" "$WORK/test.log" || fail "greet_test not reported as passed"

echo "== a failing test shows its log"
if bz test --config=remote --test_output=errors //pkg:failing_test > "$WORK/failing.log" 2>&1; then
  fail "failing_test passed"
fi
grep -q "//pkg:failing_test.*FAILED" "$WORK/failing.log" || { cat "$WORK/failing.log"; fail "failing_test not reported as FAILED"; }
grep -q "KILN-EXPECTED-FAILURE" "$WORK/failing.log" || fail "the failing test's log was not shown"

echo "== a test past --test_timeout"
if bz test --config=remote --test_timeout=3 //pkg:slow_test > "$WORK/slow.log" 2>&1; then
  fail "slow_test passed"
fi
grep -q "//pkg:slow_test.*TIMEOUT" "$WORK/slow.log" || { cat "$WORK/slow.log"; fail "slow_test not reported as TIMEOUT"; }

echo "== after bazel clean, everything is a remote cache hit"
bz clean 2> /dev/null
bz build --config=remote "${TARGETS[@]}" > "$WORK/cached.log" 2>&1 || { cat "$WORK/cached.log"; fail "cached build failed"; }
LINE=$(grep "processes:" "$WORK/cached.log")
echo "$LINE"
HITS=$(echo "$LINE" | grep -o '[0-9]* remote cache hit' | grep -o '^[0-9]*' || echo 0)
[[ "$LINE" != *" remote,"* && "$LINE" != *" remote." ]] || fail "actions ran again instead of hitting the cache: $LINE"
[[ "$HITS" -ge 4 ]] || fail "expected remote cache hits, got: $LINE"
[[ "$(sums)" == "$LOCAL" ]] || fail "cached outputs differ"

kill -TERM "$WORKER_PID"; wait "$WORKER_PID" || fail "kiln-worker did not exit cleanly"; WORKER_PID=""
echo "PASS: Bazel built and tested remotely on kiln-worker"
