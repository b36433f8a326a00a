// The pool of numeric build users: one uid per concurrent sandbox, claimed
// with an flock on a per-uid file so that separate kiln-sandbox processes
// never share one. No passwd entries are needed.
#ifndef KILN_SANDBOX_UID_POOL_H_
#define KILN_SANDBOX_UID_POOL_H_

#include <sys/types.h>

#include <string>

#include "absl/status/statusor.h"
#include "common/posix.h"

namespace kiln::sandbox {

// Holds one build uid until destroyed.
class UidLease {
 public:
  uid_t uid() const { return uid_; }

 private:
  friend absl::StatusOr<UidLease> AcquireBuildUid(const std::string&, uid_t, int);
  uid_t uid_ = 0;
  UniqueFd lock_;
};

// Claims the first free uid in [base, base + size). RESOURCE_EXHAUSTED when
// all are in use.
absl::StatusOr<UidLease> AcquireBuildUid(const std::string& lock_dir, uid_t base, int size);

}  // namespace kiln::sandbox

#endif  // KILN_SANDBOX_UID_POOL_H_
