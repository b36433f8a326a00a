#include "server/cas/directory_tree.h"

#include <deque>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace kiln::cas {
namespace {

absl::Status CheckName(const std::string& name, const std::string& where) {
  if (name.empty() || name == "." || name == ".." || name.find('/') != std::string::npos ||
      name.find('\0') != std::string::npos) {
    return absl::InvalidArgumentError(absl::StrCat(
        where, ": entry name \"", name,
        "\" is not a single path component (empty, \".\", \"..\" or containing \"/\")"));
  }
  return absl::OkStatus();
}

template <typename Nodes>
absl::Status CheckSortedUnique(const Nodes& nodes, const char* kind, const std::string& where,
                               absl::flat_hash_set<std::string>& seen) {
  for (int i = 0; i < nodes.size(); ++i) {
    const std::string& name = nodes[i].name();
    RETURN_IF_ERROR(CheckName(name, where));
    if (i > 0 && nodes[i - 1].name() >= name) {
      return absl::InvalidArgumentError(absl::StrCat(
          where, ": ", kind, " \"", nodes[i - 1].name(), "\" and \"", name,
          nodes[i - 1].name() == name ? "\" are duplicates" : "\" are not sorted by name"));
    }
    if (!seen.insert(name).second) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ": name \"", name, "\" appears more than once"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status ValidateDirectory(const rev2::Directory& directory, const std::string& where) {
  absl::flat_hash_set<std::string> seen;
  RETURN_IF_ERROR(CheckSortedUnique(directory.files(), "files", where, seen));
  RETURN_IF_ERROR(CheckSortedUnique(directory.directories(), "directories", where, seen));
  RETURN_IF_ERROR(CheckSortedUnique(directory.symlinks(), "symlinks", where, seen));
  for (const auto& file : directory.files()) {
    absl::StatusOr<Digest> digest = ParseDigest(file.digest());
    if (!digest.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ": file \"", file.name(), "\": ", digest.status().message()));
    }
  }
  for (const auto& child : directory.directories()) {
    absl::StatusOr<Digest> digest = ParseDigest(child.digest());
    if (!digest.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ": directory \"", child.name(), "\": ", digest.status().message()));
    }
  }
  for (const auto& link : directory.symlinks()) {
    if (link.target().empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ": symlink \"", link.name(), "\" has an empty target"));
    }
    // symlinkat(2) would stop at the NUL: the link staged would not be the
    // one checked (a target "..\0x" passes the escape check and becomes "..").
    if (link.target().find('\0') != std::string::npos) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ": symlink \"", link.name(), "\" has a NUL byte in its target"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> ReadMessageBlob(BlobStore& store, const Digest& digest,
                                            absl::string_view what) {
  if (digest.size > kMaxMessageBlobBytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        what, " blob ", digest.ToString(), " is ", digest.size, " bytes, above the ",
        kMaxMessageBlobBytes, " bytes this worker reads into memory for one message"));
  }
  return store.ReadBlob(digest);
}

absl::StatusOr<rev2::Directory> ReadDirectory(BlobStore& store, const Digest& digest) {
  ASSIGN_OR_RETURN(std::string data, ReadMessageBlob(store, digest, "Directory"));
  rev2::Directory directory;
  if (!directory.ParseFromString(data)) {
    return absl::InvalidArgumentError(
        absl::StrCat("blob ", digest.ToString(), " is not a Directory message"));
  }
  RETURN_IF_ERROR(ValidateDirectory(directory, absl::StrCat("directory ", digest.ToString())));
  return directory;
}

absl::StatusOr<TreePage> ReadTreePage(BlobStore& store, const Digest& root, int start,
                                      int max_directories, int64_t max_bytes) {
  absl::flat_hash_set<Digest> queued = {root};
  std::deque<Digest> pending = {root};
  TreePage page;
  int64_t page_bytes = 0;
  int index = 0;
  while (!pending.empty()) {
    Digest digest = std::move(pending.front());
    pending.pop_front();
    absl::StatusOr<rev2::Directory> directory = ReadDirectory(store, digest);
    if (absl::IsNotFound(directory.status()) && !(digest == root)) continue;
    if (!directory.ok()) return directory.status();
    for (const auto& child : directory->directories()) {
      Digest child_digest = *ParseDigest(child.digest());  // validated above
      if (queued.insert(child_digest).second) pending.push_back(std::move(child_digest));
    }
    if (index++ < start) continue;
    if (static_cast<int>(page.directories.size()) == max_directories ||
        (!page.directories.empty() && page_bytes + digest.size > max_bytes)) {
      page.next_index = index - 1;
      return page;
    }
    page_bytes += digest.size;
    page.directories.push_back(*std::move(directory));
  }
  return page;
}

}  // namespace kiln::cas
