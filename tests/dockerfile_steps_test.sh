#!/usr/bin/env bash
# The Dockerfile's steps, proven without a Docker engine:
#   - its build stage runs ./dev.sh deps && ./dev.sh build, which CI runs too;
#   - its runtime stage installs deploy/docker/runtime-packages.txt: every name
#     resolves in Debian 12 (apt-get --simulate), and those packages (with
#     their dependencies, plus what debian:12-slim already has) provide every
#     shared library the three binaries load.
set -euo pipefail
BIN_DIR=$(cd "${1:?usage: $0 BIN_DIR}" && pwd)
ROOT=$(cd "$(dirname "$0")/.." && pwd)
fail() { echo "FAIL: $*" >&2; exit 1; }

grep -q '^RUN ./dev.sh deps && ./dev.sh build$' "$ROOT/Dockerfile" || fail "the build stage no longer runs ./dev.sh"
grep -q 'runtime-packages.txt' "$ROOT/Dockerfile" || fail "the runtime stage no longer installs runtime-packages.txt"

mapfile -t PACKAGES < <(grep -v '^\s*#' "$ROOT/deploy/docker/runtime-packages.txt" | sed '/^\s*$/d')
apt-get --simulate install --no-install-recommends "${PACKAGES[@]}" > /dev/null \
  || fail "apt-get cannot install the runtime packages: ${PACKAGES[*]}"

# Everything the runtime stage will have: the packages, their dependencies,
# and the essential packages of the base image.
PROVIDED=$( (printf '%s\n' "${PACKAGES[@]}"; \
  apt-cache depends --recurse --no-recommends --no-suggests --no-conflicts --no-breaks \
    --no-replaces --no-enhances "${PACKAGES[@]}" | grep -v '^ ' ; \
  dpkg-query -W -f='${Package} ${Essential} ${Priority}\n' | awk '$2 == "yes" || $3 == "required" {print $1}') \
  | sed 's/:amd64$//' | sort -u)

for binary in kiln-worker kiln-sandbox kiln; do
  while read -r library; do
    [[ -z "$library" ]] && continue
    # Merged /usr: dpkg knows a file under one of its two names.
    owner=$( (dpkg -S "$library" || dpkg -S "$(readlink -f "$library")" || dpkg -S "${library#/usr}" \
      || dpkg -S "/usr$library") 2>/dev/null | head -1 | cut -d: -f1)
    [[ -n "$owner" ]] || fail "$binary loads $library, which no package owns"
    grep -qx "$owner" <<< "$PROVIDED" || fail "$binary needs $library from $owner, missing from the runtime stage"
  done < <(ldd "$BIN_DIR/$binary" | awk '/=> \// {print $3}')
  echo "  $binary: every shared library is provided"
done
echo "PASS: the Dockerfile's build and runtime steps hold"
