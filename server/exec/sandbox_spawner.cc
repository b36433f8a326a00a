#include "server/exec/sandbox_spawner.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

extern char** environ;

namespace kiln::exec {
namespace {

// The descriptor the spawner gets its end of the control socket on.
constexpr int kSpawnerFd = 3;
// A spawner answers within a fork; one that does not is stuck.
constexpr int kAnswerTimeoutMs = 10000;

}  // namespace

SandboxSpawner::~SandboxSpawner() {
  absl::MutexLock lock(&mu_);
  StopLocked();
}

pid_t SandboxSpawner::pid() const {
  absl::MutexLock lock(&mu_);
  return pid_;
}

void SandboxSpawner::StopLocked() {
  socket_.Reset();  // the spawner sees the end of its socket and exits
  if (pid_ > 0) {
    while (waitpid(pid_, nullptr, 0) < 0 && errno == EINTR) {
    }
  }
  pid_ = -1;
}

absl::Status SandboxSpawner::StartLocked() {
  int pair[2];
  if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair) != 0) {
    return PosixError("socketpair for the sandbox spawner", errno);
  }
  UniqueFd ours(pair[0]), theirs(pair[1]);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  // Launchers report through their sockets; their own output goes nowhere.
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0);
  posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0);
  posix_spawn_file_actions_adddup2(&actions, theirs.get(), kSpawnerFd);  // clears close-on-exec
  // The worker blocks SIGTERM/SIGINT in every thread for its own shutdown;
  // the spawner starts with a clean mask and default handlers.
  posix_spawnattr_t attributes;
  posix_spawnattr_init(&attributes);
  sigset_t empty, all;
  sigemptyset(&empty);
  sigfillset(&all);
  posix_spawnattr_setsigmask(&attributes, &empty);
  posix_spawnattr_setsigdefault(&attributes, &all);
  posix_spawnattr_setflags(&attributes, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
  std::string flag = absl::StrCat("--spawner_fd=", kSpawnerFd);
  std::vector<char*> args = {const_cast<char*>(sandbox_binary_.c_str()), flag.data(), nullptr};
  pid_t pid = -1;
  const int error = posix_spawn(&pid, args[0], &actions, &attributes, args.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attributes);
  if (error != 0) return PosixError("start " + sandbox_binary_, error);
  pid_ = pid;
  socket_ = std::move(ours);
  return absl::OkStatus();
}

absl::StatusOr<SpawnedLauncher> SandboxSpawner::AskLocked(int serve_fd) {
  const char byte = 0;
  if (SendWithDescriptor(socket_.get(), &byte, 1, serve_fd) != 1) {
    return absl::UnavailableError(absl::StrCat("the sandbox spawner is gone (", strerror(errno), ")"));
  }
  struct pollfd ready = {socket_.get(), POLLIN, 0};
  int polled;
  do {
    polled = poll(&ready, 1, kAnswerTimeoutMs);
  } while (polled < 0 && errno == EINTR);
  if (polled == 0) return absl::UnavailableError("the sandbox spawner did not answer within 10 s");
  int32_t pid_or_error = 0;
  int pidfd = -1;
  const ssize_t n = ReceiveWithDescriptor(socket_.get(), &pid_or_error, sizeof pid_or_error, &pidfd);
  SpawnedLauncher launcher;
  launcher.pidfd = UniqueFd(pidfd);
  if (n != sizeof pid_or_error) {
    return absl::UnavailableError(absl::StrCat("the sandbox spawner ended (", n < 0 ? strerror(errno) : "no answer", ")"));
  }
  if (pid_or_error <= 0) return PosixError("the sandbox spawner's fork", -pid_or_error);
  if (!launcher.pidfd.valid()) return absl::InternalError("the sandbox spawner sent no pidfd for its launcher");
  launcher.pid = pid_or_error;
  return launcher;
}

absl::StatusOr<SpawnedLauncher> SandboxSpawner::Spawn(int serve_fd) {
  absl::MutexLock lock(&mu_);
  if (!socket_.valid()) RETURN_IF_ERROR(StartLocked());
  absl::StatusOr<SpawnedLauncher> launcher = AskLocked(serve_fd);
  if (launcher.ok() || !absl::IsUnavailable(launcher.status())) return launcher;
  // The spawner died (or hangs): a new one, once. Its launchers that had
  // not answered yet died with it; those that had finish by themselves.
  if (pid_ > 0) kill(pid_, SIGKILL);
  StopLocked();
  RETURN_IF_ERROR(StartLocked());
  return AskLocked(serve_fd);
}

}  // namespace kiln::exec
