#include "server/exec/input_stager.h"

#include <fcntl.h>
#include <sys/sendfile.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/posix.h"
#include "common/status_macros.h"
#include "google/rpc/error_details.pb.h"
#include "server/cas/directory_tree.h"

namespace kiln::exec {
namespace {

// True if `target`, a symlink in a directory `depth` levels below the root,
// resolves (lexically) inside the root.
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

absl::Status CopyFile(const std::string& from, const std::string& to, mode_t mode) {
  ASSIGN_OR_RETURN(UniqueFd in, OpenFile(from, O_RDONLY));
  ASSIGN_OR_RETURN(UniqueFd out, OpenFile(to, O_WRONLY | O_CREAT | O_EXCL, mode));
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
    if (n < 0) return PosixError("copy " + from + " to " + to, errno);
    if (n == 0) break;
  }
  if (fchmod(out.get(), mode) != 0) return PosixError("chmod " + to, errno);
  return absl::OkStatus();
}

// A hardlink, or a copy where the filesystem refuses one.
absl::Status LinkOrCopy(const std::string& from, const std::string& to, mode_t mode) {
  if (link(from.c_str(), to.c_str()) == 0) return absl::OkStatus();
  if (errno == EMLINK || errno == EXDEV) return CopyFile(from, to, mode);
  return PosixError("link " + from + " to " + to, errno);
}

struct PendingDirectory {
  std::string path;  // relative to the root, "" for the root
  int depth;
  std::shared_ptr<const rev2::Directory> directory;
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
  RETURN_IF_ERROR(MakeDirectories(executable_cache_dir, 0755));
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
  std::string temp = absl::StrCat(path, ".tmp.", gettid());
  RETURN_IF_ERROR(CopyFile(source, temp, 0555));
  if (rename(temp.c_str(), path.c_str()) != 0) {
    unlink(temp.c_str());
    return PosixError("rename " + temp, errno);
  }
  return path;
}

absl::Status InputStager::Stage(const Digest& root, const std::string& dest, uid_t uid, gid_t gid) {
  // Pass 1: read and check the whole tree; pin every file so that nothing is
  // evicted between the check and the link.
  std::vector<PendingDirectory> directories;
  std::vector<Digest> missing;
  std::vector<cas::BlobPin> pins;
  absl::StatusOr<std::shared_ptr<const rev2::Directory>> root_directory = GetDirectory(root);
  if (absl::IsNotFound(root_directory.status())) return MissingBlobsError({root});
  if (!root_directory.ok()) return root_directory.status();
  directories.push_back({"", 0, *root_directory});
  for (size_t i = 0; i < directories.size(); ++i) {
    const PendingDirectory current = directories[i];
    for (const auto& child : current.directory->directories()) {
      Digest digest = *ParseDigest(child.digest());  // validated with the directory
      absl::StatusOr<std::shared_ptr<const rev2::Directory>> sub = GetDirectory(digest);
      if (absl::IsNotFound(sub.status())) {
        missing.push_back(digest);
        continue;
      }
      if (!sub.ok()) return sub.status();
      directories.push_back({absl::StrCat(current.path, current.path.empty() ? "" : "/", child.name()),
                             current.depth + 1, *sub});
    }
    for (const auto& file : current.directory->files()) {
      Digest digest = *ParseDigest(file.digest());
      absl::StatusOr<cas::BlobPin> pin = cas_->Pin(digest);
      if (pin.ok()) {
        pins.push_back(*std::move(pin));
      } else {
        missing.push_back(digest);
      }
    }
    for (const auto& link : current.directory->symlinks()) {
      if (!StaysInside(link.target(), current.depth)) {
        return absl::InvalidArgumentError(absl::StrCat(
            "input symlink ", current.path, current.path.empty() ? "" : "/", link.name(), " -> ",
            link.target(), " points outside the input root (absolute symlink targets are not "
            "allowed on this worker)"));
      }
    }
  }
  if (!missing.empty()) return MissingBlobsError(missing);

  // Pass 2: write the tree.
  for (const PendingDirectory& pending : directories) {
    std::string dir = pending.path.empty() ? dest : absl::StrCat(dest, "/", pending.path);
    if (!pending.path.empty() && mkdir(dir.c_str(), 0755) != 0) return PosixError("mkdir " + dir, errno);
    if (chown(dir.c_str(), uid, gid) != 0) return PosixError("chown " + dir, errno);
    for (const auto& file : pending.directory->files()) {
      Digest digest = *ParseDigest(file.digest());
      std::string source = cas_->BlobPath(digest.hash);
      std::string target = absl::StrCat(dir, "/", file.name());
      if (file.is_executable()) {
        ASSIGN_OR_RETURN(source, ExecutableCopy(digest, source));
      }
      RETURN_IF_ERROR(LinkOrCopy(source, target, file.is_executable() ? 0555 : 0444));
    }
    for (const auto& link : pending.directory->symlinks()) {
      std::string target = absl::StrCat(dir, "/", link.name());
      if (symlink(link.target().c_str(), target.c_str()) != 0) return PosixError("symlink " + target, errno);
    }
  }
  return absl::OkStatus();
}

}  // namespace kiln::exec
