#include "sandbox/cgroup.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstring>
#include <fstream>
#include <map>
#include <sstream>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/posix.h"
#include "common/status_macros.h"
#include "sandbox/cgroup_paths.h"

namespace kiln::sandbox {
namespace {

// Value of "key N" in a flat-keyed file such as memory.events.
int64_t KeyedValue(const std::string& text, absl::string_view key) {
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    std::vector<absl::string_view> kv = absl::StrSplit(line, ' ');
    int64_t value = 0;
    if (kv.size() == 2 && kv[0] == key && absl::SimpleAtoi(kv[1], &value)) return value;
  }
  return 0;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Cgroup>> Cgroup::Create(const std::string& name,
                                                       const CgroupLimits& limits,
                                                       const std::string& v2_parent) {
  const bool required = limits.memory_bytes > 0 || limits.pids > 0 || limits.cpus > 0;
  const std::vector<std::string>& wanted = LimitControllers();
  std::vector<CgroupMount> mounts = CgroupMounts();
  std::map<std::string, std::string> own = OwnCgroups();
  std::unique_ptr<Cgroup> cgroup(new Cgroup());
  std::string problems;  // why a hierarchy could not be used, for the error

  // Prefer v2 for every controller it offers.
  std::string parent = v2_parent.empty() ? OwnV2CgroupWithControllers() : v2_parent;
  std::vector<std::string> available = AvailableLimitControllers(parent);
  if (!parent.empty() && !available.empty()) {
    Hierarchy h{parent + "/" + name, available, true};
    std::string enable;
    for (const std::string& c : available) absl::StrAppend(&enable, enable.empty() ? "" : " ", "+", c);
    absl::Status enabled = WriteCgroupFile(parent, "cgroup.subtree_control", enable);
    if (!enabled.ok() && required) {
      return absl::FailedPreconditionError(absl::StrCat(
          "cannot enable cgroup v2 controllers (", enable, ") under ", parent, ": ",
          enabled.message(),
          v2_parent.empty() ? "; a cgroup that holds processes cannot (the \"no internal "
                              "processes\" rule): run kiln in a delegated cgroup of its own "
                              "(systemd Delegate=yes) or pass --cgroup_parent"
                            : ""));
    }
    if (!enabled.ok()) {
      absl::StrAppend(&problems, " ", enabled.message(), ";");
    } else if (mkdir(h.path.c_str(), 0755) != 0 && errno != EEXIST) {
      absl::StrAppend(&problems, " cannot create ", h.path, ": ", strerror(errno), ";");
    } else {
      cgroup->hierarchies_.push_back(h);
    }
  } else if (!v2_parent.empty() && required) {
    return absl::FailedPreconditionError(absl::StrCat(
        "--cgroup_parent=", v2_parent, " offers none of the memory, pids and cpu controllers"));
  }
  // Then v1 hierarchies for whatever is still missing.
  for (const CgroupMount& mount : mounts) {
    if (mount.v2) continue;
    Hierarchy h{"", {}, false};
    for (const std::string& c : mount.controllers) {
      if (std::find(wanted.begin(), wanted.end(), c) != wanted.end() && cgroup->Find(c) == nullptr) {
        h.controllers.push_back(c);
      }
    }
    if (h.controllers.empty() || !own.count(mount.controllers[0])) continue;
    h.path = mount.point + own[mount.controllers[0]] + "/" + name;
    if (mkdir(h.path.c_str(), 0755) != 0 && errno != EEXIST) {
      absl::StrAppend(&problems, " cannot create ", h.path, ": ", strerror(errno), ";");
      continue;
    }
    cgroup->hierarchies_.push_back(h);
  }

  auto need = [&](const std::string& controller, bool asked) -> absl::StatusOr<const Hierarchy*> {
    const Hierarchy* h = cgroup->Find(controller);
    if (h == nullptr && asked) {
      return absl::FailedPreconditionError(absl::StrCat(
          "a ", controller, " limit was requested but no writable ", controller,
          " cgroup controller is available (running without root or without delegation?):",
          problems.empty() ? " none is mounted" : problems));
    }
    return h;
  };
  ASSIGN_OR_RETURN(const Hierarchy* memory, need("memory", limits.memory_bytes > 0));
  ASSIGN_OR_RETURN(const Hierarchy* pids, need("pids", limits.pids > 0));
  ASSIGN_OR_RETURN(const Hierarchy* cpu, need("cpu", limits.cpus > 0));
  if (limits.memory_bytes > 0) {
    std::string bytes = absl::StrCat(limits.memory_bytes);
    if (memory->v2) {
      RETURN_IF_ERROR(WriteCgroupFile(memory->path, "memory.max", bytes));
      // Without swap the limit is a real limit: the OOM killer, not paging.
      (void)WriteCgroupFile(memory->path, "memory.swap.max", "0");
    } else {
      RETURN_IF_ERROR(WriteCgroupFile(memory->path, "memory.limit_in_bytes", bytes));
      (void)WriteCgroupFile(memory->path, "memory.memsw.limit_in_bytes", bytes);
      (void)WriteCgroupFile(memory->path, "memory.swappiness", "0");
    }
  }
  if (limits.pids > 0) {
    RETURN_IF_ERROR(WriteCgroupFile(pids->path, "pids.max", absl::StrCat(limits.pids)));
  }
  if (limits.cpus > 0) {
    constexpr int64_t kPeriodUs = 100000;
    int64_t quota = static_cast<int64_t>(std::llround(limits.cpus * kPeriodUs));
    if (cpu->v2) {
      RETURN_IF_ERROR(WriteCgroupFile(cpu->path, "cpu.max", absl::StrCat(quota, " ", kPeriodUs)));
    } else {
      RETURN_IF_ERROR(WriteCgroupFile(cpu->path, "cpu.cfs_period_us", absl::StrCat(kPeriodUs)));
      RETURN_IF_ERROR(WriteCgroupFile(cpu->path, "cpu.cfs_quota_us", absl::StrCat(quota)));
    }
  }
  if (cgroup->hierarchies_.empty()) return std::unique_ptr<Cgroup>();
  return cgroup;
}

const Cgroup::Hierarchy* Cgroup::Find(const std::string& controller) const {
  for (const Hierarchy& h : hierarchies_) {
    if (std::find(h.controllers.begin(), h.controllers.end(), controller) != h.controllers.end()) {
      return &h;
    }
  }
  return nullptr;
}

absl::Status Cgroup::AddProcess(pid_t pid) {
  for (const Hierarchy& h : hierarchies_) {
    RETURN_IF_ERROR(WriteCgroupFile(h.path, "cgroup.procs", absl::StrCat(pid)));
  }
  return absl::OkStatus();
}

bool Cgroup::OomKilled() const {
  const Hierarchy* memory = Find("memory");
  if (memory == nullptr) return false;
  if (memory->v2) return KeyedValue(ReadCgroupFile(memory->path, "memory.events"), "oom_kill") > 0;
  return KeyedValue(ReadCgroupFile(memory->path, "memory.oom_control"), "oom_kill") > 0;
}

int64_t Cgroup::PeakMemoryBytes() const {
  const Hierarchy* memory = Find("memory");
  if (memory == nullptr) return 0;
  int64_t peak = 0;
  std::string text = ReadCgroupFile(memory->path, memory->v2 ? "memory.peak" : "memory.max_usage_in_bytes");
  if (!absl::SimpleAtoi(absl::StripAsciiWhitespace(text), &peak)) return 0;
  return peak;
}

double Cgroup::CpuThrottledSeconds() const {
  const Hierarchy* cpu = Find("cpu");
  if (cpu == nullptr) return 0;
  std::string stat = ReadCgroupFile(cpu->path, "cpu.stat");
  // v2 counts microseconds, v1 nanoseconds.
  return cpu->v2 ? KeyedValue(stat, "throttled_usec") / 1e6 : KeyedValue(stat, "throttled_time") / 1e9;
}

void Cgroup::KillAll() {
  for (const Hierarchy& h : hierarchies_) {
    if (h.v2 && WriteCgroupFile(h.path, "cgroup.kill", "1").ok()) continue;
    std::istringstream procs(ReadCgroupFile(h.path, "cgroup.procs"));
    for (pid_t pid; procs >> pid;) kill(pid, SIGKILL);
  }
}

std::vector<std::string> Cgroup::paths() const {
  std::vector<std::string> out;
  for (const Hierarchy& h : hierarchies_) out.push_back(h.path);
  return out;
}

Cgroup::~Cgroup() {
  for (const Hierarchy& h : hierarchies_) {
    // A cgroup can only be removed once empty; killed processes take a
    // moment to leave it.
    for (int attempt = 0; attempt < 100; ++attempt) {
      if (rmdir(h.path.c_str()) == 0 || errno == ENOENT) break;
      if (errno == EBUSY) KillAll();
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  }
}

}  // namespace kiln::sandbox
