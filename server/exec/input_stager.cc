#include "server/exec/input_stager.h"

#include <fcntl.h>
#include <sys/sendfile.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/path_beneath.h"
#include "common/posix.h"
#include "common/status_macros.h"
#include "google/rpc/error_details.pb.h"
#include "server/cas/directory_tree.h"

namespace kiln::exec {
namespace {

// True if `target`, a symlink in a directory `depth` levels below the root,
// resolves (lexically) inside the root. This is a hermeticity rule, not the
// security boundary: Kiln never follows input symlinks itself, and inside
// the sandbox they can only reach what the sandbox shows.
bool StaysInside(const std::string& target, int depth) {
  if (target.empty() || target[0] == '/') return false;
  for (absl::string_view part : absl::StrSplit(target, '/', absl::SkipEmpty())) {
    if (part == "..") {
      if (--depth < 0) return false;
    } else if (part != ".") {
      ++depth;
    }
  }
  return true;
}

// Copies `from` (a path Kiln owns) into a new entry `name` of `dirfd`.
absl::Status CopyFileAt(const std::string& from, int dirfd, const std::string& name, mode_t mode) {
  ASSIGN_OR_RETURN(UniqueFd in, OpenFile(from, O_RDONLY));
  int out_fd = openat(dirfd, name.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode);
  if (out_fd < 0) return PosixError("create " + name, errno);
  UniqueFd out(out_fd);
  // copy_file_range shares extents where it can, but refuses some pairs of
  // filesystems (EXDEV between ext4 and tmpfs); sendfile copies anywhere.
  bool use_sendfile = false;
  while (true) {
    ssize_t n = use_sendfile ? sendfile(out.get(), in.get(), nullptr, 1 << 30)
                             : copy_file_range(in.get(), nullptr, out.get(), nullptr, 1 << 30, 0);
    if (n < 0 && !use_sendfile &&
        (errno == EXDEV || errno == EINVAL || errno == ENOSYS || errno == EOPNOTSUPP)) {
      use_sendfile = true;
      continue;
    }
    if (n < 0) return PosixError("copy " + from + " to " + name, errno);
    if (n == 0) break;
  }
  if (fchmod(out.get(), mode) != 0) return PosixError("chmod " + name, errno);
  return absl::OkStatus();
}

// Adds without overflow: an exponential DAG saturates instead of wrapping.
int64_t SaturatingAdd(int64_t a, int64_t b) { return a > INT64_MAX - b ? INT64_MAX : a + b; }

// What a directory expands to once staged, children included.
struct ExpandedSize {
  int64_t files = 0;
  int64_t directories = 0;
  int64_t bytes = 0;
  int height = 0;  // levels of directories below this one
};

}  // namespace

absl::Status MissingBlobsError(const std::vector<Digest>& missing) {
  google::rpc::PreconditionFailure failure;
  for (const Digest& digest : missing) {
    auto* violation = failure.add_violations();
    violation->set_type("MISSING");
    violation->set_subject(absl::StrCat("blobs/", digest.ToString()));
    violation->set_description("the blob is not in the CAS; upload it and retry");
  }
  absl::Status status = absl::FailedPreconditionError(absl::StrCat(
      missing.size(), " input blob(s) are missing from the CAS, e.g. ",
      missing.empty() ? "" : missing.front().ToString()));
  // Carried as a payload; the gRPC edge turns it into status details.
  status.SetPayload("type.googleapis.com/google.rpc.PreconditionFailure",
                    absl::Cord(failure.SerializeAsString()));
  return status;
}

absl::StatusOr<std::unique_ptr<InputStager>> InputStager::Create(
    cas::BlobStore* cas, const std::string& executable_cache_dir) {
  RETURN_IF_ERROR(RemoveTree(executable_cache_dir));
  RETURN_IF_ERROR(MakeDirectories(executable_cache_dir, 0700));
  return std::unique_ptr<InputStager>(new InputStager(cas, executable_cache_dir));
}

absl::StatusOr<std::shared_ptr<const rev2::Directory>> InputStager::GetDirectory(const Digest& digest) {
  {
    absl::MutexLock lock(&mu_);
    auto it = directories_.find(digest);
    if (it != directories_.end()) {
      lru_.splice(lru_.end(), lru_, it->second.lru_position);
      return it->second.directory;
    }
  }
  ASSIGN_OR_RETURN(rev2::Directory parsed, cas::ReadDirectory(*cas_, digest));
  auto directory = std::make_shared<const rev2::Directory>(std::move(parsed));
  absl::MutexLock lock(&mu_);
  if (!directories_.contains(digest)) {
    lru_.push_back(digest);
    directories_[digest] = {directory, std::prev(lru_.end())};
    if (directories_.size() > kMaxCachedDirectories) {
      directories_.erase(lru_.front());
      lru_.pop_front();
    }
  }
  return directory;
}

absl::StatusOr<std::string> InputStager::ExecutableCopy(const Digest& digest, const std::string& source) {
  std::string path = absl::StrCat(executable_cache_dir_, "/", digest.hash);
  if (access(path.c_str(), F_OK) == 0) return path;
  ASSIGN_OR_RETURN(UniqueFd cache_dir, OpenFile(executable_cache_dir_, O_RDONLY | O_DIRECTORY));
  std::string temp = absl::StrCat(digest.hash, ".tmp.", gettid());
  RETURN_IF_ERROR(CopyFileAt(source, cache_dir.get(), temp, 0555));
  if (renameat(cache_dir.get(), temp.c_str(), cache_dir.get(), digest.hash.c_str()) != 0) {
    unlinkat(cache_dir.get(), temp.c_str(), 0);
    return PosixError("rename " + temp, errno);
  }
  return path;
}

// One staging: the unique directories of the DAG, the pinned files, and the
// writes.
class InputStager::Staging {
 public:
  Staging(InputStager* stager, const StageOptions& options) : stager_(stager), options_(options) {}

  // Pass 1: reads every distinct directory once (breadth first, so each is
  // first seen at its smallest depth), pins every file, checks symlinks and
  // collects all missing blobs.
  absl::Status Check(const Digest& root) {
    absl::StatusOr<std::shared_ptr<const rev2::Directory>> root_directory = stager_->GetDirectory(root);
    if (absl::IsNotFound(root_directory.status())) return MissingBlobsError({root});
    if (!root_directory.ok()) return root_directory.status();
    directories_[root] = *root_directory;
    std::vector<std::pair<Digest, int>> queue = {{root, 0}};
    std::vector<Digest> missing;
    absl::flat_hash_set<Digest> seen_files;
    absl::flat_hash_set<Digest> missing_directories;
    for (size_t i = 0; i < queue.size(); ++i) {
      const auto [digest, depth] = queue[i];
      const rev2::Directory& directory = *directories_[digest];
      for (const auto& child : directory.directories()) {
        Digest child_digest = *ParseDigest(child.digest());  // validated with the directory
        if (directories_.contains(child_digest) || missing_directories.contains(child_digest)) continue;
        absl::StatusOr<std::shared_ptr<const rev2::Directory>> sub = stager_->GetDirectory(child_digest);
        if (absl::IsNotFound(sub.status())) {
          missing_directories.insert(child_digest);
          missing.push_back(child_digest);
          continue;
        }
        if (!sub.ok()) return sub.status();
        directories_[child_digest] = *std::move(sub);
        queue.push_back({child_digest, depth + 1});
      }
      for (const auto& file : directory.files()) {
        Digest file_digest = *ParseDigest(file.digest());
        if (!seen_files.insert(file_digest).second) continue;
        absl::StatusOr<cas::BlobPin> pin = stager_->cas_->Pin(file_digest);
        if (pin.ok()) {
          pins_.push_back(*std::move(pin));
        } else {
          missing.push_back(file_digest);
        }
      }
      for (const auto& link : directory.symlinks()) {
        if (!StaysInside(link.target(), depth)) {
          return absl::InvalidArgumentError(absl::StrCat(
              "input symlink ", link.name(), " -> ", link.target(), " in directory ",
              digest.ToString(), " points outside the input root (absolute symlink targets are "
              "not allowed on this worker)"));
        }
      }
    }
    if (!missing.empty()) return MissingBlobsError(missing);
    ASSIGN_OR_RETURN(ExpandedSize size, Expand(root, 0));
    const StagingLimits& limits = options_.limits;
    auto over = [](const char* what, int64_t limit, const char* flag) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "the input root expands to more than ", limit, " ", what,
          "; this worker's limit is kiln-worker --", flag));
    };
    if (size.files > limits.max_files) return over("files and symlinks", limits.max_files, "max_input_files");
    if (size.directories > limits.max_directories) {
      return over("directories", limits.max_directories, "max_input_directories");
    }
    if (size.bytes > limits.max_bytes) return over("bytes", limits.max_bytes, "max_input_bytes");
    return absl::OkStatus();
  }

  // Pass 2: writes the tree under `dest_fd`, which is staged's own.
  absl::Status Write(const Digest& root, int dest_fd) {
    if (options_.uid != static_cast<uid_t>(-1) && fchown(dest_fd, options_.uid, options_.gid) != 0) {
      return PosixError("chown the input root", errno);
    }
    return WriteDirectory(*directories_[root], dest_fd);
  }

 private:
  // The expanded size of a directory, memoized per digest: a DAG is counted
  // as it will be staged without being expanded. Recursion stops at the
  // depth limit. A memoized directory met again deeper down is checked with
  // its height: the depth where it was first met says nothing about this one.
  absl::StatusOr<ExpandedSize> Expand(const Digest& digest, int depth) {
    auto too_deep = [&] {
      return absl::ResourceExhaustedError(absl::StrCat(
          "the input root is nested more than ", options_.limits.max_depth, " directories deep"));
    };
    if (depth > options_.limits.max_depth) return too_deep();
    auto known = expanded_.find(digest);
    if (known != expanded_.end()) {
      if (depth + known->second.height > options_.limits.max_depth) return too_deep();
      return known->second;
    }
    const rev2::Directory& directory = *directories_[digest];
    ExpandedSize size;
    size.files = directory.files_size() + directory.symlinks_size();
    for (const auto& file : directory.files()) size.bytes = SaturatingAdd(size.bytes, file.digest().size_bytes());
    for (const auto& child : directory.directories()) {
      ASSIGN_OR_RETURN(ExpandedSize sub, Expand(*ParseDigest(child.digest()), depth + 1));
      size.files = SaturatingAdd(size.files, sub.files);
      size.directories = SaturatingAdd(size.directories, SaturatingAdd(sub.directories, 1));
      size.bytes = SaturatingAdd(size.bytes, sub.bytes);
      size.height = std::max(size.height, sub.height + 1);
    }
    expanded_[digest] = size;
    return size;
  }

  absl::Status CheckCancelled() {
    if (++written_ % 256 == 0 && options_.cancelled && options_.cancelled()) {
      return absl::CancelledError("the action was cancelled while its inputs were staged");
    }
    return absl::OkStatus();
  }

  absl::Status WriteDirectory(const rev2::Directory& directory, int dirfd) {
    for (const auto& file : directory.files()) {
      RETURN_IF_ERROR(CheckCancelled());
      Digest digest = *ParseDigest(file.digest());
      std::string source = stager_->cas_->BlobPath(digest.hash);
      const mode_t mode = file.is_executable() ? 0555 : 0444;
      if (options_.copy_files) {
        RETURN_IF_ERROR(CopyFileAt(source, dirfd, file.name(), mode));
        continue;
      }
      if (file.is_executable()) {
        ASSIGN_OR_RETURN(source, stager_->ExecutableCopy(digest, source));
      }
      if (linkat(AT_FDCWD, source.c_str(), dirfd, file.name().c_str(), 0) == 0) continue;
      if (errno != EMLINK && errno != EXDEV) return PosixError("link " + file.name(), errno);
      RETURN_IF_ERROR(CopyFileAt(source, dirfd, file.name(), mode));
    }
    for (const auto& link : directory.symlinks()) {
      RETURN_IF_ERROR(CheckCancelled());
      if (symlinkat(link.target().c_str(), dirfd, link.name().c_str()) != 0) {
        return PosixError("symlink " + link.name(), errno);
      }
    }
    for (const auto& child : directory.directories()) {
      RETURN_IF_ERROR(CheckCancelled());
      ASSIGN_OR_RETURN(UniqueFd sub, MakeDirectoriesBeneath(dirfd, child.name(), 0755, options_.uid,
                                                            options_.gid));
      RETURN_IF_ERROR(WriteDirectory(*directories_[*ParseDigest(child.digest())], sub.get()));
    }
    return absl::OkStatus();
  }

  InputStager* const stager_;
  const StageOptions& options_;
  absl::flat_hash_map<Digest, std::shared_ptr<const rev2::Directory>> directories_;
  absl::flat_hash_map<Digest, ExpandedSize> expanded_;
  std::vector<cas::BlobPin> pins_;  // nothing staged is evicted before it is linked
  int64_t written_ = 0;
};

absl::Status InputStager::Stage(const Digest& root, int dest_fd, const StageOptions& options) {
  Staging staging(this, options);
  RETURN_IF_ERROR(staging.Check(root));
  return staging.Write(root, dest_fd);
}

}  // namespace kiln::exec
