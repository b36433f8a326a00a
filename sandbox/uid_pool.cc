#include "sandbox/uid_pool.h"

#include <fcntl.h>
#include <sys/file.h>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace kiln::sandbox {

absl::StatusOr<UidLease> AcquireBuildUid(const std::string& lock_dir, uid_t base, int size) {
  RETURN_IF_ERROR(MakeDirectories(lock_dir + "/uids", 0700));
  for (int i = 0; i < size; ++i) {
    uid_t uid = base + i;
    ASSIGN_OR_RETURN(UniqueFd fd,
                     OpenFile(absl::StrCat(lock_dir, "/uids/", uid), O_RDWR | O_CREAT, 0600));
    if (flock(fd.get(), LOCK_EX | LOCK_NB) == 0) {
      UidLease lease;
      lease.uid_ = uid;
      lease.lock_ = std::move(fd);
      return lease;
    }
  }
  return absl::ResourceExhaustedError(absl::StrCat(
      "all ", size, " build users (uids ", base, "..", base + size - 1,
      ") are in use by other sandboxes"));
}

}  // namespace kiln::sandbox
