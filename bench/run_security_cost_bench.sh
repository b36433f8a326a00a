#!/usr/bin/env bash
# What the "No way out" defences cost: per-action overhead and staging of a
# 20,000-file input root, for two builds of Kiln side by side in one run
# (runs interleaved, so that machine noise hits both alike), plus staging of
# the new build run unprivileged (private copies instead of hardlinks).
#   bench/run_security_cost_bench.sh BEFORE_BIN_DIR AFTER_BIN_DIR [ROUNDS]
# e.g. with the last commit before the defences built in a worktree:
#   git worktree add /tmp/kiln-before fc3bc12 && (cd /tmp/kiln-before && ./dev.sh build)
#   bench/run_security_cost_bench.sh /tmp/kiln-before/build/bin build/bin
set -euo pipefail
BEFORE=$(cd "${1:?usage: $0 BEFORE_BIN_DIR AFTER_BIN_DIR [ROUNDS]}" && pwd)
AFTER=$(cd "${2:?usage: $0 BEFORE_BIN_DIR AFTER_BIN_DIR [ROUNDS]}" && pwd)
ROUNDS=${3:-2}
STATE=$(mktemp -d "${KILN_BENCH_DIR:-/var/tmp}/kiln-security-bench.XXXXXX")
chmod 755 "$STATE"
WORKER=""
start_worker() {  # BIN_DIR NAME [runuser user]
  local bin=$1 name=$2
  shift 2
  mkdir -p "$STATE/$name"
  : > "$STATE/$name/out"
  [[ $# -gt 0 ]] && chown "$3" "$STATE/$name"  # runuser -u USER --
  "$@" "$bin/kiln-worker" --listen=127.0.0.1:0 --metrics_listen= --state_dir="$STATE/$name/state" \
    --concurrency=1 --log_level=warn > "$STATE/$name/out" 2> "$STATE/$name/log" &
  WORKER=$!
  for _ in $(seq 100); do
    PORT=$(sed -n 's/^kiln-worker listening grpc_port=\([0-9]*\).*/\1/p' "$STATE/$name/out")
    [[ -n "$PORT" ]] && return
    sleep 0.1
  done
  cat "$STATE/$name/log" >&2; echo "worker did not start" >&2; exit 1
}
stop_worker() { kill "$WORKER"; wait "$WORKER" || true; WORKER=""; }
trap '[[ -n "$WORKER" ]] && kill $WORKER; rm -rf "$STATE"' EXIT
echo "before: $BEFORE   after: $AFTER   $(nproc) cores, kernel $(uname -r)"
for round in $(seq "$ROUNDS"); do
  for side in before after; do
    bin=$BEFORE; [[ $side == after ]] && bin=$AFTER
    echo "== round $round, $side: per-action overhead, concurrency 1"
    start_worker "$bin" "$side-$round-o"
    "$AFTER/exec_bench" --server="127.0.0.1:$PORT" --mode=overhead --actions=200 --clients=1
    stop_worker
    echo "== round $round, $side: staging a 20,000-file input root (root: hardlinks)"
    start_worker "$bin" "$side-$round-s"
    "$AFTER/exec_bench" --server="127.0.0.1:$PORT" --mode=staging --files=20000 --scratch="$STATE"
    stop_worker
  done
  echo "== round $round, after, unprivileged (user nobody: private copies)"
  start_worker "$AFTER" "unpriv-$round" runuser -u nobody --
  "$AFTER/exec_bench" --server="127.0.0.1:$PORT" --mode=staging --files=20000 --scratch="$STATE"
  stop_worker
done
