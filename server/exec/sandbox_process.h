// One kiln-sandbox launcher serving one action over a socketpair (as
// kiln-sandbox --serve_fd, proto/kiln/sandbox/v1/sandbox.proto), forked by
// the worker's SandboxSpawner: the threaded server itself never forks.
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
#include "server/exec/sandbox_spawner.h"

namespace kiln::exec {

class SandboxProcess {
 public:
  static absl::StatusOr<std::unique_ptr<SandboxProcess>> Start(SandboxSpawner& spawner);
  ~SandboxProcess();  // kills it and waits for its end if Wait was not called

  absl::Status Send(const kiln::sandbox::v1::SandboxRequest& request);
  // The one SandboxResult; an error when kiln-sandbox ended without one.
  absl::StatusOr<kiln::sandbox::v1::SandboxResult> AwaitResult();
  // Waits until the result (or the end of the socket) can be read, or until
  // `deadline`; true when AwaitResult will not block.
  bool WaitForResult(absl::Time deadline);
  // Blocks until it has exited (its namespaces and cgroup are gone then).
  void Wait();
  // Whether it has exited already (e.g. killed while it waited), without blocking.
  bool Exited();
  // Asks the sandbox to stop: kiln-sandbox forwards SIGTERM to the action
  // and kills the whole sandbox after its grace period.
  void Terminate();
  void Kill();
  pid_t pid() const { return pid_; }

 private:
  SandboxProcess(SpawnedLauncher launcher, UniqueFd socket)
      : pid_(launcher.pid), pidfd_(std::move(launcher.pidfd)), socket_(std::move(socket)) {}
  const pid_t pid_;
  // Signals and the wait go through a pidfd: never to a recycled pid.
  const UniqueFd pidfd_;
  UniqueFd socket_;
  std::atomic<bool> exited_{false};
};

}  // namespace kiln::exec

#endif  // KILN_SERVER_EXEC_SANDBOX_PROCESS_H_
