#!/usr/bin/env bash
# Starts kiln-worker on a scratch state dir and runs cas_bench against it.
#   bench/run_cas_bench.sh [cas_bench flags, e.g. --blob_mib=1024]
set -euo pipefail
cd "$(dirname "$0")/.."
STATE=$(mktemp -d "${KILN_BENCH_DIR:-/tmp}/kiln-bench.XXXXXX")
: > "$STATE.out"
build/bin/kiln-worker --listen=127.0.0.1:0 --metrics_listen= --state_dir="$STATE" \
  --cas_max_bytes=8GiB > "$STATE.out" 2> "$STATE.log" &
WORKER=$!
trap 'kill $WORKER 2>/dev/null; wait $WORKER 2>/dev/null; rm -rf "$STATE" "$STATE.out" "$STATE.log"' EXIT
for _ in $(seq 100); do
  PORT=$(sed -n 's/^kiln-worker listening grpc_port=\([0-9]*\).*/\1/p' "$STATE.out")
  [[ -n "$PORT" ]] && break
  sleep 0.1
done
echo "kiln-worker $(git rev-parse --short HEAD 2>/dev/null || echo '?') on $(nproc) cores, $(uname -r)"
rss() { sed -n 's/^VmRSS:[[:space:]]*//p' /proc/$WORKER/status; }
sleep 2
echo "worker RSS idle after start: $(rss)"
build/bin/cas_bench --server="127.0.0.1:$PORT" "$@"
# The MemoryTrimmer runs every 5 s; idle means after it has run twice.
sleep 11
echo "worker RSS idle after the benchmark: $(rss)"
# The disk's own ceiling for the same durable write, in the same run.
DD=$(dd if=/dev/zero of="$STATE/dd-baseline" bs=1M count=1024 conv=fsync 2>&1 | tail -1)
rm -f "$STATE/dd-baseline"
echo "disk baseline (dd 1 GiB, conv=fsync, same dir): ${DD##*, }"
