#include "server/exec/disk_watchdog.h"

#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>

#include "common/posix.h"
#include "server/cas/test_util.h"

namespace kiln::exec {
namespace {

namespace fs = std::filesystem;

void WriteBytes(const std::string& path, int64_t size) {
  std::ofstream(path) << std::string(size, 'x');
}

TEST(DiskWatchdogTest, CountsEachInodeOnceBySizeOnDiskAndSkipsTheOwnersFiles) {
  cas::ScratchDir dir;
  std::string root = dir.path() + "/root";
  fs::create_directories(root + "/a/b");
  WriteBytes(root + "/a/b/one", 1 << 20);
  fs::create_hard_link(root + "/a/b/one", root + "/alias");  // the same inode again
  UniqueFd fd = *OpenFile(root, O_RDONLY | O_DIRECTORY);
  DiskUsage usage = *MeasureActionDisk(fd.get(), static_cast<uid_t>(-1), {});
  EXPECT_GE(usage.bytes, 1 << 20);
  EXPECT_LT(usage.bytes, (1 << 20) + (64 << 10));  // once, plus directories
  // Files of the skipped owner (the CAS's hardlinks) do not count.
  DiskUsage skipped = *MeasureActionDisk(fd.get(), getuid(), {});
  EXPECT_EQ(skipped.bytes, 0);
  // A sparse file counts its blocks, not its length; extra files count.
  UniqueFd sparse = *OpenFile(root + "/sparse", O_WRONLY | O_CREAT, 0644);
  ASSERT_EQ(ftruncate(sparse.get(), int64_t{1} << 40), 0);
  WriteBytes(dir.path() + "/stdout", 300000);
  DiskUsage with_log = *MeasureActionDisk(fd.get(), static_cast<uid_t>(-1), {dir.path() + "/stdout"});
  EXPECT_GE(with_log.bytes, (1 << 20) + 300000);
  EXPECT_LT(with_log.bytes, int64_t{2} << 20);
}

TEST(DiskWatchdogTest, ATreeDeeperThanTheBoundIsReported) {
  cas::ScratchDir dir;
  std::string root = dir.path() + "/root";
  fs::create_directories(root);
  UniqueFd fd = *OpenFile(root, O_RDONLY | O_DIRECTORY);
  int current = dup(fd.get());
  for (int i = 0; i <= DiskWatchdog::kMaxDepth; ++i) {
    ASSERT_EQ(mkdirat(current, "d", 0755), 0);
    int next = openat(current, "d", O_RDONLY | O_DIRECTORY);
    close(current);
    current = next;
  }
  close(current);
  EXPECT_TRUE(MeasureActionDisk(fd.get(), static_cast<uid_t>(-1), {})->too_deep);
}

TEST(DiskWatchdogTest, ReportsOnceWhenTheLimitIsPassed) {
  cas::ScratchDir dir;
  std::string root = dir.path() + "/root";
  fs::create_directories(root);
  const absl::Time before = absl::Now();
  DiskWatchdog watchdog(root, static_cast<uid_t>(-1), {}, 1 << 20, absl::Milliseconds(10));
  EXPECT_GE(watchdog.next_check(), before + absl::Milliseconds(10));
  EXPECT_EQ(watchdog.Check(), std::nullopt);
  EXPECT_LT(watchdog.next_check(), absl::InfiniteFuture());
  WriteBytes(root + "/big", 2 << 20);
  std::optional<std::string> message = watchdog.Check();
  ASSERT_TRUE(message.has_value());
  EXPECT_NE(message->find("--max_action_disk_bytes"), std::string::npos);
  // Reported once: the runner stops the action on the first report.
  EXPECT_EQ(watchdog.next_check(), absl::InfiniteFuture());
  EXPECT_EQ(watchdog.Check(), std::nullopt);
}

}  // namespace
}  // namespace kiln::exec
