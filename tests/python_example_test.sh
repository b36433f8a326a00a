#!/usr/bin/env bash
# The README's Python example (client/examples/remote_run.py, grpcio only)
# runs a command on a fresh worker, prints its output and passes its exit code.
set -euo pipefail
BIN_DIR=$(cd "${1:?usage: $0 BIN_DIR}" && pwd)
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d /tmp/kiln-python-example.XXXXXX)
WORKER=""
trap '[[ -n "$WORKER" ]] && { kill $WORKER; wait $WORKER || true; }; rm -rf "$WORK"' EXIT
: > "$WORK/out"
"$BIN_DIR/kiln-worker" --listen=127.0.0.1:0 --metrics_listen= --state_dir="$WORK/state" \
  --concurrency=1 > "$WORK/out" 2> "$WORK/log" &
WORKER=$!
for _ in $(seq 100); do
  PORT=$(sed -n 's/^kiln-worker listening grpc_port=\([0-9]*\).*/\1/p' "$WORK/out")
  [[ -n "$PORT" ]] && break
  sleep 0.1
done
set +e
OUTPUT=$(TMPDIR="$WORK" /usr/bin/python3 "$ROOT/client/examples/remote_run.py" "127.0.0.1:$PORT" \
  sh -c 'echo hello from $(hostname); exit 3')
CODE=$?
set -e
[[ "$OUTPUT" == "hello from localhost" ]] || { echo "FAIL: printed '$OUTPUT'"; exit 1; }
[[ $CODE -eq 3 ]] || { echo "FAIL: exit code $CODE, expected 3"; exit 1; }
echo "PASS: the Python example ran a command remotely"
