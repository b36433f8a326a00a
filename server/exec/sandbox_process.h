// One kiln-sandbox child of the (multi-threaded) worker, serving one action
// over a socketpair (kiln-sandbox --serve_fd, proto/kiln/sandbox/v1/
// sandbox.proto). It is started with posix_spawn, which execs immediately:
// no complex code runs between fork and exec in the threaded server.
//
// Send the prepare request at once (the sandbox then builds its namespaces
// and root in the background), the action's request whenever it is staged,
// then AwaitResult: it returns as soon as the action's processes are gone,
// while kiln-sandbox is still tearing down; Wait reaps it afterwards.
// Terminate may be called from any thread; the rest from one thread.
#ifndef KILN_SERVER_EXEC_SANDBOX_PROCESS_H_
#define KILN_SERVER_EXEC_SANDBOX_PROCESS_H_

#include <sys/types.h>

#include <atomic>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/posix.h"
#include "kiln/sandbox/v1/sandbox.pb.h"

namespace kiln::exec {

class SandboxProcess {
 public:
  static absl::StatusOr<std::unique_ptr<SandboxProcess>> Start(const std::string& sandbox_binary);
  ~SandboxProcess();  // kills and reaps it if Wait was not called

  absl::Status Send(const kiln::sandbox::v1::SandboxRequest& request);
  // The one SandboxResult; an error when kiln-sandbox ended without one.
  absl::StatusOr<kiln::sandbox::v1::SandboxResult> AwaitResult();
  // Waits until the result (or the end of the socket) can be read, or until
  // `deadline`; true when AwaitResult will not block.
  bool WaitForResult(absl::Time deadline);
  // Blocks until it exits; returns its exit code (128+N for signal N).
  int Wait();
  // Asks the sandbox to stop: kiln-sandbox forwards SIGTERM to the action
  // and kills the whole sandbox after its grace period.
  void Terminate();
  void Kill();
  pid_t pid() const { return pid_; }

 private:
  SandboxProcess(pid_t pid, int pidfd, UniqueFd socket)
      : pid_(pid), pidfd_(pidfd), socket_(std::move(socket)) {}
  const pid_t pid_;
  // Signals go through a pidfd: never to a recycled pid, even racing Wait().
  const int pidfd_;
  UniqueFd socket_;
  std::atomic<bool> reaped_{false};
};

}  // namespace kiln::exec

#endif  // KILN_SERVER_EXEC_SANDBOX_PROCESS_H_
