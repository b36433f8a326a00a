#!/usr/bin/env bash
# FindMissingBlobs of 10,000 digests (half present) against two kiln-worker
# builds, alternating in one run, with this checkout's cas_bench as the one
# client, plus each worker's idle RSS after start and after the calls.
#   bench/compare_find_missing.sh OLD_BUILD_DIR NEW_BUILD_DIR [ROUNDS] [CALLS]
# (build dirs as in bench/compare_workers.sh; kiln-sandbox must sit beside kiln-worker)
set -euo pipefail
cd "$(dirname "$0")/.."
OLD=$1 NEW=$2 ROUNDS=${3:-4} CALLS=${4:-200}
CLIENT=$PWD/build/bin/cas_bench
SCRATCH=$(mktemp -d "${KILN_BENCH_DIR:-/var/tmp}/kiln-find-missing.XXXXXX")
source tests/start_worker.sh
trap 'stop_worker; rm -rf "$SCRATCH"' EXIT
rss() { sed -n 's/^VmRSS:[[:space:]]*//p' /proc/$WORKER_PID/status; }
echo "kiln-worker builds: old $OLD, new $NEW; $(nproc) cores, kernel $(uname -r)"
for round in $(seq "$ROUNDS"); do
  for side in old new; do
    BIN_DIR=$OLD/bin; [[ $side == new ]] && BIN_DIR=$NEW/bin
    rm -rf "$SCRATCH/worker"
    start_worker "$SCRATCH/worker" --cas_max_bytes=8GiB
    sleep 2; idle=$(rss)
    result=$("$CLIENT" --server="127.0.0.1:$GRPC_PORT" --blob_mib=16 --transfer_repetitions=1 \
      --repetitions="$CALLS" | grep -A1 FindMissing | tr -s ' \n' ' ')
    sleep 11  # the MemoryTrimmer has run twice
    echo "round $round $side (load $(cut -d' ' -f1 /proc/loadavg)): $result| RSS idle $idle / after $(rss)"
    stop_worker
  done
done
