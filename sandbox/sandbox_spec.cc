#include "sandbox/sandbox_spec.h"

#include <linux/magic.h>
#include <sys/stat.h>
#include <sys/vfs.h>

#include <cmath>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace kiln::sandbox {
namespace {

bool IsCleanAbsolute(const std::string& path) {
  if (path.empty() || path[0] != '/') return false;
  for (absl::string_view part : {"/../", "/./"}) {
    if (absl::StrContains(path + "/", part)) return false;
  }
  return true;
}

}  // namespace

std::vector<BindMount> DefaultBinds() {
  std::vector<BindMount> binds;
  for (const char* dir : {"/bin", "/usr", "/lib", "/lib64", "/lib32", "/libx32"}) {
    struct stat st;
    if (lstat(dir, &st) == 0) binds.push_back({dir, dir, false});
  }
  return binds;
}

absl::Status ValidateSpec(const SandboxSpec& spec, const SandboxPolicy& policy) {
  if (spec.argv.empty()) return absl::InvalidArgumentError("no command given (after --)");
  for (const BindMount& bind : spec.binds) {
    if (!IsCleanAbsolute(bind.source) || !IsCleanAbsolute(bind.target)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "bind \"", bind.source, "\" -> \"", bind.target,
          "\": both paths must be absolute, without \".\" or \"..\""));
    }
    if (bind.target == "/" || absl::StartsWith(bind.target, "/proc") ||
        absl::StartsWith(bind.target, "/dev") || bind.target == kWorkMountPoint) {
      return absl::InvalidArgumentError(absl::StrCat(
          "bind target \"", bind.target, "\" is managed by the sandbox itself"));
    }
    struct stat st;
    if (stat(bind.source.c_str(), &st) != 0) {
      return absl::NotFoundError(absl::StrCat("bind source \"", bind.source, "\" does not exist"));
    }
  }
  if (!spec.work_dir.empty()) {
    struct stat st;
    if (spec.work_dir[0] != '/') {
      return absl::InvalidArgumentError(
          absl::StrCat("work dir \"", spec.work_dir, "\" must be an absolute path"));
    }
    if (stat(spec.work_dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
      return absl::NotFoundError(
          absl::StrCat("work dir \"", spec.work_dir, "\" is not an existing directory"));
    }
  }
  if (!spec.cwd.empty() && (spec.cwd[0] == '/' || absl::StrContains("/" + spec.cwd + "/", "/../"))) {
    return absl::InvalidArgumentError(
        absl::StrCat("cwd \"", spec.cwd, "\" must be relative to the work dir, without \"..\""));
  }
  if (!spec.cgroup_parent.empty()) {
    struct statfs fs;
    if (!IsCleanAbsolute(spec.cgroup_parent) || statfs(spec.cgroup_parent.c_str(), &fs) != 0 ||
        fs.f_type != CGROUP2_SUPER_MAGIC) {
      return absl::InvalidArgumentError(absl::StrCat(
          "cgroup parent \"", spec.cgroup_parent, "\" is not a directory of a cgroup v2 hierarchy"));
    }
  }
  if (spec.share_network && !policy.allow_host_network) {
    return absl::InvalidArgumentError(
        "sharing the host network is not allowed here; the operator must allow it "
        "(--allow_host_network)");
  }
  if (spec.memory_bytes < 0 || (spec.memory_bytes > 0 && spec.memory_bytes < (1 << 20))) {
    return absl::InvalidArgumentError(absl::StrCat(
        "memory limit ", spec.memory_bytes, " bytes is impossible; use at least 1MiB"));
  }
  if (spec.pids < 0 || (spec.pids > 0 && spec.pids < 2)) {
    return absl::InvalidArgumentError(
        absl::StrCat("pids limit ", spec.pids, " is impossible: the init and the action need 2"));
  }
  // NaN compares false with everything, so it must be refused explicitly. The
  // upper bound keeps the CFS quota (cpus x 100 ms) well inside an int64.
  if (!std::isfinite(spec.cpus) || spec.cpus < 0 || (spec.cpus > 0 && spec.cpus < 0.01) || spec.cpus > 4096) {
    return absl::InvalidArgumentError(
        absl::StrCat("cpu limit ", spec.cpus, " is impossible; use between 0.01 and 4096"));
  }
  if (spec.tmp_size_bytes < 0 || spec.shm_size_bytes < 0 || spec.max_processes < 0 ||
      spec.max_file_size_bytes < 0) {
    return absl::InvalidArgumentError("tmp/shm sizes, max processes and max file size cannot be negative");
  }
  if (spec.max_processes == 1) {
    return absl::InvalidArgumentError("max processes 1 is impossible: the action could not fork at all");
  }
  if (spec.timeout < absl::ZeroDuration() || spec.kill_grace < absl::ZeroDuration()) {
    return absl::InvalidArgumentError("timeouts cannot be negative");
  }
  if (spec.hostname.size() > 64 || spec.domainname.size() > 64) {
    return absl::InvalidArgumentError("hostname and domain name are at most 64 characters");
  }
  if (policy.uid_pool_size < 1 || policy.uid_pool_base == 0) {
    return absl::InvalidArgumentError("the build-user pool must have a non-root base and size >= 1");
  }
  if (spec.uid.has_value() && *spec.uid == 0) {
    return absl::InvalidArgumentError("the build user cannot be root (--uid=0)");
  }
  if (spec.gid.has_value() && *spec.gid == 0) {
    return absl::InvalidArgumentError("the build group cannot be root (--gid=0)");
  }
  return absl::OkStatus();
}

}  // namespace kiln::sandbox
