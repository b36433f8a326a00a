#!/usr/bin/env bash
# Faults in a Buildbarn cluster of two Kiln workers:
#   - killing an operation in bb_scheduler (its admin "kill operation", what
#     the scheduler also does when no client waits any more) kills the
#     action's sandbox on the worker, and the slot takes new work;
#   - bb_scheduler restarted in the middle of a Bazel build: the workers
#     reconnect, the build succeeds, and the next build runs remotely;
#   - Bazel interrupted (Ctrl-C) while its action runs: bb_scheduler drops
#     the operation a minute after its last client went away, and the
#     worker then kills the sandbox, leaving no process;
#   - one worker SIGKILLed while its actions run: the build still succeeds
#     (bb_scheduler drops the worker after a minute and Bazel retries on the
#     other), with no sandbox left behind.
set -euo pipefail

BIN_DIR=$(cd "${1:?usage: $0 BIN_DIR}" && pwd)
HERE=$(cd "$(dirname "$0")" && pwd)
WORK=$(mktemp -d /tmp/kiln-cluster-faults.XXXXXX)
source "$HERE/buildbarn/cluster.sh"
BACKGROUND=()
cleanup() {
  local pid
  for pid in "${BACKGROUND[@]}"; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
  stop_all_kiln
  stop_buildbarn
  chmod -R u+w "$WORK" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
fail() {
  echo "FAIL: $*" >&2
  for log in "$WORK"/*/worker.log "$WORK/bb/scheduler.log"; do
    [[ -f "$log" ]] && { echo "--- $log" >&2; tail -15 "$log" >&2; }
  done
  exit 1
}
# host_runs TEXT: some process's command line contains TEXT.
host_runs() {
  local f
  for f in /proc/[0-9]*/cmdline; do
    { tr '\0' ' ' < "$f"; } 2>/dev/null | grep -qF -- "$1" && return 0
  done
  return 1
}
# sandboxes NAME: how many kiln-sandbox processes worker NAME runs now.
sandboxes() { pgrep -c -P "${KILN_PID[$1]}" kiln-sandbox || true; }
await() {  # await SECONDS CONDITION...
  local deadline=$((SECONDS + $1))
  shift
  until "$@"; do
    [[ $SECONDS -lt $deadline ]] || return 1
    sleep 0.2
  done
}
connected() { [[ $(kiln_metric "$1" '^kiln_cluster_scheduler_connected_slots ') -eq 2 ]]; }

start_buildbarn "$WORK/bb" || fail "Buildbarn did not start"
start_kiln w1 "$WORK/w1" --concurrency=2 || fail "worker w1 did not join"
start_kiln w2 "$WORK/w2" --concurrency=2 || fail "worker w2 did not join"

echo "== killing the operation in the scheduler kills the sandbox"
DIGITS="$$$RANDOM"
MARK="1000.$DIGITS"  # what the sandboxed sleep's command line says; the client's does not
/usr/bin/python3 "$HERE/buildbarn/execute.py" "127.0.0.1:$FRONTEND_PORT" "S=1000.; exec sleep \${S}$DIGITS" \
  > "$WORK/execute.out" 2>&1 &
BACKGROUND+=($!)
await 30 host_runs "sleep $MARK" || { cat "$WORK/execute.out"; fail "the action never ran"; }
NAME=$(sed -n 's/^operation //p' "$WORK/execute.out")
[[ -n "$NAME" ]] || fail "no operation name: $(cat "$WORK/execute.out")"
NAME=${NAME##*/}  # the scheduler's admin page takes the bare UUID
curl -s -o /dev/null -X POST "http://127.0.0.1:$SCHEDULER_ADMIN_PORT/kill_operation" --data-urlencode "name=$NAME"
START=$SECONDS
# Executing workers hear from the scheduler at least every 10 s.
gone() { ! host_runs "sleep $MARK"; }
await 40 gone || fail "the sandbox still runs after the kill"
echo "sandbox gone $((SECONDS - START)) s after the kill"
await 20 grep -q '^status 14' "$WORK/execute.out" || fail "the client did not hear UNAVAILABLE: $(cat "$WORK/execute.out")"
grep -q "cancelled action" "$WORK"/w*/worker.log || fail "no worker logged the cancellation"

cp -r "$HERE/bazel_workspace" "$WORK/ws"
cd "$WORK/ws"
cat > .bazelrc <<RC
build --override_repository=rules_cc=$WORK/ws/repos/rules_cc
build --override_repository=remote_coverage_tools=$WORK/ws/repos/remote_coverage_tools
build --override_repository=platforms=/usr/share/bazel/platforms
build --override_repository=rules_java=/usr/share/bazel/rules/java
build --remote_executor=grpc://127.0.0.1:$FRONTEND_PORT --remote_timeout=180 --remote_retries=20
RC
bz() { bazel --batch --output_user_root="$WORK/bazel-root" "$@"; }
SLOW=(//cluster:slow_0 //cluster:slow_1 //cluster:slow_2 //cluster:slow_3 //cluster:slow_4 //cluster:slow_5)
running_somewhere() { [[ $(( $(sandboxes w1) + $(sandboxes w2) )) -gt 0 ]]; }

echo "== the scheduler restarts in the middle of a build"
bz build --action_env=KILN_SALT=restart-$RANDOM "${SLOW[@]}" > "$WORK/restart.log" 2>&1 &
BUILD=$!
BACKGROUND+=($BUILD)
await 120 running_somewhere || { cat "$WORK/restart.log"; fail "no action started"; }
stop_scheduler
sleep 1
start_scheduler || fail "bb_scheduler did not restart"
wait "$BUILD" || { cat "$WORK/restart.log"; fail "the build failed across a scheduler restart"; }
await 60 connected w1 || fail "w1 did not reconnect"
await 60 connected w2 || fail "w2 did not reconnect"
bz build --action_env=KILN_SALT=after-restart-$RANDOM //cluster:gen_b > "$WORK/after.log" 2>&1 ||
  { cat "$WORK/after.log"; fail "the build after the restart failed"; }
grep "processes:" "$WORK/after.log" | grep -q remote || fail "nothing ran remotely after the restart"
echo "workers reconnected; the next build ran remotely"

echo "== Ctrl-C of Bazel while its action runs"
DIGITS="$$$RANDOM"
# Bazel in its own process group, which Ctrl-C in a terminal signals whole;
# a background job of a script starts with SIGINT ignored, so reset it.
setsid env --default-signal=INT bazel --batch --output_user_root="$WORK/bazel-root" build \
  --action_env=KILN_DIGITS="$DIGITS" //cluster:endless > "$WORK/ctrl-c.log" 2>&1 &
BUILD=$!
BACKGROUND+=($BUILD)
await 120 host_runs "sleep 1000.$DIGITS" || { cat "$WORK/ctrl-c.log"; fail "the endless action never ran"; }
kill -INT -- "-$BUILD"
START=$SECONDS
if wait "$BUILD"; then fail "the interrupted build succeeded"; fi
echo "Bazel ended $((SECONDS - START)) s after Ctrl-C: $(grep -m1 -iE "interrupt|cancel" "$WORK/ctrl-c.log" || true)"
# bb_scheduler's operationWithNoWaitersTimeout is a minute (fixed in its
# main.go); executing workers hear from it at least every 10 s.
gone() { ! host_runs "sleep 1000.$DIGITS"; }
await 120 gone || fail "the sandbox still runs $((SECONDS - START)) s after Bazel was interrupted"
echo "sandbox gone $((SECONDS - START)) s after Ctrl-C"
await 30 connected w1 && await 30 connected w2 || fail "a worker's slots did not come back"

echo "== one worker SIGKILLed while its actions run"
# bb_scheduler only notices a vanished worker when something calls it.
( while true; do curl -s -o /dev/null "http://127.0.0.1:$SCHEDULER_ADMIN_PORT/"; sleep 2; done ) &
BACKGROUND+=($!)
W2_BEFORE=$(kiln_metric w2 '^kiln_actions_total')
START=$SECONDS
bz build --action_env=KILN_SALT=kill-$RANDOM "${SLOW[@]}" > "$WORK/kill.log" 2>&1 &
BUILD=$!
BACKGROUND+=($BUILD)
w1_runs() { [[ $(sandboxes w1) -gt 0 ]]; }
await 120 w1_runs || { cat "$WORK/kill.log"; fail "w1 never ran an action"; }
W1_SANDBOXES=$(pgrep -P "${KILN_PID[w1]}" kiln-sandbox | tr '\n' ' ')
kill -KILL "${KILN_PID[w1]}"
wait "${KILN_PID[w1]}" 2>/dev/null || true
unset "KILN_PID[w1]"
# The sandboxes die with their worker (PR_SET_PDEATHSIG), and their actions.
dead() { ! kill -0 "$1" 2>/dev/null; }
for pid in $W1_SANDBOXES; do
  await 30 dead "$pid" || fail "sandbox $pid outlived its SIGKILLed worker"
done
wait "$BUILD" || { cat "$WORK/kill.log"; fail "the build failed after a worker was killed"; }
W2_RAN=$(( $(kiln_metric w2 '^kiln_actions_total') - W2_BEFORE ))
echo "build succeeded $((SECONDS - START)) s after it started; w2 ran $W2_RAN actions"
[[ "$W2_RAN" -ge 1 ]] || fail "w2 ran nothing"
grep -q "processes:.*remote" "$WORK/kill.log" || fail "the build did not run remotely: $(grep processes: "$WORK/kill.log")"

pid=${KILN_PID[w2]}
kill -TERM "$pid"; wait "$pid" || fail "w2 did not exit cleanly"
unset "KILN_PID[w2]"
echo "PASS: kill, scheduler restart and a killed worker, all survived"
