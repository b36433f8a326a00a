// Turns a local directory into REAPI Directory messages (the Merkle tree of
// an input root), remembering where each blob's bytes come from so that only
// the blobs a server lacks need to be read and sent.
#ifndef KILN_CLIENT_TREE_BUILDER_H_
#define KILN_CLIENT_TREE_BUILDER_H_

#include <map>
#include <string>

#include "absl/status/statusor.h"
#include "common/digest.h"

namespace kiln::client {

// Where a blob's bytes are: a file on disk, or bytes held in memory.
struct BlobSource {
  std::string path;     // set for files
  std::string content;  // set for messages (Directory, Command, Action)
};

struct BlobSet {
  std::map<std::string, BlobSource> by_hash;  // hash -> source
  std::map<std::string, Digest> digests;      // hash -> digest
  void AddMessage(const std::string& bytes, Digest* digest);
  void AddFile(const std::string& path, const Digest& digest);
};

// Hashes every file under `dir` and builds its Directory tree into `blobs`.
// Symlinks are kept as symlinks; sockets and devices are an error.
absl::StatusOr<Digest> BuildInputRoot(const std::string& dir, BlobSet* blobs);

// Digest of one file's content.
absl::StatusOr<Digest> DigestFile(const std::string& path);

}  // namespace kiln::client

#endif  // KILN_CLIENT_TREE_BUILDER_H_
