#include "sandbox/sandbox_proto.h"

#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <string>

#include "absl/strings/str_cat.h"
#include "common/posix.h"

namespace kiln::sandbox {
namespace {

int64_t Nanos(const struct timeval& tv) { return int64_t{tv.tv_sec} * 1000000000 + int64_t{tv.tv_usec} * 1000; }

// Writes all of `data`; send() on sockets (no SIGPIPE), write() otherwise.
absl::Status SendAll(int fd, const char* data, size_t size) {
  while (size > 0) {
    ssize_t n = send(fd, data, size, MSG_NOSIGNAL);
    if (n < 0 && errno == ENOTSOCK) n = write(fd, data, size);
    if (n < 0) {
      if (errno == EINTR) continue;
      return PosixError("write a sandbox message", errno);
    }
    data += n;
    size -= static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

// Reads exactly `size` bytes; *eof_at_start when the stream ended before any.
absl::Status ReadAll(int fd, char* data, size_t size, bool* eof_at_start) {
  size_t done = 0;
  while (done < size) {
    ssize_t n = read(fd, data + done, size - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      return PosixError("read a sandbox message", errno);
    }
    if (n == 0) {
      if (done == 0 && eof_at_start != nullptr) *eof_at_start = true;
      return absl::DataLossError("the sandbox's peer closed the connection in the middle of a message");
    }
    done += static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

}  // namespace

pb::SandboxRequest ToRequest(const SandboxSpec& spec, const SandboxPolicy& policy) {
  pb::SandboxRequest request;
  for (const std::string& arg : spec.argv) request.add_argv(arg);
  for (const auto& [name, value] : spec.env) {
    pb::EnvironmentVariable* variable = request.add_env();
    variable->set_name(name);
    variable->set_value(value);
  }
  request.set_path_when_unset(spec.path_when_unset);
  request.set_work_dir(spec.work_dir);
  request.set_work_dir_parent(spec.work_dir_parent);
  request.set_cwd(spec.cwd);
  for (const BindMount& bind : spec.binds) {
    pb::BindMount* out = request.add_binds();
    out->set_source(bind.source);
    out->set_target(bind.target);
    out->set_writable(bind.writable);
  }
  request.set_hostname(spec.hostname);
  request.set_domainname(spec.domainname);
  request.set_share_network(spec.share_network);
  request.set_allow_host_network(policy.allow_host_network);
  request.set_personality_linux32(spec.personality_linux32);
  request.set_personality_uname26(spec.personality_uname26);
  request.set_allow_nested_sandbox(spec.allow_nested_sandbox);
  request.set_memory_bytes(spec.memory_bytes);
  request.set_pids(spec.pids);
  request.set_cpus(spec.cpus);
  request.set_cgroup_parent(spec.cgroup_parent);
  request.set_tmp_size_bytes(spec.tmp_size_bytes);
  request.set_shm_size_bytes(spec.shm_size_bytes);
  request.set_max_processes(spec.max_processes);
  request.set_max_file_size_bytes(spec.max_file_size_bytes);
  request.set_timeout_nanos(absl::ToInt64Nanoseconds(spec.timeout));
  request.set_kill_grace_nanos(absl::ToInt64Nanoseconds(spec.kill_grace));
  if (spec.uid.has_value()) request.set_uid(*spec.uid);
  if (spec.gid.has_value()) request.set_gid(*spec.gid);
  request.set_stdout_path(spec.stdout_path);
  request.set_stderr_path(spec.stderr_path);
  return request;
}

absl::Status FromRequest(const pb::SandboxRequest& request, SandboxSpec* spec, SandboxPolicy* policy) {
  spec->argv.assign(request.argv().begin(), request.argv().end());
  spec->env.clear();
  for (const pb::EnvironmentVariable& variable : request.env()) {
    if (variable.name().empty() || variable.name().find('=') != std::string::npos) {
      return absl::InvalidArgumentError(
          absl::StrCat("environment variable name \"", variable.name(), "\" is invalid"));
    }
    spec->env[variable.name()] = variable.value();
  }
  spec->path_when_unset = request.path_when_unset();
  spec->work_dir = request.work_dir();
  spec->work_dir_parent = request.work_dir_parent();
  spec->cwd = request.cwd();
  if (request.use_default_binds()) {
    if (request.binds_size() > 0) return absl::InvalidArgumentError("use_default_binds with explicit binds");
    spec->binds = DefaultBinds();
  } else {
    spec->binds.clear();
    for (const pb::BindMount& bind : request.binds()) {
      spec->binds.push_back({bind.source(), bind.target(), bind.writable()});
    }
  }
  if (request.has_hostname()) spec->hostname = request.hostname();
  if (request.has_domainname()) spec->domainname = request.domainname();
  spec->share_network = request.share_network();
  policy->allow_host_network = request.allow_host_network();
  spec->personality_linux32 = request.personality_linux32();
  spec->personality_uname26 = request.personality_uname26();
  spec->allow_nested_sandbox = request.allow_nested_sandbox();
  spec->memory_bytes = request.memory_bytes();
  spec->pids = request.pids();
  spec->cpus = request.cpus();
  spec->cgroup_parent = request.cgroup_parent();
  if (request.has_tmp_size_bytes()) spec->tmp_size_bytes = request.tmp_size_bytes();
  if (request.has_shm_size_bytes()) spec->shm_size_bytes = request.shm_size_bytes();
  if (request.has_max_processes()) spec->max_processes = request.max_processes();
  spec->max_file_size_bytes = request.max_file_size_bytes();
  spec->timeout = absl::Nanoseconds(request.timeout_nanos());
  if (request.has_kill_grace_nanos()) spec->kill_grace = absl::Nanoseconds(request.kill_grace_nanos());
  if (request.has_uid()) spec->uid = request.uid();
  if (request.has_gid()) spec->gid = request.gid();
  spec->stdout_path = request.stdout_path();
  spec->stderr_path = request.stderr_path();
  return absl::OkStatus();
}

pb::SandboxResult ToResultMessage(const SandboxResult& r) {
  pb::SandboxResult out;
  out.set_exit_code(r.exit_code);
  out.set_signal(r.signal);
  out.set_timed_out(r.timed_out);
  out.set_oom_killed(r.oom_killed);
  out.set_orphans_reaped(r.orphans_reaped);
  out.set_killed_at_teardown(r.killed_at_teardown);
  out.set_peak_memory_bytes(r.peak_memory_bytes);
  out.set_cpu_throttled_seconds(r.cpu_throttled_seconds);
  for (const std::string& path : r.cgroups) out.add_cgroups(path);
  out.set_wall_time_nanos(absl::ToInt64Nanoseconds(r.wall_time));
  pb::StageTimes* stages = out.mutable_stages();
  stages->set_start(r.stages.start);
  stages->set_cgroup_setup(r.stages.cgroup_setup);
  stages->set_clone(r.stages.clone);
  stages->set_namespaces(r.stages.namespaces);
  stages->set_root(r.stages.root);
  stages->set_network(r.stages.network);
  stages->set_request(r.stages.request);
  stages->set_exec(r.stages.exec);
  stages->set_action_exited(r.stages.action_exited);
  stages->set_tree_gone(r.stages.tree_gone);
  pb::ResourceUsage* usage = out.mutable_rusage();
  usage->set_user_cpu_nanos(Nanos(r.rusage.ru_utime));
  usage->set_system_cpu_nanos(Nanos(r.rusage.ru_stime));
  usage->set_max_rss_bytes(int64_t{r.rusage.ru_maxrss} * 1024);
  usage->set_minor_page_faults(r.rusage.ru_minflt);
  usage->set_major_page_faults(r.rusage.ru_majflt);
  usage->set_input_blocks(r.rusage.ru_inblock);
  usage->set_output_blocks(r.rusage.ru_oublock);
  usage->set_voluntary_context_switches(r.rusage.ru_nvcsw);
  usage->set_involuntary_context_switches(r.rusage.ru_nivcsw);
  out.set_uid(r.uid);
  out.set_exec_error(r.exec_error);
  out.set_user_namespace(r.user_namespace);
  out.set_tmp_full(r.tmp_full);
  out.set_shm_full(r.shm_full);
  out.set_file_size_exceeded(r.file_size_exceeded);
  return out;
}

pb::SandboxResult ErrorResultMessage(const absl::Status& status) {
  pb::SandboxResult out;
  out.set_error_code(static_cast<int32_t>(status.ok() ? absl::StatusCode::kUnknown : status.code()));
  out.set_error_message(std::string(status.message()));
  return out;
}

absl::Status WriteMessage(int fd, const google::protobuf::MessageLite& message, absl::Span<const int> fds) {
  std::string bytes;
  if (!message.SerializeToString(&bytes) || bytes.size() > kMaxMessageBytes) {
    return absl::InvalidArgumentError("a sandbox message too large to send");
  }
  const uint32_t size = static_cast<uint32_t>(bytes.size());
  char header[4] = {static_cast<char>(size & 0xff), static_cast<char>((size >> 8) & 0xff),
                    static_cast<char>((size >> 16) & 0xff), static_cast<char>((size >> 24) & 0xff)};
  bytes.insert(0, header, sizeof header);  // one write: the reader wakes up once
  if (fds.empty()) return SendAll(fd, bytes.data(), bytes.size());
  const ssize_t sent = SendWithDescriptors(fd, bytes.data(), bytes.size(), fds);
  if (sent <= 0) return PosixError("send a sandbox message with descriptors", sent < 0 ? errno : EPIPE);
  return SendAll(fd, bytes.data() + sent, bytes.size() - static_cast<size_t>(sent));
}

absl::Status ReadMessage(int fd, google::protobuf::MessageLite* message, std::vector<UniqueFd>* fds) {
  unsigned char header[4];
  size_t got = 0;
  std::vector<UniqueFd> received;  // closed on return unless the caller takes them
  // The header with recvmsg: descriptors come with the message's first bytes.
  while (got < sizeof header) {
    const ssize_t n = ReceiveWithDescriptors(fd, header + got, sizeof header - got, &received);
    if (n < 0 && errno == ENOTSOCK) {
      bool eof = false;
      absl::Status read = ReadAll(fd, reinterpret_cast<char*>(header + got), sizeof header - got, &eof);
      if (eof && got == 0) return absl::NotFoundError("the sandbox's peer closed the connection");
      if (!read.ok()) return read;
      break;
    }
    if (n < 0) return PosixError("read a sandbox message", errno);
    if (n == 0) {
      if (got == 0) return absl::NotFoundError("the sandbox's peer closed the connection");
      return absl::DataLossError("the sandbox's peer closed the connection in the middle of a message");
    }
    got += static_cast<size_t>(n);
  }
  const uint32_t size = uint32_t{header[0]} | uint32_t{header[1]} << 8 | uint32_t{header[2]} << 16 |
                        uint32_t{header[3]} << 24;
  if (size > kMaxMessageBytes) {
    return absl::DataLossError(absl::StrCat("a sandbox message of ", size, " bytes is over the limit"));
  }
  std::string bytes(size, '\0');
  absl::Status body = ReadAll(fd, bytes.data(), size, nullptr);
  if (!body.ok()) return body;
  if (!message->ParseFromString(bytes)) return absl::DataLossError("a sandbox message does not parse");
  if (fds != nullptr) *fds = std::move(received);
  return absl::OkStatus();
}

}  // namespace kiln::sandbox
