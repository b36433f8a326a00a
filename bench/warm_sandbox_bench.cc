// The sandbox's part of an action's critical path with a warm sandbox, the
// way kiln-worker drives it: kiln-sandbox --serve_fd is started and sent its
// prepare request, given time to get ready (as a slot's warm sandbox is
// between actions), then timed from the action's request to its result
// (every process gone) for CMD.
//
//   warm_sandbox_bench --sandbox=build/bin/kiln-sandbox --runs=200 -- /bin/true
//
// Prints "median_ms p90_ms min_ms setup_median_ms completion_median_ms" on
// one line: request to result, and of it, request to exec (setup) and exit
// to result received (completion). bench/run_sandbox_bench.sh compares the
// first with bwrap and unshare spawning the same command.
#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/time/clock.h"
#include "server/exec/sandbox_process.h"

ABSL_FLAG(int, runs, 200, "timed runs");
ABSL_FLAG(int, warmup, 10, "untimed runs first");
ABSL_FLAG(std::string, sandbox, "build/bin/kiln-sandbox", "kiln-sandbox");
ABSL_FLAG(absl::Duration, ready_wait, absl::Milliseconds(30),
          "time a warm sandbox gets to prepare before its request (a slot's idle time)");
ABSL_FLAG(bool, next_during_action, false,
          "start the next sandbox's preparation as the request goes out, as kiln-worker's pool "
          "does for the slot's next action, so that it competes with the timed part");

namespace {

int64_t MonotonicNanos() {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t{ts.tv_sec} * 1000000000 + ts.tv_nsec;
}

double Percentile(std::vector<double> v, double p) {
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(p * v.size()))];
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<char*> command = absl::ParseCommandLine(argc, argv);
  command.erase(command.begin());
  if (command.empty()) {
    std::fprintf(stderr, "usage: warm_sandbox_bench [--runs=N] -- CMD [ARGS...]\n");
    return 2;
  }
  // As kiln-worker does: every run's work dir and log files are beneath one
  // parent the sandbox knows while it prepares.
  char parent_template[] = "/tmp/kiln-warm-bench.XXXXXX";
  const std::string parent = mkdtemp(parent_template);
  kiln::sandbox::v1::SandboxRequest prepare;
  prepare.set_use_default_binds(true);
  prepare.set_uid(61000);
  prepare.set_gid(61000);
  prepare.set_work_dir_parent(parent);
  std::vector<double> total, setup, completion;
  kiln::exec::SandboxSpawner spawner(absl::GetFlag(FLAGS_sandbox));  // as kiln-worker's pool has one
  const int warmup = absl::GetFlag(FLAGS_warmup);
  auto start_sandbox = [&]() -> std::unique_ptr<kiln::exec::SandboxProcess> {
    auto process = kiln::exec::SandboxProcess::Start(spawner);
    if (!process.ok() || !(*process)->Send(prepare).ok()) {
      std::fprintf(stderr, "cannot start kiln-sandbox\n");
      std::exit(1);
    }
    return *std::move(process);
  };
  const bool next_during_action = absl::GetFlag(FLAGS_next_during_action);
  std::unique_ptr<kiln::exec::SandboxProcess> next;
  for (int i = 0; i < warmup + absl::GetFlag(FLAGS_runs); ++i) {
    std::unique_ptr<kiln::exec::SandboxProcess> process = next != nullptr ? std::move(next) : start_sandbox();
    const std::string dir = parent + "/" + std::to_string(i);
    mkdir(dir.c_str(), 0700);
    mkdir((dir + "/root").c_str(), 0755);
    close(open((dir + "/stdout").c_str(), O_WRONLY | O_CREAT, 0600));
    close(open((dir + "/stderr").c_str(), O_WRONLY | O_CREAT, 0600));
    kiln::sandbox::v1::SandboxRequest action = prepare;
    for (char* arg : command) action.add_argv(arg);
    action.set_work_dir(dir + "/root");
    action.set_stdout_path(dir + "/stdout");
    action.set_stderr_path(dir + "/stderr");
    absl::SleepFor(absl::GetFlag(FLAGS_ready_wait));
    const int64_t start = MonotonicNanos();
    if (!process->Send(action).ok()) return 1;
    if (next_during_action) next = start_sandbox();
    auto result = process->AwaitResult();
    const int64_t end = MonotonicNanos();
    if (!result.ok() || result->error_code() != 0 || result->exit_code() != 0) {
      std::fprintf(stderr, "the action failed: %s %s\n", result.status().ToString().c_str(),
                   result.ok() ? result->error_message().c_str() : "");
      return 1;
    }
    process->Wait();  // teardown, outside the timed part
    for (const char* name : {"/root", "/stdout", "/stderr", ""}) {
      std::string path = dir + name;
      if (*name == '\0' || std::string(name) == "/root") rmdir(path.c_str()); else unlink(path.c_str());
    }
    if (i < warmup) continue;
    total.push_back((end - start) / 1e6);
    setup.push_back((result->stages().exec() - start) / 1e6);
    completion.push_back((end - result->stages().action_exited()) / 1e6);
  }
  rmdir(parent.c_str());
  std::printf("%.2f %.2f %.2f %.2f %.2f\n", Percentile(total, 0.5), Percentile(total, 0.9),
              Percentile(total, 0), Percentile(setup, 0.5), Percentile(completion, 0.5));
  return 0;
}
