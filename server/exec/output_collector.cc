#include "server/exec/output_collector.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <optional>
#include <cerrno>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/path_beneath.h"
#include "common/posix.h"
#include "common/status_macros.h"

// REAPI v2.0's output_files, output_directories and the typed output
// symlinks are deprecated upstream, yet Bazel 4 and other v2.0 clients still
// send and read them: Kiln honours them on purpose.
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"

namespace kiln::exec {
namespace {

std::vector<std::string> AllOutputs(const rev2::Command& command) {
  std::vector<std::string> outputs(command.output_paths().begin(), command.output_paths().end());
  if (outputs.empty()) {
    outputs.insert(outputs.end(), command.output_files().begin(), command.output_files().end());
    outputs.insert(outputs.end(), command.output_directories().begin(),
                   command.output_directories().end());
  }
  return outputs;
}

// Running totals over all outputs of one action, checked as entries are
// found and before any byte is hashed.
class OutputBudget {
 public:
  explicit OutputBudget(const OutputLimits& limits) : limits_(limits) {}

  absl::Status AddEntry(const std::string& output) {
    if (++entries_ > limits_.max_entries) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "the action's outputs hold more than ", limits_.max_entries, " files, directories and "
          "symlinks (at ", output, "); this worker's limit is kiln-worker --max_output_files"));
    }
    return absl::OkStatus();
  }
  absl::Status AddBytes(const std::string& output, int64_t size) {
    bytes_ += size;
    if (bytes_ > limits_.max_bytes) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "the action's output files total more than ", limits_.max_bytes, " bytes (at ", output,
          "); this worker's limit is kiln-worker --max_output_bytes"));
    }
    return absl::OkStatus();
  }
  absl::Status CheckDepth(const std::string& output, int depth) const {
    if (depth > limits_.max_depth) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "output directory ", output, " is nested more than ", limits_.max_depth, " levels deep"));
    }
    return absl::OkStatus();
  }

 private:
  const OutputLimits& limits_;
  int64_t entries_ = 0;
  int64_t bytes_ = 0;
};

// Walks a directory once without reading any file, so that a tree over the
// limits is refused before its first byte is hashed.
absl::Status MeasureDirectory(int dirfd, const std::string& output, int depth, OutputBudget* budget) {
  RETURN_IF_ERROR(budget->CheckDepth(output, depth));
  return ForEachEntry(dirfd, [&](const std::string& name) -> absl::Status {
    RETURN_IF_ERROR(budget->AddEntry(output));
    ASSIGN_OR_RETURN(struct stat st, StatAt(dirfd, name));
    if (S_ISREG(st.st_mode)) return budget->AddBytes(output, st.st_size);
    if (!S_ISDIR(st.st_mode)) return absl::OkStatus();
    ASSIGN_OR_RETURN(UniqueFd child, OpenBeneath(dirfd, name, O_RDONLY | O_DIRECTORY));
    return MeasureDirectory(child.get(), output, depth + 1, budget);
  });
}

// An output file opened without following a symlink and without blocking
// on a fifo; FAILED_PRECONDITION unless it is a regular file.
absl::StatusOr<UniqueFd> OpenRegularFile(int dirfd, const std::string& name, struct stat* st) {
  ASSIGN_OR_RETURN(UniqueFd fd, OpenBeneath(dirfd, name, O_RDONLY | O_NONBLOCK));
  if (fstat(fd.get(), st) != 0) return PosixError("fstat " + name, errno);
  if (!S_ISREG(st->st_mode)) {
    return absl::FailedPreconditionError(absl::StrCat(name, " changed type while being collected"));
  }
  return fd;
}

// Builds the Directory for the open directory `dirfd`, appending every
// subdirectory's serialized Directory to `children`, and stores files.
absl::StatusOr<rev2::Directory> BuildDirectory(cas::BlobStore& cas, int dirfd, const std::string& output,
                                               std::vector<std::string>* children,
                                               cas::BlobBatch* batch) {
  std::vector<std::string> names;
  RETURN_IF_ERROR(ForEachEntry(dirfd, [&](const std::string& name) {
    names.push_back(name);
    return absl::OkStatus();
  }));
  std::sort(names.begin(), names.end());
  rev2::Directory directory;
  for (const std::string& name : names) {
    ASSIGN_OR_RETURN(struct stat st, StatAt(dirfd, name));
    if (S_ISLNK(st.st_mode)) {
      auto* link = directory.add_symlinks();
      link->set_name(name);
      ASSIGN_OR_RETURN(*link->mutable_target(), ReadLinkAt(dirfd, name));
    } else if (S_ISDIR(st.st_mode)) {
      ASSIGN_OR_RETURN(UniqueFd child, OpenBeneath(dirfd, name, O_RDONLY | O_DIRECTORY));
      ASSIGN_OR_RETURN(rev2::Directory sub, BuildDirectory(cas, child.get(), output, children, batch));
      std::string bytes = sub.SerializeAsString();
      auto* node = directory.add_directories();
      node->set_name(name);
      *node->mutable_digest() = Digest::Of(bytes).ToProto();
      children->push_back(std::move(bytes));
    } else if (S_ISREG(st.st_mode)) {
      ASSIGN_OR_RETURN(UniqueFd fd, OpenRegularFile(dirfd, name, &st));
      ASSIGN_OR_RETURN(Digest digest,
                       StoreOpenFile(cas, fd.get(), INT64_MAX, output + "/.../" + name, batch));
      auto* file = directory.add_files();
      file->set_name(name);
      *file->mutable_digest() = digest.ToProto();
      file->set_is_executable((st.st_mode & 0111) != 0);
    }
    // Sockets, fifos and devices are not outputs; they are left out.
  }
  return directory;
}

// An output directory as stored: always a Tree, and with `directories`
// (Command.output_directory_format DIRECTORY_ONLY or TREE_AND_DIRECTORY, new
// in v2.8) also each Directory as a blob of its own, so that a client can
// fetch the root and walk it. Both forms are always written: the spec allows
// a superset, and the action cache checks the Tree.
struct StoredTree {
  Digest tree;
  std::optional<Digest> root_directory;
};

absl::StatusOr<StoredTree> StoreTree(cas::BlobStore& cas, int dirfd, const std::string& output,
                                     bool directories, cas::BlobBatch* batch) {
  std::vector<std::string> children;
  ASSIGN_OR_RETURN(rev2::Directory root, BuildDirectory(cas, dirfd, output, &children, batch));
  StoredTree stored;
  if (directories) {
    std::string root_bytes = root.SerializeAsString();
    stored.root_directory = Digest::Of(root_bytes);
    RETURN_IF_ERROR(cas.PutInBatch(*stored.root_directory, root_bytes, batch));
  }
  rev2::Tree tree;
  *tree.mutable_root() = std::move(root);
  // Each child once, in a stable order, so equal outputs give equal Trees.
  std::sort(children.begin(), children.end());
  children.erase(std::unique(children.begin(), children.end()), children.end());
  for (const std::string& bytes : children) {
    if (!tree.add_children()->ParseFromString(bytes)) {
      return absl::InternalError("a Directory Kiln serialized does not parse");
    }
    // The very bytes whose digest the parent's DirectoryNode holds.
    if (directories) RETURN_IF_ERROR(cas.PutInBatch(Digest::Of(bytes), bytes, batch));
  }
  std::string tree_bytes = tree.SerializeAsString();
  stored.tree = Digest::Of(tree_bytes);
  RETURN_IF_ERROR(cas.PutInBatch(stored.tree, tree_bytes, batch));
  return stored;
}

}  // namespace

absl::Status ValidateOutputPaths(const rev2::Command& command) {
  for (const auto& p : command.output_paths()) RETURN_IF_ERROR(CheckRelativePath(p, "output path"));
  for (const auto& p : command.output_files()) RETURN_IF_ERROR(CheckRelativePath(p, "output file"));
  for (const auto& p : command.output_directories()) {
    RETURN_IF_ERROR(CheckRelativePath(p, "output directory"));
  }
  if (!command.working_directory().empty()) {
    RETURN_IF_ERROR(CheckRelativePath(command.working_directory(), "working_directory"));
  }
  return absl::OkStatus();
}

absl::Status CreateOutputParents(const rev2::Command& command, int working_dir_fd, uid_t uid,
                                 gid_t gid) {
  for (const std::string& output : AllOutputs(command)) {
    size_t slash = output.rfind('/');
    if (slash == std::string::npos) continue;
    absl::StatusOr<UniqueFd> parent =
        MakeDirectoriesBeneath(working_dir_fd, output.substr(0, slash), 0755, uid, gid);
    if (!parent.ok()) {
      return absl::Status(parent.status().code(),
                          absl::StrCat("output ", output, ": ", parent.status().message()));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<Digest> StoreOpenFile(cas::BlobStore& cas, int fd, int64_t max_bytes,
                                     const std::string& what, cas::BlobBatch* batch) {
  struct stat st;
  if (fstat(fd, &st) != 0) return PosixError("fstat " + what, errno);
  const int64_t size = std::min<int64_t>(st.st_size, max_bytes);
  // The empty blob is always stored: no temp file for an empty log.
  if (size == 0) return Digest::Of("");
  // One pass: each chunk is hashed as it is copied into the store, which
  // then publishes it under that hash (or drops it, if stored already).
  ASSIGN_OR_RETURN(std::unique_ptr<cas::BlobWriter> writer, cas.StartWriteOfUnknownHash(size));
  constexpr int64_t kChunk = 1 << 20;
  std::string buffer(static_cast<size_t>(std::min(kChunk, size)), '\0');
  for (int64_t offset = 0; offset < size;) {
    ssize_t n = pread(fd, buffer.data(), std::min<int64_t>(buffer.size(), size - offset), offset);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return PosixError("read " + what, errno);
    if (n == 0) {
      return absl::FailedPreconditionError(
          absl::StrCat(what, " shrank while being collected"));
    }
    RETURN_IF_ERROR(writer->Append(absl::string_view(buffer.data(), n)));
    offset += n;
  }
  if (batch != nullptr) return batch->Add(std::move(writer));
  RETURN_IF_ERROR(writer->Commit());
  return writer->expected();
}

absl::StatusOr<Digest> StoreFile(cas::BlobStore& cas, const std::string& path, int64_t max_bytes) {
  ASSIGN_OR_RETURN(UniqueFd fd, OpenFile(path, O_RDONLY | O_NOFOLLOW));
  return StoreOpenFile(cas, fd.get(), max_bytes, path);
}

absl::Status CollectOutputs(cas::BlobStore& cas, const rev2::Command& command, int root_fd,
                            const std::string& working_directory, const OutputLimits& limits,
                            rev2::ActionResult* result, cas::BlobBatch* caller_batch) {
  const bool v21 = command.output_paths_size() > 0;
  ASSIGN_OR_RETURN(UniqueFd working_dir, OpenBeneath(root_fd, working_directory, O_RDONLY | O_DIRECTORY));
  OutputBudget budget(limits);

  struct Found {
    std::string output;
    bool legacy_directory;
    ParentAndName location;
    struct stat st;
  };
  std::vector<Found> found;
  auto locate = [&](const std::string& output, bool legacy_directory) -> absl::Status {
    absl::StatusOr<ParentAndName> location = OpenParentBeneath(working_dir.get(), output);
    if (absl::IsNotFound(location.status())) return absl::OkStatus();  // not produced: omitted
    if (!location.ok()) {
      return absl::Status(location.status().code(),
                          absl::StrCat("output ", output, ": ", location.status().message()));
    }
    absl::StatusOr<struct stat> st = StatAt(location->parent.get(), location->name);
    if (absl::IsNotFound(st.status())) return absl::OkStatus();
    if (!st.ok()) return st.status();
    RETURN_IF_ERROR(budget.AddEntry(output));
    if (S_ISREG(st->st_mode)) RETURN_IF_ERROR(budget.AddBytes(output, st->st_size));
    if (S_ISDIR(st->st_mode)) {
      ASSIGN_OR_RETURN(UniqueFd dir, OpenBeneath(location->parent.get(), location->name,
                                                 O_RDONLY | O_DIRECTORY));
      RETURN_IF_ERROR(MeasureDirectory(dir.get(), output, 1, &budget));
    }
    found.push_back({output, legacy_directory, *std::move(location), *st});
    return absl::OkStatus();
  };
  if (v21) {
    for (const auto& output : command.output_paths()) RETURN_IF_ERROR(locate(output, false));
  } else {
    for (const auto& output : command.output_files()) RETURN_IF_ERROR(locate(output, false));
    for (const auto& output : command.output_directories()) RETURN_IF_ERROR(locate(output, true));
  }

  // Everything fits: now read and store. The outputs are acknowledged
  // together, by the ActionResult: they are stored as one batch, synced and
  // published together at the end, and their directories synced once.
  cas::DirectorySyncs own_syncs;
  cas::BlobBatch own_batch(&own_syncs);
  cas::BlobBatch& batch = caller_batch != nullptr ? *caller_batch : own_batch;
  for (Found& entry : found) {
    const std::string& output = entry.output;
    const int parent = entry.location.parent.get();
    const std::string& name = entry.location.name;
    if (S_ISLNK(entry.st.st_mode)) {
      rev2::OutputSymlink link;
      link.set_path(output);
      ASSIGN_OR_RETURN(*link.mutable_target(), ReadLinkAt(parent, name));
      *result->add_output_symlinks() = link;
      if (!v21) {
        std::string from_root = working_directory.empty() ? output : working_directory + "/" + output;
        *(IsDirectoryBeneath(root_fd, from_root) ? result->add_output_directory_symlinks()
                                                 : result->add_output_file_symlinks()) = link;
      }
    } else if (S_ISDIR(entry.st.st_mode)) {
      if (!v21 && !entry.legacy_directory) {
        return absl::FailedPreconditionError(absl::StrCat(
            "output file ", output, " is a directory; declare it as an output directory"));
      }
      ASSIGN_OR_RETURN(UniqueFd dir, OpenBeneath(parent, name, O_RDONLY | O_DIRECTORY));
      ASSIGN_OR_RETURN(StoredTree stored,
                       StoreTree(cas, dir.get(), output,
                                 command.output_directory_format() != rev2::Command::TREE_ONLY,
                                 &batch));
      auto* out = result->add_output_directories();
      out->set_path(output);
      *out->mutable_tree_digest() = stored.tree.ToProto();
      if (stored.root_directory.has_value()) {
        *out->mutable_root_directory_digest() = stored.root_directory->ToProto();
      }
    } else if (S_ISREG(entry.st.st_mode)) {
      if (!v21 && entry.legacy_directory) {
        return absl::FailedPreconditionError(
            absl::StrCat("output directory ", output, " is a regular file"));
      }
      struct stat st;
      ASSIGN_OR_RETURN(UniqueFd fd, OpenRegularFile(parent, name, &st));
      ASSIGN_OR_RETURN(Digest digest, StoreOpenFile(cas, fd.get(), INT64_MAX, output, &batch));
      auto* file = result->add_output_files();
      file->set_path(output);
      *file->mutable_digest() = digest.ToProto();
      file->set_is_executable((st.st_mode & 0111) != 0);
    }
  }
  if (caller_batch != nullptr) return absl::OkStatus();
  RETURN_IF_ERROR(own_batch.CommitAll());
  return own_syncs.SyncAll();
}

}  // namespace kiln::exec
