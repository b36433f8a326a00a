#include "server/cas/verify_store.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_replace.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/digest.h"
#include "common/path_beneath.h"
#include "common/posix.h"
#include "common/sha256.h"
#include "common/status_macros.h"

namespace kiln::cas {
namespace {

bool IsHexHash(absl::string_view name) {
  return name.size() == 64 &&
         std::all_of(name.begin(), name.end(),
                     [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}

// The names in a directory Kiln owns; an absent directory has none.
absl::StatusOr<std::vector<std::string>> List(const std::string& dir) {
  absl::StatusOr<UniqueFd> fd = OpenFile(dir, O_RDONLY | O_DIRECTORY);
  if (absl::IsNotFound(fd.status())) return std::vector<std::string>();
  if (!fd.ok()) return fd.status();
  std::vector<std::string> names;
  RETURN_IF_ERROR(ForEachEntry(fd->get(), [&](const std::string& name) {
    names.push_back(name);
    return absl::OkStatus();
  }));
  std::sort(names.begin(), names.end());
  return names;
}

// SHA-256 and length of a file's bytes, read through `fd`.
absl::StatusOr<std::pair<std::string, int64_t>> HashFile(int fd, const std::string& path) {
  Sha256 hash;
  int64_t offset = 0;
  constexpr int64_t kChunk = 1 << 20;
  while (true) {
    ASSIGN_OR_RETURN(std::string chunk, ReadAt(fd, offset, kChunk, path));
    if (chunk.empty()) break;
    hash.Update(chunk);
    offset += static_cast<int64_t>(chunk.size());
  }
  return std::make_pair(hash.FinishHex(), offset);
}

class Verifier {
 public:
  Verifier(std::string state_dir, VerifyOptions options)
      : state_dir_(std::move(state_dir)),
        options_(options),
        quarantine_(absl::StrCat(state_dir_, "/quarantine/",
                                 absl::FormatTime("%Y%m%dT%H%M%S", absl::Now(), absl::UTCTimeZone()))) {}

  absl::Status Run() {
    RETURN_IF_ERROR(RemoveUnfinishedWrites("cas/tmp"));
    RETURN_IF_ERROR(RemoveUnfinishedWrites("ac/tmp"));
    RETURN_IF_ERROR(CheckBlobs());
    return options_.drop_action_cache ? DropActionCache() : CheckActionCache();
  }

  VerifyReport& report() { return report_; }

 private:
  // Moves STATE_DIR/`relative` into the quarantine and records why.
  absl::Status Quarantine(const std::string& relative, const std::string& why) {
    RETURN_IF_ERROR(MakeDirectories(quarantine_, 0700));
    std::string target = absl::StrCat(quarantine_, "/", absl::StrReplaceAll(relative, {{"/", "_"}}));
    std::string source = absl::StrCat(state_dir_, "/", relative);
    if (rename(source.c_str(), target.c_str()) != 0) {
      return PosixError(absl::StrCat("quarantine ", source), errno);
    }
    report_.problems.push_back(absl::StrCat(relative, ": ", why, "; moved to ", target));
    return absl::OkStatus();
  }

  absl::Status RemoveUnfinishedWrites(const std::string& relative) {
    ASSIGN_OR_RETURN(std::vector<std::string> names, List(absl::StrCat(state_dir_, "/", relative)));
    for (const std::string& name : names) {
      RETURN_IF_ERROR(RemoveTree(absl::StrCat(state_dir_, "/", relative, "/", name)));
      ++report_.unfinished_writes_removed;
    }
    return absl::OkStatus();
  }

  absl::Status CheckBlobs() {
    ASSIGN_OR_RETURN(std::vector<std::string> shards, List(state_dir_ + "/cas/blobs"));
    for (const std::string& shard : shards) {
      const std::string shard_relative = "cas/blobs/" + shard;
      struct stat st;
      const std::string shard_path = absl::StrCat(state_dir_, "/", shard_relative);
      bool is_shard = lstat(shard_path.c_str(), &st) == 0 && S_ISDIR(st.st_mode) && shard.size() == 2 &&
                      IsHexHash(shard + std::string(62, '0'));
      if (!is_shard) {
        RETURN_IF_ERROR(Quarantine(shard_relative, "not a shard directory of the CAS"));
        continue;
      }
      ASSIGN_OR_RETURN(std::vector<std::string> names, List(shard_path));
      for (const std::string& name : names) RETURN_IF_ERROR(CheckBlob(shard, name));
    }
    return absl::OkStatus();
  }

  absl::Status CheckBlob(const std::string& shard, const std::string& name) {
    const std::string relative = absl::StrCat("cas/blobs/", shard, "/", name);
    const std::string path = absl::StrCat(state_dir_, "/", relative);
    if (!IsHexHash(name) || name.compare(0, 2, shard) != 0) {
      return Quarantine(relative, "not named by a SHA-256 of its shard");
    }
    absl::StatusOr<UniqueFd> fd = OpenFile(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK);
    struct stat st;
    if (!fd.ok() || fstat(fd->get(), &st) != 0 || !S_ISREG(st.st_mode)) {
      return Quarantine(relative, "not a regular file");
    }
    if ((st.st_mode & 0222) != 0) {
      return Quarantine(relative, absl::StrFormat("writable (mode %o): it may have changed", st.st_mode & 07777));
    }
    ASSIGN_OR_RETURN(auto hashed, HashFile(fd->get(), path));
    ++report_.blobs_checked;
    report_.bytes_checked += hashed.second;
    if (hashed.first != name) {
      return Quarantine(relative, absl::StrCat("its ", hashed.second, " bytes hash to ", hashed.first,
                                               " (corrupt or truncated)"));
    }
    present_.insert(Digest{name, hashed.second});
    return absl::OkStatus();
  }

  // "" when the blob is present, else what is wrong with the reference.
  std::string Missing(const rev2::Digest& proto, const std::string& what) {
    absl::StatusOr<Digest> digest = ParseDigest(proto);
    if (!digest.ok()) return absl::StrCat(what, ": ", digest.status().message());
    if (digest->size == 0 || present_.contains(*digest)) return "";  // the empty blob is always there
    return absl::StrCat(what, " ", digest->ToString(), " is not in the CAS");
  }

  absl::Status DropActionCache() {
    ASSIGN_OR_RETURN(std::vector<std::string> names, List(state_dir_ + "/ac/entries"));
    for (const std::string& name : names) {
      RETURN_IF_ERROR(RemoveTree(absl::StrCat(state_dir_, "/ac/entries/", name)));
      ++report_.entries_dropped;
    }
    return absl::OkStatus();
  }

  absl::Status CheckActionCache() {
    ASSIGN_OR_RETURN(std::vector<std::string> names, List(state_dir_ + "/ac/entries"));
    for (const std::string& name : names) {
      const std::string relative = "ac/entries/" + name;
      ++report_.entries_checked;
      absl::StatusOr<std::string> data = ReadFileToString(absl::StrCat(state_dir_, "/", relative));
      rev2::ActionResult result;
      if (!IsHexHash(name) || !data.ok() || !result.ParseFromString(*data)) {
        RETURN_IF_ERROR(Quarantine(relative, "not a readable ActionResult"));
        continue;
      }
      std::string why = MissingOutput(result);
      if (!why.empty()) RETURN_IF_ERROR(Quarantine(relative, "the cached result's " + why));
    }
    return absl::OkStatus();
  }

  std::string MissingOutput(const rev2::ActionResult& result) {
    std::string why;
    auto check = [&](const rev2::Digest& digest, const std::string& what) {
      if (why.empty()) why = Missing(digest, what);
    };
    for (const auto& file : result.output_files()) check(file.digest(), "output file " + file.path());
    if (result.has_stdout_digest()) check(result.stdout_digest(), "stdout");
    if (result.has_stderr_digest()) check(result.stderr_digest(), "stderr");
    for (const auto& dir : result.output_directories()) {
      const std::string what = "output directory " + dir.path();
      check(dir.tree_digest(), what + " Tree");
      if (!why.empty()) return why;
      absl::StatusOr<std::string> data =
          ReadFileToString(absl::StrCat(state_dir_, "/cas/blobs/", dir.tree_digest().hash().substr(0, 2), "/",
                                        dir.tree_digest().hash()));
      rev2::Tree tree;
      if (!data.ok() || !tree.ParseFromString(*data)) return what + " Tree does not parse";
      for (const auto& file : tree.root().files()) check(file.digest(), what + " file " + file.name());
      for (const auto& child : tree.children()) {
        for (const auto& file : child.files()) check(file.digest(), what + " file " + file.name());
      }
    }
    return why;
  }

  const std::string state_dir_;
  const VerifyOptions options_;
  const std::string quarantine_;
  VerifyReport report_;
  absl::flat_hash_set<Digest> present_;  // blobs that passed
};

}  // namespace

absl::StatusOr<VerifyReport> VerifyStateDir(const std::string& state_dir) {
  ASSIGN_OR_RETURN(UniqueFd lock, OpenFile(state_dir + "/LOCK", O_RDWR | O_CREAT, 0644));
  if (flock(lock.get(), LOCK_EX | LOCK_NB) != 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        "state dir ", state_dir, " is in use by a kiln-worker (", state_dir,
        "/LOCK is locked); stop it before --verify_cas"));
  }
  return VerifyLockedStateDir(state_dir, VerifyOptions());
}

absl::StatusOr<VerifyReport> VerifyLockedStateDir(const std::string& state_dir,
                                                  const VerifyOptions& options) {
  Verifier verifier(state_dir, options);
  RETURN_IF_ERROR(verifier.Run());
  return std::move(verifier.report());
}

}  // namespace kiln::cas
