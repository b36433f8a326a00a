#!/usr/bin/env bash
# Kiln workers against Buildbarn's own bb_worker + bb_runner, behind the same
# bb_storage + bb_scheduler, in one run: per-action overhead of /bin/true
# (p50/p99 of the client's Execute call) and throughput at concurrency 1 and
# 8, rounds interleaved so both see the same machine; then the wall time of
# a Bazel 4.2.3 build of GENRULES trivial genrules (--jobs=8) on each pool.
# Both pools run at the same time with 2 slots each (two Kiln workers of one
# slot; one bb_worker with a runner of concurrency 2), told apart by a
# platform property (bench=kiln / bench=buildbarn) that the scheduler routes
# on. A third, standalone kiln-worker of 2 slots (no scheduler: the client
# talks to it directly) gets the same load in the same rounds: standalone
# Kiln against Buildbarn's smallest complete deployment.
#
#   bench/run_cluster_bench.sh [ROUNDS] [N_C1] [N_C8] [GENRULES]   (after ./dev.sh build)
#   GENRULES=0 skips the Bazel part. KILN_CLUSTER_FLAGS: more kiln-worker flags
#   for the two cluster workers (e.g. --fsync=always).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN_DIR=$ROOT/build/bin
ROUNDS=${1:-5}
N1=${2:-100}
N8=${3:-200}
GENRULES=${4:-300}
WORK=$(mktemp -d "${KILN_BENCH_DIR:-/tmp}/kiln-cluster-bench.XXXXXX")
source "$ROOT/tests/buildbarn/cluster.sh"
source "$ROOT/tests/start_worker.sh"  # the standalone worker
RUNNER_PID=""
BBWORKER_PID=""
cleanup() {
  local pid
  if [[ -d "$WORK/ws" ]]; then
    (cd "$WORK/ws" && bazel --output_user_root="$WORK/bazel-root" shutdown > /dev/null 2>&1) || true
  fi
  stop_worker
  for pid in $BBWORKER_PID $RUNNER_PID; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
  stop_all_kiln
  stop_buildbarn
  chmod -R u+w "$WORK" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

start_buildbarn "$WORK/bb"
start_kiln k1 "$WORK/k1" --concurrency=1 --platform=bench=kiln ${KILN_CLUSTER_FLAGS:-}
start_kiln k2 "$WORK/k2" --concurrency=1 --platform=bench=kiln ${KILN_CLUSTER_FLAGS:-}

# Buildbarn's worker pair, as bb-deployments' "bare" example runs it: a
# native build directory with a hardlinking file cache, the runner on a
# UNIX socket, in the host's namespaces as this user.
BBW=$WORK/bbw
mkdir -p "$BBW/build" "$BBW/cache"
cat > "$BBW/runner.jsonnet" <<EOF
{
  buildDirectoryPath: '$BBW/build',
  grpcServers: [{ listenPaths: ['$BBW/runner.sock'], authenticationPolicy: { allow: {} } }],
}
EOF
cat > "$BBW/worker.jsonnet" <<EOF
{
  blobstore: {
    contentAddressableStorage: { grpc: { client: { address: '127.0.0.1:$FRONTEND_PORT' } } },
    actionCache: { grpc: { client: { address: '127.0.0.1:$FRONTEND_PORT' } } },
  },
  maximumMessageSizeBytes: 16 * 1024 * 1024,
  scheduler: { address: '127.0.0.1:$WORKER_PORT' },
  filePool: { blockDevice: { file: { path: '$BBW/filepool', sizeBytes: 1024 * 1024 * 1024 } } },
  inputDownloadConcurrency: 8,
  outputUploadConcurrency: 8,
  supportLegacyOutputFilesAndDirectories: true,
  buildDirectories: [{
    native: {
      buildDirectoryPath: '$BBW/build',
      cacheDirectoryPath: '$BBW/cache',
      maximumCacheFileCount: 10000,
      maximumCacheSizeBytes: 1024 * 1024 * 1024,
      cacheReplacementPolicy: 'LEAST_RECENTLY_USED',
    },
    runners: [{
      endpoint: { address: 'unix:$BBW/runner.sock' },
      concurrency: 2,
      platform: { properties: [{ name: 'bench', value: 'buildbarn' }] },
      workerId: { hostname: 'bench', worker: 'bb_worker' },
    }],
  }],
}
EOF
"$BB_BIN/bb_runner" "$BBW/runner.jsonnet" > "$BBW/runner.log" 2>&1 &
RUNNER_PID=$!
for _ in $(seq 100); do [[ -S "$BBW/runner.sock" ]] && break; sleep 0.1; done
"$BB_BIN/bb_worker" "$BBW/worker.jsonnet" > "$BBW/worker.log" 2>&1 &
BBWORKER_PID=$!
sleep 2
kill -0 "$BBWORKER_PID" || { cat "$BBW/worker.log"; exit 1; }

start_worker "$WORK/standalone" --concurrency=2 --platform=bench=kiln-standalone --log_level=warn
STANDALONE_PORT=$GRPC_PORT

server_for() {  # server_for PLATFORM: the standalone worker, or the cluster's frontend
  if [[ "$1" == kiln-standalone ]]; then echo "127.0.0.1:$STANDALONE_PORT"; else echo "127.0.0.1:$FRONTEND_PORT"; fi
}
load() {  # load PLATFORM N CONCURRENCY
  /usr/bin/python3 "$ROOT/bench/cluster_load.py" "$(server_for "$1")" "$@"
}
rounds() {  # rounds LOAD_FUNCTION FILE: every pool at c=1 and c=8, ROUNDS times, interleaved
  local round platform
  for round in $(seq "$ROUNDS"); do
    for platform in kiln buildbarn kiln-standalone; do
      "$1" "$platform" "$N1" 1 | tee -a "$2"
      "$1" "$platform" "$N8" 8 | tee -a "$2"
    done
  done
}
# Warm-up: first connections, first actions, page cache.
for platform in kiln buildbarn kiln-standalone; do load "$platform" 20 2 > /dev/null; done
RESULTS=$WORK/results.jsonl
rounds load "$RESULTS"

/usr/bin/python3 - "$RESULTS" <<'PY'
import json, statistics, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
def med(platform, c, key):
    return statistics.median(r[key] for r in rows if r["platform"] == platform and r["concurrency"] == c)
print()
print("| | c | Execute p50 ms | p99 ms | actions/s | in worker ms | fetch ms | exec ms | upload ms |")
print("|---|---|---|---|---|---|---|---|---|")
for c in (1, 8):
    for p in ("kiln", "buildbarn", "kiln-standalone"):
        print("| %s | %d | %.1f | %.1f | %.0f | %.1f | %.1f | %.1f | %.1f |" % (
            p, c, med(p, c, "p50_ms"), med(p, c, "p99_ms"), med(p, c, "actions_per_s"), med(p, c, "worker_ms"),
            med(p, c, "fetch_ms"), med(p, c, "exec_ms"), med(p, c, "upload_ms")))
for c in (1, 8):
    print("c=%d: Kiln/Buildbarn p50 %.2f, p99 %.2f, throughput %.2f" % (
        c, med("kiln", c, "p50_ms") / med("buildbarn", c, "p50_ms"),
        med("kiln", c, "p99_ms") / med("buildbarn", c, "p99_ms"),
        med("kiln", c, "actions_per_s") / med("buildbarn", c, "actions_per_s")))
for c in (1, 8):
    print("c=%d: Kiln standalone/Buildbarn p50 %.2f, p99 %.2f, throughput %.2f" % (
        c, med("kiln-standalone", c, "p50_ms") / med("buildbarn", c, "p50_ms"),
        med("kiln-standalone", c, "p99_ms") / med("buildbarn", c, "p99_ms"),
        med("kiln-standalone", c, "actions_per_s") / med("buildbarn", c, "actions_per_s")))
PY

# The same /bin/true load from exec_bench, a C++ client: its own share of
# each call is smaller than the Python client's, which both sides pay and
# which thus pulls their ratio towards 1. It reports each run's overhead,
# Execute p50 less a bare /bin/true spawned by the client in the same run.
OVERHEAD=$WORK/overhead.txt
exec_load() {  # exec_load PLATFORM N CONCURRENCY: "PLATFORM C p50 overhead_p50 actions/s"
  local out
  out=$("$BIN_DIR/exec_bench" --server="$(server_for "$1")" --platform="bench=$1" --mode=overhead \
    --actions="$2" --clients="$3")
  echo "$1 $3 $(sed -n 's/^Execute-to-result  p50 \([0-9.]*\).*/\1/p' <<< "$out")" \
    "$(sed -n 's/^overhead (minus bare \/bin\/true)  p50 \([0-9.]*\).*/\1/p' <<< "$out")" \
    "$(sed -n 's/^throughput \([0-9.]*\).*/\1/p' <<< "$out")"
}
rounds exec_load "$OVERHEAD"
/usr/bin/python3 - "$OVERHEAD" <<'PY'
import statistics, sys
rows = [line.split() for line in open(sys.argv[1])]
def med(platform, c, column):
    return statistics.median(float(r[column]) for r in rows if r[0] == platform and r[1] == str(c))
print()
print("exec_bench (C++ client), medians over the rounds:")
print("| | c | Execute p50 ms | overhead p50 ms (less bare /bin/true) | actions/s |")
print("|---|---|---|---|---|")
for c in (1, 8):
    for p in ("kiln", "buildbarn", "kiln-standalone"):
        print("| %s | %d | %.2f | %.2f | %.0f |" % (p, c, med(p, c, 2), med(p, c, 3), med(p, c, 4)))
for c in (1, 8):
    for p in ("kiln", "kiln-standalone"):
        print("c=%d: %s/Buildbarn overhead p50 %.2f, throughput %.2f" % (
            c, p, med(p, c, 3) / med("buildbarn", c, 3), med(p, c, 4) / med("buildbarn", c, 4)))
PY

[[ "$GENRULES" -gt 0 ]] || exit 0

# The Bazel build: GENRULES independent genrules, each a distinct action
# (--action_env salts every action's key per round, and the remote cache is
# not consulted), sent through the frontend with the pool's platform.
mkdir -p "$WORK/ws/gen"
touch "$WORK/ws/WORKSPACE"
for i in $(seq 1 "$GENRULES"); do
  echo "genrule(name = \"g$i\", outs = [\"g$i.txt\"], cmd = \"echo $i > \$@\")"
done > "$WORK/ws/gen/BUILD"
cd "$WORK/ws"
bz() { bazel --output_user_root="$WORK/bazel-root" "$@"; }
bz info > /dev/null 2>&1  # the Bazel server starts outside the timings
bz build --nobuild //gen:all > /dev/null 2>&1
timed_build() {  # timed_build PLATFORM ROUND: seconds of one clean remote build
  local start end
  bz clean > /dev/null 2>&1
  start=$(date +%s.%N)
  bz build --jobs=8 --remote_executor="grpc://127.0.0.1:$FRONTEND_PORT" --remote_timeout=120 \
    --noremote_accept_cached --remote_default_exec_properties="bench=$1" \
    --action_env=KILN_BENCH_ROUND="$2" //gen:all > "$WORK/build.log" 2>&1 || { cat "$WORK/build.log" >&2; exit 1; }
  end=$(date +%s.%N)
  grep -q "$GENRULES remote" "$WORK/build.log" || { grep "processes:" "$WORK/build.log" >&2; exit 1; }
  echo "$end - $start" | bc
}
# An untimed build per pool first (the JVM compiles its remote code paths on
# first use), then rounds alternating the pools.
timed_build kiln warmup > /dev/null
timed_build buildbarn warmup > /dev/null
BAZEL=$WORK/bazel.txt
for round in $(seq "$ROUNDS"); do
  for platform in kiln buildbarn; do
    echo "$platform $(timed_build "$platform" "round$round")" | tee -a "$BAZEL"
  done
done
/usr/bin/python3 - "$BAZEL" "$GENRULES" <<'PY'
import statistics, sys
rows = [line.split() for line in open(sys.argv[1])]
kiln = statistics.median(float(s) for p, s in rows if p == "kiln")
bb = statistics.median(float(s) for p, s in rows if p == "buildbarn")
print()
print("Bazel, %s genrules, --jobs=8, 2 slots per pool: Kiln %.2f s, Buildbarn %.2f s, Kiln/Buildbarn %.2f (goal <= 0.8)"
      % (sys.argv[2], kiln, bb, kiln / bb))
PY
