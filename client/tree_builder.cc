#include "client/tree_builder.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "common/posix.h"
#include "common/sha256.h"
#include "common/status_macros.h"

namespace kiln::client {

void BlobSet::AddMessage(const std::string& bytes, Digest* digest) {
  *digest = Digest::Of(bytes);
  by_hash[digest->hash] = BlobSource{"", bytes};
  digests[digest->hash] = *digest;
}

void BlobSet::AddFile(const std::string& path, const Digest& digest) {
  by_hash.emplace(digest.hash, BlobSource{path, ""});
  digests[digest.hash] = digest;
}

absl::StatusOr<Digest> DigestFile(const std::string& path) {
  ASSIGN_OR_RETURN(UniqueFd fd, OpenFile(path, O_RDONLY));
  Sha256 hash;
  int64_t size = 0;
  for (;;) {
    ASSIGN_OR_RETURN(std::string chunk, ReadAt(fd.get(), size, 1 << 20, path));
    if (chunk.empty()) break;
    hash.Update(chunk);
    size += static_cast<int64_t>(chunk.size());
  }
  return Digest{hash.FinishHex(), size};
}

absl::StatusOr<Digest> BuildInputRoot(const std::string& dir, BlobSet* blobs) {
  std::vector<std::string> names;
  std::error_code error;
  for (const auto& entry : std::filesystem::directory_iterator(dir, error)) {
    names.push_back(entry.path().filename());
  }
  if (error) return PosixError("list " + dir, error.value());
  std::sort(names.begin(), names.end());
  rev2::Directory directory;
  for (const std::string& name : names) {
    std::string path = dir + "/" + name;
    struct stat st;
    if (lstat(path.c_str(), &st) != 0) return PosixError("lstat " + path, errno);
    if (S_ISLNK(st.st_mode)) {
      std::string target(4096, '\0');
      ssize_t n = readlink(path.c_str(), target.data(), target.size());
      if (n < 0) return PosixError("readlink " + path, errno);
      target.resize(n);
      auto* link = directory.add_symlinks();
      link->set_name(name);
      link->set_target(target);
    } else if (S_ISDIR(st.st_mode)) {
      ASSIGN_OR_RETURN(Digest child, BuildInputRoot(path, blobs));
      auto* node = directory.add_directories();
      node->set_name(name);
      *node->mutable_digest() = child.ToProto();
    } else if (S_ISREG(st.st_mode)) {
      ASSIGN_OR_RETURN(Digest digest, DigestFile(path));
      blobs->AddFile(path, digest);
      auto* file = directory.add_files();
      file->set_name(name);
      *file->mutable_digest() = digest.ToProto();
      file->set_is_executable((st.st_mode & 0111) != 0);
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat(path, " is neither a file, a directory nor a symlink"));
    }
  }
  Digest digest;
  blobs->AddMessage(directory.SerializeAsString(), &digest);
  return digest;
}

}  // namespace kiln::client
