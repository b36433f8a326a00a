// kiln-worker --fsync=never: the CAS and the action cache are written
// without fsync. That is safe across a worker crash (the page cache
// survives it, and every write is a rename of a finished temp file) but not
// across a machine crash, which may leave a blob torn or an entry cut short
// under its final name.
//
// STATE_DIR/UNSYNCED holds the boot id (/proc/sys/kernel/random/boot_id) of
// the boot during which such writes were made. A worker starting in a later
// boot finds the machine restarted since, and verifies the state dir before
// it serves from it: every blob is hashed (torn ones are quarantined, as
// `--verify_cas` does), and every action-cache entry is dropped.
#ifndef KILN_SERVER_CAS_UNSYNCED_WRITES_H_
#define KILN_SERVER_CAS_UNSYNCED_WRITES_H_

#include <string>

#include "absl/status/statusor.h"
#include "server/cas/verify_store.h"

namespace kiln::cas {

struct UnsyncedWritesReport {
  // The boot id in STATE_DIR/UNSYNCED, if any.
  std::string unsynced_boot_id;
  // True when that was another boot: `verify` says what was found.
  bool verified = false;
  VerifyReport verify;
};

// The current boot's id, e.g. "9f0c3b1e-...".
absl::StatusOr<std::string> CurrentBootId();

// Call with STATE_DIR/LOCK held, before the CAS and the action cache are
// opened. Verifies the state dir if unsynced writes were made in another
// boot than `boot_id`. Then, with `fsync` true, makes whatever this boot
// wrote unsynced durable (syncfs) and removes the marker; with `fsync`
// false, writes the marker (durably) before any unsynced write is made.
absl::StatusOr<UnsyncedWritesReport> PrepareStateDirForWrites(const std::string& state_dir,
                                                              bool fsync,
                                                              const std::string& boot_id);

}  // namespace kiln::cas

#endif  // KILN_SERVER_CAS_UNSYNCED_WRITES_H_
