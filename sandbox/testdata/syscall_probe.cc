// syscall_probe NAME: tries one kind of call inside the sandbox and reports.
// Prints "NAME denied <errno>" and exits 0 when the call failed with the
// errno the sandbox answers with (EPERM; ENOSYS for clone3; ENXIO for
// open_dev_tty, the controlling terminal), prints
// "NAME allowed" and exits 1 when it worked, and exits 2 on any other
// failure. The arguments are chosen so that, without the filter, the kernel
// answers something else than the filter would (ENOENT, EBADF, success...)
// wherever the call allows it, so a missing rule shows.
// Statically linked: the sandbox may have no matching shared libraries.
#include <fcntl.h>
#include <linux/netlink.h>
#include <linux/sched.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sched.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <functional>
#include <map>
#include <string>
#include <thread>
#include <vector>

#ifndef CLONE_NEWTIME
#define CLONE_NEWTIME 0x00000080
#endif
#ifndef UFFD_USER_MODE_ONLY
#define UFFD_USER_MODE_ONLY 1
#endif

namespace {

struct Outcome {
  long result;  // >= 0: the call worked
  int error;    // errno when it did not
};

Outcome Call(long result) { return {result, result < 0 ? errno : 0}; }

// clone() through the raw syscall, child exits at once: was it allowed?
Outcome Clone(unsigned long flags) {
  long pid = syscall(SYS_clone, flags | SIGCHLD, nullptr, nullptr, nullptr, nullptr);
  if (pid == 0) _exit(0);
  Outcome outcome = Call(pid);
  if (pid > 0) waitpid(static_cast<pid_t>(pid), nullptr, 0);
  return outcome;
}

Outcome Clone3(unsigned long flags) {
  struct clone_args args = {};
  args.flags = flags;
  args.exit_signal = SIGCHLD;
  long pid = syscall(SYS_clone3, &args, sizeof args);
  if (pid == 0) _exit(0);
  Outcome outcome = Call(pid);
  if (pid > 0) waitpid(static_cast<pid_t>(pid), nullptr, 0);
  return outcome;
}

Outcome Socket(int domain, int type, int protocol) { return Call(socket(domain, type, protocol)); }

Outcome SocketPair(int domain, int type) {
  int fds[2];
  return Call(socketpair(domain, type, 0, fds));
}

#if defined(__x86_64__)
// A call through the 32-bit x86 entry (int 0x80), which has its own syscall
// numbers and its own section in the filter: an action can make these from
// a 64-bit program too.
Outcome I386Call(long number, long a = 0, long b = 0, long c = 0) {
  long result;
  __asm__ volatile("int $0x80" : "=a"(result) : "a"(number), "b"(a), "c"(b), "d"(c) : "memory");
  return {result, result < 0 ? static_cast<int>(-result) : 0};
}
#endif

// Must work: ordinary things a build does.
Outcome ForkExec() {
  pid_t pid = fork();
  if (pid == 0) {
    execl("/bin/true", "true", static_cast<char*>(nullptr));
    _exit(127);
  }
  if (pid < 0) return Call(-1);
  int status = 0;
  waitpid(pid, &status, 0);
  return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? Outcome{0, 0} : Outcome{-1, ECHILD};
}

Outcome Thread() {
  bool ran = false;
  std::thread thread([&] { ran = true; });
  thread.join();
  return ran ? Outcome{0, 0} : Outcome{-1, EAGAIN};
}

Outcome GetAddrInfo() {
  struct addrinfo hints = {};
  hints.ai_family = AF_UNSPEC;
  hints.ai_flags = AI_ADDRCONFIG;
  struct addrinfo* result = nullptr;
  int rc = getaddrinfo("localhost", "80", &hints, &result);
  if (rc != 0) {
    std::fprintf(stderr, "getaddrinfo: %s\n", gai_strerror(rc));
    return {-1, EHOSTUNREACH};
  }
  freeaddrinfo(result);
  return {0, 0};
}

// A TCP connection over loopback, both ends in this process.
Outcome InetLoopback() {
  int listener = socket(AF_INET, SOCK_STREAM, 0);
  if (listener < 0) return Call(-1);
  struct sockaddr_in address = {};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof address;
  if (bind(listener, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0 ||
      listen(listener, 1) != 0 ||
      getsockname(listener, reinterpret_cast<sockaddr*>(&address), &length) != 0) {
    return Call(-1);
  }
  int client = socket(AF_INET, SOCK_STREAM, 0);
  if (client < 0) return Call(-1);
  return Call(connect(client, reinterpret_cast<sockaddr*>(&address), sizeof address));
}

// Forks up to 100 children that wait; prints how many it got. Denied means
// fork failed with EAGAIN first (a process limit).
Outcome ForkMany() {
  std::vector<pid_t> children;
  Outcome outcome{0, 0};
  for (int i = 0; i < 100; ++i) {
    pid_t pid = fork();
    if (pid == 0) {
      pause();
      _exit(0);
    }
    if (pid < 0) {
      outcome = Call(-1);
      break;
    }
    children.push_back(pid);
  }
  std::printf("forked %zu\n", children.size());
  for (pid_t pid : children) kill(pid, SIGKILL);
  for (pid_t pid : children) waitpid(pid, nullptr, 0);
  return outcome;
}

const std::map<std::string, std::function<Outcome()>>& Probes() {
  static const auto* probes = new std::map<std::string, std::function<Outcome()>>{
      // Namespaces. Each with CLONE_NEWUSER, which an unprivileged process
      // may create, so that without the filter the call would succeed.
      {"clone_newuser", [] { return Clone(CLONE_NEWUSER); }},
      {"clone_newuser_newnet", [] { return Clone(CLONE_NEWUSER | CLONE_NEWNET); }},
      {"clone_newns", [] { return Clone(CLONE_NEWUSER | CLONE_NEWNS); }},
      {"clone_newpid", [] { return Clone(CLONE_NEWUSER | CLONE_NEWPID); }},
      {"clone_newipc", [] { return Clone(CLONE_NEWUSER | CLONE_NEWIPC); }},
      {"clone_newuts", [] { return Clone(CLONE_NEWUSER | CLONE_NEWUTS); }},
      {"clone_newcgroup", [] { return Clone(CLONE_NEWUSER | CLONE_NEWCGROUP); }},
      {"clone3_newuser", [] { return Clone3(CLONE_NEWUSER); }},
      {"unshare_newuser", [] { return Call(unshare(CLONE_NEWUSER)); }},
      {"unshare_newtime", [] { return Call(unshare(CLONE_NEWUSER | CLONE_NEWTIME)); }},
      // Unfiltered, an invalid descriptor gives EBADF.
      {"setns", [] { return Call(setns(-1, 0)); }},
      // Mounting. Unfiltered: ENOENT for a missing path, success for open_tree.
      {"mount", [] { return Call(mount("none", "/no-such-dir", "tmpfs", 0, nullptr)); }},
      {"umount2", [] { return Call(umount2("/no-such-dir", 0)); }},
      {"open_tree", [] { return Call(syscall(SYS_open_tree, AT_FDCWD, "/", 0)); }},
      {"mount_setattr", [] {
         struct mount_attr attr = {};
         return Call(syscall(SYS_mount_setattr, AT_FDCWD, "/no-such-dir", 0, &attr, sizeof attr));
       }},
      {"pivot_root", [] { return Call(syscall(SYS_pivot_root, "/no-such-dir", "/no-such-dir")); }},
      {"move_mount", [] { return Call(syscall(SYS_move_mount, -1, "", -1, "", 0)); }},
      {"fsopen", [] { return Call(syscall(SYS_fsopen, "tmpfs", 0)); }},
      {"fsconfig", [] { return Call(syscall(SYS_fsconfig, -1, 0, nullptr, nullptr, 0)); }},
      {"fsmount", [] { return Call(syscall(SYS_fsmount, -1, 0, 0)); }},
      {"fspick", [] { return Call(syscall(SYS_fspick, AT_FDCWD, "/no-such-dir", 0)); }},
      // Keyrings. Unfiltered: the session keyring's id, a new key, ENOKEY.
      {"keyctl", [] { return Call(syscall(SYS_keyctl, 0 /*KEYCTL_GET_KEYRING_ID*/, -3 /*session*/, 1)); }},
      {"add_key", [] { return Call(syscall(SYS_add_key, "user", "kiln-probe", "x", 1, -2 /*process*/)); }},
      {"request_key", [] { return Call(syscall(SYS_request_key, "user", "kiln-no-such-key", nullptr, 0)); }},
      // Kernel interfaces. Unfiltered: EINVAL/EACCES/success/EBADF.
      {"bpf", [] { return Call(syscall(SYS_bpf, 0 /*BPF_MAP_CREATE*/, nullptr, 0)); }},
      {"perf_event_open", [] { return Call(syscall(SYS_perf_event_open, nullptr, 0, -1, -1, 0)); }},
      {"userfaultfd", [] { return Call(syscall(SYS_userfaultfd, UFFD_USER_MODE_ONLY)); }},
      {"io_uring_setup", [] { return Call(syscall(SYS_io_uring_setup, 1, nullptr)); }},
      {"io_uring_enter", [] { return Call(syscall(SYS_io_uring_enter, -1, 0, 0, 0, nullptr, 0)); }},
      {"io_uring_register", [] { return Call(syscall(SYS_io_uring_register, -1, 0, nullptr, 0)); }},
      // Kernel code. These check CAP_SYS_MODULE/CAP_SYS_BOOT first, so they
      // fail with EPERM even unfiltered; the rules are there for the day a
      // capability leaks.
      {"kexec_load", [] { return Call(syscall(SYS_kexec_load, 0, 0, nullptr, 0)); }},
      {"kexec_file_load", [] { return Call(syscall(SYS_kexec_file_load, -1, -1, 0, nullptr, 0)); }},
      {"init_module", [] { return Call(syscall(SYS_init_module, nullptr, 0, "")); }},
      {"finit_module", [] { return Call(syscall(SYS_finit_module, -1, "", 0)); }},
      {"delete_module", [] { return Call(syscall(SYS_delete_module, "kiln-no-such-module", 0)); }},
      // Sockets. AF_PACKET needs CAP_NET_RAW even unfiltered; the netlink
      // families open for anyone; socketpair of them is EOPNOTSUPP.
      {"socket_packet", [] { return Socket(AF_PACKET, SOCK_RAW, 0); }},
      {"socket_packet_high_bits", [] {
         return Call(syscall(SYS_socket, (1ul << 32) | AF_PACKET, SOCK_RAW, 0));
       }},
      {"socket_netlink_netfilter", [] { return Socket(AF_NETLINK, SOCK_RAW, NETLINK_NETFILTER); }},
      {"socket_netlink_audit", [] { return Socket(AF_NETLINK, SOCK_RAW, NETLINK_AUDIT); }},
      {"socket_netlink_uevent", [] { return Socket(AF_NETLINK, SOCK_RAW, NETLINK_KOBJECT_UEVENT); }},
      {"socket_netlink_sock_diag", [] { return Socket(AF_NETLINK, SOCK_RAW, NETLINK_SOCK_DIAG); }},
      {"socketpair_packet", [] { return SocketPair(AF_PACKET, SOCK_RAW); }},
      {"socketpair_netlink", [] { return SocketPair(AF_NETLINK, SOCK_RAW); }},
      // Terminal input injection into a terminal on stdin, stdout or stderr.
      {"tiocsti", [] {
         for (int fd = 0; fd < 3; ++fd) {
           char c = 'x';
           if (isatty(fd)) return Call(ioctl(fd, TIOCSTI, &c));
         }
         return Outcome{-1, ENOTTY};
       }},
      // The controlling terminal: ENXIO when there is none.
      {"open_dev_tty", [] { return Call(open("/dev/tty", O_RDWR)); }},
      {"fork_many", ForkMany},
      // Must keep working.
      {"socket_netlink_route", [] { return Socket(AF_NETLINK, SOCK_RAW, NETLINK_ROUTE); }},
      {"socket_inet", InetLoopback},
      {"socketpair_unix", [] { return SocketPair(AF_UNIX, SOCK_STREAM); }},
      {"fork_exec", ForkExec},
      {"thread", Thread},
      {"getaddrinfo", GetAddrInfo},
      {"ptrace_traceme", [] { return Call(syscall(SYS_ptrace, 0 /*PTRACE_TRACEME*/, 0, 0, 0)); }},
#if defined(__x86_64__)
      // i386 numbers: getppid 64, keyctl 288, unshare 310, mount 21.
      {"i386_getppid", [] { return I386Call(64); }},
      {"i386_keyctl", [] { return I386Call(288, 0 /*KEYCTL_GET_KEYRING_ID*/, -3 /*session*/, 1); }},
      {"i386_unshare_newuser", [] { return I386Call(310, CLONE_NEWUSER); }},
      {"i386_mount", [] { return I386Call(21, 0, 0, 0); }},
#endif
  };
  return *probes;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2 || !Probes().count(argv[1])) {
    std::fprintf(stderr, "usage: syscall_probe NAME; names:");
    for (const auto& [name, probe] : Probes()) std::fprintf(stderr, " %s", name.c_str());
    std::fprintf(stderr, "\n");
    return 64;
  }
  const std::string name = argv[1];
  Outcome outcome = Probes().at(name)();
  if (outcome.result >= 0) {
    std::printf("%s allowed\n", name.c_str());
    return 1;
  }
  const int expected = name.rfind("clone3", 0) == 0 ? ENOSYS : name == "open_dev_tty" ? ENXIO
                       : name == "fork_many"    ? EAGAIN
                                                : EPERM;
  std::printf("%s %s %s\n", name.c_str(), outcome.error == expected ? "denied" : "failed",
              strerrorname_np(outcome.error));
  return outcome.error == expected ? 0 : 2;
}
