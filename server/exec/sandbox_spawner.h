// kiln-worker's one kiln-sandbox spawner (kiln-sandbox --spawner_fd): a
// small single-threaded process, started once with posix_spawn, that forks
// a launcher for each sandbox. An exec of kiln-sandbox per sandbox cost
// each one glibc's start-up (dozens of cpuid calls, each a VM exit on a
// virtual machine) and the compilation of the seccomp filter; a fork of the
// spawner inherits both done. The worker itself still never forks.
//
// The launchers are the spawner's children: the worker signals and awaits
// them through pidfds. The spawner ends when this object closes its socket
// (or the worker exits); it is started again if it died. Thread-safe.
#ifndef KILN_SERVER_EXEC_SANDBOX_SPAWNER_H_
#define KILN_SERVER_EXEC_SANDBOX_SPAWNER_H_

#include <sys/types.h>

#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "common/posix.h"

namespace kiln::exec {

struct SpawnedLauncher {
  pid_t pid = -1;
  UniqueFd pidfd;  // signals, and readable once the launcher has exited
};

class SandboxSpawner {
 public:
  explicit SandboxSpawner(std::string sandbox_binary) : sandbox_binary_(std::move(sandbox_binary)) {}
  ~SandboxSpawner();  // the spawner ends; launchers that answered finish their teardown
  SandboxSpawner(const SandboxSpawner&) = delete;
  SandboxSpawner& operator=(const SandboxSpawner&) = delete;

  // A new launcher serving one action on `serve_fd` (the caller's
  // descriptor is copied; the caller keeps its own).
  absl::StatusOr<SpawnedLauncher> Spawn(int serve_fd) ABSL_LOCKS_EXCLUDED(mu_);

  // The spawner's pid, -1 before the first Spawn (tests, benchmarks).
  pid_t pid() const ABSL_LOCKS_EXCLUDED(mu_);

 private:
  absl::Status StartLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void StopLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<SpawnedLauncher> AskLocked(int serve_fd) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const std::string sandbox_binary_;
  mutable absl::Mutex mu_;
  pid_t pid_ ABSL_GUARDED_BY(mu_) = -1;
  UniqueFd socket_ ABSL_GUARDED_BY(mu_);
};

}  // namespace kiln::exec

#endif  // KILN_SERVER_EXEC_SANDBOX_SPAWNER_H_
