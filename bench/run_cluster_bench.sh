#!/usr/bin/env bash
# Kiln workers against Buildbarn's own bb_worker + bb_runner, behind the same
# bb_storage + bb_scheduler, in one run: per-action overhead of /bin/true
# (p50/p99 of the client's Execute call) and throughput at concurrency 1 and
# 8, rounds interleaved so both see the same machine. Both pools run at the
# same time with 2 slots each (two Kiln workers of one slot; one bb_worker
# with a runner of concurrency 2), told apart by a platform property
# (bench=kiln / bench=buildbarn) that the scheduler routes on.
#
#   bench/run_cluster_bench.sh [ROUNDS] [N_C1] [N_C8]     (after ./dev.sh build)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN_DIR=$ROOT/build/bin
ROUNDS=${1:-5}
N1=${2:-100}
N8=${3:-200}
WORK=$(mktemp -d /tmp/kiln-cluster-bench.XXXXXX)
source "$ROOT/tests/buildbarn/cluster.sh"
RUNNER_PID=""
BBWORKER_PID=""
cleanup() {
  local pid
  for pid in $BBWORKER_PID $RUNNER_PID; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
  stop_all_kiln
  stop_buildbarn
  rm -rf "$WORK"
}
trap cleanup EXIT

start_buildbarn "$WORK/bb"
start_kiln k1 "$WORK/k1" --concurrency=1 --platform=bench=kiln
start_kiln k2 "$WORK/k2" --concurrency=1 --platform=bench=kiln

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

LOAD=("/usr/bin/python3" "$ROOT/bench/cluster_load.py" "127.0.0.1:$FRONTEND_PORT")
# Warm-up: first connections, first actions, page cache.
"${LOAD[@]}" kiln 20 2 > /dev/null
"${LOAD[@]}" buildbarn 20 2 > /dev/null
RESULTS=$WORK/results.jsonl
for round in $(seq "$ROUNDS"); do
  for platform in kiln buildbarn; do
    "${LOAD[@]}" "$platform" "$N1" 1 | tee -a "$RESULTS"
    "${LOAD[@]}" "$platform" "$N8" 8 | tee -a "$RESULTS"
  done
done

/usr/bin/python3 - "$RESULTS" <<'PY'
import json, statistics, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
def med(platform, c, key):
    return statistics.median(r[key] for r in rows if r["platform"] == platform and r["concurrency"] == c)
print()
print("| | c | Execute p50 ms | p99 ms | actions/s | in worker ms | fetch ms | exec ms | upload ms |")
print("|---|---|---|---|---|---|---|---|---|")
for c in (1, 8):
    for p in ("kiln", "buildbarn"):
        print("| %s | %d | %.1f | %.1f | %.0f | %.1f | %.1f | %.1f | %.1f |" % (
            p, c, med(p, c, "p50_ms"), med(p, c, "p99_ms"), med(p, c, "actions_per_s"), med(p, c, "worker_ms"),
            med(p, c, "fetch_ms"), med(p, c, "exec_ms"), med(p, c, "upload_ms")))
for c in (1, 8):
    print("c=%d: Kiln/Buildbarn p50 %.2f, p99 %.2f, throughput %.2f" % (
        c, med("kiln", c, "p50_ms") / med("buildbarn", c, "p50_ms"),
        med("kiln", c, "p99_ms") / med("buildbarn", c, "p99_ms"),
        med("kiln", c, "actions_per_s") / med("buildbarn", c, "actions_per_s")))
PY
