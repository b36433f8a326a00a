#include "common/ext_journal.h"

#include <dirent.h>
#include <linux/magic.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/sysmacros.h>

#include <cerrno>
#include <memory>

#include "absl/strings/ascii.h"
#include "absl/strings/strip.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/posix.h"
#include "common/status_macros.h"

namespace kiln {
namespace {

// The kernel's name of a block device ("vda", "nvme0n1p2", "dm-0", "loop3"),
// which is also the prefix of its journal's entry in /proc/fs/jbd2.
absl::StatusOr<std::string> BlockDeviceName(dev_t device) {
  const std::string uevent =
      absl::StrCat("/sys/dev/block/", major(device), ":", minor(device), "/uevent");
  ASSIGN_OR_RETURN(std::string text, ReadFileToString(uevent));
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    if (absl::ConsumePrefix(&line, "DEVNAME=")) return std::string(absl::StripAsciiWhitespace(line));
  }
  return absl::NotFoundError(absl::StrCat(uevent, " names no DEVNAME"));
}

}  // namespace

absl::StatusOr<bool> IsExtWithoutJournal(const std::string& dir) {
  struct statfs fs;
  if (statfs(dir.c_str(), &fs) != 0) return PosixError("statfs " + dir, errno);
  if (fs.f_type != EXT4_SUPER_MAGIC) return false;  // ext2, ext3 and ext4 share it
  struct stat st;
  if (stat(dir.c_str(), &st) != 0) return PosixError("stat " + dir, errno);
  ASSIGN_OR_RETURN(std::string device, BlockDeviceName(st.st_dev));
  // Each jbd2 journal has an entry "<device>-<journal inode>"; with no
  // journaled filesystem mounted at all, the directory may not exist.
  std::unique_ptr<DIR, int (*)(DIR*)> journals(opendir("/proc/fs/jbd2"), closedir);
  if (journals == nullptr) {
    if (errno == ENOENT) return true;
    return PosixError("opendir /proc/fs/jbd2", errno);
  }
  const std::string prefix = device + "-";
  while (const dirent* entry = readdir(journals.get())) {
    absl::string_view name = entry->d_name;
    uint64_t inode;
    if (absl::ConsumePrefix(&name, prefix) && absl::SimpleAtoi(name, &inode)) return false;
  }
  return true;
}

}  // namespace kiln
