#include "server/exec/output_collector.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>

#include "common/path_beneath.h"
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
  absl::Status Collect(const rev2::Command& command, rev2::ActionResult* result,
                       const OutputLimits& limits = {}) {
    UniqueFd root = *OpenFile(work_, O_RDONLY | O_DIRECTORY);
    return CollectOutputs(*store_, command, root.get(), "", limits, result);
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
  ASSERT_TRUE(Collect(command, &result).ok());
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
  EXPECT_EQ(Collect(wrong_file, &result).code(), absl::StatusCode::kFailedPrecondition);
  rev2::Command wrong_dir;
  wrong_dir.add_output_directories("file");
  EXPECT_EQ(Collect(wrong_dir, &result).code(), absl::StatusCode::kFailedPrecondition);
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
  UniqueFd root = *OpenFile(work_, O_RDONLY | O_DIRECTORY);
  ASSERT_TRUE(CreateOutputParents(command, root.get(), getuid(), getgid()).ok());
  EXPECT_TRUE(fs::is_directory(work_ + "/deep/er"));
  EXPECT_FALSE(fs::exists(work_ + "/deep/er/out.txt"));
  // output_paths set: the legacy fields are ignored, as REAPI v2.1 says.
  EXPECT_FALSE(fs::exists(work_ + "/other"));
}

TEST_F(OutputCollectorTest, NeverFollowsASymlinkedParentOfAnOutput) {
  // The action replaced d with a symlink to a host directory and declared
  // d/secret: the host file must not be read.
  std::string host = dir_.path() + "/host";
  fs::create_directories(host);
  std::ofstream(host + "/secret") << "host secret";
  fs::create_symlink(host, work_ + "/d");
  for (const char* output : {"d/secret", "d"}) {
    rev2::Command command;
    command.add_output_paths(output);
    rev2::ActionResult result;
    absl::Status status = Collect(command, &result);
    if (std::string(output) == "d") {
      // The output itself is a symlink: reported as one, never walked.
      ASSERT_TRUE(status.ok()) << status;
      ASSERT_EQ(result.output_symlinks_size(), 1);
      EXPECT_EQ(result.output_directories_size(), 0);
    } else {
      EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition) << status;
      EXPECT_EQ(result.output_files_size(), 0);
    }
  }
  EXPECT_FALSE(store_->Contains(Digest::Of("host secret")));
}

TEST_F(OutputCollectorTest, RefusesOutputsOverTheLimitsBeforeHashingThem) {
  Write("many/a", "a");
  Write("many/b", "b");
  Write("many/c", "c");
  rev2::Command command;
  command.add_output_paths("many");
  rev2::ActionResult result;
  OutputLimits few;
  few.max_entries = 3;
  absl::Status status = Collect(command, &result, few);
  EXPECT_EQ(status.code(), absl::StatusCode::kResourceExhausted) << status;
  EXPECT_NE(status.message().find("--max_output_files"), absl::string_view::npos);
  EXPECT_FALSE(store_->Contains(Digest::Of("a")));

  // A sparse file: its size counts, and nothing is hashed.
  UniqueFd sparse = *OpenFile(work_ + "/sparse", O_WRONLY | O_CREAT, 0644);
  ASSERT_EQ(ftruncate(sparse.get(), int64_t{1} << 40), 0);
  rev2::Command big;
  big.add_output_paths("sparse");
  OutputLimits small;
  small.max_bytes = 1 << 20;
  status = Collect(big, &result, small);
  EXPECT_EQ(status.code(), absl::StatusCode::kResourceExhausted) << status;
  EXPECT_NE(status.message().find("--max_output_bytes"), absl::string_view::npos);
}

TEST_F(OutputCollectorTest, CreatingOutputParentsNeverGoesThroughASymlink) {
  std::string host = dir_.path() + "/host";
  fs::create_directories(host);
  fs::create_symlink(host, work_ + "/s");
  rev2::Command command;
  command.add_output_paths("s/new/out");
  UniqueFd root = *OpenFile(work_, O_RDONLY | O_DIRECTORY);
  EXPECT_EQ(CreateOutputParents(command, root.get(), getuid(), getgid()).code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_FALSE(fs::exists(host + "/new"));
}

}  // namespace
}  // namespace kiln::exec
