// Turns what an action left in its working directory into ActionResult
// outputs stored in the CAS: files (with their executable bit), directories
// as Tree messages, and symlinks, for output_paths (REAPI v2.1) or the legacy
// output_files / output_directories.
#ifndef KILN_SERVER_EXEC_OUTPUT_COLLECTOR_H_
#define KILN_SERVER_EXEC_OUTPUT_COLLECTOR_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/digest.h"
#include "server/cas/blob_store.h"

namespace kiln::exec {

// INVALID_ARGUMENT unless every output path is relative, without "..", "."
// or empty components, so it cannot escape the working directory.
absl::Status ValidateOutputPaths(const rev2::Command& command);

// Creates the parent directory of every output, owned by uid:gid, so the
// action need not.
absl::Status CreateOutputParents(const rev2::Command& command, const std::string& working_dir,
                                 uid_t uid, gid_t gid);

// Stores a file's content in the CAS (read through a stream; the file is
// never trusted to stay unchanged after hashing: what is stored is what was read).
absl::StatusOr<Digest> StoreFile(cas::BlobStore& cas, const std::string& path);

// Collects every declared output that exists into `result`.
absl::Status CollectOutputs(cas::BlobStore& cas, const rev2::Command& command,
                            const std::string& working_dir, rev2::ActionResult* result);

}  // namespace kiln::exec

#endif  // KILN_SERVER_EXEC_OUTPUT_COLLECTOR_H_
