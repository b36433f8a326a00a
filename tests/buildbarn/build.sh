#!/usr/bin/env bash
# Builds the Buildbarn services Kiln's cluster tests and benchmarks use
# (bb_storage, bb_scheduler, bb_worker, bb_runner) from the Go module proxy,
# and prints the directory that holds them.
#
#   tests/buildbarn/build.sh            build (or reuse) and print the bin dir
#   tests/buildbarn/build.sh --tidy     rerun `go mod tidy` and write go.mod/go.sum back
#
# The binaries are cached under $KILN_BUILDBARN_CACHE (default
# ~/.cache/kiln-buildbarn)/<hash of this directory's inputs>/bin, so a rerun
# takes well under a second; the first build takes ~7 minutes on 2 cores.
# Nothing is vendored: every module comes from the proxy, checked against the
# committed go.sum (GONOSUMDB only because sum.golang.org does not know the
# Buildbarn pseudo-versions; go.sum pins them). Needs Go >= 1.26.1; when the
# `go` on PATH is older or missing, the toolchain is fetched from the Go module
# proxy (golang.org/toolchain) into the cache.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cache=${KILN_BUILDBARN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kiln-buildbarn}
proxy=${GOPROXY_URL:-https://proxy.golang.org}
go_version=1.26.8
commands=(
  github.com/buildbarn/bb-storage/cmd/bb_storage
  github.com/buildbarn/bb-remote-execution/cmd/bb_scheduler
  github.com/buildbarn/bb-remote-execution/cmd/bb_worker
  github.com/buildbarn/bb-remote-execution/cmd/bb_runner
)
# module@version and the patch dir (inside which downloaded module) applied
# to it, for the three modules upstream's Bazel build patches.
bb_storage=github.com/buildbarn/bb-storage@v0.0.0-20260317135248-dc342e1799d7
bb_re=github.com/buildbarn/bb-remote-execution@v0.0.0-20260319042723-cd89f0554d18
patched=(
  "go-fuse github.com/hanwen/go-fuse/v2@v2.5.1 $bb_re patches/com_github_hanwen_go_fuse_v2"
  "bytestream google.golang.org/genproto/googleapis/bytestream@v0.0.0-20260526163538-3dc84a4a5aaa $bb_storage patches/org_golang_google_genproto_googleapis_bytestream"
  "go-grpc-prometheus github.com/grpc-ecosystem/go-grpc-prometheus@v1.2.0 $bb_storage patches/com_github_grpc_ecosystem_go_grpc_prometheus"
)

tidy=false
[[ ${1:-} == --tidy ]] && tidy=true

key=$( (cat "$here/go.mod" "$here/tools.go" "$here/build.sh"; cat "$here/go.sum" 2>/dev/null || true) | sha256sum | cut -c1-16)
out=$cache/$key
if ! $tidy && [[ -x $out/bin/bb_storage && -x $out/bin/bb_scheduler && -x $out/bin/bb_worker && -x $out/bin/bb_runner ]]; then
  echo "$out/bin"
  exit 0
fi
mkdir -p "$cache"
exec 9>"$cache/lock"
flock 9  # one build at a time (ctest may start several cluster tests)
if ! $tidy && [[ -x $out/bin/bb_runner ]]; then
  echo "$out/bin"
  exit 0
fi

# go_at_least VERSION: the `go` on PATH is at least VERSION.
go_at_least() {
  command -v go > /dev/null || return 1
  local have
  have=$(go env GOVERSION 2>/dev/null | sed 's/^go//')
  [[ $(printf '%s\n%s\n' "$1" "$have" | sort -V | head -1) == "$1" ]]
}
if ! go_at_least 1.26.1; then
  goroot=$cache/go$go_version
  if [[ ! -x $goroot/bin/go ]]; then
    echo "build.sh: fetching Go $go_version from $proxy" >&2
    arch=$(uname -m); [[ $arch == x86_64 ]] && arch=amd64; [[ $arch == aarch64 ]] && arch=arm64
    zip=$cache/go$go_version.zip
    curl -fsSL -o "$zip.tmp" "$proxy/golang.org/toolchain/@v/v0.0.1-go$go_version.linux-$arch.zip"
    mv "$zip.tmp" "$zip"
    rm -rf "$goroot.tmp" && mkdir -p "$goroot.tmp"
    /usr/bin/python3 -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])' "$zip" "$goroot.tmp"
    # The zip holds golang.org/toolchain@v0.0.1-goX.linux-ARCH/{bin,src,pkg,...}.
    inner=$(ls -d "$goroot.tmp"/golang.org/toolchain@*)
    chmod +x "$inner"/bin/* "$inner"/pkg/tool/*/*
    mv "$inner" "$goroot" && rm -rf "$goroot.tmp" "$zip"
  fi
  export PATH=$goroot/bin:$PATH
fi
export GOTOOLCHAIN=local GOFLAGS=-buildvcs=false GONOSUMDB='github.com/buildbarn/*' GOPROXY=${GOPROXY:-https://proxy.golang.org,direct}

echo "build.sh: building Buildbarn into $out (about 7 minutes the first time)" >&2
start=$(date +%s)
src=$out/src
rm -rf "$src" && mkdir -p "$src/patched" "$out/bin"
cp "$here/go.mod" "$here/tools.go" "$src/"
[[ -f $here/go.sum ]] && cp "$here/go.sum" "$src/"

# The modules to patch are downloaded outside the wrapper module (whose go.mod
# replaces them with the ./patched copies); sum.golang.org checks them, and
# the Buildbarn modules are checked against go.sum by the build below.
scratch=$out/scratch
rm -rf "$scratch" && mkdir -p "$scratch"
printf 'module scratch\ngo 1.26.1\n' > "$scratch/go.mod"
[[ -f $here/go.sum ]] && cp "$here/go.sum" "$scratch/go.sum"
module_dir() { (cd "$scratch" && go mod download -json "$1" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p'); }
for entry in "${patched[@]}"; do
  read -r name module carrier patch_dir <<< "$entry"
  from=$(module_dir "$module")
  patches=$(module_dir "$carrier")/$patch_dir
  cp -r "$from" "$src/patched/$name"
  chmod -R u+w "$src/patched/$name"
  for diff in "$patches"/*.diff; do
    patch -s -p0 -d "$src/patched/$name" < "$diff"
  done
  if [[ ! -f $src/patched/$name/go.mod ]]; then
    echo "module ${module%@*}" > "$src/patched/$name/go.mod"
  fi
done

cd "$src"
if $tidy; then
  go mod tidy
  cp go.mod go.sum "$here/"
  echo "build.sh: wrote $here/go.mod and go.sum" >&2
fi
# -mod=readonly: go.mod and go.sum must already say everything (no silent
# upgrades); -trimpath keeps the cache's paths out of the binaries.
go build -mod=readonly -trimpath -o "$out/bin/" "${commands[@]}"
rm -rf "$scratch"
echo "build.sh: built in $(( $(date +%s) - start )) s" >&2
if $tidy; then
  echo "build.sh: go.mod/go.sum changed: rerun without --tidy to cache under the new key" >&2
fi
echo "$out/bin"
