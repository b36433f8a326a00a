// The worker's sandbox spawner (kiln-sandbox --spawner_fd) with the real
// kiln-sandbox: launchers it forks serve their action, a stop request is
// never lost however early it comes, and a killed spawner is replaced.
#include "server/exec/sandbox_spawner.h"

#include <signal.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <chrono>
#include <filesystem>
#include <future>
#include <string>
#include <thread>

#include <gtest/gtest.h>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "common/posix.h"
#include "common/status_macros.h"
#include "server/cas/test_util.h"
#include "server/exec/sandbox_process.h"

namespace kiln::exec {
namespace {

std::string SandboxBinary() {
  const char* dir = getenv("KILN_BIN_DIR");
  return std::string(dir ? dir : "build/bin") + "/kiln-sandbox";
}

class SandboxSpawnerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string pattern = ::testing::TempDir() + "/kiln-spawner-XXXXXX";
    dir_ = mkdtemp(pattern.data());
    prepare_.set_use_default_binds(true);
    prepare_.set_uid(61000);
    prepare_.set_gid(61000);
    prepare_.set_work_dir_parent(dir_);
  }
  void TearDown() override { (void)RemoveTree(dir_); }

  // Whether `process` ends within `seconds`; if not, it is killed.
  static bool EndsWithin(SandboxProcess& process, int seconds) {
    auto ended = std::async(std::launch::async, [&] { process.Wait(); });
    if (ended.wait_for(std::chrono::seconds(seconds)) == std::future_status::ready) return true;
    process.Kill();
    ended.wait();
    return false;
  }

  // Runs `script` under /bin/sh in a launcher of `spawner`, with dir_/a
  // (writable by the build user) as /work, and checks the launcher ends.
  absl::StatusOr<kiln::sandbox::v1::SandboxResult> RunScript(SandboxSpawner& spawner, const char* script) {
    auto process = SandboxProcess::Start(spawner);
    if (!process.ok()) return process.status();
    RETURN_IF_ERROR((*process)->Send(prepare_));
    if (mkdir((dir_ + "/a").c_str(), 0777) != 0 || chmod((dir_ + "/a").c_str(), 0777) != 0) {
      return PosixError("mkdir " + dir_ + "/a", errno);
    }
    kiln::sandbox::v1::SandboxRequest action = prepare_;
    action.set_work_dir(dir_ + "/a");
    for (const char* arg : {"/bin/sh", "-c", script}) action.add_argv(arg);
    RETURN_IF_ERROR((*process)->Send(action));
    auto result = (*process)->AwaitResult();
    EXPECT_TRUE(EndsWithin(**process, 10));
    return result;
  }

  std::string dir_;
  kiln::sandbox::v1::SandboxRequest prepare_;
};

TEST_F(SandboxSpawnerTest, ALauncherServesItsAction) {
  SandboxSpawner spawner(SandboxBinary());
  auto result = RunScript(spawner, "exit 5");
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->error_code(), 0) << result->error_message();
  EXPECT_EQ(result->exit_code(), 5);
}

// The spawner empties its capability bounding set once, for every launcher
// it forks; the action must still end up with no capability anywhere.
TEST_F(SandboxSpawnerTest, TheActionHasNoCapabilitiesNotEvenInItsBoundingSet) {
  SandboxSpawner spawner(SandboxBinary());
  auto result = RunScript(spawner, "grep -E '^Cap(Inh|Prm|Eff|Bnd|Amb)' /proc/self/status > caps");
  ASSERT_TRUE(result.ok()) << result.status();
  ASSERT_EQ(result->exit_code(), 0) << result->error_message();
  absl::StatusOr<std::string> caps = ReadFileToString(dir_ + "/a/caps");
  ASSERT_TRUE(caps.ok()) << caps.status();
  EXPECT_EQ(*caps,
            "CapInh:\t0000000000000000\nCapPrm:\t0000000000000000\nCapEff:\t0000000000000000\n"
            "CapBnd:\t0000000000000000\nCapAmb:\t0000000000000000\n");
  // Emptied in the spawner itself, so that PID 1 has nothing left to drop.
  absl::StatusOr<std::string> spawner_status = ReadFileToString(absl::StrCat("/proc/", spawner.pid(), "/status"));
  ASSERT_TRUE(spawner_status.ok()) << spawner_status.status();
  EXPECT_NE(spawner_status->find("CapBnd:\t0000000000000000\n"), std::string::npos) << *spawner_status;
}

// A warm sandbox waits for its action with everything but /work prepared.
// Its PID 1 must not hold, meanwhile, anything that reaches the directory
// where every action's work dir lives (it once held a detached copy of that
// parent's mount, to clone the work dir from once the action came): the
// launcher hands it the action's own work dir instead. Then the action
// still gets that work dir as /work, writable, and nothing of its parent.
TEST_F(SandboxSpawnerTest, AWaitingSandboxHoldsNothingThatReachesOtherActionsDirectories) {
  SandboxSpawner spawner(SandboxBinary());
  auto process = SandboxProcess::Start(spawner);
  ASSERT_TRUE(process.ok()) << process.status();
  ASSERT_TRUE((*process)->Send(prepare_).ok());
  // PID 1 is the launcher's one child; ready once it has pivoted.
  const std::string launcher = absl::StrCat("/proc/", (*process)->pid());
  std::string init;
  bool ready = false;
  for (int i = 0; i < 1000 && !ready; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
    absl::StatusOr<std::string> children =
        ReadFileToString(absl::StrCat(launcher, "/task/", (*process)->pid(), "/children"));
    if (!children.ok() || children->empty()) continue;
    init = absl::StrCat("/proc/", std::string(absl::StripAsciiWhitespace(*children)));
    struct stat st;
    ready = stat((init + "/root/work").c_str(), &st) == 0 && stat((init + "/root/.old-root").c_str(), &st) != 0;
  }
  ASSERT_TRUE(ready) << "the sandbox did not get ready";
  ASSERT_EQ(mkdir((dir_ + "/other").c_str(), 0700), 0);
  struct stat parent, other;
  ASSERT_EQ(stat(dir_.c_str(), &parent), 0);
  ASSERT_EQ(stat((dir_ + "/other").c_str(), &other), 0);
  int descriptors = 0;
  for (const auto& entry : std::filesystem::directory_iterator(init + "/fd")) {
    ++descriptors;
    struct stat held;
    if (stat(entry.path().c_str(), &held) != 0) continue;
    EXPECT_FALSE(held.st_dev == parent.st_dev && held.st_ino == parent.st_ino)
        << "PID 1 holds the work dir parent as " << entry.path() << " while it waits";
    EXPECT_FALSE(S_ISDIR(held.st_mode)) << "PID 1 holds a directory while it waits: " << entry.path();
  }
  EXPECT_GE(descriptors, 2);  // its request socket and report pipe: the listing worked

  ASSERT_EQ(mkdir((dir_ + "/a").c_str(), 0777), 0);
  ASSERT_EQ(chmod((dir_ + "/a").c_str(), 0777), 0);
  kiln::sandbox::v1::SandboxRequest action = prepare_;
  action.set_work_dir(dir_ + "/a");
  for (const char* arg : {"/bin/sh", "-c", "echo hi > /work/out && l=$(ls -a /work) && echo \"$l\" > /work/listing"}) {
    action.add_argv(arg);
  }
  ASSERT_TRUE((*process)->Send(action).ok());
  auto result = (*process)->AwaitResult();
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->error_code(), 0) << result->error_message();
  EXPECT_EQ(result->exit_code(), 0);
  EXPECT_EQ(ReadFileToString(dir_ + "/a/out").value_or(""), "hi\n");
  EXPECT_EQ(ReadFileToString(dir_ + "/a/listing").value_or(""), ".\n..\nout\n");
  EXPECT_TRUE(EndsWithin(**process, 10));
}

// The launcher opens the action's work dir and log files as paths beneath
// the work dir parent. A symlink on the way (here a directory beneath the
// parent that links to another tenant's directory) must be refused, not
// followed: the action must neither run in that directory nor write its
// logs there.
TEST_F(SandboxSpawnerTest, AWorkDirOrLogReachedThroughASymlinkIsRefused) {
  cas::ScratchDir victim_dir;  // removed even when an assertion fails
  const std::string& victim = victim_dir.path();
  ASSERT_EQ(mkdir((victim + "/a").c_str(), 0777), 0);
  ASSERT_EQ(chmod((victim + "/a").c_str(), 0777), 0);
  ASSERT_TRUE(WriteFileAtomically(victim + "/log", "the victim's\n", victim, 0666).ok());
  ASSERT_EQ(symlink(victim.c_str(), (dir_ + "/through").c_str()), 0);
  ASSERT_EQ(mkdir((dir_ + "/a").c_str(), 0777), 0);
  ASSERT_EQ(chmod((dir_ + "/a").c_str(), 0777), 0);
  struct Case {
    const char* what;
    std::string work_dir, stdout_path;
  };
  for (const Case& attack : {Case{"work dir", dir_ + "/through/a", ""},
                             Case{"stdout", dir_ + "/a", dir_ + "/through/log"}}) {
    SCOPED_TRACE(attack.what);
    SandboxSpawner spawner(SandboxBinary());
    auto process = SandboxProcess::Start(spawner);
    ASSERT_TRUE(process.ok()) << process.status();
    ASSERT_TRUE((*process)->Send(prepare_).ok());
    kiln::sandbox::v1::SandboxRequest action = prepare_;
    action.set_work_dir(attack.work_dir);
    action.set_stdout_path(attack.stdout_path);
    for (const char* arg : {"/bin/sh", "-c", "echo pwned; echo pwned > /work/pwned"}) action.add_argv(arg);
    ASSERT_TRUE((*process)->Send(action).ok());
    auto result = (*process)->AwaitResult();
    ASSERT_TRUE(result.ok()) << result.status();
    EXPECT_NE(result->error_code(), 0) << "the action ran, exit " << result->exit_code();
    EXPECT_NE(result->error_message().find("symlink"), std::string::npos) << result->error_message();
    EXPECT_TRUE(EndsWithin(**process, 10));
  }
  EXPECT_FALSE(std::filesystem::exists(victim + "/a/pwned"));
  EXPECT_EQ(ReadFileToString(victim + "/log").value_or(""), "the victim's\n");
  EXPECT_FALSE(std::filesystem::exists(dir_ + "/a/pwned"));
}

// A pool shutting down stops a sandbox it has just started: the SIGTERM may
// reach the launcher before it has done anything. It must still end (it
// once inherited the spawner's ignored SIGTERM and waited forever).
TEST_F(SandboxSpawnerTest, AStopRequestRightAfterTheSpawnIsNotLost) {
  SandboxSpawner spawner(SandboxBinary());
  for (int round = 0; round < 40; ++round) {
    auto process = SandboxProcess::Start(spawner);
    ASSERT_TRUE(process.ok()) << process.status();
    (*process)->Terminate();
    ASSERT_TRUE((*process)->Send(prepare_).ok());
    ASSERT_TRUE(EndsWithin(**process, 10)) << "round " << round << ": the launcher ignored its stop request";
  }
}

// A launcher whose preparation failed has nothing to tear down: a stop
// request (blocked since the spawner forked it) must end it at once, not
// wait for the worker to close the socket.
TEST_F(SandboxSpawnerTest, ALauncherThatCouldNotPrepareStillStops) {
  SandboxSpawner spawner(SandboxBinary());
  kiln::sandbox::v1::SandboxRequest broken = prepare_;
  broken.set_use_default_binds(false);
  auto* bind = broken.add_binds();
  bind->set_source(dir_ + "/no-such-dir");
  bind->set_target("/no-such-dir");
  auto process = SandboxProcess::Start(spawner);
  ASSERT_TRUE(process.ok()) << process.status();
  ASSERT_TRUE((*process)->Send(broken).ok());
  std::this_thread::sleep_for(std::chrono::milliseconds(200));  // it has tried to prepare
  (*process)->Terminate();
  EXPECT_TRUE(EndsWithin(**process, 10));
}

// One that is stuck (here: stopped) gets no more work: after the answer's
// timeout a new spawner is started, and the request goes there.
TEST_F(SandboxSpawnerTest, AStuckSpawnerIsReplaced) {
  SandboxSpawner spawner(SandboxBinary());
  auto first = SandboxProcess::Start(spawner);
  ASSERT_TRUE(first.ok()) << first.status();
  const pid_t stuck = spawner.pid();
  ASSERT_EQ(kill(stuck, SIGSTOP), 0);
  auto second = SandboxProcess::Start(spawner);
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_NE(spawner.pid(), stuck);
  (*second)->Terminate();
  ASSERT_TRUE((*second)->Send(prepare_).ok());
  EXPECT_TRUE(EndsWithin(**second, 10));
  // The stuck one was killed; its waiting launcher died with it.
  EXPECT_TRUE(EndsWithin(**first, 10));
}

TEST_F(SandboxSpawnerTest, AKilledSpawnerIsReplaced) {
  SandboxSpawner spawner(SandboxBinary());
  auto first = SandboxProcess::Start(spawner);
  ASSERT_TRUE(first.ok()) << first.status();
  const pid_t old_spawner = spawner.pid();
  ASSERT_GT(old_spawner, 0);
  ASSERT_EQ(kill(old_spawner, SIGKILL), 0);
  // Its launcher, still waiting for work, dies with it.
  EXPECT_TRUE(EndsWithin(**first, 10));
  auto second = SandboxProcess::Start(spawner);
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_NE(spawner.pid(), old_spawner);
  (*second)->Terminate();
  ASSERT_TRUE((*second)->Send(prepare_).ok());
  EXPECT_TRUE(EndsWithin(**second, 10));
}

}  // namespace
}  // namespace kiln::exec
