// kiln-worker: a REAPI v2 endpoint with an embedded on-disk CAS and action
// cache. See README.md for the flags in context.
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <thread>

#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "common/flag_types.h"
#include "server/worker_server.h"

ABSL_FLAG(kiln::HostPort, listen, (kiln::HostPort{"127.0.0.1", 8980}),
          "gRPC address to serve REAPI on, HOST:PORT (port 0 picks a free one)");
ABSL_FLAG(std::string, metrics_listen, "127.0.0.1:8981",
          "HOST:PORT for Prometheus metrics at /metrics; empty disables them");
ABSL_FLAG(std::string, state_dir, "",
          "directory for the CAS and action cache (default: /var/lib/kiln as root, "
          "$HOME/.local/state/kiln otherwise)");
ABSL_FLAG(kiln::ByteSize, cas_max_bytes, (kiln::ByteSize{int64_t{10} << 30}),
          "cap on the CAS size; least recently used blobs are evicted beyond it (e.g. 50GiB)");
ABSL_FLAG(kiln::ByteSize, cas_max_blob_bytes, (kiln::ByteSize{0}),
          "largest single blob accepted; 0 means --cas_max_bytes");
ABSL_FLAG(int, io_threads, 8, "threads doing CAS disk I/O for the gRPC services");
ABSL_FLAG(std::string, log_level, "info", "one of trace, debug, info, warn, error");

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

}  // namespace

int main(int argc, char** argv) {
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
  options.cas_max_bytes = absl::GetFlag(FLAGS_cas_max_bytes).bytes;
  options.cas_max_blob_bytes = absl::GetFlag(FLAGS_cas_max_blob_bytes).bytes;
  if (options.cas_max_bytes == 0) Die("--cas_max_bytes must be more than 0");
  if (options.cas_max_blob_bytes > options.cas_max_bytes) {
    Die("--cas_max_blob_bytes cannot be larger than --cas_max_bytes");
  }
  options.io_threads = absl::GetFlag(FLAGS_io_threads);
  if (options.io_threads < 1 || options.io_threads > 256) {
    Die("--io_threads must be between 1 and 256");
  }

  // SIGTERM and SIGINT are taken by a dedicated thread (sigwait), so they are
  // blocked before any other thread exists and inherit the mask.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  auto worker = kiln::WorkerServer::Start(options);
  if (!worker.ok()) Die(std::string(worker.status().message()));
  // Tests and scripts read this line to learn the chosen ports.
  std::printf("kiln-worker listening grpc_port=%d metrics_port=%d\n", (*worker)->grpc_port(),
              (*worker)->metrics_port());
  std::fflush(stdout);

  std::thread stopper([&] {
    int signal_number = 0;
    sigwait(&stop_signals, &signal_number);
    spdlog::info("received signal {}, shutting down", signal_number);
    (*worker)->Shutdown(absl::Seconds(10));
  });
  (*worker)->Wait();
  stopper.join();
  return 0;
}
