// Materializes an action's input root from the CAS into a directory: files
// are hardlinked from the CAS (a copy on EMLINK or EXDEV), executables from a
// cache of 0555 copies (a hardlink shares its inode's mode), directories are
// created and handed to the build user, symlinks are created as given.
//
// Everything is checked before anything is written: names, canonical order,
// symlinks that would escape the root, and missing blobs (all of them, so the
// client can upload them in one go). Parsed Directory messages are cached in
// memory, so a repeated input root is staged without reading or parsing its
// directories again. Thread-safe.
#ifndef KILN_SERVER_EXEC_INPUT_STAGER_H_
#define KILN_SERVER_EXEC_INPUT_STAGER_H_

#include <sys/types.h>

#include <list>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "common/digest.h"
#include "server/cas/blob_store.h"

namespace kiln::exec {

// A FAILED_PRECONDITION status carrying a google.rpc.PreconditionFailure with
// one "MISSING" violation per digest, as REAPI asks of Execute.
absl::Status MissingBlobsError(const std::vector<Digest>& missing);

class InputStager {
 public:
  // `executable_cache_dir` holds 0555 copies of executable inputs; it is
  // emptied here (copies are cheap to remake).
  static absl::StatusOr<std::unique_ptr<InputStager>> Create(cas::BlobStore* cas,
                                                             const std::string& executable_cache_dir);

  // Stages the tree under `root` into the existing empty directory `dest`,
  // making directories owned by uid:gid.
  absl::Status Stage(const Digest& root, const std::string& dest, uid_t uid, gid_t gid);

  // Parses, validates and caches a Directory; NOT_FOUND if absent.
  absl::StatusOr<std::shared_ptr<const rev2::Directory>> GetDirectory(const Digest& digest);

 private:
  InputStager(cas::BlobStore* cas, std::string executable_cache_dir)
      : cas_(cas), executable_cache_dir_(std::move(executable_cache_dir)) {}
  // Returns a 0555 file with the blob's content, made once per blob.
  absl::StatusOr<std::string> ExecutableCopy(const Digest& digest, const std::string& source);

  static constexpr size_t kMaxCachedDirectories = 200000;

  cas::BlobStore* const cas_;
  const std::string executable_cache_dir_;
  absl::Mutex mu_;
  struct CachedDirectory {
    std::shared_ptr<const rev2::Directory> directory;
    std::list<Digest>::iterator lru_position;
  };
  absl::flat_hash_map<Digest, CachedDirectory> directories_ ABSL_GUARDED_BY(mu_);
  std::list<Digest> lru_ ABSL_GUARDED_BY(mu_);  // front: least recently used
};

}  // namespace kiln::exec

#endif  // KILN_SERVER_EXEC_INPUT_STAGER_H_
