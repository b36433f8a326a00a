// The action cache under --state_dir/ac: one file per (instance, action
// digest) holding a serialized ActionResult, replaced atomically (temp file,
// fsync, rename) so a crash leaves the old or the new entry, never a mix.
//
// Get answers NOT_FOUND for an entry whose outputs are no longer all in the
// CAS (evicted), because a client that trusted it would fail to download
// them. Thread-safe.
#ifndef KILN_SERVER_CAS_ACTION_CACHE_H_
#define KILN_SERVER_CAS_ACTION_CACHE_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "common/digest.h"
#include "server/cas/blob_store.h"

namespace kiln::cas {

class ActionCache {
 public:
  // `cas` must outlive the cache. Removes temp files left by a crash.
  // With `fsync` false entries are written without any fsync (see
  // BlobStoreOptions::fsync): atomic for readers, not across a machine crash.
  static absl::StatusOr<std::unique_ptr<ActionCache>> Open(const std::string& root,
                                                           BlobStore* cas, bool fsync = true);

  absl::StatusOr<rev2::ActionResult> Get(const std::string& instance, const Digest& action);
  // How much of a crash an entry must survive once Put returns.
  enum class Durability {
    // UpdateActionResult: the client is told the entry is stored.
    kAcknowledged,
    // Written by Execute, whose client got the result in its response: a
    // machine crash may lose the entry (a later miss runs the action again)
    // but never leaves a partial one. Saves the directory fsync, a journal
    // commit per action.
    kCacheOnly,
  };
  absl::Status Put(const std::string& instance, const Digest& action,
                   const rev2::ActionResult& result,
                   Durability durability = Durability::kAcknowledged);

 private:
  ActionCache(std::string root, BlobStore* cas, bool fsync)
      : root_(std::move(root)), cas_(cas), fsync_(fsync) {}
  std::string EntryPath(const std::string& instance, const Digest& action) const;
  // OK if every blob the result references is in the CAS.
  absl::Status CheckOutputsPresent(const rev2::ActionResult& result);

  const std::string root_;
  BlobStore* const cas_;
  const bool fsync_;
};

}  // namespace kiln::cas

#endif  // KILN_SERVER_CAS_ACTION_CACHE_H_
