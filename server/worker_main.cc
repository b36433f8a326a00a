// kiln-worker: a REAPI v2 endpoint with an embedded on-disk CAS and action
// cache. See README.md for the flags in context.
#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <thread>
#include <vector>

#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/time/time.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "common/flag_types.h"
#include "sandbox/cgroup_delegation.h"
#include "server/cas/verify_store.h"
#include "server/memory_trimmer.h"
#include "server/worker_server.h"

ABSL_FLAG(kiln::HostPort, listen, (kiln::HostPort{"127.0.0.1", 8980}),
          "gRPC address to serve REAPI on, HOST:PORT (port 0 picks a free one)");
ABSL_FLAG(std::string, metrics_listen, "127.0.0.1:8981",
          "HOST:PORT for Prometheus metrics at /metrics; empty disables them");
ABSL_FLAG(std::string, state_dir, "",
          "directory for the CAS and action cache (default: /var/lib/kiln as root, "
          "$HOME/.local/state/kiln otherwise)");
ABSL_FLAG(kiln::ByteSize, cas_max_bytes, (kiln::ByteSize{int64_t{10} << 30}),
          "cap on the CAS size; the least recently used blobs are evicted beyond it (e.g. 50GiB)");
ABSL_FLAG(kiln::ByteSize, cas_max_blob_bytes, (kiln::ByteSize{0}),
          "largest single blob accepted; 0 means --cas_max_bytes");
ABSL_FLAG(int, io_threads, 8, "threads doing CAS disk I/O for the gRPC services");
ABSL_FLAG(std::string, fsync, "auto",
          "fsync CAS blobs and action-cache entries before acknowledging them: always; never (a machine "
          "crash loses recent writes, and the next start verifies every blob and drops the action "
          "cache); auto: never in cluster mode (the local CAS caches the cluster's), else always");
ABSL_FLAG(std::string, log_level, "info", "one of trace, debug, info, warn, error");
ABSL_FLAG(int, concurrency, -1,
          "actions run at once (execution slots); -1: the number of cores; 0: no execution, "
          "storage only");
ABSL_FLAG(int, max_queued_actions, 1000, "actions that may wait for a slot; beyond: RESOURCE_EXHAUSTED");
ABSL_FLAG(int, max_kept_operations, kiln::exec::Scheduler::kDefaultMaxKeptCompleted,
          "finished operations kept for WaitExecution and GetOperation (each for 10 minutes, the newest this "
          "many at most; a few KiB of memory each)");
ABSL_FLAG(absl::Duration, default_action_timeout, absl::Minutes(15),
          "timeout of actions that set none");
ABSL_FLAG(absl::Duration, max_action_timeout, absl::Hours(3),
          "largest Action.timeout accepted; larger ones are rejected");
ABSL_FLAG(absl::Duration, kill_grace, absl::Seconds(5),
          "between SIGTERM and SIGKILL when an action times out or is cancelled");
ABSL_FLAG(absl::Duration, drain_grace, absl::Seconds(30),
          "on SIGTERM, how long running actions may finish before they are cancelled");
ABSL_FLAG(bool, allow_network, false,
          "let actions ask for the host network (platform network=on, dockerNetwork=standard, "
          "block-network=false)");
ABSL_FLAG(std::vector<std::string>, platform, {},
          "what this worker is, NAME=VALUE, comma-separated or repeated (e.g. "
          "container-image=docker://...,Pool=default): actions' properties of these names must match");
ABSL_FLAG(std::vector<std::string>, platform_ignore, {},
          "platform property names accepted and ignored, e.g. container-image");
ABSL_FLAG(std::vector<std::string>, sandbox_bind, {},
          "host dirs bound read-only into every sandbox (default: kiln-sandbox's /bin,/usr,/lib,/lib64)");
ABSL_FLAG(std::string, worker_name, "", "name reported in ExecutedActionMetadata (default: hostname)");
ABSL_FLAG(uint32_t, build_uid_base, 61000,
          "first uid of the build-user pool; as root each action holds a free uid of the pool "
          "(locked in /run/kiln-sandbox, shared with other workers on the host)");
ABSL_FLAG(int, build_uid_pool_size, 64, "uids in the build-user pool; at least --concurrency");
ABSL_FLAG(int64_t, max_input_files, 1000000, "files and symlinks an expanded input root may hold");
ABSL_FLAG(int64_t, max_input_directories, 1000000, "directories an expanded input root may hold");
ABSL_FLAG(kiln::ByteSize, max_input_bytes, (kiln::ByteSize{int64_t{64} << 30}),
          "bytes of files an expanded input root may hold");
ABSL_FLAG(int64_t, max_output_files, 100000,
          "files, directories and symlinks an action's outputs may hold; beyond: RESOURCE_EXHAUSTED");
ABSL_FLAG(kiln::ByteSize, max_output_bytes, (kiln::ByteSize{int64_t{16} << 30}),
          "bytes of output files one action may produce; beyond: RESOURCE_EXHAUSTED");
ABSL_FLAG(kiln::ByteSize, max_action_disk_bytes, (kiln::ByteSize{int64_t{64} << 30}),
          "disk an action may fill while it runs (its /work and stdout/stderr, checked about every "
          "second); beyond: the action is stopped with RESOURCE_EXHAUSTED. 0: unwatched");
ABSL_FLAG(kiln::ByteSize, max_log_bytes, (kiln::ByteSize{int64_t{1} << 30}),
          "stdout and stderr each keep at most this much; the response says when they were cut");
ABSL_FLAG(kiln::ByteSize, default_action_memory, (kiln::ByteSize{0}),
          "memory limit (a cgroup) of actions whose platform sets no 'memory'; 0: none. Costs "
          "about 6 ms per action on cgroup v1");
ABSL_FLAG(kiln::ByteSize, action_tmp_size, (kiln::ByteSize{int64_t{1} << 30}),
          "size of each action's /tmp tmpfs (0: unlimited, half of RAM)");
ABSL_FLAG(kiln::ByteSize, action_shm_size, (kiln::ByteSize{int64_t{256} << 20}),
          "size of each action's /dev/shm tmpfs (0: unlimited, half of RAM)");
ABSL_FLAG(int64_t, max_action_processes, 4096,
          "processes an action may run at once (its build user's RLIMIT_NPROC; 0: unlimited)");
ABSL_FLAG(bool, allow_nested_sandbox, false,
          "let actions create namespaces (e.g. Bazel's own sandbox inside an action); weakens "
          "isolation, see docs/security.md");
ABSL_FLAG(bool, warm_sandboxes, true,
          "keep one sandbox per execution slot prepared (namespaces, root, loopback) before its "
          "next action arrives; false: each action's sandbox is prepared when the action comes");
ABSL_FLAG(std::string, sandbox_binary, "",
          "kiln-sandbox to launch actions with (default: next to kiln-worker)");
ABSL_FLAG(std::string, tls_cert, "",
          "PEM certificate chain of the gRPC listener; with --tls_key, serve TLS only. Re-read "
          "when the file changes (no restart)");
ABSL_FLAG(std::string, tls_key, "", "PEM private key of --tls_cert");
ABSL_FLAG(std::string, tls_client_ca, "",
          "PEM CA bundle: clients must present a certificate it signed; the principal is its "
          "subject CN (else its first SAN). Turns authorization on");
ABSL_FLAG(std::string, token_file, "",
          "JSON principals file: names, SHA-256 of bearer tokens, grants per instance prefix "
          "(see README). Re-read when it changes. Turns authorization on");
ABSL_FLAG(std::string, jwt_public_keys, "",
          "PEM file of RSA/EC public keys: accept RS256/ES256 JWT bearer tokens they signed; the "
          "`sub` claim names the principal (grants from --token_file). Re-read when it changes. "
          "Turns authorization on");
ABSL_FLAG(std::string, jwt_audience, "", "the `aud` JWT bearer tokens must carry (required with --jwt_public_keys)");
ABSL_FLAG(std::string, jwt_issuer, "", "the `iss` JWT bearer tokens must carry (default: any)");
ABSL_FLAG(absl::Duration, tls_reload_interval, absl::Seconds(1),
          "how often the TLS files are checked for changes");
ABSL_FLAG(bool, reflection, true,
          "serve gRPC server reflection (v1 and v1alpha; open to every caller, like Health: it "
          "shows the API's shape, never data). --noreflection turns it off");
ABSL_FLAG(bool, verify_cas, false,
          "check the --state_dir's CAS (every blob against its SHA-256) and action cache (every "
          "referenced blob present) instead of serving, quarantine what is wrong in "
          "STATE_DIR/quarantine/, and exit: 0 clean, 1 problems found, 2 could not check "
          "(e.g. a worker holds the state dir)");
ABSL_FLAG(bool, insecure_allow_unauthenticated, false,
          "allow serving a non-loopback --listen address without --tls_client_ca or --token_file "
          "(anyone who reaches the port may then run anything)");

ABSL_FLAG(std::string, scheduler, "",
          "cluster mode: HOST:PORT of a Buildbarn scheduler's worker service (bb_scheduler "
          "workerGrpcServers); the --concurrency slots take their actions from it. Needs --cas");
ABSL_FLAG(std::string, cas, "",
          "cluster mode: HOST:PORT of the cluster's CAS and action cache (e.g. bb_storage); the "
          "local CAS becomes its cache");
ABSL_FLAG(std::string, instance_name_prefix, "",
          "cluster mode: the instance names (this prefix and below) this worker serves");
ABSL_FLAG(uint32_t, size_class, 0, "cluster mode: the size class reported to the scheduler");
ABSL_FLAG(std::string, cluster_tls_ca, "",
          "cluster mode: PEM CA bundle to verify the scheduler and CAS (turns TLS on)");
ABSL_FLAG(std::string, cluster_tls_cert, "",
          "cluster mode: PEM client certificate presented to the scheduler and CAS (turns TLS on)");
ABSL_FLAG(std::string, cluster_tls_key, "", "cluster mode: the key of --cluster_tls_cert");
ABSL_FLAG(std::string, cluster_token_file, "",
          "cluster mode: file holding a bearer token sent to the scheduler and CAS");

namespace {

[[noreturn]] void Die(const std::string& message) {
  std::fprintf(stderr, "kiln-worker: %s\n", message.c_str());
  std::exit(2);
}

std::string DefaultStateDir() {
  if (geteuid() == 0) return "/var/lib/kiln";
  const char* home = getenv("HOME");
  if (home == nullptr || *home == '\0') Die("--state_dir is required when $HOME is unset");
  return absl::StrCat(home, "/.local/state/kiln");
}

// Only these addresses are unreachable from other hosts.
bool IsLoopback(const std::string& host) {
  return host == "localhost" || host == "::1" || host == "[::1]" || absl::StartsWith(host, "127.");
}

// Before any thread starts: on cgroup v2 the worker moves into a leaf of its
// delegated cgroup so that the action cgroups can get controllers there, and
// on v1 and v2 the per-sandbox cgroups a crash left behind are removed.
// Without usable cgroups the worker still serves; actions that ask for
// limits then fail with kiln-sandbox's message.
void SetUpActionCgroups(kiln::exec::ExecOptions* exec) {
  absl::StatusOr<std::string> parent = kiln::sandbox::PrepareActionCgroupParent();
  if (!parent.ok()) {
    spdlog::warn("cgroup limits (memory, pids, cpus) are not available to actions: {}",
                 std::string(parent.status().message()));
  } else if (!parent->empty()) {
    exec->cgroup_parent = *parent;
    spdlog::info("cgroup v2: action cgroups go in {}", *parent);
  }
  absl::StatusOr<int> removed =
      kiln::sandbox::RemoveLeftoverSandboxCgroups(kiln::sandbox::ActionCgroupParents(exec->cgroup_parent));
  if (!removed.ok()) {
    spdlog::warn("{}", std::string(removed.status().message()));
  } else if (*removed > 0) {
    spdlog::info("removed {} leftover sandbox cgroup(s) of an earlier run", *removed);
  }
}

// --verify_cas: one line per problem on stdout, then a summary.
int VerifyCas(const std::string& state_dir) {
  absl::StatusOr<kiln::cas::VerifyReport> report = kiln::cas::VerifyStateDir(state_dir);
  if (!report.ok()) Die(absl::StrCat("--verify_cas: ", report.status().message()));
  for (const std::string& problem : report->problems) std::printf("%s\n", problem.c_str());
  std::printf("kiln-worker --verify_cas: %lld blobs (%lld bytes) and %lld action-cache entries checked, "
              "%lld unfinished writes removed, %zu problems%s\n",
              static_cast<long long>(report->blobs_checked), static_cast<long long>(report->bytes_checked),
              static_cast<long long>(report->entries_checked),
              static_cast<long long>(report->unfinished_writes_removed), report->problems.size(),
              report->clean() ? "" : " (quarantined under STATE_DIR/quarantine/)");
  return report->clean() ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  kiln::LimitMallocArenas();  // first: before any thread starts
  // Debian builds Abseil without NDEBUG, which leaves Mutex's deadlock
  // detection on: every lock taken while another is held updates a global
  // lock graph under a global lock (2-4% of the worker's CPU in a Bazel
  // build). A release build of Abseil has it off; the tests keep it on.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  absl::SetProgramUsageMessage(
      "Serves the Remote Execution API v2 with an embedded CAS.\n"
      "  kiln-worker [--listen=127.0.0.1:8980] [--state_dir=DIR] [--metrics_listen=HOST:PORT]");
  std::vector<char*> positional = absl::ParseCommandLine(argc, argv);
  if (positional.size() > 1) Die(absl::StrCat("unexpected argument \"", positional[1], "\""));

  auto level = spdlog::level::from_str(absl::GetFlag(FLAGS_log_level));
  if (level == spdlog::level::off && absl::GetFlag(FLAGS_log_level) != "off") {
    Die(absl::StrCat("--log_level=", absl::GetFlag(FLAGS_log_level),
                     " is not one of trace, debug, info, warn, error, off"));
  }
  // Logs go to stderr; stdout carries only the "listening" line for scripts.
  spdlog::set_default_logger(spdlog::stderr_color_mt("kiln-worker"));
  spdlog::set_level(level);

  kiln::WorkerOptions options;
  options.listen = absl::GetFlag(FLAGS_listen).ToString();
  options.metrics_listen = absl::GetFlag(FLAGS_metrics_listen);
  if (!options.metrics_listen.empty()) {
    auto parsed = kiln::ParseHostPort(options.metrics_listen);
    if (!parsed.ok()) Die(absl::StrCat("--metrics_listen: ", parsed.status().message()));
  }
  options.state_dir = absl::GetFlag(FLAGS_state_dir);
  if (options.state_dir.empty()) options.state_dir = DefaultStateDir();
  if (options.state_dir[0] != '/') {
    Die(absl::StrCat("--state_dir=", options.state_dir, " must be an absolute path"));
  }
  if (absl::GetFlag(FLAGS_verify_cas)) return VerifyCas(options.state_dir);
  options.cas_max_bytes = absl::GetFlag(FLAGS_cas_max_bytes).bytes;
  options.cas_max_blob_bytes = absl::GetFlag(FLAGS_cas_max_blob_bytes).bytes;
  if (options.cas_max_bytes == 0) Die("--cas_max_bytes must be more than 0");
  if (options.cas_max_blob_bytes > options.cas_max_bytes) {
    Die("--cas_max_blob_bytes cannot be larger than --cas_max_bytes");
  }
  options.tls_cert = absl::GetFlag(FLAGS_tls_cert);
  options.tls_key = absl::GetFlag(FLAGS_tls_key);
  options.tls_client_ca = absl::GetFlag(FLAGS_tls_client_ca);
  options.token_file = absl::GetFlag(FLAGS_token_file);
  options.reflection = absl::GetFlag(FLAGS_reflection);
  options.tls_reload_interval = absl::GetFlag(FLAGS_tls_reload_interval);
  if (options.tls_reload_interval < absl::Seconds(1)) Die("--tls_reload_interval must be at least 1s");
  options.jwt.public_keys_file = absl::GetFlag(FLAGS_jwt_public_keys);
  options.jwt.audience = absl::GetFlag(FLAGS_jwt_audience);
  options.jwt.issuer = absl::GetFlag(FLAGS_jwt_issuer);
  const bool authorization = !options.tls_client_ca.empty() || !options.token_file.empty() ||
                             !options.jwt.public_keys_file.empty();
  if (!authorization && !IsLoopback(absl::GetFlag(FLAGS_listen).host) &&
      !absl::GetFlag(FLAGS_insecure_allow_unauthenticated)) {
    Die(absl::StrCat("--listen=", options.listen,
                     " is not a loopback address, and without --tls_client_ca, --token_file or "
                     "--jwt_public_keys "
                     "anyone who reaches it could run any command and poison the action cache. "
                     "Pass --tls_cert/--tls_key with --tls_client_ca and/or --token_file (or "
                     "--jwt_public_keys), or "
                     "--insecure_allow_unauthenticated on a trusted network"));
  }
  options.io_threads = absl::GetFlag(FLAGS_io_threads);
  options.fsync = absl::GetFlag(FLAGS_fsync);  // checked by WorkerServer::Start
  options.concurrency = absl::GetFlag(FLAGS_concurrency);
  if (options.concurrency < 0) options.concurrency = static_cast<int>(std::thread::hardware_concurrency());
  if (options.concurrency > 1024) Die("--concurrency must be at most 1024");
  options.max_queued_actions = absl::GetFlag(FLAGS_max_queued_actions);
  if (options.max_queued_actions < 0) Die("--max_queued_actions cannot be negative");
  options.max_kept_operations = absl::GetFlag(FLAGS_max_kept_operations);
  if (options.max_kept_operations < 0) Die("--max_kept_operations cannot be negative");
  kiln::exec::ExecOptions& exec = options.exec;
  exec.default_timeout = absl::GetFlag(FLAGS_default_action_timeout);
  exec.max_timeout = absl::GetFlag(FLAGS_max_action_timeout);
  exec.kill_grace = absl::GetFlag(FLAGS_kill_grace);
  if (exec.default_timeout <= absl::ZeroDuration() || exec.default_timeout > exec.max_timeout) {
    Die("--default_action_timeout must be positive and at most --max_action_timeout");
  }
  if (exec.kill_grace < absl::ZeroDuration()) Die("--kill_grace cannot be negative");
  exec.platform.allow_network = absl::GetFlag(FLAGS_allow_network);
  for (const std::string& name : absl::GetFlag(FLAGS_platform_ignore)) exec.platform.ignored.insert(name);
  absl::Status declared = kiln::exec::DeclarePlatform(absl::GetFlag(FLAGS_platform), &exec.platform);
  if (!declared.ok()) Die(std::string(declared.message()));
  exec.sandbox_binds = absl::GetFlag(FLAGS_sandbox_bind);
  for (const std::string& bind : exec.sandbox_binds) {
    if (bind.empty() || bind[0] != '/') Die(absl::StrCat("--sandbox_bind: \"", bind, "\" is not an absolute path"));
  }
  exec.worker_name = absl::GetFlag(FLAGS_worker_name);
  if (exec.worker_name.empty()) {
    char host[256] = {};
    gethostname(host, sizeof host - 1);
    exec.worker_name = host;
  }
  exec.build_uid_base = absl::GetFlag(FLAGS_build_uid_base);
  if (exec.build_uid_base == 0) Die("--build_uid_base cannot be 0 (root)");
  exec.build_uid_pool_size = absl::GetFlag(FLAGS_build_uid_pool_size);
  if (exec.build_uid_pool_size < std::max(1, options.concurrency)) {
    Die("--build_uid_pool_size must be at least --concurrency (one uid per running action)");
  }
  exec.staging_limits.max_files = absl::GetFlag(FLAGS_max_input_files);
  exec.staging_limits.max_directories = absl::GetFlag(FLAGS_max_input_directories);
  exec.staging_limits.max_bytes = absl::GetFlag(FLAGS_max_input_bytes).bytes;
  exec.output_limits.max_entries = absl::GetFlag(FLAGS_max_output_files);
  exec.output_limits.max_bytes = absl::GetFlag(FLAGS_max_output_bytes).bytes;
  exec.max_log_bytes = absl::GetFlag(FLAGS_max_log_bytes).bytes;
  exec.max_disk_bytes = absl::GetFlag(FLAGS_max_action_disk_bytes).bytes;
  exec.allow_nested_sandbox = absl::GetFlag(FLAGS_allow_nested_sandbox);
  exec.warm_sandboxes = absl::GetFlag(FLAGS_warm_sandboxes);
  exec.default_memory_bytes = absl::GetFlag(FLAGS_default_action_memory).bytes;
  exec.tmp_size_bytes = absl::GetFlag(FLAGS_action_tmp_size).bytes;
  exec.shm_size_bytes = absl::GetFlag(FLAGS_action_shm_size).bytes;
  exec.max_processes = absl::GetFlag(FLAGS_max_action_processes);
  if (exec.max_processes < 0 || exec.max_processes == 1) {
    Die("--max_action_processes must be 0 (unlimited) or at least 2");
  }
  if (exec.default_memory_bytes != 0 && exec.default_memory_bytes < (1 << 20)) {
    Die("--default_action_memory must be 0 or at least 1MiB");
  }
  if (exec.staging_limits.max_files < 1 || exec.staging_limits.max_directories < 1 ||
      exec.output_limits.max_entries < 1 || exec.max_log_bytes < 1) {
    Die("--max_input_*, --max_output_files and --max_log_bytes must be positive");
  }
  exec.sandbox_binary = absl::GetFlag(FLAGS_sandbox_binary);
  if (exec.sandbox_binary.empty()) {
    std::string self = std::filesystem::read_symlink("/proc/self/exe").string();
    exec.sandbox_binary = self.substr(0, self.rfind('/')) + "/kiln-sandbox";
  }
  kiln::cluster::ClusterOptions& cluster = options.cluster;
  cluster.scheduler = absl::GetFlag(FLAGS_scheduler);
  cluster.cas = absl::GetFlag(FLAGS_cas);
  cluster.instance_name_prefix = absl::GetFlag(FLAGS_instance_name_prefix);
  cluster.size_class = absl::GetFlag(FLAGS_size_class);
  cluster.credentials.tls_ca = absl::GetFlag(FLAGS_cluster_tls_ca);
  cluster.credentials.tls_cert = absl::GetFlag(FLAGS_cluster_tls_cert);
  cluster.credentials.tls_key = absl::GetFlag(FLAGS_cluster_tls_key);
  cluster.credentials.token_file = absl::GetFlag(FLAGS_cluster_token_file);
  if (cluster.scheduler.empty() != cluster.cas.empty()) {
    Die("--scheduler and --cas go together: cluster mode needs the scheduler and the cluster's CAS");
  }
  if (cluster.scheduler.empty() &&
      (!cluster.instance_name_prefix.empty() || cluster.size_class != 0 || !cluster.credentials.tls_ca.empty() ||
       !cluster.credentials.tls_cert.empty() || !cluster.credentials.token_file.empty())) {
    Die("--instance_name_prefix, --size_class and --cluster_* need --scheduler and --cas");
  }
  if (cluster.credentials.tls_cert.empty() != cluster.credentials.tls_key.empty()) {
    Die("--cluster_tls_cert and --cluster_tls_key go together");
  }
  if (!cluster.scheduler.empty() && options.concurrency == 0) {
    Die("--scheduler needs --concurrency of at least 1 (the slots offered to the scheduler)");
  }
  if (options.io_threads < 1 || options.io_threads > 256) {
    Die("--io_threads must be between 1 and 256");
  }

  // Staging and output collection hold a directory fd per level of a tree
  // (up to 256 deep) in every slot, beside the gRPC connections.
  struct rlimit files;
  if (getrlimit(RLIMIT_NOFILE, &files) == 0 && files.rlim_cur < files.rlim_max) {
    files.rlim_cur = files.rlim_max;
    setrlimit(RLIMIT_NOFILE, &files);
  }

  // SIGTERM, SIGINT and SIGHUP are taken by a dedicated thread (sigwait), so
  // they are blocked before any other thread exists and inherit the mask.
  sigset_t handled_signals;
  sigemptyset(&handled_signals);
  sigaddset(&handled_signals, SIGTERM);
  sigaddset(&handled_signals, SIGINT);
  sigaddset(&handled_signals, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &handled_signals, nullptr);

  SetUpActionCgroups(&options.exec);
  auto worker = kiln::WorkerServer::Start(options);
  if (!worker.ok()) Die(std::string(worker.status().message()));
  // Tests and scripts read this line to learn the chosen ports.
  std::printf("kiln-worker listening grpc_port=%d metrics_port=%d\n", (*worker)->grpc_port(),
              (*worker)->metrics_port());
  std::fflush(stdout);

  std::thread stopper([&] {
    int signal_number = 0;
    // SIGHUP: re-read the principals file now rather than within a second.
    while (sigwait(&handled_signals, &signal_number) == 0 && signal_number == SIGHUP) {
      spdlog::info("received SIGHUP, re-reading --token_file and --jwt_public_keys");
      (*worker)->ReloadCredentials();
    }
    spdlog::info("received signal {}, shutting down", signal_number);
    (*worker)->Shutdown(absl::GetFlag(FLAGS_drain_grace));
  });
  (*worker)->Wait();
  stopper.join();
  return 0;
}
