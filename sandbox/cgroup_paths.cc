#include "sandbox/cgroup_paths.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>

#include <algorithm>
#include <fstream>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/posix.h"

namespace kiln::sandbox {

std::vector<CgroupMount> CgroupMounts() {
  std::vector<CgroupMount> mounts;
  std::ifstream in("/proc/self/mountinfo");
  for (std::string line; std::getline(in, line);) {
    // ... mount_point ... - fstype source super_options
    std::vector<std::string> halves = absl::StrSplit(line, " - ");
    if (halves.size() != 2) continue;
    std::vector<std::string> left = absl::StrSplit(halves[0], ' ');
    std::vector<std::string> right = absl::StrSplit(halves[1], ' ');
    if (left.size() < 5 || right.size() < 3) continue;
    if (right[0] == "cgroup2") {
      mounts.push_back({left[4], {}, true});
    } else if (right[0] == "cgroup") {
      CgroupMount m{left[4], {}, false};
      for (absl::string_view option : absl::StrSplit(right[2], ',')) {
        if (option == "memory" || option == "pids" || option == "cpu" || option == "cpuacct") {
          m.controllers.emplace_back(option);
        }
      }
      if (!m.controllers.empty()) mounts.push_back(m);
    }
  }
  return mounts;
}

std::map<std::string, std::string> OwnCgroups() {
  std::map<std::string, std::string> own;
  std::ifstream in("/proc/self/cgroup");
  for (std::string line; std::getline(in, line);) {
    std::vector<std::string> parts = absl::StrSplit(line, absl::MaxSplits(':', 2));
    if (parts.size() != 3) continue;
    if (parts[1].empty()) {
      own[""] = parts[2];
    } else {
      for (absl::string_view c : absl::StrSplit(parts[1], ',')) own[std::string(c)] = parts[2];
    }
  }
  return own;
}

absl::Status WriteCgroupFile(const std::string& dir, const std::string& file, const std::string& value,
                             int* error_number) {
  std::string path = dir + "/" + file;
  int error = 0;
  int fd = open(path.c_str(), O_WRONLY | O_CLOEXEC);
  if (fd < 0) {
    error = errno;
  } else {
    ssize_t written;
    while ((written = write(fd, value.data(), value.size())) < 0 && errno == EINTR) {
    }
    if (written < 0) error = errno;
    close(fd);
  }
  if (error_number != nullptr) *error_number = error;
  return error == 0 ? absl::OkStatus() : PosixError(absl::StrCat("write ", path), error);
}

std::string ReadCgroupFile(const std::string& dir, const std::string& file) {
  absl::StatusOr<std::string> text = ReadFileToString(dir + "/" + file);
  return text.ok() ? *text : "";
}

std::vector<std::string> AvailableLimitControllers(const std::string& dir) {
  std::vector<std::string> available;
  std::string text = ReadCgroupFile(dir, "cgroup.controllers");
  for (absl::string_view c : absl::StrSplit(text, absl::ByAnyChar(" \n"), absl::SkipEmpty())) {
    const auto& wanted = LimitControllers();
    if (std::find(wanted.begin(), wanted.end(), c) != wanted.end()) available.emplace_back(c);
  }
  return available;
}

std::string OwnV2CgroupWithControllers() {
  std::map<std::string, std::string> own = OwnCgroups();
  if (!own.count("")) return "";
  for (const CgroupMount& mount : CgroupMounts()) {
    if (!mount.v2) continue;
    // "/" joins as "/sys/fs/cgroup/": trimmed, so that names built from it
    // read cleanly in messages.
    std::string dir = own[""] == "/" ? mount.point : mount.point + own[""];
    if (!AvailableLimitControllers(dir).empty()) return dir;
  }
  return "";
}

}  // namespace kiln::sandbox
