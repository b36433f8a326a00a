// Directory messages as stored in the CAS: their validation and the
// breadth-first walk behind GetTree.
#ifndef KILN_SERVER_CAS_DIRECTORY_TREE_H_
#define KILN_SERVER_CAS_DIRECTORY_TREE_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/digest.h"
#include "server/cas/blob_store.h"

namespace kiln::cas {

// Checks the REAPI canonical form: every name is a single non-empty path
// component (no "/", ".", ".."), files, directories and symlinks are each
// sorted by name, and no name appears twice across the three lists. Every
// digest is well formed. INVALID_ARGUMENT names `where` and the entry.
absl::Status ValidateDirectory(const rev2::Directory& directory, const std::string& where);

// Directory, Action and Command blobs are read whole into memory; larger
// ones are refused before a byte is read. (A Directory of 100,000 files is
// about 10 MB.)
inline constexpr int64_t kMaxMessageBlobBytes = int64_t{64} << 20;

// Reads a blob meant to hold one message (`what`, e.g. "Command"):
// INVALID_ARGUMENT above kMaxMessageBlobBytes, NOT_FOUND when absent.
absl::StatusOr<std::string> ReadMessageBlob(BlobStore& store, const Digest& digest,
                                            absl::string_view what);

// Reads and parses a Directory blob, then validates it.
absl::StatusOr<rev2::Directory> ReadDirectory(BlobStore& store, const Digest& digest);

// One GetTree page: directories in breadth-first order from the root, each
// distinct directory once, starting at index `start`.
struct TreePage {
  std::vector<rev2::Directory> directories;
  int next_index = 0;  // 0 when this is the last page
};

// Walks the tree under `root` and returns up to `max_directories` directories
// (and at most about `max_bytes` of them) from index `start`. The root must
// exist (NOT_FOUND otherwise); a missing subdirectory is left out, as REAPI
// specifies for GetTree. A malformed directory is INVALID_ARGUMENT.
absl::StatusOr<TreePage> ReadTreePage(BlobStore& store, const Digest& root, int start,
                                      int max_directories, int64_t max_bytes);

}  // namespace kiln::cas

#endif  // KILN_SERVER_CAS_DIRECTORY_TREE_H_
