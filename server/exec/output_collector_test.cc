#include "server/exec/output_collector.h"

#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>

#include "server/cas/test_util.h"

namespace kiln::exec {
namespace {

namespace fs = std::filesystem;

class OutputCollectorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    store_ = *cas::BlobStore::Open({dir_.path() + "/cas", 1 << 24, 1 << 24});
    work_ = dir_.path() + "/work";
    fs::create_directories(work_);
  }
  void Write(const std::string& path, const std::string& content, bool executable = false) {
    fs::create_directories(fs::path(work_ + "/" + path).parent_path());
    std::ofstream(work_ + "/" + path) << content;
    chmod((work_ + "/" + path).c_str(), executable ? 0755 : 0644);
  }
  cas::ScratchDir dir_;
  std::unique_ptr<cas::BlobStore> store_;
  std::string work_;
};

TEST_F(OutputCollectorTest, CollectsFilesDirectoriesAsTreesAndSymlinks) {
  Write("out/a.txt", "a");
  Write("out/dir/x/tool", "t", true);
  Write("out/dir/y/tool", "t", true);  // an identical subdirectory
  fs::create_symlink("x/tool", work_ + "/out/dir/link");
  fs::create_symlink("a.txt", work_ + "/out/alias");
  rev2::Command command;
  for (const char* p : {"out/a.txt", "out/dir", "out/alias", "out/never"}) command.add_output_paths(p);
  rev2::ActionResult result;
  ASSERT_TRUE(CollectOutputs(*store_, command, work_, &result).ok());
  ASSERT_EQ(result.output_files_size(), 1);
  EXPECT_EQ(*store_->ReadBlob(*ParseDigest(result.output_files(0).digest())), "a");
  ASSERT_EQ(result.output_symlinks_size(), 1);
  EXPECT_EQ(result.output_symlinks(0).target(), "a.txt");
  ASSERT_EQ(result.output_directories_size(), 1);
  rev2::Tree tree;
  ASSERT_TRUE(tree.ParseFromString(*store_->ReadBlob(*ParseDigest(result.output_directories(0).tree_digest()))));
  EXPECT_EQ(tree.root().directories_size(), 2);
  EXPECT_EQ(tree.root().symlinks(0).name(), "link");
  // x and y are the same Directory: stored once among the children.
  ASSERT_EQ(tree.children_size(), 1);
  EXPECT_TRUE(tree.children(0).files(0).is_executable());
  // Every file of the tree is in the CAS.
  EXPECT_TRUE(store_->Contains(*ParseDigest(tree.children(0).files(0).digest())));
}

TEST_F(OutputCollectorTest, LegacyFieldsCheckTheKindOfEachOutput) {
  Write("dir/f", "f");
  Write("file", "x");
  rev2::Command wrong_file;
  wrong_file.add_output_files("dir");
  rev2::ActionResult result;
  EXPECT_EQ(CollectOutputs(*store_, wrong_file, work_, &result).code(), absl::StatusCode::kFailedPrecondition);
  rev2::Command wrong_dir;
  wrong_dir.add_output_directories("file");
  EXPECT_EQ(CollectOutputs(*store_, wrong_dir, work_, &result).code(), absl::StatusCode::kFailedPrecondition);
}

TEST_F(OutputCollectorTest, OutputPathsMustStayInsideTheWorkingDirectory) {
  for (const char* bad : {"../x", "/abs", "a/../../x", "a//b", ""}) {
    rev2::Command command;
    command.add_output_paths(bad);
    EXPECT_EQ(ValidateOutputPaths(command).code(), absl::StatusCode::kInvalidArgument) << bad;
  }
  rev2::Command good;
  good.add_output_paths("a/b/c.txt");
  EXPECT_TRUE(ValidateOutputPaths(good).ok());
}

TEST_F(OutputCollectorTest, CreatesOutputParents) {
  rev2::Command command;
  command.add_output_paths("deep/er/out.txt");
  command.add_output_files("other/f");
  ASSERT_TRUE(CreateOutputParents(command, work_, getuid(), getgid()).ok());
  EXPECT_TRUE(fs::is_directory(work_ + "/deep/er"));
  EXPECT_FALSE(fs::exists(work_ + "/deep/er/out.txt"));
  // output_paths set: the legacy fields are ignored, as REAPI v2.1 says.
  EXPECT_FALSE(fs::exists(work_ + "/other"));
}

}  // namespace
}  // namespace kiln::exec
