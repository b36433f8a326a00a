#include "common/path_beneath.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>

#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"

namespace kiln {
namespace {

namespace fs = std::filesystem;

class PathBeneathTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = ::testing::TempDir() + "/path_beneath_test_" + std::to_string(getpid());
    outside_ = root_ + "-outside";
    fs::remove_all(root_);
    fs::remove_all(outside_);
    fs::create_directories(root_ + "/tree");
    fs::create_directories(outside_ + "/secret-dir");
    ASSERT_TRUE(WriteFileAtomically(outside_ + "/secret", "host secret", outside_, 0600).ok());
    root_fd_ = *OpenFile(root_ + "/tree", O_RDONLY | O_DIRECTORY);
  }
  void TearDown() override {
    root_fd_.Reset();
    fs::permissions(root_, fs::perms::owner_all, fs::perm_options::add);
    fs::remove_all(root_);
    fs::remove_all(outside_);
  }
  std::string Tree(const std::string& relative) { return root_ + "/tree/" + relative; }

  std::string root_;
  std::string outside_;
  UniqueFd root_fd_;
};

TEST_F(PathBeneathTest, RefusesASymlinkInAParentComponent) {
  fs::create_symlink(outside_, Tree("d"));
  absl::StatusOr<UniqueFd> fd = OpenBeneath(root_fd_.get(), "d/secret", O_RDONLY);
  ASSERT_FALSE(fd.ok());
  EXPECT_EQ(fd.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(fd.status().message().find("symlink"), absl::string_view::npos);
}

TEST_F(PathBeneathTest, RefusesARelativeSymlinkChainThatLooksHarmless) {
  // s0 -> ., s1 -> s0/.., ...: each target stays inside textually, yet s8
  // is the parent of the tree's parent.
  fs::create_symlink(".", Tree("s0"));
  for (int i = 1; i <= 8; ++i) {
    fs::create_symlink(absl::StrCat("s", i - 1, "/.."), Tree(absl::StrCat("s", i)));
  }
  ASSERT_TRUE(fs::exists(Tree("s8")));  // the chain resolves for a naive open
  for (const char* path : {"s8", "s8/x", "s1/secret"}) {
    absl::StatusOr<UniqueFd> fd = OpenBeneath(root_fd_.get(), path, O_RDONLY);
    EXPECT_EQ(fd.status().code(), absl::StatusCode::kFailedPrecondition) << path;
  }
}

TEST_F(PathBeneathTest, TheComponentWalkForOldKernelsRefusesTheSameSymlinks) {
  UseComponentWalkForTesting(true);
  fs::create_symlink(".", Tree("s0"));
  fs::create_symlink("s0/..", Tree("s1"));
  fs::create_symlink(outside_, Tree("d"));
  fs::create_directories(Tree("a/b"));
  for (const char* path : {"s1/secret", "d/secret", "d", "a/../d"}) {
    EXPECT_FALSE(OpenBeneath(root_fd_.get(), path, O_RDONLY).ok()) << path;
  }
  EXPECT_TRUE(OpenBeneath(root_fd_.get(), "a/b", O_RDONLY | O_DIRECTORY).ok());
  UseComponentWalkForTesting(false);
}

TEST_F(PathBeneathTest, RefusesASymlinkAsTheLastComponent) {
  fs::create_symlink(outside_ + "/secret", Tree("link"));
  EXPECT_FALSE(OpenBeneath(root_fd_.get(), "link", O_RDONLY).ok());
}

TEST_F(PathBeneathTest, RejectsDotDotAndAbsolutePaths) {
  for (const char* path : {"../x", "a/../../x", "/etc/passwd", "a//b", "./a", "a/"}) {
    EXPECT_EQ(OpenBeneath(root_fd_.get(), path, O_RDONLY).status().code(),
              absl::StatusCode::kInvalidArgument)
        << path;
  }
}

TEST_F(PathBeneathTest, OpensRealFilesAndDirectories) {
  fs::create_directories(Tree("a/b"));
  ASSERT_TRUE(WriteFileAtomically(Tree("a/b/f"), "data", Tree("a"), 0644).ok());
  absl::StatusOr<UniqueFd> fd = OpenBeneath(root_fd_.get(), "a/b/f", O_RDONLY);
  ASSERT_TRUE(fd.ok()) << fd.status();
  char buffer[8] = {};
  EXPECT_EQ(read(fd->get(), buffer, sizeof buffer), 4);
  EXPECT_EQ(OpenBeneath(root_fd_.get(), "a/missing", O_RDONLY).status().code(),
            absl::StatusCode::kNotFound);
}

TEST_F(PathBeneathTest, MakeDirectoriesNeverChangesWhatASymlinkPointsAt) {
  fs::create_symlink(outside_, Tree("s"));
  fs::permissions(outside_ + "/secret-dir", fs::perms::owner_all);
  absl::StatusOr<UniqueFd> made =
      MakeDirectoriesBeneath(root_fd_.get(), "s/secret-dir/new", 0755, -1, -1);
  EXPECT_EQ(made.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_FALSE(fs::exists(outside_ + "/secret-dir/new"));
  EXPECT_EQ(fs::status(outside_ + "/secret-dir").permissions(), fs::perms::owner_all);

  made = MakeDirectoriesBeneath(root_fd_.get(), "x/y/z", 0750, -1, -1);
  ASSERT_TRUE(made.ok()) << made.status();
  EXPECT_TRUE(fs::is_directory(Tree("x/y/z")));
}

TEST_F(PathBeneathTest, RemovesUnreadableDeepTreesWithoutFollowingSymlinks) {
  std::string deep = Tree("victim");
  fs::create_directories(deep);
  std::string path = deep;
  for (int i = 0; i < 300; ++i) {  // deeper than the removal bound
    ASSERT_EQ(mkdir((path + "/d").c_str(), 0755), 0);
    path += "/d";
    if (path.size() > 3000) break;
  }
  fs::create_symlink(outside_, Tree("victim/link"));
  ASSERT_EQ(mkdir(Tree("victim/locked").c_str(), 0755), 0);
  ASSERT_TRUE(WriteFileAtomically(Tree("victim/locked/f"), "x", Tree("victim"), 0644).ok());
  ASSERT_EQ(chmod(Tree("victim/locked").c_str(), 0), 0);

  ASSERT_TRUE(RemoveTreeAt(root_fd_.get(), "victim").ok());
  EXPECT_FALSE(fs::exists(deep));
  EXPECT_TRUE(fs::is_empty(root_ + "/tree"));
  EXPECT_TRUE(fs::exists(outside_ + "/secret"));
}

}  // namespace
}  // namespace kiln
