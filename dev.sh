#!/usr/bin/env bash
# Kiln's one entry point for a fresh Debian 12 machine:
#   ./dev.sh run [kiln-worker flags]   install what is missing, build, start the worker
#   ./dev.sh test                      install what is missing, build, run every test
#   ./dev.sh build                     install what is missing and build
#   ./dev.sh deps                      only install what is missing
set -euo pipefail
cd "$(dirname "$0")"

# Debian 12 packages Kiln needs to build, test and benchmark (DEVELOPERS.md
# says what each is for).
APT_PACKAGES=(
  build-essential cmake ninja-build pkg-config git ca-certificates
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev libprotoc-dev protobuf-compiler
  libabsl-dev prometheus-cpp-dev libgtest-dev libgmock-dev libbenchmark-dev
  libssl-dev libzstd-dev libseccomp-dev libcap-dev libspdlog-dev nlohmann-json3-dev
  bazel-bootstrap bazel-bootstrap-source bazel-platforms bazel-rules-java bubblewrap prometheus socat
  python3 python3-grpcio python3-protobuf python3-grpc-tools python3-yaml python3-venv
  iproute2 procps bc curl
)

install_deps() {
  local missing=()
  for package in "${APT_PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
      missing+=("$package")
    fi
  done
  [[ ${#missing[@]} -eq 0 ]] && return 0
  echo "dev.sh: installing ${missing[*]}" >&2
  local sudo=""
  [[ $(id -u) -eq 0 ]] || sudo="sudo"
  $sudo apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
}

build() {
  cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo > /dev/null
  cmake --build build
}

command=${1:-}
[[ $# -gt 0 ]] && shift
case "$command" in
  deps) install_deps ;;
  build) install_deps; build ;;
  run) install_deps; build; exec build/bin/kiln-worker "$@" ;;
  test)
    install_deps
    build
    cd build
    ctest --output-on-failure --timeout 900 -j "$(nproc)" "$@"
    ;;
  *)
    sed -n '2,6p' "$0" >&2
    exit 2
    ;;
esac
