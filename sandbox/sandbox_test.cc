// kiln-sandbox, the real binary, one property per test. Every test runs as
// root and again unprivileged (setpriv to nobody, so the sandbox uses a user
// namespace), except where a property needs root (cgroup limits).
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <pty.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <termios.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <thread>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "common/posix.h"
#include "sandbox/cgroup_paths.h"
#include "sandbox/sandbox_proto.h"
#include "sandbox/sandbox_spec.h"
#include "tests/worker_process.h"

extern char** environ;

namespace kiln::sandbox {
namespace {

using kiln::testing::ProcessResult;
using kiln::testing::RunToCompletion;

enum class Mode { kRoot, kUnprivileged };

class SandboxTest : public ::testing::TestWithParam<Mode> {
 protected:
  void SetUp() override {
    std::string pattern = ::testing::TempDir() + "/kiln-sandbox-test-XXXXXX";
    dir_ = mkdtemp(pattern.data());
    chmod(dir_.c_str(), 0777);  // the unprivileged run writes its stats here
    work_ = dir_ + "/work";
    mkdir(work_.c_str(), 0777);
    chmod(work_.c_str(), 0777);
  }
  void TearDown() override {
    // Host mounts a test made, innermost first, before the tree goes.
    for (auto it = host_mounts_.rbegin(); it != host_mounts_.rend(); ++it) umount2(it->c_str(), MNT_DETACH);
    (void)RemoveTree(dir_);
  }

  // Mounts a tmpfs on `path` (created) on the host; TearDown unmounts it.
  void MountHostTmpfs(const std::string& path) {
    std::filesystem::create_directories(path);
    ASSERT_EQ(mount("tmpfs", path.c_str(), "tmpfs", 0, "mode=1777,size=1m"), 0) << strerror(errno);
    host_mounts_.push_back(path);
  }

  // --bind options for the default binds, to add more without losing them.
  static std::vector<std::string> DefaultBindOptions() {
    std::vector<std::string> options;
    for (const BindMount& bind : DefaultBinds()) options.push_back("--bind=" + bind.source);
    return options;
  }

  // What a client's inputs could plant in the work dir: /work/null, a
  // character device anyone may write, and /work/id, a setuid-root copy of
  // id(1).
  void PlantDeviceAndSetuidRootBinary() {
    ASSERT_EQ(mknod((work_ + "/null").c_str(), S_IFCHR | 0666, makedev(1, 3)), 0) << strerror(errno);
    chmod((work_ + "/null").c_str(), 0666);
    std::filesystem::copy_file("/usr/bin/id", work_ + "/id");
    ASSERT_EQ(chown((work_ + "/id").c_str(), 0, 0), 0);
    ASSERT_EQ(chmod((work_ + "/id").c_str(), 04755), 0);
  }

  bool Unprivileged() const { return GetParam() == Mode::kUnprivileged; }
  // What a worker prepares a warm sandbox with: the default binds, and the
  // action's files to come beneath dir_.
  v1::SandboxRequest PrepareBeneathDir() const {
    v1::SandboxRequest prepare;
    prepare.set_use_default_binds(true);
    prepare.set_work_dir_parent(dir_);
    return prepare;
  }

  // Runs `/bin/sh -c script` in a warm sandbox (kiln-sandbox --serve_fd,
  // prepared beneath dir_) with work_ as /work and stdout to dir_/out.
  // Defined after ServedSandbox.
  void RunInServedSandbox(const char* script, v1::SandboxResult* result);

  // Runs kiln-sandbox with `options` and the stats file, then `command`.
  ProcessResult Sandbox(std::vector<std::string> options, std::vector<std::string> command) {
    return RunToCompletion(SandboxArgv(std::move(options), std::move(command)));
  }
  std::vector<std::string> SandboxArgv(std::vector<std::string> options, std::vector<std::string> command) {
    std::vector<std::string> argv;
    if (Unprivileged()) {
      argv = {"/usr/bin/setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"};
    }
    const char* bin = getenv("KILN_BIN_DIR");
    argv.push_back(std::string(bin ? bin : "build/bin") + "/kiln-sandbox");
    argv.push_back("--stats_file=" + dir_ + "/stats.json");
    argv.push_back("--env=PATH=/usr/bin:/bin");
    argv.push_back("--work_dir=" + work_);
    argv.insert(argv.end(), options.begin(), options.end());
    argv.push_back("--");
    argv.insert(argv.end(), command.begin(), command.end());
    return argv;
  }
  ProcessResult Shell(const std::string& script, std::vector<std::string> options = {}) {
    return Sandbox(std::move(options), {"/bin/sh", "-c", script});
  }
  nlohmann::json Stats() {
    std::ifstream in(dir_ + "/stats.json");
    return nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
  }
  static std::vector<std::string> Lines(const std::string& text) {
    return absl::StrSplit(absl::StripTrailingAsciiWhitespace(text), '\n');
  }

  void CopyProbeToWork() {
    std::filesystem::copy_file(KILN_SYSCALL_PROBE, work_ + "/syscall_probe",
                               std::filesystem::copy_options::overwrite_existing);
    chmod((work_ + "/syscall_probe").c_str(), 0755);
  }

  // Runs the syscall probe once per name in one sandbox (copied into the
  // work dir) and expects each to exit with `expected`.
  void ExpectProbes(const std::vector<std::string>& names, int expected,
                    std::vector<std::string> options = {}) {
    CopyProbeToWork();
    std::string script;
    for (const std::string& name : names) {
      script += "/work/syscall_probe " + name + "; echo \"exit " + name + " $?\"; ";
    }
    auto r = Shell(script, std::move(options));
    ASSERT_EQ(r.exit_code, 0) << r.stderr_text;
    std::map<std::string, int> codes;
    for (const std::string& line : Lines(r.stdout_text)) {
      std::vector<std::string> parts = absl::StrSplit(line, ' ');
      if (parts.size() == 3 && parts[0] == "exit") codes[parts[1]] = std::stoi(parts[2]);
    }
    for (const std::string& name : names) {
      ASSERT_TRUE(codes.count(name)) << name << "\n" << r.stdout_text << r.stderr_text;
      EXPECT_EQ(codes[name], expected) << name << ":\n" << r.stdout_text << r.stderr_text;
    }
  }

  std::string dir_;
  std::string work_;
  std::vector<std::string> host_mounts_;
};

TEST_P(SandboxTest, ActionIsPid2UnderAnInitAtPid1AndSeesOnlyTheSandbox) {
  auto r = Shell("echo $$; cat /proc/1/comm; ls -d /proc/[0-9]* | wc -l");
  ASSERT_EQ(r.exit_code, 0) << r.stderr_text;
  auto lines = Lines(r.stdout_text);
  ASSERT_EQ(lines.size(), 3u) << r.stdout_text;
  EXPECT_EQ(lines[0], "2");
  EXPECT_EQ(lines[1], "kiln-sandbox");
  // init, sh, and the pipeline's ls and wc: nothing of the host.
  EXPECT_LE(std::stoi(lines[2]), 4) << r.stdout_text;
}

TEST_P(SandboxTest, NetworkHasOnlyLoopbackUpAndCannotReachHostListeners) {
  int listener = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(bind(listener, reinterpret_cast<sockaddr*>(&address), sizeof address), 0);
  socklen_t length = sizeof address;
  getsockname(listener, reinterpret_cast<sockaddr*>(&address), &length);
  ASSERT_EQ(listen(listener, 8), 0);
  const std::string port = std::to_string(ntohs(address.sin_port));
  const std::string probe = "exec 3<>/dev/tcp/127.0.0.1/" + port + " && echo connected";

  auto links = Shell("ip -o link show");
  ASSERT_EQ(links.exit_code, 0) << links.stderr_text;
  auto lines = Lines(links.stdout_text);
  ASSERT_EQ(lines.size(), 1u) << links.stdout_text;
  EXPECT_NE(lines[0].find(": lo:"), std::string::npos);
  EXPECT_NE(lines[0].find("UP"), std::string::npos);

  auto isolated = Sandbox({}, {"/bin/bash", "-c", probe});
  EXPECT_NE(isolated.exit_code, 0);
  EXPECT_EQ(isolated.stdout_text, "");
  // The same probe with the host network (opt-in, allowed) connects: the
  // test above would notice if isolation broke.
  auto shared = Sandbox({"--share_network", "--allow_host_network"}, {"/bin/bash", "-c", probe});
  EXPECT_EQ(shared.exit_code, 0) << shared.stderr_text;
  EXPECT_EQ(shared.stdout_text, "connected\n");
  close(listener);
}

TEST_P(SandboxTest, HostnameAndDomainNameAreSet) {
  auto defaults = Shell("hostname; cat /proc/sys/kernel/domainname");
  ASSERT_EQ(defaults.exit_code, 0) << defaults.stderr_text;
  EXPECT_EQ(defaults.stdout_text, "localhost\n(none)\n");
  auto custom = Shell("hostname; cat /proc/sys/kernel/domainname",
                      {"--hostname=builder", "--domainname=example.test"});
  EXPECT_EQ(custom.stdout_text, "builder\nexample.test\n");
}

TEST_P(SandboxTest, HostFilesOutsideBindsAreInvisibleAndBindsAreReadOnly) {
  std::ofstream(dir_ + "/secret") << "host secret";
  chmod((dir_ + "/secret").c_str(), 0644);
  auto r = Shell("ls /; test -e " + dir_ + "/secret && echo LEAK; test -e /etc/shadow && echo LEAK;"
                 "touch /usr/kiln-probe 2>/dev/null && echo WROTE-USR;"
                 "touch /kiln-probe 2>/dev/null && echo WROTE-ROOT;"
                 "touch /tmp/ok /work/ok && echo tmp-and-work-writable");
  ASSERT_EQ(r.exit_code, 0) << r.stderr_text;
  std::set<std::string> top;
  for (const std::string& line : Lines(r.stdout_text)) top.insert(line);
  EXPECT_FALSE(top.count("LEAK")) << r.stdout_text;
  EXPECT_FALSE(top.count("WROTE-USR"));
  EXPECT_FALSE(top.count("WROTE-ROOT"));
  EXPECT_TRUE(top.count("tmp-and-work-writable"));
  EXPECT_FALSE(top.count("home"));
  EXPECT_FALSE(top.count("root"));
  EXPECT_FALSE(std::filesystem::exists("/usr/kiln-probe"));
  EXPECT_TRUE(std::filesystem::exists(work_ + "/ok"));  // /work is the host work dir
}

TEST_P(SandboxTest, EtcIsSynthesizedAndDevIsMinimal) {
  auto r = Shell("cat /etc/passwd; ls /etc; ls /dev; ls /dev/pts; touch /dev/shm/x && echo shm-ok;"
                 "cat /etc/hosts | head -1");
  ASSERT_EQ(r.exit_code, 0) << r.stderr_text;
  EXPECT_NE(r.stdout_text.find("kiln:x:"), std::string::npos);
  EXPECT_EQ(r.stdout_text.find("_apt"), std::string::npos) << "host passwd leaked";
  for (const char* dev : {"null", "zero", "full", "random", "urandom", "tty", "pts", "shm", "ptmx"}) {
    EXPECT_NE(r.stdout_text.find(std::string("\n") + dev + "\n"), std::string::npos) << dev;
  }
  EXPECT_EQ(r.stdout_text.find("\nsda"), std::string::npos);
  EXPECT_EQ(r.stdout_text.find("\nvda"), std::string::npos);
  EXPECT_NE(r.stdout_text.find("shm-ok"), std::string::npos);
  EXPECT_NE(r.stdout_text.find("127.0.0.1 localhost"), std::string::npos);
}

TEST_P(SandboxTest, NoInheritedDescriptorIsOpenInside) {
  int leaked = open("/etc/hostname", O_RDONLY);  // deliberately inheritable
  ASSERT_GE(leaked, 3);
  auto r = Shell("ls /proc/self/fd");
  close(leaked);
  ASSERT_EQ(r.exit_code, 0) << r.stderr_text;
  // 0-2, plus the directory ls itself is reading.
  EXPECT_EQ(Lines(r.stdout_text), (std::vector<std::string>{"0", "1", "2", "3"}));
}

TEST_P(SandboxTest, EnvironmentIsExactlyWhatWasGivenAndNoPathIsAdded) {
  std::vector<std::string> argv;
  auto r = Sandbox({"--env=ALPHA=1", "--env=BETA=two words"}, {"/usr/bin/env"});
  ASSERT_EQ(r.exit_code, 0) << r.stderr_text;
  EXPECT_EQ(r.stdout_text, "ALPHA=1\nBETA=two words\nPATH=/usr/bin:/bin\n");
  // Without PATH: nothing is added (neither the host's PATH nor a dummy);
  // the command is still found, and a shell uses its built-in default path,
  // as Bazel rules without use_default_shell_env rely on.
  const char* bin = getenv("KILN_BIN_DIR");
  auto run = [&](std::vector<std::string> options, std::vector<std::string> command) {
    std::vector<std::string> argv2;
    if (Unprivileged()) argv2 = {"/usr/bin/setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"};
    argv2.push_back(std::string(bin ? bin : "build/bin") + "/kiln-sandbox");
    argv2.insert(argv2.end(), options.begin(), options.end());
    argv2.push_back("--");
    argv2.insert(argv2.end(), command.begin(), command.end());
    return RunToCompletion(argv2);
  };
  auto bare = run({"--env=ONLY=this"}, {"env"});
  EXPECT_EQ(bare.stdout_text, "ONLY=this\n") << bare.stderr_text;
  auto shell = run({}, {"sh", "-c", "mkdir /tmp/made && echo found"});
  EXPECT_EQ(shell.stdout_text, "found\n") << shell.stderr_text;
  // Nix's policy on request: a dummy PATH, so nothing is found by name.
  auto nix = run({"--env=ONLY=this", "--path_when_unset=/path-not-set"}, {"/usr/bin/env"});
  EXPECT_EQ(nix.stdout_text, "ONLY=this\nPATH=/path-not-set\n");
}

TEST_P(SandboxTest, RunsAsTheBuildUserWithNoCapabilitiesAndNoNewPrivs) {
  auto r = Shell("id -u; id -g; grep -E '^(CapInh|CapPrm|CapEff|CapBnd|CapAmb|NoNewPrivs)' "
                 "/proc/self/status; umask");
  ASSERT_EQ(r.exit_code, 0) << r.stderr_text;
  auto lines = Lines(r.stdout_text);
  ASSERT_EQ(lines.size(), 9u) << r.stdout_text;
  // A uid of the pool (61000..61063): other sandboxes may hold the first ones.
  const int uid = std::stoi(lines[0]);
  EXPECT_GE(uid, 61000);
  EXPECT_LT(uid, 61064);
  EXPECT_EQ(lines[1], lines[0]);
  EXPECT_EQ(Stats()["uid"], uid);
  for (int i = 2; i < 7; ++i) EXPECT_NE(lines[i].find("0000000000000000"), std::string::npos) << lines[i];
  EXPECT_EQ(lines[7], "NoNewPrivs:\t1");
  EXPECT_EQ(lines[8], "0022");
  EXPECT_EQ(Stats()["user_namespace"], Unprivileged());
}

TEST_P(SandboxTest, OrphansAreReapedAndCounted) {
  // Each (true &) hands a process to PID 1, whether it exits before or
  // after its subshell; the sleep gives PID 1 time to reap them.
  auto r = Shell("(true &); (true &); (true &); sleep 1");
  ASSERT_EQ(r.exit_code, 0) << r.stderr_text;
  EXPECT_EQ(Stats()["orphans_reaped"], 3);
}

TEST_P(SandboxTest, ADaemonizedGrandchildDoesNotSurviveTheRun) {
  const std::string marker = absl::StrCat("1000.", getpid(), "7");
  auto r = Shell("setsid sleep " + marker + " > /dev/null 2>&1 & sleep 0.2; exit 0");
  ASSERT_EQ(r.exit_code, 0) << r.stderr_text;
  EXPECT_EQ(Stats()["killed_at_teardown"], 1);
  // Nothing on the host runs the marker command any more.
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  for (const auto& entry : std::filesystem::directory_iterator("/proc")) {
    std::ifstream cmdline(entry.path() / "cmdline");
    std::string text((std::istreambuf_iterator<char>(cmdline)), std::istreambuf_iterator<char>());
    EXPECT_EQ(text.find(marker), std::string::npos) << "survivor: " << entry.path();
  }
}

TEST_P(SandboxTest, ExitCodesAndSignalsPassThrough) {
  EXPECT_EQ(Shell("exit 3").exit_code, 3);
  EXPECT_EQ(Shell("kill -SEGV $$").exit_code, 128 + SIGSEGV);
  EXPECT_EQ(Stats()["signal"], SIGSEGV);
  auto missing = Sandbox({}, {"/no/such/program"});
  EXPECT_EQ(missing.exit_code, 127);
  EXPECT_NE(missing.stderr_text.find("cannot execute /no/such/program"), std::string::npos)
      << missing.stderr_text;
}

// PID 2 prepares the action in PID 1's memory (clone with CLONE_VM): a step
// that fails there still ends the run with its own error, and PID 1 goes on
// to report it instead of taking it for an exec.
TEST_P(SandboxTest, AFailedStepBeforeTheExecIsReportedAsSetupFailure) {
  auto r = Sandbox({"--cwd=no/such/dir"}, {"/bin/true"});
  EXPECT_EQ(r.exit_code, 71) << r.stderr_text;
  EXPECT_NE(r.stderr_text.find("chdir /work/no/such/dir: No such file or directory"), std::string::npos)
      << r.stderr_text;
  // The next run is unaffected.
  EXPECT_EQ(Shell("exit 4").exit_code, 4);
}

// Found by fuzz/sandbox_spec_fuzzer (corpus file
// regression-exec-error-not-utf8): the stats file quotes argv[0] in
// exec_error, and a name that is not UTF-8 made the JSON writer throw, which
// ended kiln-sandbox (SIGABRT) with no stats file.
TEST_P(SandboxTest, AProgramNameThatIsNotUtf8StillGetsAStatsFile) {
  auto r = Sandbox({}, {"/no/such/\xff\xfeprogram"});
  EXPECT_EQ(r.exit_code, 127) << r.stderr_text;
  nlohmann::json stats = Stats();
  ASSERT_TRUE(stats.is_object()) << r.stderr_text;
  EXPECT_NE(stats["exec_error"].get<std::string>().find("program"), std::string::npos);
}

TEST_P(SandboxTest, TimeoutKillsAProcessThatIgnoresSigterm) {
  auto start = std::chrono::steady_clock::now();
  auto r = Shell("trap '' TERM; while :; do sleep 0.1; done", {"--timeout=0.5s", "--kill_grace=0.5s"});
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_EQ(r.exit_code, 128 + SIGKILL);
  EXPECT_TRUE(Stats()["timed_out"].get<bool>());
  EXPECT_LT(seconds, 5.0);
  // With --stats_file the report carries it; CMD's stderr stays CMD's own.
  EXPECT_EQ(r.stderr_text.find("timed out"), std::string::npos) << r.stderr_text;
  // Without one (kiln-sandbox used by hand), it says so on stderr.
  const char* bin = getenv("KILN_BIN_DIR");
  std::vector<std::string> argv;
  if (Unprivileged()) argv = {"/usr/bin/setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"};
  argv.push_back(std::string(bin ? bin : "build/bin") + "/kiln-sandbox");
  argv.insert(argv.end(), {"--timeout=0.3s", "--kill_grace=0.2s", "--", "/bin/sleep", "10"});
  auto by_hand = RunToCompletion(argv);
  EXPECT_NE(by_hand.stderr_text.find("kiln-sandbox: timed out after 300ms"), std::string::npos)
      << by_hand.stderr_text;
}

TEST_P(SandboxTest, SigtermToTheLauncherReachesTheAction) {
  const char* bin = getenv("KILN_BIN_DIR");
  std::vector<std::string> argv = {"/usr/bin/timeout", "--preserve-status", "-s", "TERM", "1"};
  if (Unprivileged()) argv.insert(argv.end(), {"/usr/bin/setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"});
  argv.push_back(std::string(bin ? bin : "build/bin") + "/kiln-sandbox");
  argv.insert(argv.end(), {"--env=PATH=/usr/bin:/bin", "--", "/bin/sh", "-c",
                           "trap 'echo got-term; exit 42' TERM; sleep 10 & wait"});
  auto r = RunToCompletion(argv);
  EXPECT_EQ(r.exit_code, 42) << r.stderr_text;
  EXPECT_EQ(r.stdout_text, "got-term\n");
}

TEST_P(SandboxTest, PersonalityOptions) {
  auto r = Shell("uname -r; uname -m", {"--uname26", "--linux32"});
  ASSERT_EQ(r.exit_code, 0) << r.stderr_text;
  auto lines = Lines(r.stdout_text);
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_EQ(lines[0].rfind("2.6.", 0), 0u) << lines[0];
  EXPECT_EQ(lines[1], "i686");
}

// "No way out" #2: the seccomp filter is on by default. Each test runs
// testdata/syscall_probe inside: exit 0 = denied with the filter's errno,
// 1 = allowed, 2 = failed some other way (the unfiltered kernel's answer).
TEST_P(SandboxTest, SeccompDeniesNestedNamespaces) {
  // The reproduced bypass: a nested user namespace has every capability over
  // its own network namespace (nf_tables, AF_PACKET).
  auto shell = Shell("unshare -Ur true && echo allowed; unshare -Urn true && echo allowed");
  EXPECT_EQ(shell.stdout_text, "") << shell.stderr_text;
  EXPECT_NE(shell.stderr_text.find("Operation not permitted"), std::string::npos) << shell.stderr_text;
  ExpectProbes({"clone_newuser", "clone_newuser_newnet", "clone_newns", "clone_newpid", "clone_newipc",
                "clone_newuts", "clone_newcgroup", "clone3_newuser", "unshare_newuser",
                "unshare_newtime", "setns"},
               0);
}

TEST_P(SandboxTest, AllowNestedSandboxPermitsNamespacesAndMountsInThemOnly) {
  // A nested sandbox creates namespaces and mounts inside them.
  auto shell = Shell("unshare -Urm sh -c 'mount -t tmpfs none /tmp && echo mounted'",
                     {"--allow_nested_sandbox"});
  EXPECT_EQ(shell.stdout_text, "mounted\n") << shell.stderr_text;
  auto denied = Shell("unshare -Urm sh -c 'mount -t tmpfs none /tmp && echo mounted'");
  EXPECT_EQ(denied.stdout_text, "") << denied.stderr_text;
  // In the sandbox's own namespaces the action has no capability: mounting
  // there still fails, and everything else stays denied.
  auto outer = Shell("mount -t tmpfs none /tmp && echo mounted", {"--allow_nested_sandbox"});
  EXPECT_EQ(outer.stdout_text, "") << outer.stderr_text;
  ExpectProbes({"clone_newuser_newnet", "unshare_newuser"}, 1, {"--allow_nested_sandbox"});
  ExpectProbes({"clone3_newuser", "keyctl", "socket_packet", "socket_netlink_netfilter"}, 0,
               {"--allow_nested_sandbox"});
}

TEST_P(SandboxTest, SeccompDeniesMountCalls) {
  ExpectProbes({"mount", "umount2", "open_tree", "mount_setattr", "pivot_root", "move_mount", "fsopen",
                "fsconfig", "fsmount", "fspick"},
               0);
}

TEST_P(SandboxTest, SeccompDeniesKeyrings) {
  ExpectProbes({"keyctl", "add_key", "request_key"}, 0);
}

TEST_P(SandboxTest, SeccompDeniesBpfPerfUserfaultfdAndIoUring) {
  ExpectProbes({"bpf", "perf_event_open", "userfaultfd", "io_uring_setup", "io_uring_enter",
                "io_uring_register"},
               0);
}

TEST_P(SandboxTest, SeccompDeniesLoadingKernelCode) {
  ExpectProbes({"kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module"}, 0);
}

TEST_P(SandboxTest, SeccompDeniesPacketAndNetlinkSocketsButRoute) {
  ExpectProbes({"socket_packet", "socket_packet_high_bits", "socket_netlink_netfilter",
                "socket_netlink_audit", "socket_netlink_uevent", "socket_netlink_sock_diag",
                "socketpair_packet", "socketpair_netlink"},
               0);
  ExpectProbes({"socket_netlink_route"}, 1);
}

#if defined(__x86_64__)
// The 32-bit x86 entry has other syscall numbers; the same rules hold there
// (the filter has a section per architecture, laid out as a binary tree).
TEST_P(SandboxTest, SeccompHoldsForThe32BitSyscallEntry) {
  ExpectProbes({"i386_keyctl", "i386_unshare_newuser", "i386_mount"}, 0);
  ExpectProbes({"i386_getppid"}, 1);
}
#endif

// What builds do must survive the filter, also in 32-bit personality. (No
// 32-bit binaries exist on the test machine; --linux32 runs 64-bit ones.)
TEST_P(SandboxTest, OrdinaryCallsWorkUnderSeccomp) {
  const std::vector<std::string> ordinary = {"fork_exec", "thread", "getaddrinfo", "socket_inet",
                                             "socketpair_unix", "socket_netlink_route",
                                             "ptrace_traceme"};
  ExpectProbes(ordinary, 1);
  ExpectProbes(ordinary, 1, {"--linux32"});
  // The old opt-in flag is still accepted (the filter is always on).
  ExpectProbes({"mount"}, 0, {"--seccomp"});
}

// kiln-sandbox --serve_fd, as the worker drives it (proto/kiln/sandbox/v1/
// sandbox.proto): prepared first, then one action, answered once the
// action's processes are gone; an action the sandbox was not prepared for
// is refused without running.
class ServedSandbox {
 public:
  explicit ServedSandbox(bool unprivileged) {
    int pair[2];
    EXPECT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair), 0);
    socket_ = UniqueFd(pair[0]);
    std::vector<std::string> argv;
    if (unprivileged) argv = {"/usr/bin/setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"};
    const char* bin = getenv("KILN_BIN_DIR");
    argv.push_back(std::string(bin ? bin : "build/bin") + "/kiln-sandbox");
    argv.push_back("--serve_fd=3");
    std::vector<char*> args;
    for (std::string& a : argv) args.push_back(a.data());
    args.push_back(nullptr);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, pair[1], 3);
    EXPECT_EQ(posix_spawn(&pid_, args[0], &actions, nullptr, args.data(), environ), 0);
    posix_spawn_file_actions_destroy(&actions);
    close(pair[1]);
  }
  ~ServedSandbox() { Wait(); }
  // Closes the socket (a waiting kiln-sandbox ends when it closes) and
  // reaps kiln-sandbox; returns its wait status.
  int Wait() {
    socket_.Reset();
    if (!reaped_) {
      waitpid(pid_, &status_, 0);
      reaped_ = true;
    }
    return status_;
  }
  int fd() const { return socket_.get(); }
  pid_t pid() const { return pid_; }

 private:
  UniqueFd socket_;
  pid_t pid_ = -1;
  bool reaped_ = false;
  int status_ = 0;
};

TEST_P(SandboxTest, ServeModeRunsOneActionOverTheSocket) {
  v1::SandboxRequest prepare = PrepareBeneathDir();
  ServedSandbox served(Unprivileged());
  ASSERT_TRUE(WriteMessage(served.fd(), prepare).ok());
  for (const char* name : {"/out", "/err"}) {
    ASSERT_TRUE(OpenFile(dir_ + name, O_WRONLY | O_CREAT, 0666).ok());
    chmod((dir_ + name).c_str(), 0666);
  }
  v1::SandboxRequest action = prepare;
  for (const char* arg : {"/bin/sh", "-c", "echo out; echo err >&2; hostname; pwd; sleep 30 & exit 3"}) {
    action.add_argv(arg);
  }
  action.set_work_dir(work_);
  action.set_stdout_path(dir_ + "/out");
  action.set_stderr_path(dir_ + "/err");
  ASSERT_TRUE(WriteMessage(served.fd(), action).ok());
  v1::SandboxResult result;
  ASSERT_TRUE(ReadMessage(served.fd(), &result).ok());
  ASSERT_EQ(result.error_code(), 0) << result.error_message();
  EXPECT_EQ(result.exit_code(), 3);
  EXPECT_EQ(result.killed_at_teardown(), 1);  // the sleep, gone before the answer
  EXPECT_EQ(*ReadFileToString(dir_ + "/out"), "out\nlocalhost\n/work\n");
  EXPECT_EQ(*ReadFileToString(dir_ + "/err"), "err\n");
  const auto& t = result.stages();
  EXPECT_GT(t.request(), 0);
  EXPECT_GE(t.exec(), t.request());
  EXPECT_GE(t.tree_gone(), t.action_exited());
  EXPECT_GE(t.action_exited(), t.exec());
  // One action per sandbox: the socket is closed after the answer.
  EXPECT_EQ(ReadMessage(served.fd(), &result).code(), absl::StatusCode::kNotFound);
}

void SandboxTest::RunInServedSandbox(const char* script, v1::SandboxResult* result) {
  v1::SandboxRequest prepare = PrepareBeneathDir();
  ServedSandbox served(Unprivileged());
  ASSERT_TRUE(WriteMessage(served.fd(), prepare).ok());
  ASSERT_TRUE(OpenFile(dir_ + "/out", O_WRONLY | O_CREAT, 0666).ok());
  chmod((dir_ + "/out").c_str(), 0666);
  v1::SandboxRequest action = prepare;
  for (const char* arg : {"/bin/sh", "-c", script}) action.add_argv(arg);
  action.set_work_dir(work_);
  action.set_stdout_path(dir_ + "/out");
  ASSERT_TRUE(WriteMessage(served.fd(), action).ok());
  ASSERT_TRUE(ReadMessage(served.fd(), result).ok());
}

// The same "No way out" #1 for a warm sandbox, whose /work is the launcher's
// clone of the work dir's mount: nosuid and nodev, and private, so that
// nothing mounted on the host beneath the work dir later shows up inside.
TEST_P(SandboxTest, ServeModeWorkDirIsNosuidNodevAndPrivate) {
  ASSERT_NO_FATAL_FAILURE(PlantDeviceAndSetuidRootBinary());
  // The work dir on a shared mount of its own on the host, as on a host
  // whose mounts systemd made shared.
  ASSERT_EQ(mount(work_.c_str(), work_.c_str(), nullptr, MS_BIND, nullptr), 0) << strerror(errno);
  host_mounts_.push_back(work_);
  ASSERT_EQ(mount(nullptr, work_.c_str(), nullptr, MS_SHARED, nullptr), 0) << strerror(errno);
  v1::SandboxResult result;
  ASSERT_NO_FATAL_FAILURE(RunInServedSandbox("echo x > /work/null 2>/dev/null && echo DEVICE-OPENED; /work/id -u;"
                                             "grep -E '^([^ ]+ ){4}/work ' /proc/self/mountinfo",
                                             &result));
  ASSERT_EQ(result.error_code(), 0) << result.error_message();
  ASSERT_EQ(result.exit_code(), 0);
  auto lines = Lines(*ReadFileToString(dir_ + "/out"));
  ASSERT_EQ(lines.size(), 2u) << *ReadFileToString(dir_ + "/out");
  EXPECT_NE(std::stoi(lines[0]), 0) << "a setuid-root binary in /work gave euid 0";
  // mountinfo: ID PARENT DEV ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - ...
  std::vector<std::string> fields = absl::StrSplit(lines[1], ' ');
  ASSERT_GT(fields.size(), 7u) << lines[1];
  EXPECT_NE(fields[5].find("nosuid"), std::string::npos) << lines[1];
  EXPECT_NE(fields[5].find("nodev"), std::string::npos) << lines[1];
  EXPECT_EQ(fields[6], "-") << "/work propagates mounts (" << fields[6] << "): " << lines[1];
}

// What /proc/PID/fd/N links to, for each of the process's descriptors.
std::map<int, std::string> DescriptorLinks(pid_t pid) {
  std::map<int, std::string> links;
  std::error_code error;
  for (const auto& entry : std::filesystem::directory_iterator(absl::StrCat("/proc/", pid, "/fd"), error)) {
    std::string link = std::filesystem::read_symlink(entry.path(), error).string();
    if (!error) links[std::stoi(entry.path().filename().string())] = link;
  }
  return links;
}

// PID 1 of a waiting sandbox holds none of its launcher's descriptors. With
// the launcher's end of the request socket, a launcher killed before PID 1
// set its parent-death signal (a worker SIGKILLed while starting a warm
// sandbox) left PID 1 blocked forever outside any worker, holding both ends.
TEST_P(SandboxTest, AWaitingSandboxInitHoldsNoneOfItsLaunchersDescriptors) {
  v1::SandboxRequest prepare = PrepareBeneathDir();
  ServedSandbox served(Unprivileged());
  ASSERT_TRUE(WriteMessage(served.fd(), prepare).ok());
  // PID 1 is the launcher's only child; wait until it sleeps reading its
  // request socket (the go byte or the action).
  const pid_t launcher = served.pid();
  pid_t init = -1;
  for (int i = 0; i < 1000; ++i) {
    std::string children =
        ReadFileToString(absl::StrCat("/proc/", launcher, "/task/", launcher, "/children")).value_or("");
    if (!children.empty() && std::stoi(children) > 0) {
      init = std::stoi(children);
      std::string wchan = ReadFileToString(absl::StrCat("/proc/", init, "/wchan")).value_or("");
      if (absl::StrContains(wchan, "unix_stream")) break;
    }
    init = -1;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_GT(init, 0) << "the sandbox's PID 1 never waited for its request";
  std::map<int, std::string> launcher_links = DescriptorLinks(launcher);
  std::set<std::string> launcher_sockets;
  for (const auto& [fd, link] : launcher_links) {
    if (absl::StartsWith(link, "socket:")) launcher_sockets.insert(link);
  }
  ASSERT_FALSE(launcher_sockets.empty());  // the worker's and the request socket
  std::map<int, std::string> init_links = DescriptorLinks(init);
  ASSERT_FALSE(init_links.empty());
  for (const auto& [fd, link] : init_links) {
    EXPECT_FALSE(launcher_sockets.count(link)) << "PID 1 holds the launcher's " << link << " as fd " << fd;
    EXPECT_EQ(link.find("signalfd"), std::string::npos) << "PID 1 holds the launcher's signalfd as fd " << fd;
    if (absl::StartsWith(link, "pipe:")) {
      // Only the write end of the report pipe: the read end is the launcher's.
      std::string fdinfo = ReadFileToString(absl::StrCat("/proc/", init, "/fdinfo/", fd)).value_or("");
      size_t flags_at = fdinfo.find("flags:");
      ASSERT_NE(flags_at, std::string::npos);
      int flags = std::stoi(fdinfo.substr(flags_at + 6), nullptr, 8);
      EXPECT_EQ(flags & O_ACCMODE, O_WRONLY) << "PID 1 holds the read end of " << link << " as fd " << fd;
    }
  }
}

// A warm sandbox's PID 1 blanks its arguments too: they name the host path
// of kiln-sandbox.
TEST_P(SandboxTest, ServeModeProcOneCmdlineShowsOnlyAName) {
  v1::SandboxResult result;
  ASSERT_NO_FATAL_FAILURE(RunInServedSandbox("tr '\\0' ' ' < /proc/1/cmdline", &result));
  ASSERT_EQ(result.exit_code(), 0) << result.error_message();
  const std::string cmdline = *ReadFileToString(dir_ + "/out");
  EXPECT_EQ(cmdline.find("serve_fd"), std::string::npos) << cmdline;
  EXPECT_EQ(absl::StripTrailingAsciiWhitespace(cmdline), "kiln-sandbox");
}

TEST_P(SandboxTest, ServeModeRefusesAnActionItWasNotPreparedFor) {
  v1::SandboxRequest prepare;
  prepare.set_use_default_binds(true);
  ServedSandbox served(Unprivileged());
  ASSERT_TRUE(WriteMessage(served.fd(), prepare).ok());
  v1::SandboxRequest action = prepare;
  for (const char* arg : {"/bin/sh", "-c", "touch /work/ran"}) action.add_argv(arg);
  action.set_work_dir(work_);
  action.set_share_network(true);  // the prepared sandbox has its own network
  action.set_allow_host_network(true);
  ASSERT_TRUE(WriteMessage(served.fd(), action).ok());
  v1::SandboxResult result;
  ASSERT_TRUE(ReadMessage(served.fd(), &result).ok());
  EXPECT_EQ(result.error_code(), static_cast<int>(absl::StatusCode::kFailedPrecondition)) << result.error_message();
  EXPECT_FALSE(std::filesystem::exists(work_ + "/ran"));
}

TEST_P(SandboxTest, StatsFileHasStageTimesAndRusage) {
  ASSERT_EQ(Shell("head -c 1000000 /dev/urandom | sha256sum > /dev/null").exit_code, 0);
  nlohmann::json stats = Stats();
  ASSERT_FALSE(stats.is_discarded());
  const auto& stages = stats["stages_seconds"];
  EXPECT_GT(stages["namespaces"].get<double>(), 0);
  EXPECT_GE(stages["root"].get<double>(), stages["namespaces"].get<double>());
  EXPECT_GE(stages["exec"].get<double>(), stages["network"].get<double>());
  EXPECT_GE(stats["wall_time_seconds"].get<double>(), stages["exec"].get<double>());
  EXPECT_GT(stats["rusage"]["user_cpu_seconds"].get<double>() +
                stats["rusage"]["system_cpu_seconds"].get<double>(), 0);
  EXPECT_GT(stats["peak_memory_bytes"].get<int64_t>(), 0);
  EXPECT_EQ(stats["exit_code"], 0);
}

TEST_P(SandboxTest, BadOptionsGetDistinctExitCodesAndNothingRuns) {
  const std::string marker = "touch /work/ran";
  auto relative = Shell(marker, {"--bind=relative/path"});
  EXPECT_EQ(relative.exit_code, 64);
  EXPECT_NE(relative.stderr_text.find("absolute"), std::string::npos) << relative.stderr_text;
  auto missing = Shell(marker, {"--bind=/no/such/dir"});
  EXPECT_EQ(missing.exit_code, 66);
  EXPECT_NE(missing.stderr_text.find("does not exist"), std::string::npos);
  auto unknown = Shell(marker, {"--frobnicate"});
  EXPECT_EQ(unknown.exit_code, 64);
  EXPECT_NE(unknown.stderr_text.find("--frobnicate"), std::string::npos);
  auto impossible = Shell(marker, {"--memory=1KiB"});
  EXPECT_EQ(impossible.exit_code, 64);
  EXPECT_NE(impossible.stderr_text.find("impossible"), std::string::npos);
  auto too_many_cpus = Shell(marker, {"--cpus=1e300"});
  EXPECT_EQ(too_many_cpus.exit_code, 64);
  EXPECT_NE(too_many_cpus.stderr_text.find("impossible"), std::string::npos) << too_many_cpus.stderr_text;
  auto network = Shell(marker, {"--share_network"});
  EXPECT_EQ(network.exit_code, 64);
  EXPECT_NE(network.stderr_text.find("allow_host_network"), std::string::npos);
  EXPECT_FALSE(std::filesystem::exists(work_ + "/ran"));
}

// "No way out" #1: a bind with MS_REC copies the host's sub-mounts; a plain
// read-only remount changes only the top one and left them writable.
TEST_P(SandboxTest, MountsBelowAReadOnlyBindAreReadOnlyToo) {
  const std::string ro = dir_ + "/ro";
  MountHostTmpfs(ro + "/sub");
  std::vector<std::string> options = DefaultBindOptions();
  options.push_back("--bind=" + ro + ":/ro");
  auto r = Shell("echo x > /ro/sub/f && echo WROTE-SUB-MOUNT; echo x > /ro/f && echo WROTE-TOP; "
                 "test -d /ro/sub && echo sub-visible", options);
  EXPECT_EQ(r.stdout_text, "sub-visible\n") << r.stderr_text;
  EXPECT_NE(r.stderr_text.find("Read-only file system"), std::string::npos) << r.stderr_text;
  EXPECT_FALSE(std::filesystem::exists(ro + "/sub/f"));
}

// "No way out" #1: the writable /work bind is nosuid and nodev, sub-mounts
// included. A device node or a setuid-root binary planted in the work dir
// (inputs come from clients) must give the action nothing.
TEST_P(SandboxTest, WorkDirIsNosuidAndNodev) {
  ASSERT_NO_FATAL_FAILURE(PlantDeviceAndSetuidRootBinary());
  MountHostTmpfs(work_ + "/sub");
  auto r = Shell("echo x > /work/null && echo DEVICE-OPENED; /work/id -u;"
                 "grep -E '^([^ ]+ ){4}/work(/sub)? ' /proc/self/mountinfo | cut -d' ' -f5,6");
  ASSERT_EQ(r.exit_code, 0) << r.stderr_text;
  auto lines = Lines(r.stdout_text);
  ASSERT_EQ(lines.size(), 3u) << r.stdout_text;
  EXPECT_NE(lines[0], "0") << "a setuid-root binary in /work gave euid 0";
  EXPECT_NE(std::stoi(lines[0]), 0);
  for (int i = 1; i < 3; ++i) {
    EXPECT_NE(lines[i].find("nosuid"), std::string::npos) << lines[i];
    EXPECT_NE(lines[i].find("nodev"), std::string::npos) << lines[i];
  }
  EXPECT_NE(r.stderr_text.find("Permission denied"), std::string::npos) << r.stderr_text;
}

// "No way out" #5: the build user is never root, and limits are numbers.
TEST_P(SandboxTest, RootIdsAndNonFiniteCpuLimitsAreRefused) {
  for (const char* option : {"--uid=0", "--gid=0", "--cpus=nan", "--cpus=inf", "--cpus=-1"}) {
    auto r = Shell("touch /work/ran", {option});
    EXPECT_EQ(r.exit_code, 64) << option << ": " << r.stderr_text;
    EXPECT_FALSE(r.stderr_text.empty()) << option;
    EXPECT_FALSE(std::filesystem::exists(work_ + "/ran")) << option;
  }
}

// "No way out" #3: kiln-sandbox started from a terminal (its stderr here,
// which is the caller's controlling terminal). The action must not be able
// to push keystrokes into it: it runs in a session of its own, without a
// controlling terminal (and the filter denies TIOCSTI as well). On this
// kernel dev.tty.legacy_tiocsti=1, so TIOCSTI into one's own controlling
// terminal would otherwise work.
TEST_P(SandboxTest, ActionHasItsOwnSessionAndCannotInjectIntoTheCallersTerminal) {
  CopyProbeToWork();
  int master = -1, slave = -1;
  ASSERT_EQ(openpty(&master, &slave, nullptr, nullptr, nullptr), 0) << strerror(errno);
  UniqueFd master_fd(master), slave_fd(slave);
  struct termios raw;
  ASSERT_EQ(tcgetattr(slave, &raw), 0);
  cfmakeraw(&raw);  // injected bytes are readable at once, without a newline
  ASSERT_EQ(tcsetattr(slave, TCSANOW, &raw), 0);
  int out[2];
  ASSERT_EQ(pipe2(out, O_CLOEXEC), 0);
  UniqueFd out_read(out[0]), out_write(out[1]);

  std::vector<std::string> args = SandboxArgv(
      {}, {"/bin/sh", "-c",
           "/work/syscall_probe tiocsti; /work/syscall_probe open_dev_tty;"
           "read -r pid comm state ppid pgrp session rest < /proc/self/stat; echo session=$session"});
  std::vector<char*> argv;
  for (std::string& arg : args) argv.push_back(arg.data());
  argv.push_back(nullptr);
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    // The caller: a session whose controlling terminal is the pty.
    setsid();
    ioctl(slave, TIOCSCTTY, 0);
    dup2(slave, 0);
    dup2(out[1], 1);
    dup2(slave, 2);
    execv(argv[0], argv.data());
    _exit(127);
  }
  struct Reaper {
    pid_t pid;
    ~Reaper() {
      if (pid > 0) {
        kill(pid, SIGKILL);
        waitpid(pid, nullptr, 0);
      }
    }
  } reaper{pid};
  out_write.Reset();
  std::string output;
  char buffer[4096];
  for (ssize_t n; (n = read(out_read.get(), buffer, sizeof buffer)) > 0;) output.append(buffer, n);
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  reaper.pid = -1;
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status << " " << output;

  EXPECT_NE(output.find("tiocsti denied EPERM"), std::string::npos) << output;
  EXPECT_NE(output.find("open_dev_tty denied ENXIO"), std::string::npos) << output;
  // The action (PID 2) leads its own session; the caller's is outside the
  // PID namespace and would show as 0.
  EXPECT_NE(output.find("session=2\n"), std::string::npos) << output;
  // Nothing arrived on the terminal's input side.
  fcntl(slave, F_SETFL, fcntl(slave, F_GETFL) | O_NONBLOCK);
  char injected[16];
  EXPECT_EQ(read(slave, injected, sizeof injected), -1);
  EXPECT_EQ(errno, EAGAIN);
}

// "No way out" #4: /tmp and /dev/shm are bounded tmpfs (they were half of
// RAM each), also without a cgroup.
TEST_P(SandboxTest, TmpAndShmAreBoundedBySizeFlags) {
  auto defaults = Shell("grep -E '^([^ ]+ ){4}/(tmp|dev/shm) ' /proc/self/mountinfo | cut -d' ' -f5,10");
  ASSERT_EQ(defaults.exit_code, 0) << defaults.stderr_text;
  EXPECT_NE(defaults.stdout_text.find("/tmp rw,size=1048576k,nr_inodes=262144"), std::string::npos)
      << defaults.stdout_text;
  EXPECT_NE(defaults.stdout_text.find("/dev/shm rw,size=262144k,nr_inodes=65536"), std::string::npos)
      << defaults.stdout_text;

  auto tmp = Shell("head -c 6000000 /dev/zero > /tmp/big || echo tmp-full", {"--tmp_size=4MiB"});
  EXPECT_EQ(tmp.stdout_text, "tmp-full\n");
  EXPECT_NE(tmp.stderr_text.find("No space left on device"), std::string::npos) << tmp.stderr_text;
  EXPECT_TRUE(Stats()["tmp_full"].get<bool>());  // the report says it; stderr is the action's
  EXPECT_EQ(tmp.stderr_text.find("/tmp was full"), std::string::npos) << tmp.stderr_text;

  auto shm = Shell("head -c 6000000 /dev/zero > /dev/shm/big || echo shm-full", {"--shm_size=4MiB"});
  EXPECT_EQ(shm.stdout_text, "shm-full\n");
  EXPECT_TRUE(Stats()["shm_full"].get<bool>());
  EXPECT_FALSE(Stats()["tmp_full"].get<bool>());
}

// RLIMIT_NPROC of the build user: a fork bomb stops without any cgroup.
TEST_P(SandboxTest, ForkingMoreThanMaxProcessesFails) {
  CopyProbeToWork();
  auto limited = Sandbox({"--max_processes=20"}, {"/work/syscall_probe", "fork_many"});
  EXPECT_EQ(limited.exit_code, 0) << limited.stdout_text << limited.stderr_text;
  EXPECT_NE(limited.stdout_text.find("fork_many denied EAGAIN"), std::string::npos) << limited.stdout_text;
  int forked = 0;
  sscanf(limited.stdout_text.c_str(), "forked %d", &forked);
  EXPECT_GT(forked, 10) << limited.stdout_text;
  EXPECT_LT(forked, 20) << limited.stdout_text;
  // 0 lifts the limit; the default (4096) is far above 100.
  EXPECT_EQ(Sandbox({"--max_processes=0"}, {"/work/syscall_probe", "fork_many"}).exit_code, 1);
  EXPECT_EQ(Sandbox({}, {"/work/syscall_probe", "fork_many"}).exit_code, 1);
}

TEST_P(SandboxTest, MaxFileSizeStopsABigWrite) {
  auto r = Shell("trap '' XFSZ; head -c 3000000 /dev/zero > /work/big || echo too-big", {"--max_file_size=1MiB"});
  EXPECT_EQ(r.stdout_text, "too-big\n") << r.stderr_text;
  EXPECT_EQ(std::filesystem::file_size(work_ + "/big"), 1u << 20);
  // Without the trap the writer dies of SIGXFSZ, which the stats name.
  auto killed = Shell("exec head -c 3000000 /dev/zero > /work/big2", {"--max_file_size=1MiB"});
  EXPECT_EQ(killed.exit_code, 128 + SIGXFSZ);
  EXPECT_TRUE(Stats()["file_size_exceeded"].get<bool>());
}

// "No way out" #5: PID 1 is a copy of the launcher, whose argv names host
// paths (the worker's state dir through --work_dir).
TEST_P(SandboxTest, ProcOneCmdlineDoesNotShowTheLaunchersArguments) {
  auto r = Shell("tr '\\0' ' ' < /proc/1/cmdline; echo");
  ASSERT_EQ(r.exit_code, 0) << r.stderr_text;
  EXPECT_EQ(r.stdout_text.find(work_), std::string::npos) << r.stdout_text;
  EXPECT_EQ(r.stdout_text.find("--work_dir"), std::string::npos) << r.stdout_text;
  // The zeroed rest of the area reads as NULs (spaces here).
  EXPECT_EQ(absl::StripTrailingAsciiWhitespace(r.stdout_text), "kiln-sandbox");
}

INSTANTIATE_TEST_SUITE_P(AsRootAndUnprivileged, SandboxTest,
                         ::testing::Values(Mode::kRoot, Mode::kUnprivileged),
                         [](const auto& info) {
                           return info.param == Mode::kRoot ? "Root" : "Unprivileged";
                         });

// Resource limits need a writable cgroup: as root here. Unprivileged, a
// requested limit must fail loudly instead of running unlimited.
class SandboxLimitsTest : public SandboxTest {};

TEST_P(SandboxLimitsTest, MemoryHogIsOomKilledAndReported) {
  // tail keeps a line that never ends: it grows until the limit stops it
  // (fast even under emulation, where tests/cgroup2_vm_test.sh runs this).
  auto r = Shell("exec tail /dev/zero", {"--memory=64MiB"});
  EXPECT_EQ(r.exit_code, 128 + SIGKILL);
  EXPECT_EQ(r.stdout_text, "");
  EXPECT_TRUE(Stats()["oom_killed"].get<bool>());
  // Reported in the stats file; CMD's stderr stays CMD's own.
  EXPECT_EQ(r.stderr_text.find("OOM"), std::string::npos) << r.stderr_text;
  // The limit held (a global OOM kill would also give 137 and oom_kill).
  EXPECT_LE(Stats()["peak_memory_bytes"].get<int64_t>(), int64_t{64} << 20) << Stats().dump();
  // The killed action's cgroup is gone too.
  ASSERT_FALSE(Stats()["cgroups"].empty());
  for (const auto& path : Stats()["cgroups"]) EXPECT_FALSE(std::filesystem::exists(path.get<std::string>())) << path;
}

TEST_P(SandboxLimitsTest, ForkBombIsStoppedByThePidsLimit) {
  auto r = Shell("for i in $(seq 200); do sleep 30 & done 2>/dev/null; ls -d /proc/[0-9]* | wc -l",
                 {"--pids=20", "--timeout=20s"});
  ASSERT_FALSE(Stats()["timed_out"].get<bool>()) << r.stderr_text;
  // Never more than 20 processes in the cgroup (init, sh, sleeps, ls, wc).
  EXPECT_LE(std::stoi(absl::StrCat("0", absl::StripAsciiWhitespace(r.stdout_text))), 20);
  EXPECT_GE(Stats()["killed_at_teardown"].get<int>(), 10);
}

TEST_P(SandboxLimitsTest, CpuLimitThrottlesTheAction) {
  // Two busy loops for two seconds would take up to two cores; a tenth of
  // one is all they get (little enough to be throttled on a loaded host too).
  auto r = Shell("for i in 1 2; do sh -c 'while :; do :; done' & done; sleep 2", {"--cpus=0.1"});
  ASSERT_EQ(r.exit_code, 0) << r.stderr_text;
  nlohmann::json stats = Stats();
  const double cpu = stats["rusage"]["user_cpu_seconds"].get<double>() +
                     stats["rusage"]["system_cpu_seconds"].get<double>();
  const double wall = stats["wall_time_seconds"].get<double>();
  EXPECT_GT(stats["cpu_throttled_seconds"].get<double>(), 0.5) << stats.dump();
  EXPECT_LT(cpu, 0.1 * wall * 1.5 + 0.2) << stats.dump();
}

// The action's cgroups exist while it runs and are gone once kiln-sandbox
// exits, whether the action ended or timed out (an OOM kill: above).
TEST_P(SandboxLimitsTest, TheActionCgroupIsRemovedAfterwards) {
  const std::vector<std::string> limits = {"--memory=64MiB", "--pids=50", "--cpus=1"};
  struct Case {
    std::string script;
    std::vector<std::string> extra;
  } cases[] = {
      {"echo done", {}},
      {"sleep 30 & sleep 30", {"--timeout=1s", "--kill_grace=0.2s"}},
  };
  for (const Case& c : cases) {
    std::vector<std::string> options = limits;
    options.insert(options.end(), c.extra.begin(), c.extra.end());
    auto r = Shell(c.script, options);
    nlohmann::json stats = Stats();
    ASSERT_FALSE(stats.is_discarded()) << r.stderr_text;
    // One cgroup on v2 (all three controllers), one per hierarchy on v1.
    const auto& cgroups = stats["cgroups"];
    ASSERT_FALSE(cgroups.empty()) << c.script << ": " << stats.dump();
    for (const auto& path : cgroups) {
      EXPECT_NE(path.get<std::string>().find("/kiln-sandbox-"), std::string::npos) << path;
      EXPECT_FALSE(std::filesystem::exists(path.get<std::string>())) << c.script << ": " << path << " is left";
    }
  }
}

// The action's cgroup is the root of its cgroup namespace: it sees "/" in
// every hierarchy, nothing of the host's or the worker's cgroup tree.
TEST_P(SandboxLimitsTest, TheActionCgroupIsTheRootOfItsCgroupNamespace) {
  auto r = Shell("cat /proc/self/cgroup", {"--memory=64MiB", "--pids=50", "--cpus=1"});
  ASSERT_EQ(r.exit_code, 0) << r.stderr_text;
  std::vector<std::string> lines = Lines(r.stdout_text);
  ASSERT_FALSE(lines.empty());
  for (const std::string& line : lines) EXPECT_TRUE(absl::EndsWith(line, ":/")) << r.stdout_text;
}

TEST_P(SandboxLimitsTest, ConcurrentSandboxesGetDistinctBuildUsers) {
  std::string out[2];
  std::thread a([&] { out[0] = Shell("id -u; sleep 1").stdout_text; });
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  out[1] = Shell("id -u").stdout_text;
  a.join();
  EXPECT_NE(out[0], out[1]);
}

TEST_P(SandboxLimitsTest, AnExhaustedBuildUserPoolIsReportedAndNothingRuns) {
  // A pool of one uid, held by a running sandbox: the second one must wait
  // for nobody and run as nobody else.
  std::thread holder([&] { Shell("sleep 1", {"--uid_pool_base=62000", "--uid_pool_size=1"}); });
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  auto r = Shell("touch /work/ran", {"--uid_pool_base=62000", "--uid_pool_size=1"});
  holder.join();
  EXPECT_EQ(r.exit_code, 75);
  EXPECT_NE(r.stderr_text.find("in use"), std::string::npos) << r.stderr_text;
  EXPECT_FALSE(std::filesystem::exists(work_ + "/ran"));
}

// The cgroups of launcher `pid` (named kiln-sandbox-PID-N), in every hierarchy.
std::vector<std::string> CgroupsOfLauncher(pid_t pid) {
  const std::string prefix = absl::StrCat(kSandboxCgroupPrefix, pid, "-");
  std::vector<std::string> found;
  for (const CgroupMount& mount : CgroupMounts()) {
    std::error_code error;
    for (auto it = std::filesystem::recursive_directory_iterator(mount.point, error);
         it != std::filesystem::recursive_directory_iterator(); it.increment(error)) {
      if (error) break;
      if (it->is_directory(error) && absl::StartsWith(it->path().filename().string(), prefix)) {
        found.push_back(it->path().string());
      }
    }
  }
  return found;
}

// Stopped while it prepares (the worker cancelling an action whose sandbox
// is being started): the sandbox's cgroup goes with it. A launcher killed by
// the SIGTERM while it made the cgroup left it behind until the next start.
TEST_P(SandboxLimitsTest, StoppedWhilePreparingLeavesNoCgroup) {
  for (int round = 0; round < 40; ++round) {
    v1::SandboxRequest prepare;
    prepare.set_use_default_binds(true);
    prepare.set_memory_bytes(int64_t{256} << 20);
    prepare.set_pids(100);
    ServedSandbox served(false);
    ASSERT_TRUE(WriteMessage(served.fd(), prepare).ok());
    // From at once to well after the cgroup exists (it takes milliseconds on v1).
    std::this_thread::sleep_for(std::chrono::microseconds(round * 100));
    kill(served.pid(), SIGTERM);
    const int status = served.Wait();
    EXPECT_TRUE(WIFEXITED(status) || WTERMSIG(status) == SIGTERM) << status;
    EXPECT_EQ(CgroupsOfLauncher(served.pid()), std::vector<std::string>()) << "round " << round;
  }
}

INSTANTIATE_TEST_SUITE_P(AsRoot, SandboxLimitsTest, ::testing::Values(Mode::kRoot));

class SandboxUnprivilegedLimitsTest : public SandboxTest {};

TEST_P(SandboxUnprivilegedLimitsTest, RequestedLimitWithoutCgroupFailsLoudly) {
  auto r = Shell("touch /work/ran", {"--memory=64MiB"});
  EXPECT_EQ(r.exit_code, 78);
  EXPECT_NE(r.stderr_text.find("memory"), std::string::npos) << r.stderr_text;
  EXPECT_FALSE(std::filesystem::exists(work_ + "/ran"));
}

INSTANTIATE_TEST_SUITE_P(Unprivileged, SandboxUnprivilegedLimitsTest,
                         ::testing::Values(Mode::kUnprivileged));

}  // namespace
}  // namespace kiln::sandbox
