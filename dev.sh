#!/usr/bin/env bash
# Kiln's one entry point for a fresh Debian 12 machine:
#   ./dev.sh run [kiln-worker flags]   install what is missing, build, start the worker
#   ./dev.sh test                      install what is missing, build, run every test
#   ./dev.sh build                     install what is missing and build
#   ./dev.sh deps                      only install what is missing
#   ./dev.sh fuzz [SECONDS]            build the libFuzzer targets (clang) and run each SECONDS (12)
#   ./dev.sh asan | tsan | thread-safety   clang sanitizer / -Wthread-safety builds (CI)
set -euo pipefail
cd "$(dirname "$0")"

# Debian 12 packages Kiln needs to build, test and benchmark (DEVELOPERS.md
# says what each is for).
APT_PACKAGES=(
  build-essential cmake ninja-build pkg-config git ca-certificates
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev libprotoc-dev protobuf-compiler
  libabsl-dev prometheus-cpp-dev libgtest-dev libgmock-dev libbenchmark-dev
  libssl-dev libzstd-dev libseccomp-dev libcap-dev libspdlog-dev nlohmann-json3-dev libjwt-dev
  bazel-bootstrap bazel-bootstrap-source bazel-platforms bazel-rules-java libnetty-tcnative-jni
  bubblewrap prometheus socat
  python3 python3-grpcio python3-protobuf python3-grpc-tools python3-yaml python3-venv
  python3-matplotlib python3-prometheus-client
  iproute2 procps bc curl openssl e2fsprogs
  qemu-system-x86 busybox-static
  clang libclang-rt-14-dev
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

# The suites that drive the gRPC reactors, for the sanitizer builds.
# Also every suite that feeds untrusted input to the worker: the path module,
# staging, output collection, the disk watchdog, platform parsing, the
# authorizer, the kiln client's input-root walk, and the attack suite run
# against the instrumented worker.
SANITIZED_TESTS='^((StorageTest|ExecutionTest|ActionMetricsTest|LiveLogsTest|CancelStormTest|AuthTest|JwtAuthTest|OperationOwnershipTest|OperationRetentionTest|ReflectionTest|StatusCodesTest|TreeBuilderTest|TreeBuilderTreeTest|PathBeneathTest|InputStagerTest|OutputCollectorTest|DiskWatchdogTest|PlatformTest|FindMissingWireTest|BlobStoreTest|SpareActionDirsTest|DirectoryTrashTest|SandboxSpawnerTest)\.|security_)'
SANITIZED_TARGETS=(kiln-worker kiln-sandbox kiln grpc_storage_test grpc_execution_test
                   live_logs_test cancel_storm_test auth_test jwt_auth_test operation_ownership_test operation_retention_test
                   reflection_test status_codes_test client_test common_test exec_test action_metrics_test
                   api_unit_test cas_test sandbox_spawner_test)

# Peak RSS and timing are no measure of Kiln under a sanitizer's allocator.
SANITIZED_SKIP='TwoHundredMegabytesOfOutputKeepTheWorkerSmall|security_resource_limits_test'

# sanitized_build DIR SANITIZERS: a clang build of just what SANITIZED_TESTS
# need (kiln-sandbox uninstrumented; CMakeLists.txt says why).
sanitized_build() {
  CC=clang CXX=clang++ cmake -S . -B "$1" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DKILN_SANITIZE="$2" > /dev/null
  cmake --build "$1" -j "$(nproc)" --target "${SANITIZED_TARGETS[@]}"
}

# Every ABSL_GUARDED_BY / ABSL_LOCKS_EXCLUDED checked by clang; compiling
# Kiln's own objects is enough (generated protobuf code has no annotations).
thread_safety_check() {
  CC=clang CXX=clang++ cmake -S . -B build-thread-safety -G Ninja -DCMAKE_BUILD_TYPE=Debug \
    -DCMAKE_CXX_FLAGS=-g0 -DKILN_THREAD_SAFETY=ON > /dev/null
  local objects
  objects=$(ninja -C build-thread-safety -t targets all | grep -E '\.o: ' | grep -v proto_gen | cut -d: -f1)
  # shellcheck disable=SC2086
  ninja -C build-thread-safety -j "$(nproc)" $objects
}

# The libFuzzer targets of fuzz/, built with clang in build-fuzz, each run
# for SECONDS on its committed seeds (fuzz/corpus/TARGET, which include every
# input that once crashed it) and what earlier runs here found
# (build-fuzz/corpus/TARGET). A crash, a sanitizer report or a leak fails
# the stage; the input is kept in build-fuzz/crashes/ (docs/fuzzing.md).
fuzz() {
  local seconds=${1:-12}
  CC=clang CXX=clang++ cmake -S . -B build-fuzz -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DKILN_FUZZ=ON > /dev/null
  cmake --build build-fuzz --target kiln_fuzzers
  mkdir -p build-fuzz/crashes
  local source target failed=()
  for source in fuzz/*_fuzzer.cc; do
    target=$(basename "$source" .cc)
    mkdir -p "build-fuzz/corpus/$target"
    if UBSAN_OPTIONS=print_stacktrace=1 "build-fuzz/fuzz/$target" -max_total_time="$seconds" \
        -print_final_stats=1 -artifact_prefix="build-fuzz/crashes/$target-" \
        "build-fuzz/corpus/$target" "fuzz/corpus/$target" > "build-fuzz/$target.log" 2>&1; then
      echo "fuzz: $target: $(grep -E '^stat::number_of_executed_units' "build-fuzz/$target.log" |
        awk '{print $2}') runs in ${seconds}s, no crash"
    else
      tail -n 40 "build-fuzz/$target.log" >&2
      failed+=("$target")
    fi
  done
  if [[ ${#failed[@]} -gt 0 ]]; then
    echo "fuzz: FAILED: ${failed[*]} (logs in build-fuzz/, inputs in build-fuzz/crashes/)" >&2
    return 1
  fi
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
    # The Buildbarn services of the cluster tests, from the Go module proxy
    # (about 7 minutes the first time, cached afterwards).
    tests/buildbarn/build.sh > /dev/null
    cd build
    ctest --output-on-failure --timeout 900 -j "$(nproc)" "$@"
    cd ..
    fuzz "${KILN_FUZZ_SECONDS:-12}"
    ;;
  fuzz)
    install_deps
    fuzz "$@"
    ;;
  asan)
    install_deps
    sanitized_build build-asan address,undefined
    cd build-asan
    # halt_on_error: the first report fails the test; the cancel storm also
    # checks the worker's log for reports. Leak checking is off: the worker
    # is ended by SIGKILL, and the in-process suites keep gRPC's globals.
    ASAN_OPTIONS=halt_on_error=1:detect_leaks=0:abort_on_error=1 \
    UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
    KILN_CANCEL_STORM_SECONDS=${KILN_CANCEL_STORM_SECONDS:-60} \
      ctest --output-on-failure --timeout 900 -j "$(nproc)" -R "$SANITIZED_TESTS" -E "$SANITIZED_SKIP" "$@"
    ;;
  tsan)
    install_deps
    sanitized_build build-tsan thread
    cd build-tsan
    # Debian's gRPC and Abseil are not instrumented. Kiln's absl::Mutex calls
    # are made visible (tests/tsan_absl_mutex.cc); accesses made inside the
    # uninstrumented libraries are ignored; the suppressions file lists the
    # remaining false reports, all in gRPC's own (header) code, none in Kiln.
    TSAN_OPTIONS="halt_on_error=1:second_deadlock_stack=1:ignore_noninstrumented_modules=1:suppressions=$PWD/../tests/tsan_suppressions.txt" \
    KILN_CANCEL_STORM_SECONDS=${KILN_CANCEL_STORM_SECONDS:-20} \
      ctest --output-on-failure --timeout 900 -j "$(nproc)" -R "$SANITIZED_TESTS" -E "$SANITIZED_SKIP" "$@"
    ;;
  thread-safety)
    install_deps
    thread_safety_check
    ;;
  *)
    sed -n '2,7p' "$0" >&2
    exit 2
    ;;
esac
