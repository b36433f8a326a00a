#include "server/exec/spare_action_dirs.h"

#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <set>
#include <string>

#include <gtest/gtest.h>

#include "absl/time/clock.h"
#include "server/cas/test_util.h"

namespace kiln::exec {
namespace {

namespace fs = std::filesystem;

int CountEntries(const std::string& dir) {
  int n = 0;
  for ([[maybe_unused]] const auto& entry : fs::directory_iterator(dir)) ++n;
  return n;
}

void ExpectFresh(const std::string& path) {
  struct stat st;
  ASSERT_EQ(lstat(path.c_str(), &st), 0) << path;
  EXPECT_TRUE(S_ISDIR(st.st_mode));
  EXPECT_EQ(st.st_mode & 07777, 0700u) << path;
  ASSERT_EQ(lstat((path + "/root").c_str(), &st), 0);
  EXPECT_TRUE(S_ISDIR(st.st_mode));
  EXPECT_EQ(st.st_mode & 07777, 0755u);
  EXPECT_EQ(CountEntries(path + "/root"), 0);
  for (const char* name : {"/stdout", "/stderr"}) {
    ASSERT_EQ(lstat((path + name).c_str(), &st), 0) << name;
    EXPECT_TRUE(S_ISREG(st.st_mode)) << name;
    EXPECT_EQ(st.st_mode & 07777, 0600u) << name;
    EXPECT_EQ(st.st_size, 0) << name;
  }
  EXPECT_EQ(CountEntries(path), 3);
}

TEST(SpareActionDirsTest, EachTakeIsANewEmptyDirectoryWithRootAndLogs) {
  cas::ScratchDir scratch;
  SpareActionDirs dirs(scratch.path(), 2);
  std::set<std::string> taken;
  for (int i = 0; i < 5; ++i) {
    absl::StatusOr<std::string> path = dirs.Take();
    ASSERT_TRUE(path.ok()) << path.status();
    ExpectFresh(*path);
    EXPECT_TRUE(taken.insert(*path).second) << "handed out twice: " << *path;
    EXPECT_EQ(fs::path(*path).parent_path(), fs::path(scratch.path()));
    // What an action leaves must never show up in a later one's directory.
    std::ofstream(*path + "/stdout") << "earlier action";
    std::ofstream(*path + "/root/left") << "behind";
  }
}

TEST(SpareActionDirsTest, KeepsTheAskedNumberReadyAheadOutOfTheParent) {
  cas::ScratchDir scratch;
  const std::string spare = scratch.path() + "/.spare";
  SpareActionDirs dirs(scratch.path(), 1);
  dirs.KeepAtLeast(3);
  auto wait_for = [&](const std::string& dir, int n) {
    const absl::Time deadline = absl::Now() + absl::Seconds(10);
    while (CountEntries(dir) < n && absl::Now() < deadline) absl::SleepFor(absl::Milliseconds(5));
    absl::SleepFor(absl::Milliseconds(50));
    return CountEntries(dir);
  };
  EXPECT_EQ(wait_for(spare, 3), 3);  // and no more
  EXPECT_EQ(CountEntries(scratch.path()), 1);  // only .spare: no action's directory yet
  absl::StatusOr<std::string> taken = dirs.Take();
  ASSERT_TRUE(taken.ok());
  EXPECT_EQ(fs::path(*taken).parent_path(), fs::path(scratch.path()));
  EXPECT_EQ(CountEntries(scratch.path()), 2);
  EXPECT_EQ(wait_for(spare, 3), 3);  // ready again
}

// A spare that is gone when an action takes it (an operator emptied
// exec/.spare, or a cleaner did) costs that action a directory made on its
// path, not a failure.
TEST(SpareActionDirsTest, ASpareRemovedBehindItsBackIsReplacedOnTheActionsPath) {
  cas::ScratchDir scratch;
  const std::string spare = scratch.path() + "/.spare";
  SpareActionDirs dirs(scratch.path(), 1);
  // Until the spare is whole: its stderr is the last thing made in it (the
  // removal below raced with its filling and failed "Directory not empty").
  auto whole = [&] {
    std::error_code error;
    for (const auto& entry : fs::directory_iterator(spare, error)) {
      if (fs::exists(entry.path() / "stderr")) return true;
    }
    return false;
  };
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  while (!whole() && absl::Now() < deadline) absl::SleepFor(absl::Milliseconds(5));
  ASSERT_EQ(CountEntries(spare), 1);
  ASSERT_TRUE(whole());
  for (const auto& entry : fs::directory_iterator(spare)) fs::remove_all(entry.path());
  absl::StatusOr<std::string> path = dirs.Take();
  ASSERT_TRUE(path.ok()) << path.status();
  ExpectFresh(*path);
  EXPECT_EQ(fs::path(*path).parent_path(), fs::path(scratch.path()));
}

TEST(SpareActionDirsTest, AnUnwritableParentIsAnErrorForTheAction) {
  cas::ScratchDir scratch;
  SpareActionDirs dirs(scratch.path() + "/missing", 0);
  absl::StatusOr<std::string> path = dirs.Take();
  EXPECT_FALSE(path.ok());
}

}  // namespace
}  // namespace kiln::exec
