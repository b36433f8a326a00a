#include "client/tree_builder.h"

#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>

#include <gtest/gtest.h>

#include "common/posix.h"

namespace kiln::client {
namespace {

TEST(TreeBuilderTest, ExcludePatternsMatchNamesAnywhereOrPathsFromTheRoot) {
  const std::vector<std::string> patterns = {"*.o", "build/", "/out/*", "docs/gen", "__pycache__"};
  EXPECT_TRUE(IsExcluded(patterns, "a.o", false));
  EXPECT_TRUE(IsExcluded(patterns, "src/deep/a.o", false));
  EXPECT_TRUE(IsExcluded(patterns, "build", true));
  EXPECT_TRUE(IsExcluded(patterns, "sub/build", true));
  EXPECT_FALSE(IsExcluded(patterns, "build", false));  // "build/" is for directories
  EXPECT_TRUE(IsExcluded(patterns, "out/x", false));
  EXPECT_FALSE(IsExcluded(patterns, "out/x/y", false));  // "*" stops at "/"
  EXPECT_FALSE(IsExcluded(patterns, "sub/out/x", false));
  EXPECT_TRUE(IsExcluded(patterns, "docs/gen", true));
  EXPECT_FALSE(IsExcluded(patterns, "x/docs/gen", true));
  EXPECT_TRUE(IsExcluded(patterns, "pkg/__pycache__", true));
  EXPECT_FALSE(IsExcluded(patterns, "main.cc", false));
}

TEST(TreeBuilderTest, SymlinksPointOutsideWhenAbsoluteOrClimbingAboveTheRoot) {
  EXPECT_TRUE(PointsOutside("", "/usr/bin/python3"));
  EXPECT_TRUE(PointsOutside("", "../x"));
  EXPECT_TRUE(PointsOutside("a", "../../x"));
  EXPECT_TRUE(PointsOutside("a/b", "../c/../../../x"));
  EXPECT_FALSE(PointsOutside("a/b", "../../x"));
  EXPECT_FALSE(PointsOutside("a", "./b/../c"));
  EXPECT_FALSE(PointsOutside("", "x"));
}

class TreeBuilderTreeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string pattern = ::testing::TempDir() + "/kiln-tree-XXXXXX";
    dir_ = mkdtemp(pattern.data());
    root_ = dir_ + "/root";
    ASSERT_TRUE(MakeDirectories(root_ + "/src", 0755).ok());
    ASSERT_TRUE(MakeDirectories(root_ + "/build/obj", 0755).ok());
    ASSERT_TRUE(MakeDirectories(root_ + "/venv/bin", 0755).ok());
    ASSERT_TRUE(MakeDirectories(dir_ + "/outside/lib", 0755).ok());
    Write(root_ + "/src/main.c", "int main() {}\n");
    Write(root_ + "/src/main.o", "object");
    Write(root_ + "/build/obj/x.o", "object");
    Write(dir_ + "/outside/tool", "#!/bin/sh\necho tool\n");
    ASSERT_EQ(chmod((dir_ + "/outside/tool").c_str(), 0755), 0);
    Write(dir_ + "/outside/lib/data.txt", "data\n");
    ASSERT_EQ(symlink((dir_ + "/outside/tool").c_str(), (root_ + "/venv/bin/python3").c_str()), 0);  // absolute
    ASSERT_EQ(symlink("../../../outside/lib", (root_ + "/venv/bin/lib").c_str()), 0);                 // escaping
    ASSERT_EQ(symlink("python3", (root_ + "/venv/bin/python").c_str()), 0);                           // inside
  }
  void TearDown() override { (void)RemoveTree(dir_); }

  static void Write(const std::string& path, const std::string& content) { std::ofstream(path) << content; }

  // The Directory at `path` ("" for the root) of the tree in `blobs`.
  static rev2::Directory At(const BlobSet& blobs, const Digest& root, const std::string& path) {
    rev2::Directory directory;
    EXPECT_TRUE(directory.ParseFromString(blobs.by_hash.at(root.hash).content));
    if (path.empty()) return directory;
    std::string first = path.substr(0, path.find('/'));
    std::string rest = path.find('/') == std::string::npos ? "" : path.substr(path.find('/') + 1);
    for (const auto& child : directory.directories()) {
      if (child.name() == first) return At(blobs, *ParseDigest(child.digest()), rest);
    }
    ADD_FAILURE() << "no directory " << path;
    return {};
  }

  std::string dir_, root_;
};

TEST_F(TreeBuilderTreeTest, ExcludesAndKilnignoreLeaveThingsOut) {
  Write(root_ + "/.kilnignore", "# build output\n*.o\n\n  build/  \n");
  BlobSet blobs;
  InputRootOptions options;
  options.read_kilnignore = true;
  options.excludes = {"venv"};
  absl::StatusOr<Digest> root = BuildInputRoot(root_, &blobs, options);
  ASSERT_TRUE(root.ok()) << root.status();
  rev2::Directory top = At(blobs, *root, "");
  ASSERT_EQ(top.directories_size(), 1);  // build/ and venv are gone
  EXPECT_EQ(top.directories(0).name(), "src");
  ASSERT_EQ(top.files_size(), 1);
  EXPECT_EQ(top.files(0).name(), ".kilnignore");
  rev2::Directory src = At(blobs, *root, "src");
  ASSERT_EQ(src.files_size(), 1);
  EXPECT_EQ(src.files(0).name(), "main.c");
}

TEST_F(TreeBuilderTreeTest, OutsideSymlinksAreSentAsWhatTheyPointTo) {
  BlobSet blobs;
  InputRootOptions options;
  options.resolve_outside_symlinks = true;
  absl::StatusOr<Digest> root = BuildInputRoot(root_, &blobs, options);
  ASSERT_TRUE(root.ok()) << root.status();
  rev2::Directory bin = At(blobs, *root, "venv/bin");
  ASSERT_EQ(bin.files_size(), 1);
  EXPECT_EQ(bin.files(0).name(), "python3");
  EXPECT_TRUE(bin.files(0).is_executable());
  EXPECT_EQ(bin.files(0).digest().hash(), Digest::Of("#!/bin/sh\necho tool\n").hash);
  ASSERT_EQ(bin.symlinks_size(), 1);  // the one inside the root stays a symlink
  EXPECT_EQ(bin.symlinks(0).name(), "python");
  EXPECT_EQ(bin.symlinks(0).target(), "python3");
  rev2::Directory lib = At(blobs, *root, "venv/bin/lib");
  ASSERT_EQ(lib.files_size(), 1);
  EXPECT_EQ(lib.files(0).digest().hash(), Digest::Of("data\n").hash);
}

TEST_F(TreeBuilderTreeTest, WithoutResolvingEverySymlinkStaysASymlink) {
  BlobSet blobs;
  absl::StatusOr<Digest> root = BuildInputRoot(root_, &blobs, InputRootOptions{});
  ASSERT_TRUE(root.ok()) << root.status();
  rev2::Directory bin = At(blobs, *root, "venv/bin");
  EXPECT_EQ(bin.files_size(), 0);
  ASSERT_EQ(bin.symlinks_size(), 3);
  EXPECT_EQ(bin.symlinks(2).target(), dir_ + "/outside/tool");
}

TEST_F(TreeBuilderTreeTest, DanglingAndLoopingOutsideSymlinksFailWithAWayOut) {
  InputRootOptions options;
  options.resolve_outside_symlinks = true;
  ASSERT_EQ(symlink("/no/such/file", (root_ + "/src/dangling").c_str()), 0);
  BlobSet blobs;
  absl::StatusOr<Digest> root = BuildInputRoot(root_, &blobs, options);
  ASSERT_FALSE(root.ok());
  EXPECT_NE(root.status().message().find("src/dangling"), std::string::npos) << root.status();
  EXPECT_NE(root.status().message().find("--exclude"), std::string::npos) << root.status();
  options.excludes = {"dangling"};
  ASSERT_EQ(symlink(root_.c_str(), (root_ + "/src/loop").c_str()), 0);
  root = BuildInputRoot(root_, &blobs, options);
  ASSERT_FALSE(root.ok());
  EXPECT_NE(root.status().message().find("src/loop"), std::string::npos) << root.status();
  options.excludes = {"dangling", "loop"};
  EXPECT_TRUE(BuildInputRoot(root_, &blobs, options).ok());
}

}  // namespace
}  // namespace kiln::client
