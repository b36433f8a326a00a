#include "client/tree_builder.h"

#include <fcntl.h>
#include <fnmatch.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
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

bool IsExcluded(const std::vector<std::string>& patterns, const std::string& relative_path,
                bool is_directory) {
  const std::string name = relative_path.substr(relative_path.rfind('/') + 1);
  for (std::string pattern : patterns) {
    bool directories_only = false;
    if (!pattern.empty() && pattern.back() == '/') {
      directories_only = true;
      pattern.pop_back();
    }
    if (pattern.empty() || (directories_only && !is_directory)) continue;
    const bool whole_path = pattern.find('/') != std::string::npos;
    if (pattern[0] == '/') pattern.erase(0, 1);
    if (whole_path ? fnmatch(pattern.c_str(), relative_path.c_str(), FNM_PATHNAME) == 0
                   : fnmatch(pattern.c_str(), name.c_str(), 0) == 0) {
      return true;
    }
  }
  return false;
}

bool PointsOutside(const std::string& relative_dir, const std::string& target) {
  if (absl::StartsWith(target, "/")) return true;
  int depth = 0;
  for (absl::string_view part : absl::StrSplit(relative_dir, '/', absl::SkipEmpty())) {
    if (part != ".") ++depth;
  }
  for (absl::string_view part : absl::StrSplit(target, '/', absl::SkipEmpty())) {
    if (part == ".") continue;
    depth += part == ".." ? -1 : 1;
    if (depth < 0) return true;
  }
  return false;
}

namespace {

struct Walk {
  const InputRootOptions& options;
  std::vector<std::string> patterns;
  BlobSet* blobs;
  // The directories being walked, root first: a resolved symlink that leads
  // back into one of them would never end.
  std::vector<std::pair<dev_t, ino_t>> open_directories;
};

absl::StatusOr<Digest> BuildDirectory(Walk& walk, const std::string& dir, const std::string& relative) {
  std::vector<std::string> names;
  std::error_code error;
  for (const auto& entry : std::filesystem::directory_iterator(dir, error)) {
    names.push_back(entry.path().filename());
  }
  if (error) return PosixError("list " + dir, error.value());
  std::sort(names.begin(), names.end());
  rev2::Directory directory;
  for (const std::string& name : names) {
    const std::string path = dir + "/" + name;
    const std::string relative_path = relative.empty() ? name : relative + "/" + name;
    struct stat st;
    if (lstat(path.c_str(), &st) != 0) return PosixError("lstat " + path, errno);
    if (IsExcluded(walk.patterns, relative_path, S_ISDIR(st.st_mode))) continue;
    if (S_ISLNK(st.st_mode)) {
      std::string target(4096, '\0');
      ssize_t n = readlink(path.c_str(), target.data(), target.size());
      if (n < 0) return PosixError("readlink " + path, errno);
      target.resize(n);
      if (!walk.options.resolve_outside_symlinks || !PointsOutside(relative, target)) {
        auto* link = directory.add_symlinks();
        link->set_name(name);
        link->set_target(target);
        continue;
      }
      // Sent as what it points to, like a copy of it.
      if (stat(path.c_str(), &st) != 0) {
        return absl::FailedPreconditionError(absl::StrCat(
            relative_path, " is a symlink to ", target, ", outside the input root, and ",
            errno == ENOENT ? "that does not exist" : strerror(errno),
            "; exclude it (--exclude or .kilnignore) or keep it as a symlink (--preserve_symlinks)"));
      }
    }
    if (S_ISDIR(st.st_mode)) {
      for (const auto& [dev, ino] : walk.open_directories) {
        if (dev == st.st_dev && ino == st.st_ino) {
          return absl::FailedPreconditionError(absl::StrCat(
              relative_path, " leads back into a directory that contains it (a symlink loop); "
              "exclude it (--exclude or .kilnignore)"));
        }
      }
      walk.open_directories.emplace_back(st.st_dev, st.st_ino);
      absl::StatusOr<Digest> child = BuildDirectory(walk, path, relative_path);
      walk.open_directories.pop_back();
      if (!child.ok()) return child.status();
      auto* node = directory.add_directories();
      node->set_name(name);
      *node->mutable_digest() = child->ToProto();
    } else if (S_ISREG(st.st_mode)) {
      ASSIGN_OR_RETURN(Digest digest, DigestFile(path));
      walk.blobs->AddFile(path, digest);
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
  walk.blobs->AddMessage(directory.SerializeAsString(), &digest);
  return digest;
}

}  // namespace

absl::StatusOr<Digest> BuildInputRoot(const std::string& dir, BlobSet* blobs,
                                      const InputRootOptions& options) {
  Walk walk{options, options.excludes, blobs, {}};
  if (options.read_kilnignore) {
    absl::StatusOr<std::string> ignore = ReadFileToString(dir + "/.kilnignore");
    if (ignore.ok()) {
      for (absl::string_view line : absl::StrSplit(*ignore, '\n')) {
        line = absl::StripAsciiWhitespace(line);
        if (!line.empty() && line[0] != '#') walk.patterns.emplace_back(line);
      }
    } else if (!absl::IsNotFound(ignore.status())) {
      return ignore.status();
    }
  }
  struct stat st;
  if (stat(dir.c_str(), &st) != 0) return PosixError("stat " + dir, errno);
  walk.open_directories.emplace_back(st.st_dev, st.st_ino);
  return BuildDirectory(walk, dir, "");
}

}  // namespace kiln::client
