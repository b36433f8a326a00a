#!/usr/bin/env bash
# A real Prometheus (Debian's package) on loopback scrapes a worker that runs
# a few actions, one of which leaves three orphans behind; Prometheus's HTTP
# API must then show the orphan count, the stage histograms and the outcome
# counters with the right values.
set -euo pipefail
BIN_DIR=$(cd "${1:?usage: $0 BIN_DIR}" && pwd)
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d /tmp/kiln-prometheus.XXXXXX)
source "$ROOT/tests/start_worker.sh"
PROMETHEUS_PID=""
cleanup() {
  stop_worker
  if [[ -n "$PROMETHEUS_PID" ]]; then kill "$PROMETHEUS_PID" 2>/dev/null || true; wait "$PROMETHEUS_PID" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; [[ -f "$WORK/prometheus.log" ]] && tail -5 "$WORK/prometheus.log" >&2; exit 1; }

start_worker "$WORK/w" --concurrency=2 --kill_grace=0.2s || fail "worker did not start"
PROM_PORT=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat > "$WORK/prometheus.yml" <<YML
global:
  scrape_interval: 1s
scrape_configs:
  - job_name: kiln-worker
    static_configs:
      - targets: ["127.0.0.1:$METRICS_PORT"]
YML
prometheus --config.file="$WORK/prometheus.yml" --storage.tsdb.path="$WORK/tsdb" \
  --web.listen-address="127.0.0.1:$PROM_PORT" > "$WORK/prometheus.log" 2>&1 &
PROMETHEUS_PID=$!

mkdir -p "$WORK/in"
run() { "$BIN_DIR/kiln" run --server="127.0.0.1:$GRPC_PORT" --input_root="$WORK/in" --env=PATH=/usr/bin:/bin "$@" > /dev/null 2>&1 || true; }
# Each (true &) leaves a process to PID 1 whether it exits before or after its
# subshell; the final sleep gives PID 1 time to reap all three.
run -- sh -c '(true &); (true &); (true &); sleep 1'                     # success, 3 orphans
run -- sh -c 'echo ok'                                                   # success
run -- sh -c 'exit 3'                                                    # nonzero_exit
run --timeout=1s -- sh -c 'exec sleep 30'                                # timeout, no child to orphan
run -- sh -c 'echo ok'                                                   # cache hit

query() {
  /usr/bin/python3 - "$PROM_PORT" "$1" <<'PY'
import json, sys, urllib.parse, urllib.request
url = "http://127.0.0.1:%s/api/v1/query?query=%s" % (sys.argv[1], urllib.parse.quote(sys.argv[2]))
result = json.load(urllib.request.urlopen(url))["data"]["result"]
print(result[0]["value"][1] if result else "none")
PY
}
expect() {  # expect QUERY VALUE: waits for scrapes to catch up
  local got=""
  for _ in $(seq 40); do
    got=$(query "$1" 2>/dev/null || echo "unreachable")
    [[ "$got" == "$2" ]] && { echo "  $1 = $got"; return 0; }
    sleep 0.5
  done
  fail "$1 is $got, expected $2"
}
echo "== Prometheus on :$PROM_PORT scraping the worker's :$METRICS_PORT"
expect 'kiln_sandbox_orphans_reaped_total' 3
expect 'kiln_sandbox_orphans_per_action_count' 4
expect 'kiln_sandbox_orphans_per_action_bucket{le="2"}' 3
expect 'kiln_actions_total{outcome="success"}' 2
expect 'kiln_actions_total{outcome="nonzero_exit"}' 1
expect 'kiln_actions_total{outcome="timeout",code="DEADLINE_EXCEEDED"}' 1
expect 'kiln_actions_total{outcome="cache_hit"}' 1
expect 'sum(kiln_action_stage_duration_seconds_count{stage="execution"})' 4
expect 'sum(kiln_action_stage_duration_seconds_count{stage="total"})' 4
expect 'sum(kiln_action_stage_duration_seconds_count{stage="sandbox_setup"})' 4
expect 'kiln_action_stage_duration_seconds_bucket{stage="execution",outcome="timeout",le="0.5"}' 0
expect 'kiln_action_stage_duration_seconds_bucket{stage="execution",outcome="timeout",le="+Inf"}' 1
expect 'kiln_execution_slots' 2
expect 'up{job="kiln-worker"}' 1
echo "PASS: Prometheus sees the worker's reaping, stage and outcome metrics"
