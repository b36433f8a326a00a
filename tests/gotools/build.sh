#!/usr/bin/env bash
# Builds the third-party Go clients Kiln's end-to-end tests use — remotetool
# (github.com/bazelbuild/remote-apis-sdks), grpcurl, and grpcurl 1.8.7 as
# grpcurl-v1alpha (it speaks reflection v1alpha only) — from the pinned
# wrapper modules next to this script, and prints the directory holding them.
#
#   tests/gotools/build.sh            prints e.g. ~/.cache/kiln-gotools/3f2a…/bin
#
# The result is cached under ~/.cache/kiln-gotools/<hash of the modules, this
# script and the Go version>, so a rerun takes well under a second. Needs Go
# at least as new as the modules' `go` lines: `go` on PATH, /usr/local/go, or
# else the toolchain below, fetched once from the Go module proxy and checked
# against its SHA-256. Self-contained on purpose: nothing here depends on
# Kiln's build.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
CACHE=${KILN_GOTOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kiln-gotools}
MODULES=(remotetool grpcurl grpcurl-v1alpha)
declare -A PACKAGES=(
  [remotetool]=github.com/bazelbuild/remote-apis-sdks/go/cmd/remotetool
  [grpcurl]=github.com/fullstorydev/grpcurl/cmd/grpcurl
  [grpcurl-v1alpha]=github.com/fullstorydev/grpcurl/cmd/grpcurl
)
TOOLCHAIN_VERSION=1.26.8
TOOLCHAIN_URL=https://proxy.golang.org/golang.org/toolchain/@v/v0.0.1-go$TOOLCHAIN_VERSION.linux-amd64.zip
TOOLCHAIN_SHA256=30c2b1bf7dcc88d3eb0a1364e47ddd9128edb3110a30e8a0ef61cd5856b31de7

log() { echo "gotools: $*" >&2; }

# The newest `go` line of the wrapper modules: the oldest Go that builds them.
required_go() {
  local module
  for module in "${MODULES[@]}"; do
    sed -n 's/^go \([0-9.]*\)$/\1/p' "$HERE/$module/go.mod"
  done | sort -V | tail -1
}

# Prints a `go` binary new enough for the modules, fetching one if needed.
find_go() {
  local need candidate version
  need=$(required_go)
  local candidates=("$(command -v go || true)" /usr/local/go/bin/go "$CACHE/go$TOOLCHAIN_VERSION/bin/go")
  # KILN_GOTOOLS_FETCH_GO=1 ignores installed Go: the fresh-machine path.
  [[ "${KILN_GOTOOLS_FETCH_GO:-0}" == 1 ]] && candidates=("$CACHE/go$TOOLCHAIN_VERSION/bin/go")
  for candidate in "${candidates[@]}"; do
    [[ -n "$candidate" && -x "$candidate" ]] || continue
    version=$(GOTOOLCHAIN=local "$candidate" env GOVERSION 2>/dev/null | sed 's/^go//')
    if [[ -n "$version" && $(printf '%s\n%s\n' "$need" "$version" | sort -V | head -1) == "$need" ]]; then
      echo "$candidate"
      return 0
    fi
  done
  log "no Go >= $need found; fetching go$TOOLCHAIN_VERSION from the module proxy"
  mkdir -p "$CACHE"
  local zip
  zip=$(mktemp "$CACHE/toolchain.XXXXXX.zip")
  curl -sSfL --retry 3 -o "$zip" "$TOOLCHAIN_URL"
  if [[ $(sha256sum "$zip" | cut -d' ' -f1) != "$TOOLCHAIN_SHA256" ]]; then
    rm -f "$zip"
    log "$TOOLCHAIN_URL does not have the expected SHA-256"
    return 1
  fi
  local staging
  staging=$(mktemp -d "$CACHE/go$TOOLCHAIN_VERSION.XXXXXX")
  # unzip may be missing on a fresh machine; Python keeps the files' modes.
  /usr/bin/python3 - "$zip" "$staging" <<'PY'
import os, sys, zipfile
archive, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(archive) as z:
    for info in z.infolist():
        parts = info.filename.split("/", 2)  # drop golang.org/toolchain@v…/
        name = parts[2] if len(parts) == 3 else ""
        if not name or name.endswith("/"):
            continue
        path = os.path.join(out, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with z.open(info) as src, open(path, "wb") as dst:
            dst.write(src.read())
        os.chmod(path, (info.external_attr >> 16) & 0o777 or 0o644)
PY
  rm -f "$zip"
  if ! "$staging/bin/go" version > /dev/null; then
    log "the fetched toolchain does not run"
    return 1
  fi
  rm -rf "$CACHE/go$TOOLCHAIN_VERSION"
  mv "$staging" "$CACHE/go$TOOLCHAIN_VERSION"
  echo "$CACHE/go$TOOLCHAIN_VERSION/bin/go"
}

GO=$(find_go)
export GOTOOLCHAIN=local GOFLAGS="-mod=readonly -modcacherw" CGO_ENABLED=0
KEY=$( (cat "$0"; "$GO" env GOVERSION; for m in "${MODULES[@]}"; do cat "$HERE/$m/go.mod" "$HERE/$m/go.sum"; done) |
      sha256sum | cut -c1-16)
OUT="$CACHE/$KEY/bin"
if [[ -x "$OUT/${MODULES[-1]}" ]]; then  # written last, renamed with the others
  echo "$OUT"
  exit 0
fi

log "building ${MODULES[*]} with $("$GO" env GOVERSION) into $OUT"
mkdir -p "$CACHE/$KEY"
STAGING=$(mktemp -d "$CACHE/$KEY/bin.XXXXXX")
trap 'rm -rf "$STAGING"' EXIT
start=$SECONDS
for module in "${MODULES[@]}"; do
  # Built inside the wrapper module, so its go.mod and go.sum pin every
  # dependency; -trimpath keeps the cache key's output reproducible.
  (cd "$HERE/$module" && "$GO" build -trimpath -o "$STAGING/$module" "${PACKAGES[$module]}")
done
rm -rf "$OUT"
mv "$STAGING" "$OUT"
trap - EXIT
log "built in $((SECONDS - start)) s"
echo "$OUT"
