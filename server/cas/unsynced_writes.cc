#include "server/cas/unsynced_writes.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "common/posix.h"
#include "common/status_macros.h"

namespace kiln::cas {

absl::StatusOr<std::string> CurrentBootId() {
  ASSIGN_OR_RETURN(std::string id, ReadFileToString("/proc/sys/kernel/random/boot_id"));
  id = std::string(absl::StripAsciiWhitespace(id));
  if (id.empty()) return absl::InternalError("/proc/sys/kernel/random/boot_id is empty");
  return id;
}

absl::StatusOr<UnsyncedWritesReport> PrepareStateDirForWrites(const std::string& state_dir,
                                                              bool fsync,
                                                              const std::string& boot_id) {
  const std::string marker = state_dir + "/UNSYNCED";
  UnsyncedWritesReport report;
  absl::StatusOr<std::string> recorded = ReadFileToString(marker);
  if (!recorded.ok() && !absl::IsNotFound(recorded.status())) return recorded.status();
  if (recorded.ok()) {
    report.unsynced_boot_id = std::string(absl::StripAsciiWhitespace(*recorded));
    if (report.unsynced_boot_id != boot_id) {
      VerifyOptions options;
      options.drop_action_cache = true;
      ASSIGN_OR_RETURN(report.verify, VerifyLockedStateDir(state_dir, options));
      report.verified = true;
    }
  }
  if (!fsync) {
    // Durable before the first unsynced write: a crash right after must
    // still find it.
    if (!recorded.ok() || report.unsynced_boot_id != boot_id) {
      // Its temp file goes where the CAS's start removes leftovers.
      const std::string tmp = state_dir + "/cas/tmp";
      RETURN_IF_ERROR(MakeDirectories(tmp, 0700));
      RETURN_IF_ERROR(WriteFileAtomically(marker, boot_id + "\n", tmp, 0600));
    }
    return report;
  }
  if (!recorded.ok()) return report;
  // Whatever this boot wrote unsynced (or the verification changed) goes to
  // disk before the marker stops pointing at it.
  ASSIGN_OR_RETURN(UniqueFd dir, OpenFile(state_dir, O_RDONLY | O_DIRECTORY));
  if (syncfs(dir.get()) != 0) return PosixError("syncfs " + state_dir, errno);
  if (unlink(marker.c_str()) != 0) return PosixError("unlink " + marker, errno);
  RETURN_IF_ERROR(FsyncDirectory(state_dir));
  return report;
}

}  // namespace kiln::cas
