#include "server/exec/output_collector.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/posix.h"
#include "common/sha256.h"
#include "common/status_macros.h"

namespace kiln::exec {
namespace {

absl::Status CheckRelative(const std::string& path, const char* field) {
  if (path.empty() || path[0] == '/') {
    return absl::InvalidArgumentError(absl::StrCat(
        field, " \"", path, "\" must be a non-empty path relative to the working directory"));
  }
  for (absl::string_view part : absl::StrSplit(path, '/')) {
    if (part.empty() || part == "." || part == "..") {
      return absl::InvalidArgumentError(absl::StrCat(
          field, " \"", path, "\" has an empty, \".\" or \"..\" component; outputs must stay "
          "inside the working directory"));
    }
  }
  return absl::OkStatus();
}

std::vector<std::string> AllOutputs(const rev2::Command& command) {
  std::vector<std::string> outputs(command.output_paths().begin(), command.output_paths().end());
  if (outputs.empty()) {
    outputs.insert(outputs.end(), command.output_files().begin(), command.output_files().end());
    outputs.insert(outputs.end(), command.output_directories().begin(),
                   command.output_directories().end());
  }
  return outputs;
}

std::string ReadLink(const std::string& path) {
  std::string target(4096, '\0');
  ssize_t n = readlink(path.c_str(), target.data(), target.size());
  target.resize(n < 0 ? 0 : n);
  return target;
}

// Builds the Directory for `path`, appending every subdirectory (children
// first) to `children`, and stores files along the way.
absl::StatusOr<rev2::Directory> BuildDirectory(cas::BlobStore& cas, const std::string& path,
                                               std::vector<rev2::Directory>* children) {
  std::vector<std::string> names;
  std::error_code error;
  for (const auto& entry : std::filesystem::directory_iterator(path, error)) {
    names.push_back(entry.path().filename());
  }
  if (error) return PosixError("list " + path, error.value());
  std::sort(names.begin(), names.end());
  rev2::Directory directory;
  for (const std::string& name : names) {
    std::string child = path + "/" + name;
    struct stat st;
    if (lstat(child.c_str(), &st) != 0) return PosixError("lstat " + child, errno);
    if (S_ISLNK(st.st_mode)) {
      auto* link = directory.add_symlinks();
      link->set_name(name);
      link->set_target(ReadLink(child));
    } else if (S_ISDIR(st.st_mode)) {
      ASSIGN_OR_RETURN(rev2::Directory sub, BuildDirectory(cas, child, children));
      std::string bytes = sub.SerializeAsString();
      auto* node = directory.add_directories();
      node->set_name(name);
      *node->mutable_digest() = Digest::Of(bytes).ToProto();
      children->push_back(std::move(sub));
    } else if (S_ISREG(st.st_mode)) {
      ASSIGN_OR_RETURN(Digest digest, StoreFile(cas, child));
      auto* file = directory.add_files();
      file->set_name(name);
      *file->mutable_digest() = digest.ToProto();
      file->set_is_executable((st.st_mode & 0111) != 0);
    }
    // Sockets, fifos and devices are not outputs; they are left out.
  }
  return directory;
}

}  // namespace

absl::Status ValidateOutputPaths(const rev2::Command& command) {
  for (const auto& p : command.output_paths()) RETURN_IF_ERROR(CheckRelative(p, "output path"));
  for (const auto& p : command.output_files()) RETURN_IF_ERROR(CheckRelative(p, "output file"));
  for (const auto& p : command.output_directories()) {
    RETURN_IF_ERROR(CheckRelative(p, "output directory"));
  }
  if (!command.working_directory().empty()) {
    RETURN_IF_ERROR(CheckRelative(command.working_directory(), "working_directory"));
  }
  return absl::OkStatus();
}

absl::Status CreateOutputParents(const rev2::Command& command, const std::string& working_dir,
                                 uid_t uid, gid_t gid) {
  for (const std::string& output : AllOutputs(command)) {
    std::string current = working_dir;
    std::vector<std::string> parts = absl::StrSplit(output, '/');
    parts.pop_back();
    for (const std::string& part : parts) {
      current += "/" + part;
      if (mkdir(current.c_str(), 0755) == 0) {
        if (chown(current.c_str(), uid, gid) != 0) return PosixError("chown " + current, errno);
      } else if (errno != EEXIST) {
        return PosixError("mkdir " + current, errno);
      }
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<Digest> StoreFile(cas::BlobStore& cas, const std::string& path) {
  ASSIGN_OR_RETURN(UniqueFd fd, OpenFile(path, O_RDONLY | O_NOFOLLOW));
  struct stat st;
  if (fstat(fd.get(), &st) != 0) return PosixError("fstat " + path, errno);
  // Hash first (the digest names the blob), then stream the same bytes in;
  // a file changed in between fails the store's own hash check.
  Sha256 hash;
  constexpr int64_t kChunk = 1 << 20;
  for (int64_t offset = 0; offset < st.st_size; offset += kChunk) {
    ASSIGN_OR_RETURN(std::string chunk, ReadAt(fd.get(), offset, kChunk, path));
    hash.Update(chunk);
  }
  Digest digest{hash.FinishHex(), st.st_size};
  if (cas.Contains(digest)) return digest;
  ASSIGN_OR_RETURN(std::unique_ptr<cas::BlobWriter> writer, cas.StartWrite(digest));
  for (int64_t offset = 0; offset < st.st_size; offset += kChunk) {
    ASSIGN_OR_RETURN(std::string chunk, ReadAt(fd.get(), offset, kChunk, path));
    RETURN_IF_ERROR(writer->Append(chunk));
  }
  RETURN_IF_ERROR(writer->Commit());
  return digest;
}

absl::Status CollectOutputs(cas::BlobStore& cas, const rev2::Command& command,
                            const std::string& working_dir, rev2::ActionResult* result) {
  const bool v21 = command.output_paths_size() > 0;
  auto collect = [&](const std::string& output, bool legacy_directory) -> absl::Status {
    std::string path = working_dir + "/" + output;
    struct stat st;
    if (lstat(path.c_str(), &st) != 0) return absl::OkStatus();  // not produced: omitted
    if (S_ISLNK(st.st_mode)) {
      rev2::OutputSymlink link;
      link.set_path(output);
      link.set_target(ReadLink(path));
      *result->add_output_symlinks() = link;
      if (!v21) {
        struct stat target;
        bool is_dir = stat(path.c_str(), &target) == 0 && S_ISDIR(target.st_mode);
        *(is_dir ? result->add_output_directory_symlinks() : result->add_output_file_symlinks()) = link;
      }
      return absl::OkStatus();
    }
    if (S_ISDIR(st.st_mode)) {
      if (!v21 && !legacy_directory) {
        return absl::FailedPreconditionError(absl::StrCat(
            "output file ", output, " is a directory; declare it as an output directory"));
      }
      std::vector<rev2::Directory> children;
      ASSIGN_OR_RETURN(rev2::Directory root, BuildDirectory(cas, path, &children));
      rev2::Tree tree;
      *tree.mutable_root() = std::move(root);
      // Store each child once, in a stable order, so equal outputs give equal Trees.
      std::sort(children.begin(), children.end(), [](const auto& a, const auto& b) {
        return a.SerializeAsString() < b.SerializeAsString();
      });
      std::string last;
      for (auto& child : children) {
        std::string bytes = child.SerializeAsString();
        if (bytes == last) continue;
        last = bytes;
        *tree.add_children() = std::move(child);
      }
      std::string tree_bytes = tree.SerializeAsString();
      Digest tree_digest = Digest::Of(tree_bytes);
      RETURN_IF_ERROR(cas.Put(tree_digest, tree_bytes));
      auto* out = result->add_output_directories();
      out->set_path(output);
      *out->mutable_tree_digest() = tree_digest.ToProto();
      return absl::OkStatus();
    }
    if (S_ISREG(st.st_mode)) {
      if (!v21 && legacy_directory) {
        return absl::FailedPreconditionError(
            absl::StrCat("output directory ", output, " is a regular file"));
      }
      ASSIGN_OR_RETURN(Digest digest, StoreFile(cas, path));
      auto* file = result->add_output_files();
      file->set_path(output);
      *file->mutable_digest() = digest.ToProto();
      file->set_is_executable((st.st_mode & 0111) != 0);
      return absl::OkStatus();
    }
    return absl::OkStatus();
  };
  if (v21) {
    for (const auto& output : command.output_paths()) RETURN_IF_ERROR(collect(output, false));
  } else {
    for (const auto& output : command.output_files()) RETURN_IF_ERROR(collect(output, false));
    for (const auto& output : command.output_directories()) RETURN_IF_ERROR(collect(output, true));
  }
  return absl::OkStatus();
}

}  // namespace kiln::exec
