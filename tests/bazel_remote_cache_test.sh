#!/usr/bin/env bash
# Bazel 4.2.3 (Debian's bazel-bootstrap) as a real REAPI client of
# kiln-worker used as a remote cache:
#   1. a fresh worker; a build of genrules uploads every action result;
#   2. bazel clean; the second build is all remote cache hits, and its
#      outputs are byte-identical to the first;
#   3. the worker restarts on the same state dir; after another clean the
#      build is again all remote cache hits, with identical outputs.
set -euo pipefail

BIN_DIR=$(cd "${1:?usage: $0 BIN_DIR}" && pwd)
WORK=$(mktemp -d /tmp/kiln-bazel-test.XXXXXX)
source "$(dirname "$0")/start_worker.sh"
cleanup() {
  stop_worker
  chmod -R u+w "$WORK" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

# A SIGTERM'd worker must exit 0: a clean shutdown is part of the test.
stop_worker_cleanly() {
  kill -TERM "$WORKER_PID"
  wait "$WORKER_PID" || fail "kiln-worker did not exit cleanly on SIGTERM"
  WORKER_PID=""
}

mkdir -p "$WORK/ws/pkg"
cd "$WORK/ws"
touch WORKSPACE
cat > pkg/BUILD <<'BUILD'
genrule(name = "a", outs = ["a.txt"], cmd = "echo alpha > $@")
genrule(name = "b", outs = ["b.txt"], cmd = "seq 1 50000 > $@")
genrule(name = "c", srcs = [":a", ":b"], outs = ["c.txt"], cmd = "cat $(SRCS) | sha256sum > $@")
genrule(name = "d", srcs = [":c"], outs = ["d.bin"], cmd = "head -c 3000000 /dev/zero | tr '\\0' 'k' > $@; cat $< >> $@")
genrule(name = "e", srcs = [":d"], outs = ["e.txt"], cmd = "wc -c $< > $@")
BUILD

bazel_build() {
  bazel --batch --output_user_root="$WORK/bazel-root" build \
    --remote_cache="grpc://127.0.0.1:$PORT" --spawn_strategy=local \
    //pkg:all 2> "$WORK/bazel.log" || { cat "$WORK/bazel.log" >&2; fail "bazel build failed"; }
}
bazel_clean() { bazel --batch --output_user_root="$WORK/bazel-root" clean 2>/dev/null; }
output_sums() { (cd bazel-bin/pkg && sha256sum a.txt b.txt c.txt d.bin e.txt); }
# Prints the "N remote cache hit" count of the last build (0 if none).
cache_hits() { grep -o '[0-9]* remote cache hit' "$WORK/bazel.log" | grep -o '^[0-9]*' || echo 0; }

start_worker "$WORK/w" || fail "kiln-worker did not start"
PORT=$GRPC_PORT
echo "== build 1 against a fresh worker on port $PORT"
bazel_build
grep "processes:" "$WORK/bazel.log"
[[ $(cache_hits) -eq 0 ]] || fail "a fresh worker cannot have cache hits"
FIRST=$(output_sums)

echo "== build 2 after bazel clean"
bazel_clean
bazel_build
grep "processes:" "$WORK/bazel.log"
[[ $(cache_hits) -eq 5 ]] || fail "expected 5 remote cache hits, got $(cache_hits)"
[[ "$(output_sums)" == "$FIRST" ]] || fail "outputs differ from the first build"

echo "== build 3 after a worker restart on the same state dir"
stop_worker_cleanly
start_worker "$WORK/w" || fail "kiln-worker did not restart"
PORT=$GRPC_PORT
bazel_clean
bazel_build
grep "processes:" "$WORK/bazel.log"
[[ $(cache_hits) -eq 5 ]] || fail "expected 5 remote cache hits after restart, got $(cache_hits)"
[[ "$(output_sums)" == "$FIRST" ]] || fail "outputs differ after the restart"
stop_worker_cleanly
echo "PASS: Bazel used kiln-worker as a remote cache across a clean and a restart"
