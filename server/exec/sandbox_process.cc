#include "server/exec/sandbox_process.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "sandbox/sandbox_proto.h"

namespace kiln::exec {

absl::StatusOr<std::unique_ptr<SandboxProcess>> SandboxProcess::Start(SandboxSpawner& spawner) {
  int pair[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) != 0) return PosixError("socketpair", errno);
  UniqueFd ours(pair[0]), theirs(pair[1]);
  ASSIGN_OR_RETURN(SpawnedLauncher launcher, spawner.Spawn(theirs.get()));
  return std::unique_ptr<SandboxProcess>(new SandboxProcess(std::move(launcher), std::move(ours)));
}

SandboxProcess::~SandboxProcess() {
  if (!exited_) {
    Kill();
    Wait();
  }
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

void SandboxProcess::Wait() {
  // A pidfd is readable once its process has exited (the spawner reaps it).
  struct pollfd gone = {pidfd_.get(), POLLIN, 0};
  while (poll(&gone, 1, -1) < 0 && errno == EINTR) {
  }
  exited_ = true;
}

bool SandboxProcess::Exited() {
  struct pollfd gone = {pidfd_.get(), POLLIN, 0};
  if (poll(&gone, 1, 0) == 1) exited_ = true;
  return exited_;
}

void SandboxProcess::Terminate() {
  syscall(SYS_pidfd_send_signal, pidfd_.get(), SIGTERM, nullptr, 0);
}

void SandboxProcess::Kill() {
  syscall(SYS_pidfd_send_signal, pidfd_.get(), SIGKILL, nullptr, 0);
}

}  // namespace kiln::exec
