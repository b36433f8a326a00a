#include "server/exec/sandbox_process.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <vector>

#include "absl/strings/str_cat.h"
#include "sandbox/sandbox_proto.h"

extern char** environ;

namespace kiln::exec {

// The descriptor kiln-sandbox gets its end of the socketpair on.
constexpr int kServeFd = 3;

absl::StatusOr<std::unique_ptr<SandboxProcess>> SandboxProcess::Start(const std::string& sandbox_binary) {
  int pair[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) != 0) return PosixError("socketpair", errno);
  UniqueFd ours(pair[0]), theirs(pair[1]);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  // kiln-sandbox reports through the socket; its own output goes nowhere.
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0);
  posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0);
  // dup2 clears close-on-exec on the copy.
  posix_spawn_file_actions_adddup2(&actions, theirs.get(), kServeFd);
  // The worker blocks SIGTERM/SIGINT in every thread for its own shutdown;
  // the sandbox starts with a clean mask and default handlers.
  posix_spawnattr_t attributes;
  posix_spawnattr_init(&attributes);
  sigset_t empty, all;
  sigemptyset(&empty);
  sigfillset(&all);
  posix_spawnattr_setsigmask(&attributes, &empty);
  posix_spawnattr_setsigdefault(&attributes, &all);
  posix_spawnattr_setflags(&attributes, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
  std::string serve = "--serve_fd=" + std::to_string(kServeFd);
  std::vector<char*> args = {const_cast<char*>(sandbox_binary.c_str()), serve.data(), nullptr};
  pid_t pid = -1;
  int error = posix_spawn(&pid, args[0], &actions, &attributes, args.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attributes);
  if (error != 0) return PosixError("start " + sandbox_binary, error);
  // Until we wait for it, the child's pid cannot be reused, so this is safe.
  int pidfd = static_cast<int>(syscall(SYS_pidfd_open, pid, 0));
  return std::unique_ptr<SandboxProcess>(new SandboxProcess(pid, pidfd, std::move(ours)));
}

SandboxProcess::~SandboxProcess() {
  if (!reaped_) {
    Kill();
    Wait();
  }
  if (pidfd_ >= 0) close(pidfd_);
}

absl::Status SandboxProcess::Send(const kiln::sandbox::v1::SandboxRequest& request) {
  return sandbox::WriteMessage(socket_.get(), request);
}

absl::StatusOr<kiln::sandbox::v1::SandboxResult> SandboxProcess::AwaitResult() {
  kiln::sandbox::v1::SandboxResult result;
  absl::Status read = sandbox::ReadMessage(socket_.get(), &result);
  if (!read.ok()) {
    return absl::InternalError(absl::StrCat("kiln-sandbox ended without a result: ", read.message()));
  }
  return result;
}

bool SandboxProcess::WaitForResult(absl::Time deadline) {
  while (true) {
    const absl::Duration left = deadline - absl::Now();
    if (left <= absl::ZeroDuration()) return false;
    // Rounded up, so that a wake-up never comes before the deadline.
    const int timeout_ms = left >= absl::Hours(1) ? 3600 * 1000 : static_cast<int>(absl::ToInt64Milliseconds(left + absl::Milliseconds(1) - absl::Nanoseconds(1)));
    struct pollfd ready = {socket_.get(), POLLIN, 0};
    const int n = poll(&ready, 1, timeout_ms);
    if (n > 0) return true;  // readable, or hung up / failed: AwaitResult says which
    if (n < 0 && errno != EINTR) return true;
  }
}

int SandboxProcess::Wait() {
  int status = 0;
  while (waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
  }
  reaped_ = true;
  return WIFSIGNALED(status) ? 128 + WTERMSIG(status) : WEXITSTATUS(status);
}

void SandboxProcess::Terminate() {
  syscall(SYS_pidfd_send_signal, pidfd_, SIGTERM, nullptr, 0);
}

void SandboxProcess::Kill() {
  syscall(SYS_pidfd_send_signal, pidfd_, SIGKILL, nullptr, 0);
}

}  // namespace kiln::exec
