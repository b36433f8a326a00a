#!/usr/bin/env bash
# The README's Python example (client/examples/remote_run.py, grpcio only)
# runs a command on a fresh worker, prints its output and passes its exit code.
set -euo pipefail
BIN_DIR=$(cd "${1:?usage: $0 BIN_DIR}" && pwd)
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d /tmp/kiln-python-example.XXXXXX)
source "$ROOT/tests/start_worker.sh"
trap 'stop_worker; rm -rf "$WORK"' EXIT
start_worker "$WORK/w" --metrics_listen= --concurrency=1 || { echo "FAIL: worker did not start"; exit 1; }
PORT=$GRPC_PORT
set +e
OUTPUT=$(TMPDIR="$WORK" /usr/bin/python3 "$ROOT/client/examples/remote_run.py" "127.0.0.1:$PORT" \
  sh -c 'echo hello from $(hostname); exit 3')
CODE=$?
set -e
[[ "$OUTPUT" == "hello from localhost" ]] || { echo "FAIL: printed '$OUTPUT'"; exit 1; }
[[ $CODE -eq 3 ]] || { echo "FAIL: exit code $CODE, expected 3"; exit 1; }
echo "PASS: the Python example ran a command remotely"
