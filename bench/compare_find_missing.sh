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
SCRATCH=$(mktemp -d /var/tmp/kiln-find-missing.XXXXXX)
WORKER=""
trap '[[ -n "$WORKER" ]] && kill $WORKER 2>/dev/null; rm -rf "$SCRATCH"' EXIT
rss() { sed -n 's/^VmRSS:[[:space:]]*//p' /proc/$WORKER/status; }
echo "kiln-worker builds: old $OLD, new $NEW; $(nproc) cores, kernel $(uname -r)"
for round in $(seq "$ROUNDS"); do
  for side in old new; do
    dir=$OLD; [[ $side == new ]] && dir=$NEW
    rm -rf "$SCRATCH/state"; : > "$SCRATCH/out"
    "$dir/bin/kiln-worker" --listen=127.0.0.1:0 --metrics_listen= --state_dir="$SCRATCH/state" \
      --cas_max_bytes=8GiB > "$SCRATCH/out" 2> "$SCRATCH/log" &
    WORKER=$!
    for _ in $(seq 100); do
      PORT=$(sed -n 's/^kiln-worker listening grpc_port=\([0-9]*\).*/\1/p' "$SCRATCH/out")
      [[ -n "$PORT" ]] && break
      sleep 0.1
    done
    sleep 2; idle=$(rss)
    result=$("$CLIENT" --server="127.0.0.1:$PORT" --blob_mib=16 --transfer_repetitions=1 \
      --repetitions="$CALLS" | grep -A1 FindMissing | tr -s ' \n' ' ')
    sleep 11  # the MemoryTrimmer has run twice
    echo "round $round $side (load $(cut -d' ' -f1 /proc/loadavg)): $result| RSS idle $idle / after $(rss)"
    kill "$WORKER"; wait "$WORKER" || true; WORKER=""
  done
done
