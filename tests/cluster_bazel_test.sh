#!/usr/bin/env bash
# Bazel 4.2.3 through a real Buildbarn (bb_storage as the frontend, forwarding
# Execution to bb_scheduler) with two Kiln workers in cluster mode:
#   - genrules, a run_shell rule, a tree artifact, a cc_binary and a cc_test
#     build and test remotely, byte-identical to a local build;
#   - both workers' results are in bb_storage: after bazel clean, everything
#     is a remote cache hit;
#   - two more workers declaring Pool=a and Pool=b: an action asking for
#     Pool=a runs on the first only, Pool=b on the second only.
set -euo pipefail

BIN_DIR=$(cd "${1:?usage: $0 BIN_DIR}" && pwd)
HERE=$(cd "$(dirname "$0")" && pwd)
WORK=$(mktemp -d /tmp/kiln-cluster-bazel.XXXXXX)
source "$HERE/buildbarn/cluster.sh"
cleanup() {
  stop_all_kiln
  stop_buildbarn
  chmod -R u+w "$WORK" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
fail() {
  echo "FAIL: $*" >&2
  for log in "$WORK"/*/worker.log "$WORK/bb/scheduler.log" "$WORK/bb/storage.log"; do
    [[ -f "$log" ]] && { echo "--- $log" >&2; tail -15 "$log" >&2; }
  done
  exit 1
}

start_buildbarn "$WORK/bb" || fail "Buildbarn did not start"
start_kiln w1 "$WORK/w1" --concurrency=2 || fail "worker w1 did not join"
start_kiln w2 "$WORK/w2" --concurrency=2 || fail "worker w2 did not join"
echo "Buildbarn frontend on $FRONTEND_PORT, scheduler workers on $WORKER_PORT, 2 Kiln workers joined"

cp -r "$HERE/bazel_workspace" "$WORK/ws"
cd "$WORK/ws"
cat > .bazelrc <<RC
build --override_repository=rules_cc=$WORK/ws/repos/rules_cc
build --override_repository=remote_coverage_tools=$WORK/ws/repos/remote_coverage_tools
build --override_repository=platforms=/usr/share/bazel/platforms
build --override_repository=rules_java=/usr/share/bazel/rules/java
build:remote --remote_executor=grpc://127.0.0.1:$FRONTEND_PORT --remote_timeout=120
RC
bz() { bazel --batch --output_user_root="$WORK/bazel-root" "$@"; }
TARGETS=(//cluster:a.txt //cluster:b.txt //cluster:shell //cluster:tree //cluster:tree_listing
         //cluster:tool //cluster:tool_out)
sums() { (cd bazel-bin/cluster && find a.txt b.txt shell.txt tree tree_listing.txt tool tool.out -type f | sort | xargs sha256sum); }

echo "== local build"
bz build "${TARGETS[@]}" > "$WORK/local.log" 2>&1 || { cat "$WORK/local.log"; fail "local build failed"; }
LOCAL=$(sums)
bz clean 2> /dev/null

echo "== remote build through Buildbarn"
bz build --config=remote "${TARGETS[@]}" > "$WORK/remote.log" 2>&1 || { cat "$WORK/remote.log"; fail "remote build failed"; }
LINE=$(grep "processes:" "$WORK/remote.log")
echo "$LINE"
[[ "$LINE" == *" remote"* ]] || fail "nothing ran remotely: $LINE"
[[ "$LINE" != *"linux-sandbox"* && "$LINE" != *" local"* ]] || fail "some actions ran locally: $LINE"
[[ "$(sums)" == "$LOCAL" ]] || { echo "local:"; echo "$LOCAL"; echo "remote:"; sums; fail "remote outputs differ from the local build"; }
grep -q "sum of squares to 7: 140" bazel-bin/cluster/tool.out || fail "tool.out: $(cat bazel-bin/cluster/tool.out)"
[[ $(grep -c "^f[0-9].txt$" bazel-bin/cluster/tree_listing.txt) -eq 5 ]] || fail "the tree artifact lost files"
RAN=$(( $(kiln_metric w1 '^kiln_actions_total') + $(kiln_metric w2 '^kiln_actions_total') ))
echo "actions run by the two Kiln workers: $RAN"
[[ "$RAN" -ge 7 ]] || fail "the workers ran $RAN actions"

echo "== remote test"
bz test --config=remote //cluster:tool_test > "$WORK/test.log" 2>&1 || { cat "$WORK/test.log"; fail "tool_test failed remotely"; }
grep -q "//cluster:tool_test.*PASSED" "$WORK/test.log" || fail "tool_test not reported as passed"

echo "== after bazel clean, everything is a remote cache hit"
bz clean 2> /dev/null
BEFORE=$(( $(kiln_metric w1 '^kiln_actions_total') + $(kiln_metric w2 '^kiln_actions_total') ))
bz build --config=remote "${TARGETS[@]}" > "$WORK/cached.log" 2>&1 || { cat "$WORK/cached.log"; fail "cached build failed"; }
LINE=$(grep "processes:" "$WORK/cached.log")
echo "$LINE"
[[ "$LINE" != *" remote,"* && "$LINE" != *" remote." ]] || fail "actions ran again instead of hitting the cache: $LINE"
[[ "$LINE" == *"remote cache hit"* ]] || fail "no remote cache hits: $LINE"
[[ "$(sums)" == "$LOCAL" ]] || fail "cached outputs differ"
RAN=$(( $(kiln_metric w1 '^kiln_actions_total') + $(kiln_metric w2 '^kiln_actions_total') ))
[[ "$RAN" -eq "$BEFORE" ]] || fail "the workers ran $((RAN - BEFORE)) actions for a fully cached build"

echo "== each platform's actions run on the worker that declares it"
start_kiln pa "$WORK/pa" --concurrency=1 --platform=Pool=a || fail "worker pa did not join"
start_kiln pb "$WORK/pb" --concurrency=1 --platform=Pool=b || fail "worker pb did not join"
bz build --config=remote //cluster:on_a > "$WORK/on_a.log" 2>&1 || { cat "$WORK/on_a.log"; fail "on_a failed"; }
[[ $(kiln_metric pa '^kiln_actions_total') -eq 1 && $(kiln_metric pb '^kiln_actions_total') -eq 0 ]] ||
  fail "Pool=a ran on pa $(kiln_metric pa '^kiln_actions_total') and pb $(kiln_metric pb '^kiln_actions_total') times"
bz build --config=remote //cluster:on_b > "$WORK/on_b.log" 2>&1 || { cat "$WORK/on_b.log"; fail "on_b failed"; }
[[ $(kiln_metric pa '^kiln_actions_total') -eq 1 && $(kiln_metric pb '^kiln_actions_total') -eq 1 ]] ||
  fail "Pool=b ran on pa/pb: $(kiln_metric pa '^kiln_actions_total')/$(kiln_metric pb '^kiln_actions_total')"
RAN_NOW=$(( $(kiln_metric w1 '^kiln_actions_total') + $(kiln_metric w2 '^kiln_actions_total') ))
[[ "$RAN_NOW" -eq "$RAN" ]] || fail "a worker with no Pool ran a Pool action"

echo "== a cluster worker's /metrics"
curl -s "http://127.0.0.1:${KILN_METRICS[w1]}/metrics" > "$WORK/metrics.txt"
promtool check metrics < "$WORK/metrics.txt" || fail "promtool check metrics"
for metric in kiln_cluster_synchronize_total kiln_cluster_synchronize_duration_seconds_bucket \
    kiln_remote_cas_bytes_total kiln_remote_cas_request_duration_seconds_bucket kiln_cluster_input_blobs_total \
    kiln_action_stage_duration_seconds_bucket kiln_actions_total; do
  grep -q "^$metric" "$WORK/metrics.txt" || fail "$metric is not exported"
done
[[ $(kiln_metric w1 '^kiln_cluster_scheduler_connected_slots ') -eq 2 ]] || fail "w1 is not connected"
[[ $(kiln_metric w1 '^kiln_remote_cas_bytes_total\{direction="upload"') -gt 0 ]] || fail "w1 uploaded nothing"

for name in w1 w2 pa pb; do
  pid=${KILN_PID[$name]}
  kill -TERM "$pid"; wait "$pid" || fail "kiln-worker $name did not exit cleanly"
  unset "KILN_PID[$name]"
done
echo "PASS: Bazel built and tested through Buildbarn on Kiln workers"
