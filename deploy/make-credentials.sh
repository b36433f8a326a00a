#!/usr/bin/env bash
# Makes what a Kiln worker exposed beyond loopback needs, with the openssl CLI:
#
#   deploy/make-credentials.sh OUT_DIR SERVER_NAME [SERVER_NAME...]
#
#   OUT_DIR/ca.crt, ca.key    a private CA (clients trust ca.crt; keep ca.key
#                             offline once the certificates are made)
#   OUT_DIR/tls.crt, tls.key  the worker's certificate for the SERVER_NAMEs
#                             (DNS names or IP addresses; localhost and
#                             127.0.0.1 are always added, for probes)
#   OUT_DIR/ci.token          a random bearer token for the principal "ci":
#                             hand it to clients (kiln --token_file, Bazel
#                             --remote_header=Authorization="Bearer $(cat ci.token)")
#   OUT_DIR/principals.json   the worker's --token_file: "ci" may read and
#                             write the CAS, read the action cache and execute
#                             on every instance; it holds the token's SHA-256,
#                             never the token
#
# The names match a Kubernetes TLS secret (tls.crt, tls.key, ca.crt). Re-run
# with a new OUT_DIR and copy the files over the old ones to rotate: the
# worker picks them up without a restart. docs/operations.md has the rest.
set -euo pipefail
OUT=${1:?usage: $0 OUT_DIR SERVER_NAME [SERVER_NAME...]}
shift
[[ $# -ge 1 ]] || { echo "usage: $0 OUT_DIR SERVER_NAME [SERVER_NAME...]" >&2; exit 64; }
mkdir -p "$OUT"
chmod 0700 "$OUT"
umask 077

sans="DNS:localhost,IP:127.0.0.1"
for name in "$@"; do
  if [[ $name =~ ^[0-9.]+$ || $name == *:* ]]; then sans+=",IP:$name"; else sans+=",DNS:$name"; fi
done

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 3650 \
  -subj "/CN=Kiln CA" -keyout "$OUT/ca.key" -out "$OUT/ca.crt" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "/CN=$1" \
  -keyout "$OUT/tls.key" -out "$OUT/tls.csr" 2>/dev/null
printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth\n' "$sans" > "$OUT/tls.ext"
openssl x509 -req -in "$OUT/tls.csr" -CA "$OUT/ca.crt" -CAkey "$OUT/ca.key" -CAcreateserial \
  -days 365 -extfile "$OUT/tls.ext" -out "$OUT/tls.crt" 2>/dev/null
rm -f "$OUT/tls.csr" "$OUT/tls.ext" "$OUT/ca.srl"

openssl rand -hex 32 | tr -d '\n' > "$OUT/ci.token"
hash=$(sha256sum < "$OUT/ci.token" | cut -d' ' -f1)
cat > "$OUT/principals.json" <<JSON
{"principals": [
  {"name": "ci", "token_sha256": "$hash",
   "grants": [{"instance_prefix": "", "permissions": ["cas-read", "cas-write", "ac-read", "execute", "operations"]}]}
]}
JSON
chmod 0644 "$OUT/ca.crt" "$OUT/tls.crt"
echo "made $OUT/{ca.crt,ca.key,tls.crt,tls.key,ci.token,principals.json} for $sans"
