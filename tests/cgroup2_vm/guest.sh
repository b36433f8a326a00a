#!/bin/bash
# Runs as PID 1 of the cgroup v2 test VM (tests/cgroup2_vm_test.sh boots it),
# in the host's root (read-only) on a pure cgroup v2 kernel. It writes one
# line per check to $SHARE/results ("PASS name seconds" or "FAIL name"), then
# "DONE", and powers the VM off. Its output is $SHARE/guest.log.
SHARE=$(dirname "$0")
# shellcheck source=/dev/null
source "$SHARE/config.sh"  # BUILD_DIR
exec > "$SHARE/guest.log" 2>&1
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export KILN_BIN_DIR=$BUILD_DIR/bin
BIN=$BUILD_DIR/bin
RESULTS=$SHARE/results
CG=/sys/fs/cgroup
echo "guest: up after $(cut -d' ' -f1 /proc/uptime) s"

check() {
  local name=$1 start end
  shift
  echo "=== $name"
  start=$(date +%s.%N)
  if "$@"; then
    end=$(date +%s.%N)
    echo "PASS $name $(echo "$end - $start" | bc)" >> "$RESULTS"
  else
    echo "FAIL $name" >> "$RESULTS"
  fi
}

fail() {
  echo "FAILED: $*"
  return 1
}

# A line with the guest's uptime, to see where the time goes.
mark() {
  echo "[$(cut -d' ' -f1 /proc/uptime)] $*"
}

# kiln-sandbox's own limit tests, the same code as on the v1 host: memory
# limit with the OOM kill in the stats, pids limit, cpu limit throttling, and
# the action's cgroup gone afterwards.
sandbox_limits() {
  local limits=AsRoot/SandboxLimitsTest
  "$BUILD_DIR/tests/sandbox_test" \
    --gtest_filter="$limits.MemoryHog*:$limits.ForkBomb*:$limits.CpuLimit*:$limits.TheActionCgroup*"
}

leftover_cleanup() {
  "$BUILD_DIR/tests/cgroup_delegation_test"
}

# kiln-worker as systemd starts it with Delegate=yes: in a cgroup of its own
# (here kiln-worker.service under the root, whose subtree_control hands it
# memory, pids and cpu), holding the worker's process. Before it starts, a
# crashed worker's action cgroup is left in it.
worker_delegated() {
  local service=$CG/kiln-worker.service dir=/tmp/worker
  mkdir -p "$service" "$dir/input" "$service/kiln-sandbox-99999999-0" || return 1
  # kiln-worker's own stdout/stderr; the subshell moves itself, then execs it.
  (echo "$BASHPID" > "$service/cgroup.procs" &&
    exec "$BIN/kiln-worker" --listen=127.0.0.1:0 --metrics_listen= --state_dir="$dir/state" \
      --concurrency=2 --build_uid_pool_size=8) > "$dir/worker.out" 2> "$dir/worker.log" &
  local worker=$! port=""
  mark "worker started"
  for _ in $(seq 300); do
    port=$(sed -n 's/^kiln-worker listening grpc_port=\([0-9]*\).*/\1/p' "$dir/worker.out")
    [[ -n "$port" ]] && break
    kill -0 "$worker" 2> /dev/null || break
    sleep 0.1
  done
  local ok=0
  worker_checks "$service" "$dir" "$worker" "$port" || ok=1
  kill -TERM "$worker" 2> /dev/null
  wait "$worker"
  echo "--- worker log"
  cat "$dir/worker.log"
  return $ok
}

worker_checks() {
  local service=$1 dir=$2 worker=$3 port=$4
  [[ -n "$port" ]] || fail "the worker did not start" || return 1
  # It moved itself into a leaf, and the emptied cgroup hands the
  # controllers to the action cgroups.
  grep -qx "0::/kiln-worker.service/kiln-worker" "/proc/$worker/cgroup" ||
    fail "worker cgroup: $(cat "/proc/$worker/cgroup")" || return 1
  for controller in memory pids cpu; do
    grep -qw "$controller" "$service/cgroup.subtree_control" ||
      fail "$controller not enabled: $(cat "$service/cgroup.subtree_control")" || return 1
  done
  [[ ! -e $service/kiln-sandbox-99999999-0 ]] || fail "the crash's leftover cgroup is still there" || return 1
  grep -q "removed 1 leftover sandbox cgroup" "$dir/worker.log" || fail "no log of the leftover's removal" || return 1

  mark "worker listening"
  local client=(
    "$BIN/kiln" run --server="127.0.0.1:$port" --input_root="$dir/input" --timeout=60s)
  local out
  out=$("${client[@]}" --platform=memory=64MiB -- /bin/sh -c 'cat /proc/self/cgroup' 2>&1) ||
    fail "an action with a memory limit failed: $out" || return 1
  echo "$out"
  # Its own cgroup is the root of its cgroup namespace.
  [[ $out == "0::/" ]] || fail "the action sees its cgroup as: $out" || return 1

  mark "first action done"
  # The memory limit applies: the hog is OOM-killed and that is reported.
  # tail keeps 100 MB (the VM has 1 GB): without the limit it would succeed.
  out=$("${client[@]}" --platform=memory=64MiB -- \
    /bin/sh -c 'head -c 100000000 /dev/zero | tail -c 100000000 > /dev/null' 2>&1)
  local code=$?
  echo "$out"
  [[ $code == 137 ]] || fail "the memory hog exited $code, not 137" || return 1
  [[ $out == *"OOM killer"* ]] || fail "no OOM report: $out" || return 1

  mark "OOM action done"
  # The pids limit applies through the worker too: the shell counts the
  # sleeps it started until a fork fails (dash then exits 2).
  out=$("${client[@]}" --platform=pids=16 -- /bin/sh -c \
    'i=0; while [ $i -lt 40 ]; do sleep 5 & i=$((i+1)); echo $i; done' 2> /dev/null)
  code=$?
  echo "pids-limited action: exit $code, started $(echo "$out" | tail -1) sleeps"
  [[ $code != 0 && $(echo "$out" | tail -1) -lt 16 ]] || fail "the pids limit did not stop the loop" || return 1

  mark "pids action done"
  # Nothing of the actions is left: only the worker's leaf remains.
  local left
  left=$(find "$service" -mindepth 1 -maxdepth 1 -type d ! -name kiln-worker)
  [[ -z $left ]] || fail "cgroups left after the actions: $left" || return 1
}

# A worker that shares its cgroup with another process cannot take the
# cgroup over: it says so, keeps serving, and an action asking for a limit
# fails loudly instead of running unlimited.
worker_undelegated() {
  local shared=$CG/shared.scope dir=/tmp/undelegated
  mkdir -p "$shared" "$dir/input" || return 1
  (echo "$BASHPID" > "$shared/cgroup.procs" && exec sleep 120) &
  local bystander=$!
  (echo "$BASHPID" > "$shared/cgroup.procs" &&
    exec "$BIN/kiln-worker" --listen=127.0.0.1:0 --metrics_listen= --state_dir="$dir/state" \
      --concurrency=1 --build_uid_pool_size=8) > "$dir/worker.out" 2> "$dir/worker.log" &
  local worker=$! port="" ok=0 out
  for _ in $(seq 300); do
    port=$(sed -n 's/^kiln-worker listening grpc_port=\([0-9]*\).*/\1/p' "$dir/worker.out")
    [[ -n "$port" ]] && break
    kill -0 "$worker" 2> /dev/null || break
    sleep 0.1
  done
  if [[ -z $port ]]; then
    fail "the worker did not start"; ok=1
  elif ! grep -q "other processes share the worker's cgroup" "$dir/worker.log"; then
    fail "no warning about the shared cgroup"; ok=1
  else
    out=$("$BIN/kiln" run --server="127.0.0.1:$port" --input_root="$dir/input" --platform=memory=64MiB \
      -- /bin/sh -c 'echo ran' 2>&1)
    echo "$out"
    if [[ $out == *ran* ]] || [[ $out != *"no internal processes"* ]]; then
      fail "a limited action ran without its limit or without saying why"; ok=1
    fi
  fi
  kill -TERM "$worker" 2> /dev/null
  kill "$bystander" 2> /dev/null
  wait "$worker" "$bystander"
  cat "$dir/worker.log"
  return $ok
}

ip link set lo up
check sandbox_limits sandbox_limits
check leftover_cleanup leftover_cleanup
check worker_delegated worker_delegated
check worker_undelegated worker_undelegated
echo DONE >> "$RESULTS"
sync
/bin/busybox poweroff -f
