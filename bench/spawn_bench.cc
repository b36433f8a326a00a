// Times how long a command takes from spawn to exit, over many runs.
//
//   spawn_bench --runs=200 --warmup=10 -- CMD [ARGS...]
//
// Prints "median_ms p90_ms min_ms" on one line. bench/run_sandbox_bench.sh
// runs it for kiln-sandbox and its peers side by side.
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"

ABSL_FLAG(int, runs, 200, "timed runs");
ABSL_FLAG(int, warmup, 10, "untimed runs first");

extern char** environ;

int main(int argc, char** argv) {
  std::vector<char*> command = absl::ParseCommandLine(argc, argv);
  command.erase(command.begin());  // program name
  if (command.empty()) {
    std::fprintf(stderr, "usage: spawn_bench [--runs=N] -- CMD [ARGS...]\n");
    return 2;
  }
  command.push_back(nullptr);
  std::vector<double> times;
  const int warmup = absl::GetFlag(FLAGS_warmup);
  for (int i = 0; i < warmup + absl::GetFlag(FLAGS_runs); ++i) {
    auto start = std::chrono::steady_clock::now();
    pid_t pid;
    if (posix_spawn(&pid, command[0], nullptr, nullptr, command.data(), environ) != 0) {
      std::perror("posix_spawn");
      return 1;
    }
    int status = 0;
    while (waitpid(pid, &status, 0) < 0) {
    }
    double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
      std::fprintf(stderr, "%s failed (status %d)\n", command[0], status);
      return 1;
    }
    if (i >= warmup) times.push_back(ms);
  }
  std::sort(times.begin(), times.end());
  std::printf("%.3f %.3f %.3f\n", times[times.size() / 2], times[times.size() * 9 / 10], times.front());
  return 0;
}
