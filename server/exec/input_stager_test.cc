#include "server/exec/input_stager.h"

#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>

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
  ASSERT_TRUE(stager_->Stage(PutDir(root), dest, getuid(), getgid()).ok());
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
  absl::Status staged = stager_->Stage(PutDir(root), dest, getuid(), getgid());
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
  absl::Status status = stager_->Stage(PutDir(root), dest, getuid(), getgid());
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
    EXPECT_EQ(stager_->Stage(PutDir(root), Dest("escape"), getuid(), getgid()).code(),
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
  EXPECT_TRUE(stager_->Stage(PutDir(root), Dest("inside"), getuid(), getgid()).ok());
}

}  // namespace
}  // namespace kiln::exec
