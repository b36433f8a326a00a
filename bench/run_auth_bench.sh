#!/usr/bin/env bash
# What TLS and credential checks cost per call, in the same run as plaintext:
#   bench/run_auth_bench.sh [ROUNDS]      (after ./dev.sh build)
# Starts one worker per mode (plaintext; plaintext + token; TLS; TLS + token;
# TLS + RS256 JWT), all on loopback with the same flags otherwise, then runs
# build/bin/auth_bench against each mode in turn, ROUNDS times (default 5)
# interleaved so that machine noise hits every mode alike. Prints the median
# over rounds of each p50 and its ratio to plaintext. Results: docs/benchmarks.md.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN_DIR="$ROOT/build/bin"
ROUNDS=${1:-5}
WORK=$(mktemp -d "${KILN_BENCH_DIR:-/tmp}/kiln-auth-bench.XXXXXX")
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

# Credentials, made as docs/operations.md says, plus a JWT signing key.
"$ROOT/deploy/make-credentials.sh" "$WORK/creds" localhost > /dev/null
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$WORK/jwt.key" 2> /dev/null
openssl pkey -in "$WORK/jwt.key" -pubout -out "$WORK/jwt.pub"
b64url() { openssl base64 -A | tr '+/' '-_' | tr -d '='; }
header=$(printf '{"alg":"RS256","typ":"JWT"}' | b64url)
payload=$(printf '{"sub":"ci","aud":"kiln-bench","exp":%d}' $(( $(date +%s) + 3600 )) | b64url)
signature=$(printf '%s.%s' "$header" "$payload" | openssl dgst -sha256 -sign "$WORK/jwt.key" -binary | b64url)
JWT="$header.$payload.$signature"
TOKEN=$(cat "$WORK/creds/ci.token")
TLS=(--tls_cert="$WORK/creds/tls.crt" --tls_key="$WORK/creds/tls.key")
# The JWT principal "ci" has the same grants as the token's.
/usr/bin/python3 - "$WORK/creds/principals.json" "$WORK/jwt-principals.json" <<'PY'
import json, sys
table = json.load(open(sys.argv[1]))
entry = dict(table["principals"][0]); entry.pop("token_sha256")
json.dump({"principals": [entry]}, open(sys.argv[2], "w"))
PY

declare -A PORT CLIENT
start() {  # start MODE CLIENT_FLAGS -- WORKER_FLAGS...
  local mode=$1 client=$2
  shift 3
  mkdir -p "$WORK/$mode"
  "$BIN_DIR/kiln-worker" --listen=127.0.0.1:0 --metrics_listen= --state_dir="$WORK/$mode/state" \
    --concurrency=2 "$@" > "$WORK/$mode/out" 2> "$WORK/$mode/log" &
  PIDS+=($!)
  for _ in $(seq 100); do
    PORT[$mode]=$(sed -n 's/^kiln-worker listening grpc_port=\([0-9]*\).*/\1/p' "$WORK/$mode/out")
    [[ -n "${PORT[$mode]}" ]] && break
    sleep 0.1
  done
  [[ -n "${PORT[$mode]}" ]] || { cat "$WORK/$mode/log" >&2; exit 1; }
  CLIENT[$mode]=$client
}
MODES=(plaintext token tls tls+token tls+jwt)
start plaintext "" --
start token "--token=$TOKEN" -- --token_file="$WORK/creds/principals.json"
start tls "--tls_ca=$WORK/creds/ca.crt" -- "${TLS[@]}"
start tls+token "--tls_ca=$WORK/creds/ca.crt --token=$TOKEN" -- "${TLS[@]}" --token_file="$WORK/creds/principals.json"
start tls+jwt "--tls_ca=$WORK/creds/ca.crt --token=$JWT" -- "${TLS[@]}" \
  --token_file="$WORK/jwt-principals.json" --jwt_public_keys="$WORK/jwt.pub" --jwt_audience=kiln-bench

for round in $(seq "$ROUNDS"); do
  for mode in "${MODES[@]}"; do
    # shellcheck disable=SC2086
    line=$("$BIN_DIR/auth_bench" --server="localhost:${PORT[$mode]}" ${CLIENT[$mode]} --salt="$round")
    echo "$mode $line" >> "$WORK/results"
  done
  echo "round $round of $ROUNDS done" >&2
done

/usr/bin/python3 - "$WORK/results" <<'PY'
import collections, statistics, sys
runs = collections.defaultdict(lambda: collections.defaultdict(list))
for line in open(sys.argv[1]):
    mode, *fields = line.split()
    for field in fields:
        name, value = field.split("=")
        runs[mode][name].append(float(value))
names = ["find_missing_1000", "execute_cache_hit", "execute_true"]
base = {n: statistics.median(runs["plaintext"][n]) for n in names}
print("%-10s" % "mode" + "".join("%30s" % n for n in names))
for mode in ["plaintext", "token", "tls", "tls+token", "tls+jwt"]:
    cells = []
    for n in names:
        m = statistics.median(runs[mode][n])
        cells.append("%8.3f ms (%5.2fx)" % (m, m / base[n]))
    print("%-10s" % mode + "".join("%30s" % c for c in cells))
PY
