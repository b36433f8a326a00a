#!/usr/bin/env bash
# Bazel 4.2.3 builds tests/bazel_workspace/rules remotely on kiln-worker: the
# Starlark rules there use ctx.actions.run_shell without
# use_default_shell_env (their actions get no PATH; bash's built-in default
# path must find mkdir, cp, find, wc...), a tree artifact consumed by later
# actions, executable outputs run as tools, and a cc_test compiled against a
# header generated from the tree. Every output (the tree's files included,
# with their executable bits) must be byte-identical to a local build, and
# the cc_test must pass remotely.
set -euo pipefail

BIN_DIR=$(cd "${1:?usage: $0 BIN_DIR}" && pwd)
SOURCE_WS=$(cd "$(dirname "$0")/bazel_workspace" && pwd)
WORK=$(mktemp -d /tmp/kiln-bazel-rules.XXXXXX)
source "$(dirname "$0")/start_worker.sh"
cleanup() {
  stop_worker
  chmod -R u+w "$WORK" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; [[ -f "$WORK/w/worker.log" ]] && tail -20 "$WORK/w/worker.log" >&2; exit 1; }

start_worker "$WORK/w" --metrics_listen= --concurrency=2 || fail "kiln-worker did not start"

cp -r "$SOURCE_WS" "$WORK/ws"
cd "$WORK/ws"
cat > .bazelrc <<RC
build --override_repository=rules_cc=$WORK/ws/repos/rules_cc
build --override_repository=remote_coverage_tools=$WORK/ws/repos/remote_coverage_tools
build --override_repository=platforms=/usr/share/bazel/platforms
build --override_repository=rules_java=/usr/share/bazel/rules/java
build:remote --remote_executor=grpc://127.0.0.1:$GRPC_PORT --remote_timeout=120
RC

bz() { bazel --batch --output_user_root="$WORK/bazel-root" "$@"; }
TARGETS=(//rules:tree //rules:listing //rules:gen_tool //rules:ran //rules:tree_count)
# Content and mode of every output file, the tree artifact's included.
outputs() {
  (cd bazel-bin/rules && find tree listing.txt gen_tool ran.out tree_count.h -type f | LC_ALL=C sort |
     while read -r f; do echo "$(sha256sum < "$f" | cut -c1-64) $(stat -c %a "$f") $f"; done)
}

echo "== local build (Bazel's own sandbox)"
bz build "${TARGETS[@]}" > "$WORK/local.log" 2>&1 || { cat "$WORK/local.log"; fail "local build failed"; }
LOCAL=$(outputs)
echo "$LOCAL"
LOCAL_LISTING=$(cat bazel-bin/rules/listing.txt bazel-bin/rules/tree_count.h)
bz clean 2> /dev/null

echo "== remote build on kiln-worker port $GRPC_PORT"
bz build --config=remote "${TARGETS[@]}" > "$WORK/remote.log" 2>&1 || { cat "$WORK/remote.log"; fail "remote build failed"; }
LINE=$(grep "processes:" "$WORK/remote.log")
echo "$LINE"
REMOTE_COUNT=$(echo "$LINE" | grep -o '[0-9]* remote' | head -1 | grep -o '^[0-9]*' || echo 0)
[[ "$REMOTE_COUNT" -ge 5 ]] || fail "expected the rules' actions to run remotely: $LINE"
REMOTE=$(outputs)
if [[ "$REMOTE" != "$LOCAL" ]]; then
  echo "remote:"; echo "$REMOTE"
  diff <(echo "$LOCAL_LISTING") <(cat bazel-bin/rules/listing.txt bazel-bin/rules/tree_count.h) || true
  fail "remote outputs differ from the local build"
fi

# What the rules saw, checked beyond "same as local".
grep -q "^exported PATH variables: 0$" bazel-bin/rules/tree/sub/deeper/path.txt ||
  fail "the run_shell action got a PATH: $(cat bazel-bin/rules/tree/sub/deeper/path.txt)"
grep -q '^./tool [0-9]* x$' bazel-bin/rules/listing.txt || fail "the tree's tool lost its executable bit"
grep -q '^tree tool: tool$' bazel-bin/rules/listing.txt || fail "the tree's tool did not run"
[[ "$(sed -n 1p bazel-bin/rules/ran.out)" == "made by a generated tool" ]] || fail "the generated tool did not run"
[[ -x bazel-bin/rules/gen_tool ]] || fail "the executable output is not executable"

echo "== remote cc_test against the generated header"
bz test --config=remote //rules:tree_count_test > "$WORK/test.log" 2>&1 ||
  { cat "$WORK/test.log"; fail "tree_count_test failed remotely"; }
grep -q "//rules:tree_count_test.*PASSED" "$WORK/test.log" || fail "tree_count_test not reported as passed"

kill -TERM "$WORKER_PID"; wait "$WORKER_PID" || fail "kiln-worker did not exit cleanly"; WORKER_PID=""
echo "PASS: Starlark rules without PATH, a tree artifact and executable outputs build remotely, identical to local"
