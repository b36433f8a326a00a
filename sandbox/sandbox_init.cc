#include "sandbox/sandbox_init.h"

#include <fcntl.h>
#include <grp.h>
#include <net/if.h>
#include <signal.h>
#include <sys/capability.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/personality.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/sysmacros.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "sandbox/sandbox_proto.h"
#include "sandbox/seccomp_filter.h"

namespace kiln::sandbox {
namespace {

int g_report_fd = -1;
constexpr size_t kActionStackBytes = 1 << 20;  // PID 2's until its exec
volatile sig_atomic_t g_action_pid = 0;

void Report(const std::string& line) {
  std::string out = line + "\n";
  ssize_t ignored = write(g_report_fd, out.data(), out.size());
  (void)ignored;
}

int64_t MonotonicNanos() {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t{ts.tv_sec} * 1000000000 + ts.tv_nsec;
}

// Inside the sandbox a failed step ends PID 1 with where and why.
[[noreturn]] void DieAt(const char* file, int line, const std::string& what) {
  int error = errno;
  Report(absl::StrCat("error ", file, ":", line, ": ", what, ": ", strerror(error)));
  _exit(kSetupFailedExit);
}
#define CHECK_SYS(call, what) \
  do {                        \
    if ((call) < 0) DieAt(__FILE__, __LINE__, (what)); \
  } while (0)

void WriteFileOrDie(const std::string& path, const std::string& content, mode_t mode) {
  int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
  CHECK_SYS(fd, "create " + path);
  if (write(fd, content.data(), content.size()) != static_cast<ssize_t>(content.size())) {
    DieAt(__FILE__, __LINE__, "write " + path);
  }
  close(fd);
}

// mkdir -p, trying the leaf first: inside the new root the parents almost
// always exist already.
void MakeDirs(const std::string& path) {
  if (mkdir(path.c_str(), 0755) == 0 || errno == EEXIST) return;
  if (errno != ENOENT) DieAt(__FILE__, __LINE__, "mkdir " + path);
  size_t slash = path.rfind('/');
  if (slash != std::string::npos && slash > 0) MakeDirs(path.substr(0, slash));
  if (mkdir(path.c_str(), 0755) != 0 && errno != EEXIST) DieAt(__FILE__, __LINE__, "mkdir " + path);
}

// In a user namespace a read-only remount must keep the flags the kernel
// locked on the source mount (nosuid, nodev, noexec), or it is refused.
unsigned long LockedFlags(const std::string& path) {
  struct statvfs st;
  if (statvfs(path.c_str(), &st) != 0) return 0;
  unsigned long flags = 0;
  if (st.f_flag & ST_NOSUID) flags |= MS_NOSUID;
  if (st.f_flag & ST_NODEV) flags |= MS_NODEV;
  if (st.f_flag & ST_NOEXEC) flags |= MS_NOEXEC;
  return flags;
}

// Unescapes a path field of /proc/self/mountinfo (space, tab, newline and
// backslash are written as \ooo octal).
std::string UnescapeMountinfo(absl::string_view field) {
  std::string out;
  for (size_t i = 0; i < field.size(); ++i) {
    if (field[i] == '\\' && i + 3 < field.size()) {
      int value = 0;
      bool octal = true;
      for (size_t j = i + 1; j <= i + 3; ++j) {
        if (field[j] < '0' || field[j] > '7') octal = false;
        value = value * 8 + (field[j] - '0');
      }
      if (octal) {
        out.push_back(static_cast<char>(value));
        i += 3;
        continue;
      }
    }
    out.push_back(field[i]);
  }
  return out;
}

// Fallback for kernels without mount_setattr (< 5.12): remounts `target`
// and every mount below it, one by one, as listed in /proc/self/mountinfo.
// Each remount keeps the flags the kernel locked in a user namespace.
void RemountTreeOneByOne(const std::string& target, unsigned long flags) {
  std::string text;
  int fd = open("/proc/self/mountinfo", O_RDONLY | O_CLOEXEC);
  CHECK_SYS(fd, "open /proc/self/mountinfo");
  char buffer[8192];
  for (ssize_t n; (n = read(fd, buffer, sizeof buffer)) > 0;) text.append(buffer, n);
  close(fd);
  for (absl::string_view line : absl::StrSplit(text, '\n', absl::SkipEmpty())) {
    std::vector<absl::string_view> fields = absl::StrSplit(line, ' ');
    if (fields.size() < 5) continue;
    std::string mount_point = UnescapeMountinfo(fields[4]);
    if (mount_point != target && !absl::StartsWith(mount_point, target + "/")) continue;
    CHECK_SYS(mount(nullptr, mount_point.c_str(), nullptr,
                    MS_REMOUNT | MS_BIND | flags | LockedFlags(mount_point), nullptr),
              "remount " + mount_point);
  }
}

// Sets `attributes` (MOUNT_ATTR_*) on the mount at `target` and on every
// mount below it: a bind with MS_REC copies the host's sub-mounts, and a
// plain remount would only change the top one, leaving e.g. a tmpfs below a
// read-only bind writable. mount_setattr only adds flags, so the ones the
// kernel locked in a user namespace stay as they are.
void SetMountTreeAttributes(const std::string& target, uint64_t attributes) {
  struct mount_attr attr = {};
  attr.attr_set = attributes;
  if (mount_setattr(AT_FDCWD, target.c_str(), AT_RECURSIVE | AT_SYMLINK_NOFOLLOW, &attr,
                    sizeof attr) == 0) {
    return;
  }
  if (errno != ENOSYS) DieAt(__FILE__, __LINE__, "mount_setattr " + target);
  unsigned long flags = 0;
  if (attributes & MOUNT_ATTR_RDONLY) flags |= MS_RDONLY;
  if (attributes & MOUNT_ATTR_NOSUID) flags |= MS_NOSUID;
  if (attributes & MOUNT_ATTR_NODEV) flags |= MS_NODEV;
  if (attributes & MOUNT_ATTR_NOEXEC) flags |= MS_NOEXEC;
  RemountTreeOneByOne(target, flags);
}

enum class BindKind {
  kReadOnly,  // host dirs: read-only, nosuid, nodev, sub-mounts included
  kWritable,  // /work: writable, but nosuid and nodev, sub-mounts included
  kDevice,    // a host device node (user namespace): must keep dev, so nosuid,noexec only
};

// Mounts `source` on `target` (created as a file or directory to match),
// with the sub-mounts below it, and applies `kind`'s flags to all of them.
void MountBind(const std::string& source, const std::string& target, BindKind kind) {
  struct stat st;
  CHECK_SYS(stat(source.c_str(), &st), "stat " + source);
  if (S_ISDIR(st.st_mode)) {
    MakeDirs(target);
  } else {
    MakeDirs(target.substr(0, target.rfind('/')));
    WriteFileOrDie(target, "", 0644);
  }
  CHECK_SYS(mount(source.c_str(), target.c_str(), nullptr, MS_BIND | MS_REC, nullptr),
            "bind " + source + " on " + target);
  switch (kind) {
    case BindKind::kReadOnly:
      SetMountTreeAttributes(target, MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV);
      break;
    case BindKind::kWritable:
      SetMountTreeAttributes(target, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV);
      break;
    case BindKind::kDevice:
      SetMountTreeAttributes(target, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NOEXEC);
      break;
  }
}

// The seed's network: an empty namespace whose loopback is up.
void BringUpLoopback() {
  int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  CHECK_SYS(fd, "socket for loopback");
  struct ifreq ifr = {};
  strncpy(ifr.ifr_name, "lo", IFNAMSIZ);
  ifr.ifr_flags = IFF_UP | IFF_LOOPBACK | IFF_RUNNING;
  CHECK_SYS(ioctl(fd, SIOCSIFFLAGS, &ifr), "bring up lo");
  close(fd);
}

// Maps the build user to the launcher's own uid: all an unprivileged user
// namespace allows. setgroups must be denied before gid_map may be written.
void WriteIdMaps(const ChildConfig& config) {
  WriteFileOrDie("/proc/self/setgroups", "deny", 0);
  WriteFileOrDie("/proc/self/uid_map", absl::StrCat(config.uid, " ", config.outer_uid, " 1\n"), 0);
  WriteFileOrDie("/proc/self/gid_map", absl::StrCat(config.gid, " ", config.outer_gid, " 1\n"), 0);
}

// Bytes per inode for the tmpfs inode limit: a build's temporary files are
// rarely smaller, and without a limit a tmpfs takes inodes up to half of RAM.
constexpr int64_t kTmpfsBytesPerInode = 4096;

// tmpfs options with a size and an inode limit (0: unlimited, the tmpfs
// default would be half of RAM for each mount).
std::string TmpfsOptions(const std::string& base, int64_t size_bytes) {
  const int64_t inodes = size_bytes == 0 ? 0 : std::max<int64_t>(1024, size_bytes / kTmpfsBytesPerInode);
  return absl::StrCat(base, ",size=", size_bytes, ",nr_inodes=", inodes);
}

void MountDev(const std::string& root, const ChildConfig& config) {
  const bool user_namespace = config.user_namespace;
  const std::string dev = root + "/dev";
  MakeDirs(dev);
  CHECK_SYS(mount("tmpfs", dev.c_str(), "tmpfs", MS_NOSUID | MS_NOEXEC, "mode=0755,size=64k"),
            "mount tmpfs on /dev");
  struct Node {
    const char* name;
    unsigned major, minor;
  };
  for (const Node& node : {Node{"null", 1, 3}, Node{"zero", 1, 5}, Node{"full", 1, 7},
                           Node{"random", 1, 8}, Node{"urandom", 1, 9}, Node{"tty", 5, 0}}) {
    std::string path = absl::StrCat(dev, "/", node.name);
    if (user_namespace) {
      // Device nodes cannot be created in a user namespace; the host's are bound.
      MountBind(absl::StrCat("/dev/", node.name), path, BindKind::kDevice);
    } else {
      CHECK_SYS(mknod(path.c_str(), S_IFCHR | 0666, makedev(node.major, node.minor)),
                "mknod " + path);
    }
  }
  MakeDirs(dev + "/pts");
  CHECK_SYS(mount("devpts", (dev + "/pts").c_str(), "devpts", MS_NOSUID | MS_NOEXEC,
                  "newinstance,ptmxmode=0666,mode=0620"),
            "mount devpts");
  CHECK_SYS(symlink("pts/ptmx", (dev + "/ptmx").c_str()), "symlink /dev/ptmx");
  MakeDirs(dev + "/shm");
  CHECK_SYS(mount("tmpfs", (dev + "/shm").c_str(), "tmpfs", MS_NOSUID | MS_NODEV,
                  TmpfsOptions("mode=1777", config.spec->shm_size_bytes).c_str()),
            "mount /dev/shm");
  CHECK_SYS(symlink("/proc/self/fd", (dev + "/fd").c_str()), "symlink /dev/fd");
  CHECK_SYS(symlink("/proc/self/fd/0", (dev + "/stdin").c_str()), "symlink /dev/stdin");
  CHECK_SYS(symlink("/proc/self/fd/1", (dev + "/stdout").c_str()), "symlink /dev/stdout");
  CHECK_SYS(symlink("/proc/self/fd/2", (dev + "/stderr").c_str()), "symlink /dev/stderr");
}

// /etc holds only what Kiln writes: no host configuration leaks in. Written
// while preparing; /etc/hosts, which names the action's hostname, when the
// action arrives (WriteEtcHosts).
void WriteEtc(const std::string& root, const ChildConfig& config) {
  const std::string etc = root + "/etc";
  MakeDirs(etc);
  WriteFileOrDie(etc + "/passwd",
                 absl::StrCat("root:x:0:0:root:/:/bin/sh\n", "kiln:x:", config.uid, ":",
                              config.gid, ":Kiln build user:", kWorkMountPoint, ":/bin/sh\n",
                              "nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"),
                 0644);
  WriteFileOrDie(etc + "/group",
                 absl::StrCat("root:x:0:\n", "kiln:x:", config.gid, ":\n", "nogroup:x:65534:\n"),
                 0644);
  if (config.spec->share_network) {
    struct stat st;
    if (stat("/etc/resolv.conf", &st) == 0) MountBind("/etc/resolv.conf", etc + "/resolv.conf", BindKind::kReadOnly);
  }
}

void WriteEtcHosts(const std::string& root, const SandboxSpec& spec) {
  WriteFileOrDie(root + "/etc/hosts",
                 absl::StrCat("127.0.0.1 localhost ", spec.hostname, "\n",
                              "::1 localhost ip6-localhost ip6-loopback\n"),
                 0644);
}

// Builds the new root on a tmpfs at the (empty) mount point: the binds,
// /dev, /proc, /tmp and /etc. Everything but the action's own /work, so that
// a warm sandbox has done it before its action arrives.
void PrepareRoot(const ChildConfig& config) {
  const SandboxSpec& spec = *config.spec;
  const std::string& root = config.root_mount_point;
  CHECK_SYS(mount("tmpfs", root.c_str(), "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=1m"),
            "mount tmpfs root on " + root);
  for (const BindMount& bind : spec.binds) {
    struct stat st;
    CHECK_SYS(lstat(bind.source.c_str(), &st), "lstat " + bind.source);
    std::string target = root + bind.target;
    if (S_ISLNK(st.st_mode) && bind.source == bind.target) {
      // Merged-/usr systems: /bin -> usr/bin. The same link is enough.
      char link[4096];
      ssize_t n = readlink(bind.source.c_str(), link, sizeof link - 1);
      CHECK_SYS(n, "readlink " + bind.source);
      link[n] = '\0';
      MakeDirs(target.substr(0, target.rfind('/')));
      CHECK_SYS(symlink(link, target.c_str()), "symlink " + target);
      continue;
    }
    MountBind(bind.source, target, bind.writable ? BindKind::kWritable : BindKind::kReadOnly);
  }
  MountDev(root, config);
  MakeDirs(root + "/proc");
  CHECK_SYS(mount("proc", (root + "/proc").c_str(), "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, nullptr),
            "mount /proc");
  MakeDirs(root + "/tmp");
  CHECK_SYS(mount("tmpfs", (root + "/tmp").c_str(), "tmpfs", MS_NOSUID | MS_NODEV,
                  TmpfsOptions("mode=1777", spec.tmp_size_bytes).c_str()),
            "mount /tmp");
  WriteEtc(root, config);
  MakeDirs(root + kWorkMountPoint);
  MakeDirs(root + "/.old-root");
}

void MountTmpfsWork(const std::string& work, const ChildConfig& config, const SandboxSpec& spec) {
  std::string options = TmpfsOptions(absl::StrCat("mode=0755,uid=", config.uid, ",gid=", config.gid),
                                     spec.tmp_size_bytes);
  CHECK_SYS(mount("tmpfs", work.c_str(), "tmpfs", MS_NOSUID | MS_NODEV, options.c_str()),
            "mount tmpfs on /work");
}

// The action's part of the root, /etc/hosts and /work, for a sandbox that
// pivots when its action comes. Then Pivot.
void MountWorkBeforePivot(const ChildConfig& config, const SandboxSpec& spec) {
  const std::string& root = config.root_mount_point;
  WriteEtcHosts(root, spec);
  const std::string work = root + kWorkMountPoint;
  if (!spec.work_dir.empty()) {
    MountBind(spec.work_dir, work, BindKind::kWritable);
  } else {
    MountTmpfsWork(work, config, spec);
  }
}

// /work for a sandbox that pivoted while preparing: the clone of the work
// dir the launcher made (already nosuid, nodev and private), moved onto
// /work. Mounts only: no unmount, and thus no RCU grace period, on the
// action's path.
void MountWorkAfterPivot(UniqueFd work, const ChildConfig& config, const SandboxSpec& spec) {
  if (spec.work_dir.empty()) {
    MountTmpfsWork(kWorkMountPoint, config, spec);
    return;
  }
  CHECK_SYS(move_mount(work.get(), "", AT_FDCWD, kWorkMountPoint, MOVE_MOUNT_F_EMPTY_PATH),
            "move the work dir to /work");
}

// Makes the built root the root with pivot_root, and detaches the old one.
void Pivot(const ChildConfig& config) {
  const std::string& root = config.root_mount_point;
  const std::string old_root = root + "/.old-root";
  CHECK_SYS(syscall(SYS_pivot_root, root.c_str(), old_root.c_str()), "pivot_root");
  CHECK_SYS(chdir("/"), "chdir /");
  CHECK_SYS(umount2("/.old-root", MNT_DETACH), "detach the old root");
  CHECK_SYS(rmdir("/.old-root"), "rmdir /.old-root");
  // The root itself is read-only: only /work, /tmp and /dev/shm take writes.
  CHECK_SYS(mount(nullptr, "/", nullptr, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV,
                  nullptr),
            "remount / read-only");
}

// Empties the bounding set, which the action inherits: no exec can give it
// a capability back. PID 1 does this while it prepares: it never execs, and
// the capabilities it still uses (mounting the action's /work, starting the
// action as the build user) are its effective ones, which the bounding set
// does not take away. Each drop is a credential change (41 of them took
// ~50 us); forked by the spawner, which emptied its own set, PID 1 has none
// left to drop unless it is in a new user namespace.
void DropBoundingSet() {
  if (!EmptyBoundingSet()) DieAt(__FILE__, __LINE__, "empty the capability bounding set");
}

// PID 2, with the bounding set already empty (DropBoundingSet).
void DropPrivileges(const ChildConfig& config) {
  if (!config.user_namespace) {
    CHECK_SYS(setgroups(0, nullptr), "setgroups(0)");
  }
  CHECK_SYS(setresgid(config.gid, config.gid, config.gid), "setgid");
  CHECK_SYS(setresuid(config.uid, config.uid, config.uid), "setuid");
  // Verify, as the seed does: a silently failed drop must not run the action.
  uid_t ruid, euid, suid;
  gid_t rgid, egid, sgid;
  getresuid(&ruid, &euid, &suid);
  getresgid(&rgid, &egid, &sgid);
  if (ruid != config.uid || euid != config.uid || suid != config.uid || rgid != config.gid ||
      egid != config.gid || sgid != config.gid ||
      // In a user namespace inherited supplementary groups cannot be dropped
      // (setgroups is denied); they appear as the overflow group.
      (!config.user_namespace && getgroups(0, nullptr) != 0)) {
    errno = EPERM;
    DieAt(__FILE__, __LINE__, "privileges were not dropped");
  }
  CHECK_SYS(prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0), "clear ambient capabilities");
  cap_t none = cap_init();
  if (cap_set_proc(none) != 0) DieAt(__FILE__, __LINE__, "clear capabilities");
  cap_free(none);
  CHECK_SYS(prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "set no_new_privs");
}

// Limits that need no cgroup. RLIMIT_NPROC counts the processes of the
// action's real uid: as root the build uid is leased to this sandbox alone,
// and in a user namespace the kernel counts per (namespace, uid), i.e. only
// this sandbox's processes, while the outer uid's own count is still held to
// the launcher's limit. Set before the uid changes, while raising is allowed.
void SetResourceLimits(const SandboxSpec& spec) {
  if (spec.max_processes > 0) {
    struct rlimit limit = {static_cast<rlim_t>(spec.max_processes), static_cast<rlim_t>(spec.max_processes)};
    CHECK_SYS(setrlimit(RLIMIT_NPROC, &limit), "setrlimit RLIMIT_NPROC");
  }
  if (spec.max_file_size_bytes > 0) {
    struct rlimit limit = {static_cast<rlim_t>(spec.max_file_size_bytes),
                           static_cast<rlim_t>(spec.max_file_size_bytes)};
    CHECK_SYS(setrlimit(RLIMIT_FSIZE, &limit), "setrlimit RLIMIT_FSIZE");
  }
}

// True when the filesystem at `path` has no room or no inode left: the
// action then saw ENOSPC there.
bool IsFull(const char* path) {
  struct statvfs st;
  if (statvfs(path, &st) != 0) return false;
  return st.f_bavail == 0 || (st.f_files > 0 && st.f_favail == 0);
}

std::string FindInPath(const std::string& program, const std::map<std::string, std::string>& env) {
  if (program.find('/') != std::string::npos) return program;
  auto path = env.find("PATH");
  for (absl::string_view dir : absl::StrSplit(path == env.end() ? kDefaultLookupPath : path->second, ':')) {
    std::string candidate = absl::StrCat(dir.empty() ? "." : dir, "/", program);
    if (access(candidate.c_str(), X_OK) == 0) return candidate;
  }
  return program;
}

// What PID 1 hands to PID 2, which runs in PID 1's memory until its exec.
struct ActionStart {
  const ChildConfig* config;
  const SandboxSpec* spec;
  const SeccompProgram* seccomp;
  int exec_error = 0;  // set by PID 2 when its exec fails, read by PID 1 after
};

// PID 2: becomes the action. Never returns.
[[noreturn]] void ExecAction(const ChildConfig& config, const SandboxSpec& spec,
                             const SeccompProgram& seccomp, int* exec_error) {
  // A session of its own, not just a process group: the action then has no
  // controlling terminal, so it cannot TIOCSTI keystrokes into the terminal
  // kiln-sandbox was started from, nor get its SIGHUP/job-control signals.
  CHECK_SYS(setsid(), "setsid");
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, nullptr);
  umask(022);
  if (spec.personality_linux32 || spec.personality_uname26) {
    unsigned long persona = spec.personality_linux32 ? PER_LINUX32 : PER_LINUX;
    if (spec.personality_uname26) persona |= UNAME26;
    CHECK_SYS(personality(persona), "personality");
  }
  std::string cwd = spec.cwd.empty() ? kWorkMountPoint : absl::StrCat(kWorkMountPoint, "/", spec.cwd);
  CHECK_SYS(chdir(cwd.c_str()), "chdir " + cwd);
  SetResourceLimits(spec);
  DropPrivileges(config);
  // Last, after no_new_privs: the filter binds the action and all it starts.
  std::string seccomp_error;
  if (!LoadSeccompProgram(seccomp, &seccomp_error)) {
    DieAt(__FILE__, __LINE__, seccomp_error);
  }

  std::vector<std::string> env_strings;
  for (const auto& [name, value] : spec.env) env_strings.push_back(name + "=" + value);
  if (!spec.env.count("PATH") && !spec.path_when_unset.empty()) {
    env_strings.push_back(absl::StrCat("PATH=", spec.path_when_unset));
  }
  std::vector<char*> envp;
  for (std::string& e : env_strings) envp.push_back(e.data());
  envp.push_back(nullptr);
  std::vector<std::string> args = spec.argv;
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  std::string program = FindInPath(args[0], spec.env);

  // stdin/stdout/stderr as asked, then every other descriptor closed.
  int stdin_fd = spec.stdin_fd >= 0 ? spec.stdin_fd : open("/dev/null", O_RDONLY);
  if (stdin_fd != 0) CHECK_SYS(dup2(stdin_fd, 0), "dup2 stdin");
  if (spec.stdout_fd != 1) CHECK_SYS(dup2(spec.stdout_fd, 1), "dup2 stdout");
  if (spec.stderr_fd != 2) CHECK_SYS(dup2(spec.stderr_fd, 2), "dup2 stderr");
  CHECK_SYS(close_range(3, ~0U, 0), "close inherited descriptors");
  execve(program.c_str(), argv.data(), envp.data());
  *exec_error = errno;  // PID 1's memory: it reads this once we are gone
  _exit(kExecFailedExit);
}

int StartAction(void* arg) {
  ActionStart& start = *static_cast<ActionStart*>(arg);
  ExecAction(*start.config, *start.spec, *start.seccomp, &start.exec_error);
}

void ForwardSignal(int signal_number) {
  if (g_action_pid > 0) kill(-g_action_pid, signal_number);
}

// /proc/1/cmdline is readable by the action; it would show the launcher's
// arguments, host paths included. PID 1 has its own copy of that memory (no
// CLONE_VM), so it blanks it, keeping only a name. The argv strings must not
// be used afterwards: everything was copied into the spec.
void WipeLauncherArgv(const SandboxSpec& spec) {
  char* begin = spec.launcher_argv_begin;
  char* end = spec.launcher_argv_end;
  if (begin == nullptr || end <= begin) return;
  memset(begin, 0, end - begin);
  static constexpr char kName[] = "kiln-sandbox";
  if (static_cast<size_t>(end - begin) > sizeof kName) memcpy(begin, kName, sizeof kName);
}

// PID 1 was cloned with a copy of every descriptor of its launcher: the
// launcher's end of the request socket and of the report pipe, its signalfd,
// and the worker's socket (kiln-sandbox --serve_fd). It keeps only its own
// ends and the action's stdio. Holding the launcher's end, PID 1 would never
// see the request socket close: a launcher killed before PID 1 asked for its
// parent-death signal left PID 1 blocked forever, outside any worker.
void CloseLauncherDescriptors(const ChildConfig& config) {
  const SandboxSpec& spec = *config.spec;
  std::vector<int> keep = {config.request_fd, config.report_fd, spec.stdin_fd, spec.stdout_fd, spec.stderr_fd};
  std::sort(keep.begin(), keep.end());
  unsigned int first = 3;  // stdin, stdout and stderr stay
  for (int fd : keep) {
    if (fd < static_cast<int>(first)) continue;
    if (static_cast<unsigned int>(fd) > first) {
      CHECK_SYS(close_range(first, fd - 1, 0), "close the launcher's descriptors");
    }
    first = fd + 1;
  }
  CHECK_SYS(close_range(first, ~0U, 0), "close the launcher's descriptors");
}

}  // namespace

bool EmptyBoundingSet() {
  // Up to the kernel's last capability, which may be newer than the headers'
  // CAP_LAST_CAP: the read says EINVAL past it.
  for (int cap = 0; cap < 64; ++cap) {
    const int in_set = prctl(PR_CAPBSET_READ, cap, 0, 0, 0);
    if (in_set < 0) return errno == EINVAL;
    if (in_set == 1 && prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0) return false;
  }
  return true;
}

int RunSandboxInit(void* arg) {
  const ChildConfig& config = *static_cast<ChildConfig*>(arg);
  const SandboxSpec& prepared = *config.spec;
  g_report_fd = config.report_fd;
  WipeLauncherArgv(prepared);
  if (getpid() != 1) {
    errno = EINVAL;
    DieAt(__FILE__, __LINE__, "the init is not PID 1 of its namespace");
  }
  // If the launcher dies, so does the sandbox (and with PID 1, everything in it).
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  // A launcher that died before that line: reading the go byte below then
  // ends, because the launcher's end of the socket is closed here.
  CloseLauncherDescriptors(config);
  // Out of the launcher's process group: a signal sent to that group (a
  // terminal's ^C, timeout(1)) reaches the action once, through the launcher.
  setpgid(0, 0);
  char go = 0;
  if (read(config.request_fd, &go, 1) != 1) _exit(kSetupFailedExit);  // launcher gave up
  // The cgroup namespace is made now, not by clone(): the launcher has just
  // moved this process into the action's cgroup, which thus becomes the
  // namespace's root. /proc/self/cgroup then reads "0::/" instead of naming
  // the launcher's cgroups ("/../kiln-sandbox-..." beside a worker's leaf).
  CHECK_SYS(unshare(CLONE_NEWCGROUP), "unshare the cgroup namespace");

  umask(0);  // modes below are meant literally (0666 devices); PID 2 sets 022
  if (config.user_namespace) WriteIdMaps(config);
  // Nothing mounted here may propagate back to the host.
  CHECK_SYS(mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr), "make / private");
  Report(absl::StrCat("stage namespaces ", MonotonicNanos()));
  PrepareRoot(config);
  if (config.work_from_launcher) {
    CHECK_SYS(sethostname(prepared.hostname.data(), prepared.hostname.size()), "sethostname");
    CHECK_SYS(setdomainname(prepared.domainname.data(), prepared.domainname.size()), "setdomainname");
    WriteEtcHosts(config.root_mount_point, prepared);
    Pivot(config);
  }
  Report(absl::StrCat("stage root ", MonotonicNanos()));
  if (!prepared.share_network) BringUpLoopback();
  SeccompProgram seccomp;
  std::string seccomp_error;
  SeccompOptions seccomp_options;
  seccomp_options.allow_nested_sandbox = prepared.allow_nested_sandbox;
  if (!CompileSeccompFilter(seccomp_options, &seccomp, &seccomp_error)) DieAt(__FILE__, __LINE__, seccomp_error);
  DropBoundingSet();
  Report(absl::StrCat("stage network ", MonotonicNanos()));

  // Ready: wait for the action. The launcher checked that it fits what was
  // prepared (CheckPreparedFor).
  v1::SandboxRequest request;
  std::vector<UniqueFd> handed;  // work_from_launcher's descriptors
  if (!ReadMessage(config.request_fd, &request, config.work_from_launcher ? &handed : nullptr).ok()) {
    _exit(kSetupFailedExit);  // no action came
  }
  close(config.request_fd);
  SandboxSpec spec = prepared;
  SandboxPolicy unused_policy;
  if (!FromRequest(request, &spec, &unused_policy).ok()) {
    errno = EINVAL;
    DieAt(__FILE__, __LINE__, "parse the action's request");
  }
  UniqueFd work;
  if (config.work_from_launcher) {
    // In the order the launcher sends them (ChildConfig::request_fd).
    const size_t expected = size_t{!spec.work_dir.empty()} + size_t{!spec.stdout_path.empty()} +
                            size_t{!spec.stderr_path.empty()};
    if (handed.size() != expected) {
      errno = EINVAL;
      DieAt(__FILE__, __LINE__, absl::StrCat("the launcher handed ", handed.size(), " descriptors for ",
                                             expected, " (work dir, stdout, stderr)"));
    }
    auto next = handed.begin();
    if (!spec.work_dir.empty()) work = std::move(*next++);
    if (!spec.stdout_path.empty()) spec.stdout_fd = (next++)->Release();
    if (!spec.stderr_path.empty()) spec.stderr_fd = (next++)->Release();
  } else {
    // Pivots below, once /work is mounted: the host's paths are still here.
    auto open_log = [&](const std::string& path) {
      int fd = open(path.c_str(), O_WRONLY | O_APPEND | O_NOFOLLOW | O_CLOEXEC);
      CHECK_SYS(fd, "open the action's log file " + path);
      return fd;
    };
    if (!spec.stdout_path.empty()) spec.stdout_fd = open_log(spec.stdout_path);
    if (!spec.stderr_path.empty()) spec.stderr_fd = open_log(spec.stderr_path);
  }
  if (spec.allow_nested_sandbox != prepared.allow_nested_sandbox) {
    seccomp_options.allow_nested_sandbox = spec.allow_nested_sandbox;
    if (!CompileSeccompFilter(seccomp_options, &seccomp, &seccomp_error)) DieAt(__FILE__, __LINE__, seccomp_error);
  }
  if (config.work_from_launcher) {
    MountWorkAfterPivot(std::move(work), config, spec);
  } else {
    CHECK_SYS(sethostname(spec.hostname.data(), spec.hostname.size()), "sethostname");
    CHECK_SYS(setdomainname(spec.domainname.data(), spec.domainname.size()), "setdomainname");
    MountWorkBeforePivot(config, spec);
    Pivot(config);
  }

  // Signals to forward stay blocked until PID 2 exists, so none is lost.
  struct sigaction forward = {};
  forward.sa_handler = ForwardSignal;
  sigemptyset(&forward.sa_mask);
  for (int sig : {SIGTERM, SIGINT, SIGHUP}) sigaction(sig, &forward, nullptr);
  // PID 2 runs in PID 1's memory, on a stack of its own, and PID 1 sleeps
  // until PID 2's exec (or exit), as posix_spawn does: a fork would copy
  // PID 1's page tables, which are the launcher's, and the exec would tear
  // that copy down again, both on the action's critical path. PID 1 waking
  // up is also the sign that the exec happened. Until then PID 2 touches
  // only its stack, `start`, and heap memory PID 1 does not use meanwhile.
  ActionStart start{&config, &spec, &seccomp};
  void* stack = mmap(nullptr, kActionStackBytes, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
  if (stack == MAP_FAILED) DieAt(__FILE__, __LINE__, "mmap the action's stack");
  pid_t action = clone(StartAction, static_cast<char*>(stack) + kActionStackBytes,
                       CLONE_VM | CLONE_VFORK | SIGCHLD, &start);
  CHECK_SYS(action, "start the action");
  munmap(stack, kActionStackBytes);
  g_action_pid = action;
  if (!spec.stdout_path.empty()) close(spec.stdout_fd);
  if (!spec.stderr_path.empty()) close(spec.stderr_fd);
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, nullptr);
  if (start.exec_error != 0) {
    // argv[0] is the action's: a newline in it must not forge report lines.
    std::string program = spec.argv[0];
    std::replace(program.begin(), program.end(), '\n', ' ');
    Report(absl::StrCat("exec-error ", program, ": ", strerror(start.exec_error)));
  } else {
    Report(absl::StrCat("stage exec ", MonotonicNanos()));
  }

  // Reap until the action is gone; everything else reaped is an orphan.
  int orphans = 0;
  int action_status = 0;
  while (true) {
    int status = 0;
    pid_t pid = waitpid(-1, &status, 0);
    if (pid < 0) {
      if (errno == EINTR) continue;
      break;  // ECHILD: nothing left to wait for
    }
    if (pid == action) {
      action_status = status;
      break;
    }
    ++orphans;
  }
  g_action_pid = 0;
  const int64_t action_exited_ns = MonotonicNanos();
  // Reap zombies already waiting: the action's orphans that ended by themselves.
  for (int status; waitpid(-1, &status, WNOHANG) > 0;) ++orphans;
  // Early completion: the launcher answers as soon as this reports "done",
  // before the namespaces are torn down, so nothing of the action may be
  // left then. SIGKILL to -1 reaches every process of this PID namespace but
  // PID 1; a fork racing it is undone by the kernel (the parent has a fatal
  // signal pending). Every survivor's parent chain ends at PID 1: a killed
  // parent's children are handed to PID 1, so PID 1 reaps each process that
  // was still there, which is how they are counted, and once waitpid says
  // ECHILD there is no process left that could write in the action's
  // directory.
  kill(-1, SIGKILL);
  int remaining = 0;
  while (true) {
    int status = 0;
    if (waitpid(-1, &status, 0) >= 0) {
      ++remaining;
    } else if (errno != EINTR) {
      break;
    }
  }
  struct rusage usage = {};
  getrusage(RUSAGE_CHILDREN, &usage);
  int signal_number = WIFSIGNALED(action_status) ? WTERMSIG(action_status) : 0;
  int exit_code = WIFEXITED(action_status) ? WEXITSTATUS(action_status) : 128 + signal_number;
  // One write for the end of the run: the launcher wakes once for it.
  Report(absl::StrCat("stage action_exited ", action_exited_ns, "\nstage tree_gone ", MonotonicNanos(),
                      "\ndone orphans=", orphans, " remaining=", remaining,
                      " exit=", exit_code, " signal=", signal_number,
                      " tmp_full=", int{spec.tmp_size_bytes > 0 && IsFull("/tmp")},
                      " shm_full=", int{spec.shm_size_bytes > 0 && IsFull("/dev/shm")},
                      " utime_us=", int64_t{usage.ru_utime.tv_sec} * 1000000 + usage.ru_utime.tv_usec,
                      " stime_us=", int64_t{usage.ru_stime.tv_sec} * 1000000 + usage.ru_stime.tv_usec,
                      " maxrss=", usage.ru_maxrss, " minflt=", usage.ru_minflt,
                      " majflt=", usage.ru_majflt, " inblock=", usage.ru_inblock,
                      " oublock=", usage.ru_oublock, " nvcsw=", usage.ru_nvcsw,
                      " nivcsw=", usage.ru_nivcsw));
  if (WIFSIGNALED(action_status)) return 128 + WTERMSIG(action_status);
  return WEXITSTATUS(action_status);
}

}  // namespace kiln::sandbox
