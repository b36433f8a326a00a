#include "server/cas/action_cache.h"

#include "absl/strings/str_cat.h"
#include "common/posix.h"
#include "common/sha256.h"
#include "common/status_macros.h"

namespace kiln::cas {
namespace {

absl::Status RequirePresent(BlobStore& cas, const rev2::Digest& proto, absl::string_view what) {
  ASSIGN_OR_RETURN(Digest digest, ParseDigest(proto));
  if (!cas.Contains(digest)) {
    return absl::NotFoundError(absl::StrCat("the cached result's ", what, " (",
                                            digest.ToString(), ") is no longer in the CAS"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<ActionCache>> ActionCache::Open(const std::string& root,
                                                               BlobStore* cas, bool fsync) {
  RETURN_IF_ERROR(RemoveTree(root + "/tmp"));
  RETURN_IF_ERROR(MakeDirectories(root + "/tmp", 0700));
  RETURN_IF_ERROR(MakeDirectories(root + "/entries", 0755));
  return std::unique_ptr<ActionCache>(new ActionCache(root, cas, fsync));
}

std::string ActionCache::EntryPath(const std::string& instance, const Digest& action) const {
  // The instance name is free-form text, so it is hashed into the file name.
  std::string key = Sha256::HexOf(absl::StrCat(instance, "\n", action.ToString()));
  return absl::StrCat(root_, "/entries/", key);
}

absl::StatusOr<rev2::ActionResult> ActionCache::Get(const std::string& instance,
                                                    const Digest& action) {
  absl::StatusOr<std::string> data = ReadFileToString(EntryPath(instance, action));
  if (absl::IsNotFound(data.status())) {
    return absl::NotFoundError(absl::StrCat("no cached result for action ", action.ToString()));
  }
  if (!data.ok()) return data.status();
  rev2::ActionResult result;
  if (!result.ParseFromString(*data)) {
    return absl::DataLossError(
        absl::StrCat("the cached result for action ", action.ToString(), " is corrupt"));
  }
  RETURN_IF_ERROR(CheckOutputsPresent(result));
  return result;
}

absl::Status ActionCache::CheckOutputsPresent(const rev2::ActionResult& result) {
  for (const auto& file : result.output_files()) {
    RETURN_IF_ERROR(RequirePresent(*cas_, file.digest(), "output file " + file.path()));
  }
  if (result.has_stdout_digest()) RETURN_IF_ERROR(RequirePresent(*cas_, result.stdout_digest(), "stdout"));
  if (result.has_stderr_digest()) RETURN_IF_ERROR(RequirePresent(*cas_, result.stderr_digest(), "stderr"));
  for (const auto& dir : result.output_directories()) {
    std::string what = "output directory " + dir.path();
    RETURN_IF_ERROR(RequirePresent(*cas_, dir.tree_digest(), what));
    ASSIGN_OR_RETURN(Digest tree_digest, ParseDigest(dir.tree_digest()));
    absl::StatusOr<std::string> data = cas_->ReadBlob(tree_digest);
    if (!data.ok()) return absl::NotFoundError(data.status().message());
    rev2::Tree tree;
    if (!tree.ParseFromString(*data)) {
      return absl::NotFoundError(absl::StrCat("the cached result's ", what, " is not a Tree"));
    }
    // With a root_directory_digest (v2.8's Directory form) every Directory
    // must be there too: the client walks them instead of the Tree.
    const bool directories = dir.has_root_directory_digest();
    if (directories) RETURN_IF_ERROR(RequirePresent(*cas_, dir.root_directory_digest(), what + " root"));
    auto check_files = [&](const rev2::Directory& directory) -> absl::Status {
      for (const auto& file : directory.files()) {
        RETURN_IF_ERROR(RequirePresent(*cas_, file.digest(), what + " file " + file.name()));
      }
      for (const auto& child : directory.directories()) {
        if (directories) RETURN_IF_ERROR(RequirePresent(*cas_, child.digest(), what + " directory " + child.name()));
      }
      return absl::OkStatus();
    };
    RETURN_IF_ERROR(check_files(tree.root()));
    for (const auto& child : tree.children()) RETURN_IF_ERROR(check_files(child));
  }
  return absl::OkStatus();
}

absl::Status ActionCache::Put(const std::string& instance, const Digest& action,
                              const rev2::ActionResult& result, Durability durability) {
  std::string data;
  if (!result.SerializeToString(&data)) {
    return absl::InvalidArgumentError("the ActionResult could not be serialized");
  }
  return WriteFileAtomically(EntryPath(instance, action), data, root_ + "/tmp", 0644,
                             /*durable=*/fsync_,
                             /*sync_directory=*/durability == Durability::kAcknowledged);
}

}  // namespace kiln::cas
