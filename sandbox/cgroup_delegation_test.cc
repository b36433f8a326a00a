// The worker's start-up clean-up of per-sandbox cgroups a crash left: on this
// process's own cgroups, v1 on the development host and v2 in the VM of
// tests/cgroup2_vm_test.sh. Needs root (cgroup directories).
#include "sandbox/cgroup_delegation.h"

#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <thread>

#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "sandbox/cgroup_paths.h"

namespace kiln::sandbox {
namespace {

bool Exists(const std::string& path) { return std::filesystem::exists(path); }

// Forks `argv`; the caller waits for it.
pid_t Spawn(const std::vector<std::string>& argv) {
  pid_t pid = fork();
  if (pid == 0) {
    std::vector<char*> args;
    for (const std::string& arg : argv) args.push_back(const_cast<char*>(arg.c_str()));
    args.push_back(nullptr);
    execv(args[0], args.data());
    _exit(127);
  }
  return pid;
}

// Whatever a failed test left: processes (killed, reaped) and directories.
struct Cleanup {
  std::vector<pid_t> pids;
  std::vector<std::string> dirs;
  ~Cleanup() {
    for (pid_t pid : pids) {
      kill(pid, SIGTERM);
      waitpid(pid, nullptr, 0);
    }
    for (const std::string& dir : dirs) rmdir(dir.c_str());
  }
};

TEST(RemoveLeftoverSandboxCgroupsTest, RemovesTheCgroupsOfDeadLaunchersAndKillsWhatRunsInThem) {
  std::vector<std::string> parents = ActionCgroupParents(OwnV2CgroupWithControllers());
  ASSERT_FALSE(parents.empty());
  Cleanup cleanup;

  // A launcher that is running: its cgroup is in use and must stay.
  const char* bin = getenv("KILN_BIN_DIR");
  pid_t launcher = Spawn({std::string(bin ? bin : "build/bin") + "/kiln-sandbox", "--pids=50",
                          "--", "/bin/sleep", "20"});
  ASSERT_GT(launcher, 0);
  cleanup.pids.push_back(launcher);
  std::string running;
  for (int i = 0; i < 200 && running.empty(); ++i) {
    for (const std::string& parent : parents) {
      std::string path = absl::StrCat(parent, "/", kSandboxCgroupPrefix, launcher, "-0");
      if (Exists(path)) running = path;
    }
    if (running.empty()) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ASSERT_FALSE(running.empty()) << "kiln-sandbox " << launcher << " made no cgroup";

  // Leftovers of a launcher that cannot be running (beyond the kernel's
  // largest pid), one of them still holding a process; and a directory of
  // another name, which is not Kiln's to remove.
  std::vector<std::string> leftovers, others;
  for (size_t i = 0; i < parents.size(); ++i) {
    leftovers.push_back(absl::StrCat(parents[i], "/", kSandboxCgroupPrefix, "99999999-", i));
    others.push_back(absl::StrCat(parents[i], "/", kSandboxCgroupPrefix, "test-other"));
    cleanup.dirs.push_back(leftovers.back());
    cleanup.dirs.push_back(others.back());
    ASSERT_EQ(mkdir(leftovers.back().c_str(), 0755), 0) << leftovers.back() << ": " << strerror(errno);
    ASSERT_EQ(mkdir(others.back().c_str(), 0755), 0) << others.back() << ": " << strerror(errno);
  }
  pid_t straggler = Spawn({"/bin/sleep", "60"});
  ASSERT_GT(straggler, 0);
  ASSERT_TRUE(WriteCgroupFile(leftovers[0], "cgroup.procs", absl::StrCat(straggler)).ok());

  absl::StatusOr<int> removed = RemoveLeftoverSandboxCgroups(parents);
  ASSERT_TRUE(removed.ok()) << removed.status();
  // Not checked against parents.size(): on a shared host a worker started by
  // another test may remove some of them first, which is the same clean-up.
  EXPECT_LE(*removed, static_cast<int>(parents.size()));
  for (const std::string& leftover : leftovers) EXPECT_FALSE(Exists(leftover)) << leftover;
  int status = 0;
  ASSERT_EQ(waitpid(straggler, &status, 0), straggler) << "the straggler was not killed";
  EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << status;
  EXPECT_TRUE(Exists(running)) << "the running launcher's cgroup was removed";
  for (const std::string& other : others) EXPECT_TRUE(Exists(other)) << other;

  // SIGTERM lets the launcher end the action and remove its own cgroup.
  kill(launcher, SIGTERM);
  ASSERT_EQ(waitpid(launcher, &status, 0), launcher);
  cleanup.pids.clear();
  EXPECT_FALSE(Exists(running));
}

TEST(ActionCgroupParentsTest, ListEveryHierarchyOnceWithTheV2ParentFirst) {
  std::vector<std::string> parents = ActionCgroupParents("/sys/fs/cgroup/kiln.service");
  ASSERT_FALSE(parents.empty());
  EXPECT_EQ(parents[0], "/sys/fs/cgroup/kiln.service");
  for (size_t i = 1; i < parents.size(); ++i) {
    EXPECT_EQ(std::count(parents.begin(), parents.end(), parents[i]), 1) << parents[i];
  }
}

}  // namespace
}  // namespace kiln::sandbox
