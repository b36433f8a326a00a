#include "tests/worker_process.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>

#include <gtest/gtest.h>

extern char** environ;

namespace kiln::testing {
namespace {

std::string BinDir() {
  const char* dir = getenv("KILN_BIN_DIR");
  return dir != nullptr ? dir : "build/bin";
}

// Spawns `argv` with stdout (and stderr, unless `stderr_path` is given) on
// pipes whose read ends are returned.
int Spawn(const std::vector<std::string>& argv, int* out_fd, int* err_fd,
          const std::string& stderr_path = "") {
  int out_pipe[2], err_pipe[2];
  if (pipe2(out_pipe, O_CLOEXEC) != 0 || pipe2(err_pipe, O_CLOEXEC) != 0) return -1;
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, out_pipe[1], 1);
  if (stderr_path.empty()) {
    posix_spawn_file_actions_adddup2(&actions, err_pipe[1], 2);
  } else {
    posix_spawn_file_actions_addopen(&actions, 2, stderr_path.c_str(),
                                     O_WRONLY | O_CREAT | O_APPEND, 0644);
  }
  std::vector<char*> args;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid = -1;
  if (posix_spawn(&pid, args[0], &actions, nullptr, args.data(), environ) != 0) pid = -1;
  posix_spawn_file_actions_destroy(&actions);
  close(out_pipe[1]);
  close(err_pipe[1]);
  *out_fd = out_pipe[0];
  *err_fd = err_pipe[0];
  return pid;
}

int ExitCode(int status) {
  return WIFSIGNALED(status) ? 128 + WTERMSIG(status) : WEXITSTATUS(status);
}

}  // namespace

ProcessResult RunToCompletion(const std::vector<std::string>& argv) {
  ProcessResult result;
  int out_fd, err_fd;
  int pid = Spawn(argv, &out_fd, &err_fd);
  if (pid < 0) return result;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  struct pollfd fds[2] = {{out_fd, POLLIN, 0}, {err_fd, POLLIN, 0}};
  int open_fds = 2;
  while (open_fds > 0 && std::chrono::steady_clock::now() < deadline) {
    if (poll(fds, 2, 1000) <= 0) continue;
    for (int i = 0; i < 2; ++i) {
      if (fds[i].fd < 0 || !(fds[i].revents & (POLLIN | POLLHUP))) continue;
      char buffer[4096];
      ssize_t n = read(fds[i].fd, buffer, sizeof buffer);
      if (n <= 0) {
        close(fds[i].fd);
        fds[i].fd = -1;
        --open_fds;
      } else {
        (i == 0 ? result.stdout_text : result.stderr_text).append(buffer, n);
      }
    }
  }
  if (open_fds > 0) kill(pid, SIGKILL);
  for (auto& f : fds) {
    if (f.fd >= 0) close(f.fd);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  result.exit_code = ExitCode(status);
  return result;
}

WorkerProcess::WorkerProcess(const std::vector<std::string>& flags,
                             const std::vector<std::string>& prefix) {
  std::vector<std::string> argv = prefix;
  argv.push_back(BinDir() + "/kiln-worker");
  argv.insert(argv.end(), flags.begin(), flags.end());
  int out_fd, err_fd;
  // The worker's log goes to a file: a pipe nobody drains would block it.
  static int instance = 0;
  log_path_ = ::testing::TempDir() + "/kiln-worker-" + std::to_string(getpid()) + "-" +
              std::to_string(instance++) + ".log";
  pid_ = Spawn(argv, &out_fd, &err_fd, log_path_);
  if (pid_ < 0) return;
  close(err_fd);
  std::string line;
  struct pollfd pfd = {out_fd, POLLIN, 0};
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (line.find('\n') == std::string::npos && std::chrono::steady_clock::now() < deadline) {
    if (poll(&pfd, 1, 200) <= 0) continue;
    char c[256];
    ssize_t n = read(out_fd, c, sizeof c);
    if (n <= 0) break;
    line.append(c, n);
  }
  close(out_fd);
  std::sscanf(line.c_str(), "kiln-worker listening grpc_port=%d metrics_port=%d", &grpc_port_,
              &metrics_port_);
}

WorkerProcess::~WorkerProcess() {
  if (pid_ > 0) Stop(SIGKILL);
  if (!log_path_.empty()) unlink(log_path_.c_str());
}

int WorkerProcess::Stop(int signal) {
  if (pid_ <= 0) return -1;
  kill(pid_, signal);
  int status = 0;
  int rc;
  do {
    rc = waitpid(pid_, &status, 0);
  } while (rc < 0 && errno == EINTR);
  pid_ = -1;
  return ExitCode(status);
}

std::string HttpGet(int port, const std::string& path) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_in address = {};
  address.sin_family = AF_INET;
  address.sin_port = htons(port);
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  std::string response;
  if (connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0) {
    std::string request = "GET " + path + " HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
    if (write(fd, request.data(), request.size()) == static_cast<ssize_t>(request.size())) {
      char buffer[8192];
      ssize_t n;
      while ((n = read(fd, buffer, sizeof buffer)) > 0) response.append(buffer, n);
    }
  }
  close(fd);
  size_t body = response.find("\r\n\r\n");
  return body == std::string::npos ? "" : response.substr(body + 4);
}

}  // namespace kiln::testing
