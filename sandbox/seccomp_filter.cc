#include "sandbox/seccomp_filter.h"

#include <fcntl.h>
#include <linux/netlink.h>
#include <linux/seccomp.h>
#include <sched.h>
#include <seccomp.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <cstdint>
#include <initializer_list>

#include "absl/strings/str_cat.h"

#ifndef CLONE_NEWTIME
#define CLONE_NEWTIME 0x00000080
#endif

namespace kiln::sandbox {
namespace {

// The CLONE_NEW* flags. CLONE_NEWTIME shares its bit with the exit-signal
// byte of clone(), where no real signal (< 65) ever sets it.
constexpr uint64_t kNamespaceFlags[] = {CLONE_NEWUSER, CLONE_NEWNS,  CLONE_NEWNET,
                                        CLONE_NEWPID,  CLONE_NEWIPC, CLONE_NEWUTS,
                                        CLONE_NEWCGROUP, CLONE_NEWTIME};

// The mount API, old and new: a process that could mount could undo the
// read-only binds or hide files from the outputs. With
// --allow_nested_sandbox they are allowed, because a nested sandbox mounts
// in the namespaces it creates; in the sandbox's own namespaces the action
// holds no capability, so the kernel still refuses them there.
constexpr const char* kMountCalls[] = {
    "mount", "umount", "umount2", "pivot_root", "move_mount", "open_tree", "fsopen", "fsconfig",
    "fsmount", "fspick", "mount_setattr",
};

// Denied with EPERM, whatever the arguments.
constexpr const char* kDeniedCalls[] = {
    // Keyrings are per uid and outlive the action: they would leak between
    // actions that get the same build uid.
    "keyctl", "add_key", "request_key",
    // Large kernel attack surface no build needs.
    "bpf", "perf_event_open", "userfaultfd", "io_uring_setup", "io_uring_enter",
    "io_uring_register",
    // Loading code into the kernel.
    "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module",
};

// A libseccomp call failed: its result is -errno.
bool Failed(int rc, const std::string& what, std::string* error) {
  if (rc == 0) return false;
  errno = -rc;
  *error = what;
  return true;
}

// Adds `rule` for every architecture in the filter; libseccomp resolves the
// syscall number per architecture and skips calls an architecture lacks
// (`name` returns __NR_SCMP_ERROR only if no architecture knows it).
int AddRule(scmp_filter_ctx ctx, uint32_t action, const char* name,
            std::initializer_list<scmp_arg_cmp> args) {
  int number = seccomp_syscall_resolve_name(name);
  if (number == __NR_SCMP_ERROR) return 0;
  return seccomp_rule_add_array(ctx, action, number, args.size(), args.begin());
}

// Domain and protocol are ints: the kernel ignores the upper half of the
// 64-bit register, so the filter must ignore it too, or socket(AF_PACKET |
// 1ull << 32, ...) would slip through.
scmp_arg_cmp IntArgIs(unsigned arg, uint32_t value) {
  return scmp_arg_cmp{arg, SCMP_CMP_MASKED_EQ, 0xffffffffu, value};
}

}  // namespace

static bool CompileUncached(const SeccompOptions& options, SeccompProgram* program, std::string* error) {
  scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ALLOW);
  if (ctx == nullptr) {
    errno = ENOMEM;
    *error = "seccomp_init";
    return false;
  }
  struct Release {
    scmp_filter_ctx ctx;
    ~Release() { seccomp_release(ctx); }
  } release{ctx};
  const uint32_t eperm = SCMP_ACT_ERRNO(EPERM);
  // A binary tree over the syscall numbers instead of one comparison after
  // another. The kernel runs the whole filter once per syscall number and
  // architecture when it is loaded (to cache which calls are always
  // allowed), so a linear chain of ~60 rules cost ~0.1 ms on every action's
  // critical path; calls that the cache cannot settle (those with argument
  // rules) also get through in a few comparisons.
  if (Failed(seccomp_attr_set(ctx, SCMP_FLTATR_CTL_OPTIMIZE, 2), "seccomp_attr_set SCMP_FLTATR_CTL_OPTIMIZE", error)) {
    return false;
  }

  // 32-bit (x86) and x32 programs enter the kernel through other syscall
  // tables; without their architectures here the kernel would kill them
  // (the default for a foreign architecture), with them the same rules hold.
  if (seccomp_arch_native() == SCMP_ARCH_X86_64) {
    for (uint32_t arch : {SCMP_ARCH_X86, SCMP_ARCH_X32}) {
      if (Failed(seccomp_arch_add(ctx, arch), absl::StrCat("seccomp_arch_add ", arch), error)) return false;
    }
  } else if (seccomp_arch_native() == SCMP_ARCH_AARCH64) {
    if (Failed(seccomp_arch_add(ctx, SCMP_ARCH_ARM), "seccomp_arch_add arm", error)) return false;
  }

  for (const char* name : kDeniedCalls) {
    if (Failed(AddRule(ctx, eperm, name, {}), absl::StrCat("seccomp rule for ", name), error)) return false;
  }

  // New namespaces: with a user namespace an action gets every capability
  // over fresh namespaces and reaches nf_tables, AF_PACKET and mount code.
  if (!options.allow_nested_sandbox) {
    for (const char* name : kMountCalls) {
      if (Failed(AddRule(ctx, eperm, name, {}), absl::StrCat("seccomp rule for ", name), error)) return false;
    }
    for (uint64_t flag : kNamespaceFlags) {
      if (Failed(AddRule(ctx, eperm, "clone", {SCMP_A0(SCMP_CMP_MASKED_EQ, flag, flag)}),
                 absl::StrCat("seccomp rule for clone flag ", flag), error)) {
        return false;
      }
    }
    for (const char* name : {"unshare", "setns"}) {
      if (Failed(AddRule(ctx, eperm, name, {}), absl::StrCat("seccomp rule for ", name), error)) return false;
    }
  }
  // clone3 passes its flags in memory, out of a filter's reach. ENOSYS makes
  // glibc fall back to clone(), whose flags are checked above.
  if (Failed(AddRule(ctx, SCMP_ACT_ERRNO(ENOSYS), "clone3", {}), "seccomp rule for clone3", error)) {
    return false;
  }

  // Raw packets, and netlink except NETLINK_ROUTE (getaddrinfo and
  // if_nameindex use it): the other families reach nf_tables, audit,
  // uevents and socket diagnostics.
  if (Failed(AddRule(ctx, eperm, "socket", {IntArgIs(0, AF_PACKET)}), "seccomp rule for socket(AF_PACKET)", error) ||
      Failed(AddRule(ctx, eperm, "socket", {IntArgIs(0, AF_NETLINK), SCMP_A2(SCMP_CMP_NE, NETLINK_ROUTE)}),
             "seccomp rule for socket(AF_NETLINK)", error)) {
    return false;
  }
  // socketpair() of either family is never valid; deny it whatever the protocol.
  for (int family : {AF_PACKET, AF_NETLINK}) {
    if (Failed(AddRule(ctx, eperm, "socketpair", {IntArgIs(0, family)}),
               absl::StrCat("seccomp rule for socketpair(", family, ")"), error)) {
      return false;
    }
  }

  // Faking terminal input (TIOCSTI) or using the console's TIOCLINUX, as
  // bubblewrap blocks them. The action also runs in a session of its own,
  // without a controlling terminal.
  for (uint32_t request : {TIOCSTI, TIOCLINUX}) {
    if (Failed(AddRule(ctx, eperm, "ioctl", {IntArgIs(1, request)}),
               absl::StrCat("seccomp rule for ioctl ", request), error)) {
      return false;
    }
  }

  // The BPF program as seccomp_load would load it, through a pipe (this
  // libseccomp has no export to memory); a few hundred instructions fit.
  int pipe_fds[2];
  if (pipe2(pipe_fds, O_CLOEXEC) != 0) {
    *error = "pipe for the seccomp program";
    return false;
  }
  const int exported = seccomp_export_bpf(ctx, pipe_fds[1]);
  close(pipe_fds[1]);
  std::string bytes;
  char buffer[4096];
  for (ssize_t n; (n = read(pipe_fds[0], buffer, sizeof buffer)) > 0;) bytes.append(buffer, n);
  close(pipe_fds[0]);
  if (Failed(exported, "seccomp_export_bpf", error)) return false;
  if (bytes.empty() || bytes.size() % sizeof(struct sock_filter) != 0) {
    errno = EINVAL;
    *error = "seccomp_export_bpf wrote a partial program";
    return false;
  }
  program->instructions.resize(bytes.size() / sizeof(struct sock_filter));
  memcpy(program->instructions.data(), bytes.data(), bytes.size());
  return true;
}

namespace {

struct CompiledFilter {
  bool ok = false;
  SeccompProgram program;
  std::string error;
  int error_number = 0;
};

CompiledFilter Compile(bool allow_nested_sandbox) {
  CompiledFilter compiled;
  SeccompOptions options;
  options.allow_nested_sandbox = allow_nested_sandbox;
  compiled.ok = CompileUncached(options, &compiled.program, &compiled.error);
  compiled.error_number = errno;
  return compiled;
}

}  // namespace

bool CompileSeccompFilter(const SeccompOptions& options, SeccompProgram* program, std::string* error) {
  // Once per process and variant (thread-safe static initialization). A
  // process forked afterwards inherits it: kiln-sandbox's spawner compiles
  // the default variant before it forks any launcher.
  auto cached = [&]() -> const CompiledFilter& {
    if (options.allow_nested_sandbox) {
      static const CompiledFilter nested = Compile(true);
      return nested;
    }
    static const CompiledFilter plain = Compile(false);
    return plain;
  };
  const CompiledFilter& compiled = cached();
  if (!compiled.ok) {
    *error = compiled.error;
    errno = compiled.error_number;
    return false;
  }
  *program = compiled.program;
  return true;
}

bool LoadSeccompProgram(const SeccompProgram& program, std::string* error) {
  struct sock_fprog prog = {static_cast<unsigned short>(program.instructions.size()),
                            const_cast<struct sock_filter*>(program.instructions.data())};
  if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog, 0, 0) != 0) {
    *error = "load the seccomp filter";
    return false;
  }
  return true;
}

bool InstallSeccompFilter(const SeccompOptions& options, std::string* error) {
  SeccompProgram program;
  return CompileSeccompFilter(options, &program, error) && LoadSeccompProgram(program, error);
}

}  // namespace kiln::sandbox
