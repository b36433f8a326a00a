#!/usr/bin/env bash
# Per-action overhead at concurrency 1 and 8, with warm sandboxes off
# (before) and on (after), and staging of a 20,000-file input root next to
# cp -al, against a fresh kiln-worker (as root):
#   bench/run_exec_bench.sh
set -euo pipefail
cd "$(dirname "$0")/.."
STATE=$(mktemp -d "${KILN_BENCH_DIR:-/var/tmp}/kiln-exec-bench.XXXXXX")
WORKER=""
start_worker() {
  : > "$STATE/out"
  build/bin/kiln-worker --listen=127.0.0.1:0 --metrics_listen= --state_dir="$STATE/state" \
    --concurrency="$1" --log_level=warn --warm_sandboxes="${2:-true}" > "$STATE/out" 2> "$STATE/log" &
  WORKER=$!
  for _ in $(seq 100); do
    PORT=$(sed -n 's/^kiln-worker listening grpc_port=\([0-9]*\).*/\1/p' "$STATE/out")
    [[ -n "$PORT" ]] && return
    sleep 0.1
  done
  echo "worker did not start" >&2; exit 1
}
stop_worker() { kill "$WORKER"; wait "$WORKER" || true; WORKER=""; }
trap '[[ -n "$WORKER" ]] && kill $WORKER; rm -rf "$STATE"' EXIT
echo "kiln-worker $(git rev-parse --short HEAD) on $(nproc) cores, kernel $(uname -r)"
for warm in false true; do
  echo "== per-action overhead, concurrency 1, --warm_sandboxes=$warm"
  start_worker 1 $warm; build/bin/exec_bench --server="127.0.0.1:$PORT" --mode=overhead --actions=200 --clients=1; stop_worker
  echo "== per-action overhead, concurrency 8 (8 slots, 8 clients), --warm_sandboxes=$warm"
  start_worker 8 $warm; build/bin/exec_bench --server="127.0.0.1:$PORT" --mode=overhead --actions=400 --clients=8; stop_worker
done
echo "== staging a 20,000-file input root"
start_worker 1; build/bin/exec_bench --server="127.0.0.1:$PORT" --mode=staging --files=20000 --scratch="$STATE"; stop_worker
