#include "server/exec/input_stager.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>

#include "common/path_beneath.h"
#include "common/posix.h"
#include "google/rpc/error_details.pb.h"
#include "server/cas/test_util.h"

namespace kiln::exec {
namespace {

namespace fs = std::filesystem;


class InputStagerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    store_ = *cas::BlobStore::Open({dir_.path() + "/cas", 1 << 24, 1 << 24});
    stager_ = *InputStager::Create(store_.get(), dir_.path() + "/exec-cache");
  }
  Digest Put(const std::string& data) {
    Digest d = Digest::Of(data);
    EXPECT_TRUE(store_->Put(d, data).ok());
    return d;
  }
  Digest PutDir(const rev2::Directory& directory) { return Put(directory.SerializeAsString()); }
  std::string Read(const std::string& path) {
    std::ifstream in(path);
    return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  }
  absl::Status StageInto(const Digest& root, const std::string& dest, StageOptions options = {}) {
    UniqueFd fd = *OpenFile(dest, O_RDONLY | O_DIRECTORY);
    return stager_->Stage(root, fd.get(), options);
  }
  std::string Dest(const std::string& name) {
    std::string d = dir_.path() + "/" + name;
    fs::create_directories(d);
    return d;
  }

  cas::ScratchDir dir_;
  std::unique_ptr<cas::BlobStore> store_;
  std::unique_ptr<InputStager> stager_;
};

TEST_F(InputStagerTest, StagesFilesExecutablesDirectoriesAndSymlinks) {
  rev2::Directory sub;
  auto* tool = sub.add_files();
  tool->set_name("tool");
  *tool->mutable_digest() = Put("#!/bin/sh\n").ToProto();
  tool->set_is_executable(true);
  rev2::Directory empty;
  rev2::Directory root;
  auto* data = root.add_files();
  data->set_name("data.txt");
  *data->mutable_digest() = Put("data").ToProto();
  auto* d1 = root.add_directories();
  d1->set_name("bin");
  *d1->mutable_digest() = PutDir(sub).ToProto();
  auto* d2 = root.add_directories();
  d2->set_name("empty");
  *d2->mutable_digest() = PutDir(empty).ToProto();
  auto* link = root.add_symlinks();
  link->set_name("link");
  link->set_target("bin/tool");
  std::string dest = Dest("stage1");
  ASSERT_TRUE(StageInto(PutDir(root), dest).ok());
  EXPECT_EQ(Read(dest + "/data.txt"), "data");
  EXPECT_TRUE(fs::is_directory(dest + "/empty"));
  EXPECT_EQ(fs::read_symlink(dest + "/link").string(), "bin/tool");
  struct stat st;
  ASSERT_EQ(stat((dest + "/bin/tool").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0555);
  ASSERT_EQ(stat((dest + "/data.txt").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0444);
  EXPECT_GE(st.st_nlink, 2u);  // a hardlink of the CAS file, not a copy
}

TEST_F(InputStagerTest, CopiesWhereAHardlinkIsRefused) {
  // /dev/shm is another filesystem: link(2) fails with EXDEV there.
  if (!fs::is_directory("/dev/shm")) GTEST_FAIL() << "/dev/shm is needed for a cross-device stage";
  std::string dest = "/dev/shm/kiln-stage-test-" + std::to_string(getpid());
  fs::create_directories(dest);
  rev2::Directory root;
  auto* f = root.add_files();
  f->set_name("f");
  *f->mutable_digest() = Put("copied").ToProto();
  absl::Status staged = StageInto(PutDir(root), dest);
  std::string content = Read(dest + "/f");
  struct stat st;
  stat((dest + "/f").c_str(), &st);
  fs::remove_all(dest);
  ASSERT_TRUE(staged.ok()) << staged;
  EXPECT_EQ(content, "copied");
  EXPECT_EQ(st.st_nlink, 1u);
  EXPECT_EQ(st.st_mode & 0777, 0444);
}

TEST_F(InputStagerTest, MissingBlobsAreListedAllAtOnceAndNothingIsWritten) {
  rev2::Directory root;
  for (const char* name : {"a", "b"}) {
    auto* f = root.add_files();
    f->set_name(name);
    *f->mutable_digest() = Digest::Of(std::string("absent ") + name).ToProto();
  }
  auto* d = root.add_directories();
  d->set_name("c");
  *d->mutable_digest() = Digest::Of("absent directory").ToProto();
  std::string dest = Dest("missing");
  absl::Status status = StageInto(PutDir(root), dest);
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition);
  auto payload = status.GetPayload("type.googleapis.com/google.rpc.PreconditionFailure");
  ASSERT_TRUE(payload.has_value());
  google::rpc::PreconditionFailure failure;
  ASSERT_TRUE(failure.ParseFromString(std::string(*payload)));
  EXPECT_EQ(failure.violations_size(), 3);
  EXPECT_TRUE(fs::is_empty(dest));
}

TEST_F(InputStagerTest, SymlinksThatEscapeAreRejected) {
  for (const char* target : {"../x", "a/../../x", "/etc/passwd"}) {
    rev2::Directory root;
    auto* link = root.add_symlinks();
    link->set_name("l");
    link->set_target(target);
    EXPECT_EQ(StageInto(PutDir(root), Dest("escape")).code(),
              absl::StatusCode::kInvalidArgument)
        << target;
  }
  rev2::Directory sub;
  auto* inside = sub.add_symlinks();
  inside->set_name("up");
  inside->set_target("../sibling");  // one level down, one up: still inside
  rev2::Directory root;
  auto* d = root.add_directories();
  d->set_name("sub");
  *d->mutable_digest() = PutDir(sub).ToProto();
  EXPECT_TRUE(StageInto(PutDir(root), Dest("inside")).ok());
}

TEST_F(InputStagerTest, AZipBombDagIsRefusedBeforeAnythingIsWritten) {
  // Each level names the next one twice: 40 blobs that would expand to 2^40
  // directories.
  rev2::Directory level;
  auto* f = level.add_files();
  f->set_name("f");
  *f->mutable_digest() = Put("leaf").ToProto();
  Digest digest = PutDir(level);
  for (int i = 0; i < 40; ++i) {
    rev2::Directory parent;
    for (const char* name : {"a", "b"}) {
      auto* child = parent.add_directories();
      child->set_name(name);
      *child->mutable_digest() = digest.ToProto();
    }
    digest = PutDir(parent);
  }
  std::string dest = Dest("bomb");
  absl::Status status = StageInto(digest, dest);
  EXPECT_EQ(status.code(), absl::StatusCode::kResourceExhausted) << status;
  EXPECT_NE(status.message().find("--max_input_"), absl::string_view::npos) << status;
  EXPECT_TRUE(fs::is_empty(dest));

  StageOptions small;
  small.limits.max_files = 3;  // 4 leaves at two levels
  rev2::Directory two;
  for (const char* name : {"a", "b"}) {
    auto* child = two.add_directories();
    child->set_name(name);
    *child->mutable_digest() = PutDir(level).ToProto();
  }
  rev2::Directory top;
  for (const char* name : {"x", "y"}) {
    auto* child = top.add_directories();
    child->set_name(name);
    *child->mutable_digest() = PutDir(two).ToProto();
  }
  EXPECT_EQ(StageInto(PutDir(top), Dest("small"), small).code(), absl::StatusCode::kResourceExhausted);
  small.limits.max_files = 4;
  EXPECT_TRUE(StageInto(PutDir(top), Dest("fits"), small).ok());
}

// The expanded size is memoized per directory. A directory first met near
// the root must still count its own height when it is met again deep down:
// otherwise chains that reuse one another reach any depth while each
// passes the check (found while writing fuzz/input_stager_fuzzer's depth
// oracle).
TEST_F(InputStagerTest, ADirectorySharedAtTwoDepthsCountsAtTheDeeperOne) {
  auto wrap = [&](const Digest& inner) {
    rev2::Directory d;
    auto* child = d.add_directories();
    child->set_name("d");
    *child->mutable_digest() = inner.ToProto();
    return PutDir(d);
  };
  Digest chain = PutDir(rev2::Directory());
  for (int i = 0; i < 3; ++i) chain = wrap(chain);  // 3 levels below its top
  Digest deep = chain;
  for (int i = 0; i < 3; ++i) deep = wrap(deep);
  rev2::Directory root;
  for (auto [name, digest] : {std::pair{"a", chain}, std::pair{"b", deep}}) {
    auto* child = root.add_directories();
    child->set_name(name);
    *child->mutable_digest() = digest.ToProto();
  }
  // a/d/d/d is 4 deep; b/d/d/d/d/d/d is 7 deep.
  StageOptions options;
  options.limits.max_depth = 5;
  std::string dest = Dest("shared-depth");
  absl::Status status = StageInto(PutDir(root), dest, options);
  EXPECT_EQ(status.code(), absl::StatusCode::kResourceExhausted) << status;
  EXPECT_TRUE(fs::is_empty(dest));
  options.limits.max_depth = 7;
  EXPECT_TRUE(StageInto(PutDir(root), Dest("shared-depth-fits"), options).ok());
}

TEST_F(InputStagerTest, CopiedInputsDoNotShareTheCasInode) {
  rev2::Directory root;
  auto* f = root.add_files();
  f->set_name("in.txt");
  *f->mutable_digest() = Put("original").ToProto();
  auto* tool = root.add_files();
  tool->set_name("tool.sh");
  *tool->mutable_digest() = Put("#!/bin/sh\necho original\n").ToProto();
  tool->set_is_executable(true);
  std::string dest = Dest("copies");
  StageOptions copies;
  copies.copy_files = true;
  ASSERT_TRUE(StageInto(PutDir(root), dest, copies).ok());
  // The action owns its copies and may change them; the CAS is untouched.
  for (const char* name : {"/in.txt", "/tool.sh"}) {
    ASSERT_EQ(chmod((dest + name).c_str(), 0644), 0);
    std::ofstream(dest + name) << "poisoned";
  }
  EXPECT_EQ(*store_->ReadBlob(Digest::Of("original")), "original");
  EXPECT_EQ(*store_->ReadBlob(Digest::Of("#!/bin/sh\necho original\n")), "#!/bin/sh\necho original\n");
}

TEST_F(InputStagerTest, ASymlinkedInputDirectoryIsNeverWrittenThrough) {
  // An input root whose "d" is a symlink and which also names a directory
  // "d" is not canonical; a symlink chain is created as data only.
  rev2::Directory root;
  for (int i = 0; i <= 8; ++i) {
    auto* link = root.add_symlinks();
    link->set_name("s" + std::to_string(i));
    link->set_target(i == 0 ? "." : "s" + std::to_string(i - 1) + "/..");
  }
  std::string dest = Dest("chain");
  ASSERT_TRUE(StageInto(PutDir(root), dest).ok());
  EXPECT_EQ(fs::read_symlink(dest + "/s8").string(), "s7/..");
  UniqueFd fd = *OpenFile(dest, O_RDONLY | O_DIRECTORY);
  EXPECT_FALSE(OpenBeneath(fd.get(), "s8/etc/passwd", O_RDONLY).ok());
}

}  // namespace
}  // namespace kiln::exec
