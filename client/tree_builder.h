// Turns a local directory into REAPI Directory messages (the Merkle tree of
// an input root), remembering where each blob's bytes come from so that only
// the blobs a server lacks need to be read and sent.
#ifndef KILN_CLIENT_TREE_BUILDER_H_
#define KILN_CLIENT_TREE_BUILDER_H_

#include <map>
#include <string>
#include <vector>

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

// What of a local directory goes into an input root.
struct InputRootOptions {
  // Globs (fnmatch) of what to leave out, like a .gitignore's simple lines: a
  // pattern without "/" matches a name at any depth ("*.o", "__pycache__");
  // one with "/" matches the path from the root ("build/*", a leading "/"
  // anchors); a trailing "/" matches directories only. An excluded directory
  // is not descended into.
  std::vector<std::string> excludes;
  // Also read patterns from DIR/.kilnignore (one per line; blank lines and
  // lines starting with "#" are skipped) when it exists.
  bool read_kilnignore = false;
  // Symlinks whose target is absolute or leads out of the root are replaced
  // by what they point to (a file's content, a directory's tree), since a
  // server that disallows absolute symlinks, or any server for one that
  // escapes, would refuse the whole input root. False keeps every symlink.
  bool resolve_outside_symlinks = false;
};

// Hashes every file under `dir` and builds its Directory tree into `blobs`.
// Symlinks are kept as symlinks (see InputRootOptions); sockets and devices
// are an error.
absl::StatusOr<Digest> BuildInputRoot(const std::string& dir, BlobSet* blobs,
                                      const InputRootOptions& options = {});

// Whether `relative_path` (from the root, "/"-separated) is excluded by one
// of `patterns` (InputRootOptions::excludes).
bool IsExcluded(const std::vector<std::string>& patterns, const std::string& relative_path,
                bool is_directory);

// Whether symlink `target`, found in the directory `relative_dir` of the
// root, points outside the root (absolute, or climbing above it with "..").
bool PointsOutside(const std::string& relative_dir, const std::string& target);

// Digest of one file's content.
absl::StatusOr<Digest> DigestFile(const std::string& path);

}  // namespace kiln::client

#endif  // KILN_CLIENT_TREE_BUILDER_H_
