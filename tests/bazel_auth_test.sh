#!/usr/bin/env bash
# Bazel 4.2.3 as a client of an authenticated kiln-worker: a bearer token
# sent with --remote_header, genrules run remotely; the same build fails
# cleanly with UNAUTHENTICATED without the token or with a wrong one, and a
# plaintext client cannot use the TLS listener.
#
# Not grpcs://: Debian's Bazel 4.2.3 cannot speak TLS at all (it crashes with
# "Failed to init TLS infrastructure: JDK provider does not support ALPN
# protocol", its grpc-java has no ALPN on Debian's JDK 17), so the token
# travels in plaintext here, on loopback. TLS is tested in auth_test.cc.
set -euo pipefail

BIN_DIR=$(cd "${1:?usage: $0 BIN_DIR}" && pwd)
WORK=$(mktemp -d /tmp/kiln-bazel-auth.XXXXXX)
source "$(dirname "$0")/start_worker.sh"
cleanup() {
  stop_worker
  chmod -R u+w "$WORK" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; [[ -f "$WORK/w/worker.log" ]] && tail -20 "$WORK/w/worker.log" >&2; exit 1; }

cd "$WORK"
ec=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)
openssl req -x509 "${ec[@]}" -keyout ca.key -out ca.pem -days 2 -subj /CN=kiln-test-ca 2>/dev/null
openssl req "${ec[@]}" -keyout server.key -out server.csr -subj /CN=localhost 2>/dev/null
echo "subjectAltName=DNS:localhost,IP:127.0.0.1" > server.ext
openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem -days 2 \
  -extfile server.ext 2>/dev/null
TOKEN=$(openssl rand -hex 32)
cat > principals.json <<JSON
{"principals": [{"name": "bazel", "token_sha256": "$(printf %s "$TOKEN" | sha256sum | cut -d' ' -f1)",
  "grants": [{"permissions": ["cas-read", "cas-write", "ac-read", "execute"]}]}]}
JSON

start_worker "$WORK/w" --metrics_listen= --concurrency=2 --token_file="$WORK/principals.json" \
  || fail "kiln-worker did not start"
PORT=$GRPC_PORT

mkdir -p ws/pkg && cd ws && touch WORKSPACE
cat > pkg/BUILD <<'BUILD'
genrule(name = "a", outs = ["a.txt"], cmd = "echo alpha > $@")
genrule(name = "b", srcs = [":a"], outs = ["b.txt"], cmd = "cat $< | sha256sum > $@")
BUILD
bz() { bazel --batch --output_user_root="$WORK/bazel-root" "$@"; }
REMOTE=(--remote_executor="grpc://127.0.0.1:$PORT" --remote_timeout=60)

echo "== with the token"
bz build "${REMOTE[@]}" \
  --remote_header="Authorization=Bearer $TOKEN" //pkg:all > "$WORK/ok.log" 2>&1 \
  || { cat "$WORK/ok.log"; fail "the authenticated build failed"; }
grep "processes:" "$WORK/ok.log"
grep -q "remote" <(grep "processes:" "$WORK/ok.log") || fail "nothing ran remotely"
[[ "$(cat bazel-bin/pkg/a.txt)" == "alpha" ]] || fail "a.txt is wrong"

echo "== without the token"
bz clean 2>/dev/null
if bz build "${REMOTE[@]}" //pkg:all > "$WORK/notoken.log" 2>&1; then
  fail "a build without the token succeeded"
fi
grep -q "UNAUTHENTICATED" "$WORK/notoken.log" || { cat "$WORK/notoken.log"; fail "no UNAUTHENTICATED in Bazel's output"; }

echo "== with a wrong token"
if bz build "${REMOTE[@]}" \
    --remote_header="Authorization=Bearer not-$TOKEN" //pkg:all > "$WORK/wrong.log" 2>&1; then
  fail "a build with a wrong token succeeded"
fi
grep -q "UNAUTHENTICATED" "$WORK/wrong.log" || { cat "$WORK/wrong.log"; fail "no UNAUTHENTICATED for a wrong token"; }
grep -q "not-$TOKEN" "$WORK/w/worker.log" && fail "the worker logged the token"

echo "== plaintext grpc:// against a TLS listener"
stop_worker
start_worker "$WORK/tls" --metrics_listen= --concurrency=2 --tls_cert="$WORK/server.pem" \
  --tls_key="$WORK/server.key" --token_file="$WORK/principals.json" || fail "the TLS worker did not start"
if bz build --remote_executor="grpc://127.0.0.1:$GRPC_PORT" --remote_timeout=20 \
    --remote_header="Authorization=Bearer $TOKEN" //pkg:all > "$WORK/plain.log" 2>&1; then
  fail "a plaintext build succeeded against the TLS listener"
fi
echo "PASS: Bazel built remotely with a token, and failed cleanly without it"
