#include "common/ext_journal.h"

#include <fcntl.h>
#include <stdlib.h>
#include <sys/mount.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <string>

#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "common/posix.h"

namespace kiln {
namespace {

// A real ext4 made by mkfs.ext4 in an image file and loop-mounted (the test
// runs as root), unmounted and removed again however the test ends.
class LoopExt4 {
 public:
  explicit LoopExt4(const std::string& mkfs_options) {
    char scratch[] = "/var/tmp/kiln-ext-journal-test.XXXXXX";
    if (mkdtemp(scratch) == nullptr) {
      error_ = absl::StrCat("mkdtemp: ", strerror(errno));
      return;
    }
    scratch_ = scratch;
    const std::string image = scratch_ + "/fs.img";
    mount_point_ = scratch_ + "/mnt";
    if (mkdir(mount_point_.c_str(), 0700) != 0) {
      error_ = absl::StrCat("mkdir ", mount_point_, ": ", strerror(errno));
      return;
    }
    const std::string make =
        absl::StrCat("mkfs.ext4 -q -F ", mkfs_options, " ", image, " 32M > /dev/null");
    if (std::system(make.c_str()) != 0) {
      error_ = "failed: " + make;
      return;
    }
    const std::string mount = absl::StrCat("mount -o loop ", image, " ", mount_point_);
    if (std::system(mount.c_str()) != 0) {
      error_ = "failed: " + mount;
      return;
    }
    mounted_ = true;
  }
  ~LoopExt4() {
    // The loop device is released with the mount (mount -o loop sets autoclear).
    if (mounted_ && umount2(mount_point_.c_str(), 0) != 0) {
      ADD_FAILURE() << "umount " << mount_point_ << ": " << strerror(errno);
      return;  // the image stays for a person to look at
    }
    if (!scratch_.empty()) {
      EXPECT_TRUE(RemoveTree(scratch_).ok());
    }
  }
  const std::string& error() const { return error_; }
  const std::string& mount_point() const { return mount_point_; }

 private:
  std::string scratch_;
  std::string mount_point_;
  std::string error_;
  bool mounted_ = false;
};

TEST(ExtJournalTest, AnExt4WithoutAJournalIsFound) {
  LoopExt4 fs("-O ^has_journal");
  ASSERT_EQ(fs.error(), "");
  ASSERT_TRUE(MakeDirectories(fs.mount_point() + "/state/cas").ok());
  absl::StatusOr<bool> without = IsExtWithoutJournal(fs.mount_point() + "/state/cas");
  ASSERT_TRUE(without.ok()) << without.status();
  EXPECT_TRUE(*without);
}

TEST(ExtJournalTest, AJournaledExt4IsNot) {
  LoopExt4 fs("");  // mkfs.ext4's default has a journal
  ASSERT_EQ(fs.error(), "");
  absl::StatusOr<bool> without = IsExtWithoutJournal(fs.mount_point());
  ASSERT_TRUE(without.ok()) << without.status();
  EXPECT_FALSE(*without);
}

TEST(ExtJournalTest, OtherFilesystemsAreNot) {
  for (const char* dir : {"/proc", "/dev/shm"}) {
    absl::StatusOr<bool> without = IsExtWithoutJournal(dir);
    ASSERT_TRUE(without.ok()) << dir << ": " << without.status();
    EXPECT_FALSE(*without) << dir;
  }
}

TEST(ExtJournalTest, AMissingDirectoryIsAnError) {
  absl::StatusOr<bool> without = IsExtWithoutJournal("/nonexistent-kiln-dir");
  ASSERT_FALSE(without.ok());
  EXPECT_NE(without.status().message().find("/nonexistent-kiln-dir"), std::string::npos);
}

}  // namespace
}  // namespace kiln
