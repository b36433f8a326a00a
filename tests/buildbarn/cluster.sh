# Sourced by the cluster tests and benchmarks: a Buildbarn test cluster on
# loopback. bb_storage is the frontend (CAS, action cache, Capabilities, and
# Execution forwarded to bb_scheduler), as Buildbarn's own deployments do;
# workers call bb_scheduler's worker port.
#
#   start_buildbarn DIR    builds (or reuses) the binaries, writes the configs
#                          under DIR and starts both; sets FRONTEND_PORT
#                          (clients: Bazel), WORKER_PORT (bb_scheduler's
#                          Synchronize), STORAGE_PID, SCHEDULER_PID, BB_BIN
#   stop_scheduler / start_scheduler    for restart tests (same ports)
#   stop_buildbarn         stops what start_buildbarn started (by pid)
#
# The caller's EXIT trap must call stop_buildbarn.
STORAGE_PID=""
SCHEDULER_PID=""

# free_port: a port nobody listens on right now.
free_port() {
  /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# wait_port PORT PID NAME LOG: until PORT accepts connections (or PID dies).
wait_port() {
  for _ in $(seq 300); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    kill -0 "$2" 2>/dev/null || { echo "$3 exited:" >&2; tail -20 "$4" >&2; return 1; }
    sleep 0.1
  done
  echo "$3 did not listen on port $1" >&2
  tail -20 "$4" >&2
  return 1
}

start_buildbarn() {
  BB_DIR=$1
  mkdir -p "$BB_DIR/cas" "$BB_DIR/ac"
  BB_BIN=$("$(dirname "${BASH_SOURCE[0]}")/build.sh") || return 1
  FRONTEND_PORT=$(free_port)
  WORKER_PORT=$(free_port)
  SCHEDULER_CLIENT_PORT=$(free_port)
  SCHEDULER_ADMIN_PORT=$(free_port)
  # The configs are deploy/buildbarn's, which read these variables.
  export BB_STATE_DIR=$BB_DIR BB_FRONTEND=127.0.0.1:$FRONTEND_PORT \
    BB_SCHEDULER_CLIENTS=127.0.0.1:$SCHEDULER_CLIENT_PORT BB_SCHEDULER_WORKERS=127.0.0.1:$WORKER_PORT \
    BB_SCHEDULER_ADMIN=127.0.0.1:$SCHEDULER_ADMIN_PORT
  BB_CONFIGS=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../deploy/buildbarn" && pwd)
  "$BB_BIN/bb_storage" "$BB_CONFIGS/storage.jsonnet" > "$BB_DIR/storage.log" 2>&1 &
  STORAGE_PID=$!
  wait_port "$FRONTEND_PORT" "$STORAGE_PID" bb_storage "$BB_DIR/storage.log" || return 1
  start_scheduler
}

start_scheduler() {
  "$BB_BIN/bb_scheduler" "$BB_CONFIGS/scheduler.jsonnet" >> "$BB_DIR/scheduler.log" 2>&1 &
  SCHEDULER_PID=$!
  wait_port "$WORKER_PORT" "$SCHEDULER_PID" bb_scheduler "$BB_DIR/scheduler.log"
}

stop_scheduler() {
  if [[ -n "$SCHEDULER_PID" ]]; then
    kill "$SCHEDULER_PID" 2>/dev/null || true
    wait "$SCHEDULER_PID" 2>/dev/null || true
    SCHEDULER_PID=""
  fi
}

stop_buildbarn() {
  stop_scheduler
  if [[ -n "$STORAGE_PID" ]]; then
    kill "$STORAGE_PID" 2>/dev/null || true
    wait "$STORAGE_PID" 2>/dev/null || true
    STORAGE_PID=""
  fi
}

# Kiln workers in cluster mode (needs BIN_DIR, and start_buildbarn first):
#   start_kiln NAME DIR [kiln-worker flags...]   sets KILN_PID[NAME],
#                          KILN_METRICS[NAME]; waits until every slot is
#                          connected to the scheduler
#   kiln_metric NAME REGEX  sums the samples of /metrics lines matching REGEX
#   stop_kiln NAME / stop_all_kiln
declare -A KILN_PID=() KILN_METRICS=() KILN_DIR=()
start_kiln() {
  local name=$1 dir=$2
  shift 2
  mkdir -p "$dir"
  : > "$dir/worker.out"
  "$BIN_DIR/kiln-worker" --listen=127.0.0.1:0 --metrics_listen=127.0.0.1:0 --state_dir="$dir/state" \
    --scheduler="127.0.0.1:$WORKER_PORT" --cas="127.0.0.1:$FRONTEND_PORT" --worker_name="$name" \
    --drain_grace=2s "$@" > "$dir/worker.out" 2>> "$dir/worker.log" &
  KILN_PID[$name]=$!
  KILN_DIR[$name]=$dir
  local port=""
  for _ in $(seq 100); do
    port=$(sed -n 's/^kiln-worker listening .*metrics_port=\([0-9]*\).*/\1/p' "$dir/worker.out")
    [[ -n "$port" ]] && break
    kill -0 "${KILN_PID[$name]}" 2>/dev/null || { tail -20 "$dir/worker.log" >&2; return 1; }
    sleep 0.1
  done
  [[ -n "$port" ]] || { echo "kiln-worker $name did not start" >&2; return 1; }
  KILN_METRICS[$name]=$port
  # Ready when every slot's Synchronize went through.
  for _ in $(seq 200); do
    local slots connected
    slots=$(kiln_metric "$name" '^kiln_cluster_slots ')
    connected=$(kiln_metric "$name" '^kiln_cluster_scheduler_connected_slots ')
    [[ "$slots" -gt 0 && "$slots" == "$connected" ]] && return 0
    sleep 0.1
  done
  echo "kiln-worker $name did not connect to the scheduler" >&2
  tail -20 "$dir/worker.log" >&2
  return 1
}

# (0 when no sample matches: a labelled counter has none until it first
# counts, e.g. on a worker the scheduler has not given an action yet.)
kiln_metric() {
  curl -s "http://127.0.0.1:${KILN_METRICS[$1]}/metrics" | { grep -E "$2" || true; } |
    awk '{ s += $NF } END { printf "%d\n", s }'
}

stop_kiln() {
  local pid=${KILN_PID[$1]:-}
  [[ -n "$pid" ]] || return 0
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  unset "KILN_PID[$1]"
}

stop_all_kiln() {
  local name
  for name in "${!KILN_PID[@]}"; do stop_kiln "$name"; done
}
