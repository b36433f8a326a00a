// Turns what an action left in its working directory into ActionResult
// outputs stored in the CAS: files (with their executable bit), directories
// as Tree messages, and symlinks, for output_paths (REAPI v2.1) or the legacy
// output_files / output_directories.
//
// The action's directory is hostile: everything here goes through
// common/path_beneath.h, so no symlink the action made is ever followed (a
// symlinked parent of an output is an error, a symlinked output is reported
// as a symlink), and the limits are checked before any file is hashed.
#ifndef KILN_SERVER_EXEC_OUTPUT_COLLECTOR_H_
#define KILN_SERVER_EXEC_OUTPUT_COLLECTOR_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/digest.h"
#include "server/cas/blob_store.h"

namespace kiln::exec {

// What one action may leave behind as outputs, over all of them.
struct OutputLimits {
  int64_t max_entries = 100000;               // files, directories and symlinks
  int64_t max_bytes = int64_t{16} << 30;      // sum of the regular files' sizes
  int max_depth = 256;                        // directory nesting below an output
};

// INVALID_ARGUMENT unless every output path and the working directory are
// relative, without "..", "." or empty components.
absl::Status ValidateOutputPaths(const rev2::Command& command);

// Creates the parent directory of every output beneath `working_dir_fd`,
// owned by uid:gid (-1: unchanged), so the action need not. A parent that is
// already a symlink (an input) is an error, never followed.
absl::Status CreateOutputParents(const rev2::Command& command, int working_dir_fd, uid_t uid,
                                 gid_t gid);

// Stores at most `max_bytes` of the open file `fd` in the CAS and returns the
// digest of what was stored. The file is read once: hashed while copied.
// With `batch`, the blob is in the store only once the batch is committed.
absl::StatusOr<Digest> StoreOpenFile(cas::BlobStore& cas, int fd, int64_t max_bytes,
                                     const std::string& what, cas::BlobBatch* batch = nullptr);

// Stores a file Kiln itself controls (e.g. an action's stdout capture).
absl::StatusOr<Digest> StoreFile(cas::BlobStore& cas, const std::string& path,
                                 int64_t max_bytes = INT64_MAX);

// Collects every declared output that exists into `result`. `root_fd` is
// the input root; `working_directory` is the Command's, relative to it.
// RESOURCE_EXHAUSTED when the outputs exceed `limits`. The outputs are
// synced, published and their directories synced before it returns, or,
// with `batch`, left in it for the caller to commit before it acknowledges
// them.
absl::Status CollectOutputs(cas::BlobStore& cas, const rev2::Command& command, int root_fd,
                            const std::string& working_directory, const OutputLimits& limits,
                            rev2::ActionResult* result, cas::BlobBatch* batch = nullptr);

}  // namespace kiln::exec

#endif  // KILN_SERVER_EXEC_OUTPUT_COLLECTOR_H_
