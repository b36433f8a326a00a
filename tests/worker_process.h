// Runs the real kiln-worker binary for tests: spawns it, learns its ports
// from its first stdout line, and always kills and reaps it.
#ifndef KILN_TESTS_WORKER_PROCESS_H_
#define KILN_TESTS_WORKER_PROCESS_H_

#include <sys/types.h>

#include <string>
#include <vector>

namespace kiln::testing {

struct ProcessResult {
  int exit_code = -1;  // 128+N when killed by signal N
  std::string stdout_text;
  std::string stderr_text;
};

// Runs `argv` to completion (with a 30 s safety timeout).
ProcessResult RunToCompletion(const std::vector<std::string>& argv);

class WorkerProcess {
 public:
  // Starts kiln-worker from $KILN_BIN_DIR with `flags`; waits for it to listen.
  // `prefix` runs before it, e.g. setpriv to drop privileges.
  explicit WorkerProcess(const std::vector<std::string>& flags,
                         const std::vector<std::string>& prefix = {});
  ~WorkerProcess();  // SIGKILL + reap if still running

  bool started() const { return grpc_port_ > 0; }
  int grpc_port() const { return grpc_port_; }
  int metrics_port() const { return metrics_port_; }
  pid_t pid() const { return pid_; }
  std::string address() const { return "127.0.0.1:" + std::to_string(grpc_port_); }
  // The worker's stdout/stderr log; removed with this object.
  const std::string& log_path() const { return log_path_; }
  // Sends `signal` and waits; returns the exit code (128+N for signals).
  int Stop(int signal);

 private:
  int pid_ = -1;
  std::string log_path_;
  int grpc_port_ = 0;
  int metrics_port_ = 0;
};

// Plain HTTP GET on loopback; returns the body ("" on failure).
std::string HttpGet(int port, const std::string& path);

}  // namespace kiln::testing

#endif  // KILN_TESTS_WORKER_PROCESS_H_
