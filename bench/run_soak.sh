#!/usr/bin/env bash
# The soak (issue 13): ACTIONS mixed actions (default 10,000) from 4 client
# processes x 16 threads (concurrency 64) against one kiln-worker with 8
# slots, every answer checked; fds, threads, RSS, exec dirs, mounts, cgroups
# and build-uid processes back within bounds of the post-warm-up baseline;
# the worker's action counters equal what the clients saw. Writes soak.csv,
# soak.json and soak.png (throughput and RSS over time) to OUT_DIR
# (default build/soak). As root:
#   bench/run_soak.sh [ACTIONS] [soak.py flags, e.g. --processes=4 --threads=16 --slots=8]
#   KILN_BIN_DIR=/path/to/bin OUT_DIR=/tmp/soak bench/run_soak.sh 2000
# The short version runs in the default suite: ctest -R stress_soak_short_test.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
ACTIONS=${1:-10000}
shift || true
BIN_DIR=${KILN_BIN_DIR:-$ROOT/build/bin}
OUT_DIR=${OUT_DIR:-$ROOT/build/soak}
echo "kiln $(git -C "$ROOT" rev-parse --short HEAD) on $(nproc) cores, kernel $(uname -r), $(date -u +%FT%TZ)"
echo "command: bench/run_soak.sh $ACTIONS $*"
exec /usr/bin/python3 "$ROOT/tests/stress/soak.py" "$BIN_DIR" --actions="$ACTIONS" --out="$OUT_DIR" "$@"
