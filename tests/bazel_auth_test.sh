#!/usr/bin/env bash
# Bazel 4.2.3 as a client of an authenticated kiln-worker, in three setups,
# each built remotely and each failing cleanly (no crash, a readable error)
# without its credential:
#   1. grpcs:// with server TLS only (--tls_certificate);
#   2. a client certificate (--tls_client_certificate/--tls_client_key);
#   3. a bearer token (--remote_header) over TLS; a wrong token is not logged.
#
# Debian's Bazel 4.2.3 cannot speak TLS out of the box: its bundled netty
# finds no ALPN in the JDK provider ("JDK provider does not support ALPN
# protocol") and its OpenSSL provider needs netty-tcnative's native library
# under the name netty_tcnative, while Debian's libnetty-tcnative-jni ships it
# as libnetty-tcnative.so. A copy under the expected name, on the server
# JVM's java.library.path, is enough (README "Pointing Bazel at Kiln").
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

# Bazel's netty loads libnetty_tcnative.so and checks the name it was loaded
# under, so a copy (not a symlink) under that name.
mkdir -p "$WORK/jni"
cp /usr/lib/x86_64-linux-gnu/jni/libnetty-tcnative.so "$WORK/jni/libnetty_tcnative.so"
ec_client() {  # a client certificate $1.pem/$1.key (PKCS#8, as netty wants) signed by the CA
  openssl req "${ec[@]}" -keyout "$1.key" -out "$1.csr" -subj "/CN=$1" 2>/dev/null
  openssl x509 -req -in "$1.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -out "$1.pem" -days 2 2>/dev/null
}
ec_client alice

mkdir -p ws/pkg && cd ws && touch WORKSPACE
cat > pkg/BUILD <<'BUILD'
genrule(name = "a", outs = ["a.txt"], cmd = "echo alpha > $@")
genrule(name = "b", srcs = [":a"], outs = ["b.txt"], cmd = "cat $< | sha256sum > $@")
BUILD
bz() { bazel --batch --output_user_root="$WORK/bazel-root" --host_jvm_args=-Djava.library.path="$WORK/jni" "$@"; }

# expect_remote_build NAME FLAGS...: a clean build that runs remotely.
expect_remote_build() {
  local name=$1
  shift
  bz clean 2>/dev/null
  bz build --remote_executor="grpcs://localhost:$GRPC_PORT" --remote_timeout=60 "$@" //pkg:all \
    > "$WORK/$name.log" 2>&1 || { cat "$WORK/$name.log"; fail "$name: the build failed"; }
  grep -q "remote" <(grep "processes:" "$WORK/$name.log") || { cat "$WORK/$name.log"; fail "$name: nothing ran remotely"; }
  [[ "$(cat bazel-bin/pkg/a.txt)" == "alpha" ]] || fail "$name: a.txt is wrong"
  echo "  ok: $name built remotely"
}
# expect_refused NAME PATTERN FLAGS...: the build fails, without crashing
# Bazel (exit 37), with PATTERN in its output.
expect_refused() {
  local name=$1 pattern=$2 code=0
  shift 2
  bz clean 2>/dev/null
  bz build --remote_executor="grpcs://localhost:$GRPC_PORT" --remote_timeout=20 "$@" //pkg:all \
    > "$WORK/$name.log" 2>&1 || code=$?
  [[ $code -ne 0 ]] || fail "$name: the build succeeded"
  [[ $code -ne 37 ]] || { cat "$WORK/$name.log"; fail "$name: Bazel crashed"; }
  grep -q -E "$pattern" "$WORK/$name.log" || { cat "$WORK/$name.log"; fail "$name: no \"$pattern\" in Bazel's output"; }
  echo "  ok: $name refused (exit $code)"
}
TLS_FLAGS=(--tls_cert="$WORK/server.pem" --tls_key="$WORK/server.key")

echo "== 1. server TLS only"
start_worker "$WORK/tls" --metrics_listen= --concurrency=2 "${TLS_FLAGS[@]}" || fail "kiln-worker did not start"
expect_remote_build tls-only --tls_certificate="$WORK/ca.pem"
expect_refused tls-untrusted "Failed to query remote execution capabilities|UNAVAILABLE"
stop_worker

echo "== 2. client certificates"
start_worker "$WORK/mtls" --metrics_listen= --concurrency=2 "${TLS_FLAGS[@]}" --tls_client_ca="$WORK/ca.pem" \
  || fail "kiln-worker did not start"
expect_remote_build client-cert --tls_certificate="$WORK/ca.pem" \
  --tls_client_certificate="$WORK/alice.pem" --tls_client_key="$WORK/alice.key"
expect_refused no-client-cert "Failed to query remote execution capabilities|UNAVAILABLE" --tls_certificate="$WORK/ca.pem"
stop_worker

echo "== 3. bearer token over TLS"
start_worker "$WORK/w" --metrics_listen= --concurrency=2 "${TLS_FLAGS[@]}" --token_file="$WORK/principals.json" \
  || fail "kiln-worker did not start"
expect_remote_build token --tls_certificate="$WORK/ca.pem" --remote_header="Authorization=Bearer $TOKEN"
expect_refused no-token "UNAUTHENTICATED" --tls_certificate="$WORK/ca.pem"
expect_refused wrong-token "UNAUTHENTICATED" --tls_certificate="$WORK/ca.pem" \
  --remote_header="Authorization=Bearer not-$TOKEN"
grep -q "not-$TOKEN" "$WORK/w/worker.log" && fail "the worker logged the token"

echo "== plaintext grpc:// against the TLS listener"
bz clean 2>/dev/null
if bz build --remote_executor="grpc://127.0.0.1:$GRPC_PORT" --remote_timeout=20 \
    --remote_header="Authorization=Bearer $TOKEN" //pkg:all > "$WORK/plain.log" 2>&1; then
  fail "a plaintext build succeeded against the TLS listener"
fi
echo "PASS: Bazel built remotely over TLS, with a client certificate and with a token, and failed cleanly without each"
