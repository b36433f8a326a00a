# Sourced by the shell tests: start_worker DIR [flags...] starts kiln-worker
# on free ports with its state in DIR, sets WORKER_PID, GRPC_PORT and
# METRICS_PORT; stop_worker stops it. The caller's EXIT trap must call
# stop_worker so nothing outlives the test.
WORKER_PID=""
start_worker() {
  local dir=$1
  shift
  mkdir -p "$dir"
  : > "$dir/worker.out"
  "$BIN_DIR/kiln-worker" --listen=127.0.0.1:0 --metrics_listen=127.0.0.1:0 \
    --state_dir="$dir/state" "$@" > "$dir/worker.out" 2>> "$dir/worker.log" &
  WORKER_PID=$!
  for _ in $(seq 100); do
    GRPC_PORT=$(sed -n 's/^kiln-worker listening grpc_port=\([0-9]*\).*/\1/p' "$dir/worker.out")
    METRICS_PORT=$(sed -n 's/^kiln-worker listening .*metrics_port=\([0-9]*\).*/\1/p' "$dir/worker.out")
    [[ -n "$GRPC_PORT" ]] && return 0
    kill -0 "$WORKER_PID" 2>/dev/null || { cat "$dir/worker.log" >&2; return 1; }
    sleep 0.1
  done
  echo "kiln-worker did not start" >&2
  return 1
}
stop_worker() {
  if [[ -n "$WORKER_PID" ]]; then
    kill "$WORKER_PID" 2>/dev/null || true
    wait "$WORKER_PID" 2>/dev/null || true
    WORKER_PID=""
  fi
}
# CPU ticks (1/CLK_TCK s) of the sandboxes a kiln-worker ran that have
# ended: its reaped children, and its sandbox spawner (kiln-sandbox
# --spawner_fd) with the launchers that spawner reaped.
sandbox_cpu_ticks() {
  local total pid
  total=$(awk '{print $16 + $17}' "/proc/$1/stat")
  for pid in $(cat /proc/"$1"/task/*/children 2> /dev/null); do
    if tr '\0' ' ' < "/proc/$pid/cmdline" 2> /dev/null | grep -q -- "--spawner_fd="; then
      total=$((total + $(awk '{print $14 + $15 + $16 + $17}' "/proc/$pid/stat")))
    fi
  done
  echo "$total"
}
