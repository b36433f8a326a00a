#include "server/exec/directory_trash.h"

#include <fcntl.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>

#include "absl/time/clock.h"
#include "common/posix.h"
#include "server/cas/test_util.h"

namespace kiln::exec {
namespace {

namespace fs = std::filesystem;

// What an action leaves behind: files, an unreadable directory, and
// symlinks out of its tree, which the removal must not follow.
void MakeActionTree(const std::string& dir, const std::string& outside) {
  fs::create_directories(dir + "/root/sub/deep");
  std::ofstream(dir + "/root/sub/deep/file") << "data";
  std::ofstream(dir + "/stdout") << "out";
  fs::create_directory_symlink(outside, dir + "/root/escape");
  fs::create_symlink(outside + "/keep", dir + "/root/sub/escape-file");
  ASSERT_EQ(chmod((dir + "/root/sub").c_str(), 0), 0);
}

TEST(DirectoryTrashTest, DiscardedTreesAreGoneAndNothingOutsideIsTouched) {
  cas::ScratchDir scratch;
  const std::string outside = scratch.path() + "/outside";
  fs::create_directories(outside);
  std::ofstream(outside + "/keep") << "keep";
  {
    DirectoryTrash trash(scratch.path() + "/exec/.trash");
    for (int i = 0; i < 3; ++i) {
      const std::string dir = scratch.path() + "/exec/action-" + std::to_string(i);
      MakeActionTree(dir, outside);
      trash.Discard(dir);
      // Out of the way at once, whatever the removal thread has done.
      EXPECT_FALSE(fs::exists(fs::symlink_status(dir)));
    }
    trash.WaitUntilEmpty();
    EXPECT_TRUE(fs::is_empty(scratch.path() + "/exec/.trash"));
    int left = 0;
    for (const auto& entry : fs::directory_iterator(scratch.path() + "/exec")) {
      EXPECT_EQ(entry.path().filename(), ".trash");
      ++left;
    }
    EXPECT_EQ(left, 1);
  }
  std::ifstream kept(outside + "/keep");
  std::string text;
  kept >> text;
  EXPECT_EQ(text, "keep");
}

TEST(DirectoryTrashTest, PendingRemovalsFinishBeforeDestruction) {
  cas::ScratchDir scratch;
  {
    DirectoryTrash trash(scratch.path() + "/.trash");
    for (int i = 0; i < 20; ++i) {
      const std::string dir = scratch.path() + "/a" + std::to_string(i);
      fs::create_directories(dir + "/x/y");
      std::ofstream(dir + "/x/y/z") << i;
      trash.Discard(dir);
    }
  }
  EXPECT_TRUE(fs::is_empty(scratch.path() + "/.trash"));
}

TEST(DirectoryTrashTest, WithoutATrashDirectoryTreesAreRemovedAtOnce) {
  cas::ScratchDir scratch;
  // The trash cannot be made (its parent is a file): Discard removes at once.
  std::ofstream(scratch.path() + "/file") << "not a directory";
  DirectoryTrash trash(scratch.path() + "/file/.trash");
  const std::string dir = scratch.path() + "/action";
  fs::create_directories(dir + "/root/sub");
  std::ofstream(dir + "/root/sub/file") << "data";
  ASSERT_EQ(chmod((dir + "/root/sub").c_str(), 0), 0);
  trash.Discard(dir);
  EXPECT_FALSE(fs::exists(fs::symlink_status(dir)));
}

// When the spares have all they keep, a discarded directory is removed
// whole instead of recycled: nothing of it stays, in the trash or the spares.
TEST(DirectoryTrashTest, ADirectoryTheSparesDoNotTakeIsRemoved) {
  cas::ScratchDir scratch;
  const std::string exec = scratch.path() + "/exec";
  const std::string outside = scratch.path() + "/outside";
  fs::create_directories(exec);
  fs::create_directories(outside);
  SpareActionDirs spares(exec, 0);  // keeps none: every Adopt is refused
  {
    DirectoryTrash trash(exec + "/.trash", &spares);
    absl::StatusOr<std::string> dir = spares.Take();
    ASSERT_TRUE(dir.ok()) << dir.status();
    absl::StatusOr<UniqueFd> held = OpenFile(*dir, O_RDONLY | O_DIRECTORY);
    ASSERT_TRUE(held.ok());
    MakeActionTree(*dir, outside);
    trash.Discard(*dir);
    trash.WaitUntilEmpty();
    struct stat st;
    ASSERT_EQ(fstat(held->get(), &st), 0);
    EXPECT_EQ(st.st_nlink, 0u) << "the directory was kept somewhere";
  }
  EXPECT_TRUE(fs::is_empty(exec + "/.trash"));
  EXPECT_TRUE(!fs::exists(exec + "/.spare") || fs::is_empty(exec + "/.spare"));
  for (const auto& entry : fs::directory_iterator(exec)) {
    const std::string name = entry.path().filename();
    EXPECT_TRUE(name == ".trash" || name == ".spare") << "left in exec/: " << name;
  }
}

TEST(DirectoryTrashTest, RecycledDirectoriesComeBackEmptyAndFreshlyFilled) {
  cas::ScratchDir scratch;
  const std::string exec = scratch.path() + "/exec";
  const std::string outside = scratch.path() + "/outside";
  fs::create_directories(exec);
  fs::create_directories(outside);
  std::ofstream(outside + "/keep") << "keep";
  SpareActionDirs spares(exec, 2);
  {
    DirectoryTrash trash(exec + "/.trash", &spares);
    bool recycled = false;
    for (int i = 0; i < 6; ++i) {
      absl::StatusOr<std::string> dir = spares.Take();
      ASSERT_TRUE(dir.ok()) << dir.status();
      // Held open, its inode cannot be reused by another: still linked
      // after the trash is done means it went back to the spares.
      absl::StatusOr<UniqueFd> held = OpenFile(*dir, O_RDONLY | O_DIRECTORY);
      ASSERT_TRUE(held.ok());
      // Whatever the action left, the next one to get this directory sees
      // none of it: its root/ and logs are new inodes.
      EXPECT_TRUE(fs::is_empty(*dir + "/root")) << *dir;
      EXPECT_EQ(fs::file_size(*dir + "/stdout"), 0u);
      EXPECT_EQ(fs::file_size(*dir + "/stderr"), 0u);
      MakeActionTree(*dir, outside);  // leaves a 000 directory and symlinks out
      std::ofstream(*dir + "/stderr") << "earlier action";
      trash.Discard(*dir);
      trash.WaitUntilEmpty();
      struct stat st;
      ASSERT_EQ(fstat(held->get(), &st), 0);
      if (st.st_nlink > 0) recycled = true;
      absl::SleepFor(absl::Milliseconds(100));  // the spares are filled again
    }
    EXPECT_TRUE(recycled) << "no directory came back";
  }
  EXPECT_TRUE(fs::is_empty(exec + "/.trash"));
  std::ifstream kept(outside + "/keep");
  std::string text;
  kept >> text;
  EXPECT_EQ(text, "keep");
  // Recycled directories are counted with the spares: never more than kept.
  int spare = 0;
  for ([[maybe_unused]] const auto& entry : fs::directory_iterator(exec + "/.spare")) ++spare;
  EXPECT_LE(spare, 4);
}

}  // namespace
}  // namespace kiln::exec
