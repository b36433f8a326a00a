#!/usr/bin/env bash
# Two kiln-worker builds side by side, alternating in one run, against the same
# clients (this checkout's cas_bench and exec_bench): CAS throughput and
# FindMissingBlobs with idle RSS, per-action overhead with the worker's own
# log-line stages, and a 20,000-file input root (where directory removal shows).
#   bench/compare_workers.sh OLD_BUILD_DIR NEW_BUILD_DIR [ROUNDS]
# e.g. git archive main | tar -x -C /tmp/base && (cd /tmp/base && cmake -S . -B build -G Ninja \
#   -DCMAKE_BUILD_TYPE=RelWithDebInfo && cmake --build build -j2 --target kiln-worker kiln-sandbox)
#   bench/compare_workers.sh /tmp/base/build build
set -euo pipefail
cd "$(dirname "$0")/.."
OLD=$1 NEW=$2 ROUNDS=${3:-2}
CLIENTS=$PWD/build/bin
SCRATCH=$(mktemp -d "${KILN_BENCH_DIR:-/var/tmp}/kiln-compare.XXXXXX")
WORKER=""
trap '[[ -n "$WORKER" ]] && kill $WORKER 2>/dev/null; rm -rf "$SCRATCH"' EXIT

start() {  # build-dir, extra worker flags...
  local bin=$1/bin/kiln-worker; shift
  rm -rf "$SCRATCH/state"; : > "$SCRATCH/out"
  "$bin" --listen=127.0.0.1:0 --metrics_listen= --state_dir="$SCRATCH/state" "$@" \
    > "$SCRATCH/out" 2> "$SCRATCH/log" &
  WORKER=$!
  for _ in $(seq 100); do
    PORT=$(sed -n 's/^kiln-worker listening grpc_port=\([0-9]*\).*/\1/p' "$SCRATCH/out")
    [[ -n "$PORT" ]] && return
    sleep 0.1
  done
  echo "worker did not start" >&2; exit 1
}
stop() { kill "$WORKER"; wait "$WORKER" || true; WORKER=""; }
rss() { sed -n 's/^VmRSS:[[:space:]]*//p' /proc/$WORKER/status; }
stages() {  # p50 of the worker's per-action log fields
  grep "action .* outcome" "$SCRATCH/log" | /usr/bin/python3 -c '
import re, sys
rows = [dict(re.findall(r"(\w+)=([\d.]+)", line)) for line in sys.stdin]
out = []
for key in ["fetch", "exec", "upload", "total"]:
    values = sorted(float(r[key]) for r in rows if key in r)
    out.append("%s %.2f" % (key, values[len(values) // 2]))
print("  worker log p50 (ms):", ", ".join(out))'
}

echo "kiln-worker builds: old $OLD, new $NEW; $(nproc) cores, kernel $(uname -r); $(uptime)"
for round in $(seq "$ROUNDS"); do
  for side in old new; do
    dir=$OLD; [[ $side == new ]] && dir=$NEW
    echo "== round $round, $side: CAS"
    start "$dir" --cas_max_bytes=8GiB; sleep 2; echo "  RSS idle after start: $(rss)"
    "$CLIENTS/cas_bench" --server="127.0.0.1:$PORT" | sed -n '2,5p'
    sleep 11; echo "  RSS idle after the benchmark: $(rss)"; stop
    echo "== round $round, $side: /bin/true, concurrency 1"
    start "$dir" --concurrency=1
    "$CLIENTS/exec_bench" --server="127.0.0.1:$PORT" --mode=overhead --actions=200 --clients=1 | tail -3
    stop; stages
    echo "== round $round, $side: 20,000-file input root"
    start "$dir" --concurrency=1
    "$CLIENTS/exec_bench" --server="127.0.0.1:$PORT" --mode=staging --files=20000 --scratch="$SCRATCH" | tail -2
    stop; grep "action .* outcome" "$SCRATCH/log" | sed 's/.*outcome=/  outcome=/'
  done
done
