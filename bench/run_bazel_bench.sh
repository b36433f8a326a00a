#!/usr/bin/env bash
# A Bazel 4.2.3 build of 300 independent trivial genrules with --jobs=8, in
# one run, two ways: locally with Bazel's linux-sandbox, and remotely on a
# fresh kiln-worker over loopback (--noremote_accept_cached). Prints the wall
# times and the remote/local ratio (goal: at most 1.0), the same for a second
# worker with --fsync=never (docs/operations.md, "Writes without fsync"), and
# the time of the remote build when every action is a cache hit (Bazel's own
# part).
#   bench/run_bazel_bench.sh [GENRULES] [WORKER_CONCURRENCY]
# KILN_BENCH_DIR: where Bazel's output root and the worker's state dir go
# (default /var/tmp), e.g. a journaled ext4 (docs/operations.md, "The state
# dir's filesystem"). BENCH_ROUNDS: the rounds' names, the last one timed
# (default "warmup measured").
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
N=${1:-300}
CONCURRENCY=${2:-8}
BIN=$(pwd)/build/bin
WORK=$(mktemp -d "${KILN_BENCH_DIR:-/var/tmp}/kiln-bazel-bench.XXXXXX")
WORKER=""
NOSYNC_WORKER=""
cleanup() {
  [[ -n "$WORKER" ]] && { kill "$WORKER"; wait "$WORKER" 2>/dev/null || true; }
  [[ -n "$NOSYNC_WORKER" ]] && { kill "$NOSYNC_WORKER"; wait "$NOSYNC_WORKER" 2>/dev/null || true; }
  (cd "$WORK/ws" 2>/dev/null && bazel --output_user_root="$WORK/root" shutdown 2>/dev/null) || true
  chmod -R u+w "$WORK" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

: > "$WORK/out"
"$BIN/kiln-worker" --listen=127.0.0.1:0 --metrics_listen= --state_dir="$WORK/state" \
  --concurrency="$CONCURRENCY" --log_level=warn > "$WORK/out" 2> "$WORK/log" &
WORKER=$!
"$BIN/kiln-worker" --listen=127.0.0.1:0 --metrics_listen= --state_dir="$WORK/state-nosync" \
  --concurrency="$CONCURRENCY" --fsync=never --log_level=warn > "$WORK/out-nosync" 2> "$WORK/log-nosync" &
NOSYNC_WORKER=$!
for _ in $(seq 100); do
  PORT=$(sed -n 's/^kiln-worker listening grpc_port=\([0-9]*\).*/\1/p' "$WORK/out")
  NOSYNC_PORT=$(sed -n 's/^kiln-worker listening grpc_port=\([0-9]*\).*/\1/p' "$WORK/out-nosync")
  [[ -n "$PORT" && -n "$NOSYNC_PORT" ]] && break
  sleep 0.1
done

mkdir -p "$WORK/ws/gen"
cd "$WORK/ws"
touch WORKSPACE
for i in $(seq 1 "$N"); do
  echo "genrule(name = \"g$i\", outs = [\"g$i.txt\"], cmd = \"echo $i > \$@\")"
done > gen/BUILD
bz() { bazel --output_user_root="$WORK/root" "$@"; }
bz info > /dev/null 2>&1  # start the Bazel server outside the timings
bz build --nobuild //gen:all > /dev/null 2>&1  # load and analyze once, too
BAZEL_PID=$(bz info server_pid 2> /dev/null)

# CPU seconds of a process and its reaped children (linux-sandbox runs as
# Bazel's child), and for the worker also of its sandbox spawner's
# (tests/start_worker.sh: sandbox_cpu_ticks).
source "$REPO/tests/start_worker.sh"
cpu_seconds() { awk -v hz="$(getconf CLK_TCK)" '{ print ($14 + $15 + $16 + $17) / hz }' "/proc/$1/stat"; }
worker_cpu_seconds() {
  echo "($(awk '{ print $14 + $15 }' "/proc/$1/stat") + $(sandbox_cpu_ticks "$1")) / $(getconf CLK_TCK)" | bc -l
}
# Prints the build's wall seconds; its CPU (Bazel's, the worker's) goes to stderr.
timed_build() {
  local start end bazel0 worker0 worker=$1
  shift
  bazel0=$(cpu_seconds "$BAZEL_PID")
  worker0=$(worker_cpu_seconds "$worker")
  start=$(date +%s.%N)
  bz build --jobs=8 "$@" //gen:all > "$WORK/build.log" 2>&1 || { cat "$WORK/build.log"; exit 1; }
  end=$(date +%s.%N)
  grep "processes:" "$WORK/build.log" >&2
  printf "  wall %.2f s, CPU: Bazel %.2f s, kiln-worker %.2f s\n" "$(echo "$end - $start" | bc)" \
    "$(echo "$(cpu_seconds "$BAZEL_PID") - $bazel0" | bc)" "$(echo "$(worker_cpu_seconds "$worker") - $worker0" | bc)" >&2
  echo "$end - $start" | bc
}
# One untimed round of each first: Bazel's JVM compiles its local and remote
# code paths on first use, which would otherwise count against whichever
# runs first. --action_env changes every action's key between rounds.
for round in ${BENCH_ROUNDS:-warmup measured}; do
  LOCAL=$(timed_build "$WORKER" --spawn_strategy=linux-sandbox --action_env=KILN_BENCH_ROUND=$round)
  bz clean > /dev/null 2>&1
  # --fsync=never first: a later build in a round is favoured (Bazel's JIT).
  NOSYNC=$(timed_build "$NOSYNC_WORKER" --remote_executor="grpc://127.0.0.1:$NOSYNC_PORT" \
    --noremote_accept_cached --action_env=KILN_BENCH_ROUND=$round)
  bz clean > /dev/null 2>&1
  REMOTE=$(timed_build "$WORKER" --remote_executor="grpc://127.0.0.1:$PORT" --noremote_accept_cached \
    --action_env=KILN_BENCH_ROUND=$round)
  bz clean > /dev/null 2>&1
  # The same build again, every action a remote cache hit: what Bazel's
  # remote path (Merkle trees, gRPC, downloads) costs when nothing runs, the
  # floor under the remote build whatever the worker does.
  CACHED=$(timed_build "$WORKER" --remote_executor="grpc://127.0.0.1:$PORT" --action_env=KILN_BENCH_ROUND=$round)
  bz clean > /dev/null 2>&1
done
echo "kiln-worker $(cd - > /dev/null; git rev-parse --short HEAD 2>/dev/null || echo '?'), $(nproc) cores, $N genrules, --jobs=8, worker --concurrency=$CONCURRENCY"
printf "local (linux-sandbox)   %.2f s\nremote (kiln-worker)    %.2f s\nremote / local          %.2f (goal <= 1.0)\n" \
  "$LOCAL" "$REMOTE" "$(echo "$REMOTE / $LOCAL" | bc -l)"
printf "remote (--fsync=never)  %.2f s, / local %.2f\n" "$NOSYNC" "$(echo "$NOSYNC / $LOCAL" | bc -l)"
printf "remote, all cache hits  %.2f s (Bazel's remote path alone; / local %.2f)\n" \
  "$CACHED" "$(echo "$CACHED / $LOCAL" | bc -l)"
