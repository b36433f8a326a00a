// One kiln-sandbox child of the (multi-threaded) worker. It is started with
// posix_spawn, which execs immediately: no complex code runs between fork and
// exec in the threaded server. Thread-safe.
#ifndef KILN_SERVER_EXEC_SANDBOX_PROCESS_H_
#define KILN_SERVER_EXEC_SANDBOX_PROCESS_H_

#include <sys/types.h>

#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace kiln::exec {

class SandboxProcess {
 public:
  // stdout and stderr go to the given files (created or truncated).
  static absl::StatusOr<std::unique_ptr<SandboxProcess>> Start(const std::vector<std::string>& argv,
                                                               const std::string& stdout_path,
                                                               const std::string& stderr_path);
  ~SandboxProcess();  // kills and reaps it if Wait was not called

  // Blocks until it exits; returns its exit code (128+N for signal N).
  int Wait();
  // Asks the sandbox to stop: kiln-sandbox forwards SIGTERM to the action
  // and kills the whole sandbox after its grace period.
  void Terminate();
  pid_t pid() const { return pid_; }

 private:
  SandboxProcess(pid_t pid, int pidfd) : pid_(pid), pidfd_(pidfd) {}
  const pid_t pid_;
  // Signals go through a pidfd: never to a recycled pid, even racing Wait().
  const int pidfd_;
  std::atomic<bool> reaped_{false};
};

}  // namespace kiln::exec

#endif  // KILN_SERVER_EXEC_SANDBOX_PROCESS_H_
