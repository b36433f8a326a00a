#!/usr/bin/env bash
# Per-action overhead of /bin/true (exec_bench --mode=overhead, warm sandboxes
# on) for two kiln-worker builds, alternating in one run: Execute-to-result
# p50, throughput, where each action's time went (exec_bench's split from the
# worker's own timestamps), and CPU per action of the worker process and of
# its finished sandboxes (from /proc, tests/start_worker.sh's
# sandbox_cpu_ticks; the worker's part includes the benchmark's
# own uploads of the Action blobs; the same for both builds). As root.
#   bench/compare_exec_overhead.sh OLD_BUILD_DIR NEW_BUILD_DIR [ROUNDS] [CONCURRENCY] [ACTIONS]
set -euo pipefail
cd "$(dirname "$0")/.."
OLD=$1 NEW=$2 ROUNDS=${3:-4} CONCURRENCY=${4:-1} ACTIONS=${5:-300}
CLIENT=$PWD/build/bin/exec_bench
SCRATCH=$(mktemp -d "${KILN_BENCH_DIR:-/var/tmp}/kiln-compare.XXXXXX")
source tests/start_worker.sh
trap 'stop_worker; rm -rf "$SCRATCH"' EXIT
TICK_US=$((1000000 / $(getconf CLK_TCK)))

run() {  # label build-dir
  rm -rf "$SCRATCH/worker"
  BIN_DIR=$2/bin
  start_worker "$SCRATCH/worker" --concurrency="$CONCURRENCY" --log_level=warn
  sleep 0.5  # the warm sandboxes get ready
  u0=$(awk '{print $14+$15}' /proc/$WORKER_PID/stat) c0=$(sandbox_cpu_ticks $WORKER_PID)
  out=$("$CLIENT" --server="127.0.0.1:$GRPC_PORT" --mode=overhead --actions="$ACTIONS" --clients="$CONCURRENCY")
  sleep 0.3  # the last sandboxes are reaped
  u1=$(awk '{print $14+$15}' /proc/$WORKER_PID/stat) c1=$(sandbox_cpu_ticks $WORKER_PID)
  stop_worker
  printf "%-4s p50 %6s ms  %7s actions/s  cpu/action: worker %5d us, sandboxes %5d us  load %s\n" "$1" \
    "$(sed -n 's/^Execute-to-result  p50 \([0-9.]*\) ms.*/\1/p' <<<"$out")" \
    "$(sed -n 's/^throughput \([0-9.]*\).*/\1/p' <<<"$out")" \
    $(( (u1 - u0) * TICK_US / ACTIONS )) $(( (c1 - c0) * TICK_US / ACTIONS )) "$(cut -d' ' -f1 /proc/loadavg)"
  grep "^p50 split" <<<"$out" | sed 's/^/     /'
}

echo "concurrency $CONCURRENCY, $ACTIONS actions, $ROUNDS rounds; old=$OLD new=$NEW; $(nproc) cores, kernel $(uname -r)"
for _ in $(seq "$ROUNDS"); do
  run old "$OLD"
  run new "$NEW"
done
