// Materializes an action's input root from the CAS into a directory: files
// are hardlinked from the CAS (a copy on EMLINK or EXDEV), executables from a
// cache of 0555 copies (a hardlink shares its inode's mode), directories are
// created and handed to the build user, symlinks are created as given.
//
// A hardlink shares its inode with the CAS, so it is only safe when the
// action cannot change that inode: the CAS files are 0444 and owned by the
// worker, and the action runs as another uid without CAP_FOWNER (root mode).
// When the action has the worker's own uid (unprivileged mode, where the
// user namespace maps the build user onto it) `copy_files` makes every input
// a private copy instead.
//
// Everything is checked before anything is written: names, canonical order,
// symlinks whose text leaves the root, missing blobs (all of them, so the
// client can upload them in one go), and the size of the expanded tree (a
// DAG that names one child many times is counted as staged, without being
// expanded). Symlinks are created as data and never followed: every write
// goes through a directory fd Kiln created itself. Parsed Directory messages
// are cached in memory, so a repeated input root is staged without reading or
// parsing its directories again. Thread-safe.
#ifndef KILN_SERVER_EXEC_INPUT_STAGER_H_
#define KILN_SERVER_EXEC_INPUT_STAGER_H_

#include <sys/types.h>

#include <functional>
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

// Bounds on one expanded input root.
struct StagingLimits {
  int64_t max_files = 1000000;        // files and symlinks
  int64_t max_directories = 1000000;
  int64_t max_bytes = int64_t{64} << 30;  // sum of file sizes
  int max_depth = 256;
};

struct StageOptions {
  uid_t uid = static_cast<uid_t>(-1);  // owner of created directories (-1: ours)
  gid_t gid = static_cast<gid_t>(-1);
  bool copy_files = false;             // private copies instead of hardlinks
  StagingLimits limits;
  // Polled while writing; staging stops with CANCELLED once it returns true.
  std::function<bool()> cancelled;
};

class InputStager {
 public:
  // `executable_cache_dir` holds 0555 copies of executable inputs; it is
  // emptied here (copies are cheap to remake).
  static absl::StatusOr<std::unique_ptr<InputStager>> Create(cas::BlobStore* cas,
                                                             const std::string& executable_cache_dir);

  // Stages the tree under `root` into the existing empty directory `dest_fd`.
  // RESOURCE_EXHAUSTED names the limit when the expanded tree exceeds it.
  absl::Status Stage(const Digest& root, int dest_fd, const StageOptions& options);

  // Parses, validates and caches a Directory; NOT_FOUND if absent.
  absl::StatusOr<std::shared_ptr<const rev2::Directory>> GetDirectory(const Digest& digest);

 private:
  class Staging;
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
