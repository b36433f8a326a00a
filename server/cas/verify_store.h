// `kiln-worker --verify_cas`: an offline check of a state dir's CAS and
// action cache, run while no worker holds the state dir.
//
// Every blob file must be a read-only regular file in its shard whose
// SHA-256 is its name (which also catches a truncated blob), and nothing
// else may be in blobs/. Files in cas/tmp/ and ac/tmp/ are writes that a
// stopped worker never finished: never visible, normal after a crash, and
// removed, as a worker's start removes them. Every action-cache entry must
// parse as an ActionResult, and every blob it references (output files,
// stdout/stderr, output Trees and the files in them) must be in the CAS,
// since a client that trusted it would fail to download them.
//
// What is wrong is moved (rename, never copied) to STATE_DIR/quarantine/,
// out of the store's sight, so the next worker neither serves nor deletes
// it, and an operator can look at it.
#ifndef KILN_SERVER_CAS_VERIFY_STORE_H_
#define KILN_SERVER_CAS_VERIFY_STORE_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace kiln::cas {

struct VerifyReport {
  int64_t blobs_checked = 0;
  int64_t bytes_checked = 0;
  int64_t entries_checked = 0;  // action-cache entries
  int64_t unfinished_writes_removed = 0;  // temp files of writes a crash interrupted
  int64_t entries_dropped = 0;            // action-cache entries removed unchecked
  // One line per problem: what, where, and where it was quarantined.
  std::vector<std::string> problems;
  bool clean() const { return problems.empty(); }
};

// Verifies STATE_DIR/cas and STATE_DIR/ac and quarantines what is wrong.
// FAILED_PRECONDITION while a worker holds STATE_DIR/LOCK (which this holds
// while it runs); an error status only when the check itself could not run.
absl::StatusOr<VerifyReport> VerifyStateDir(const std::string& state_dir);

struct VerifyOptions {
  // Removes every action-cache entry instead of checking it: after a machine
  // crash an entry written without fsync may be cut short yet still parse
  // (as fewer outputs, or exit code 0), which no check can tell.
  bool drop_action_cache = false;
};

// The same for a caller that holds STATE_DIR/LOCK itself (a starting worker).
absl::StatusOr<VerifyReport> VerifyLockedStateDir(const std::string& state_dir,
                                                  const VerifyOptions& options);

}  // namespace kiln::cas

#endif  // KILN_SERVER_CAS_VERIFY_STORE_H_
