#include "server/exec/action_runner.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <optional>

#include <google/protobuf/util/time_util.h>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/path_beneath.h"
#include "common/posix.h"
#include "common/rpc_status.h"
#include "common/status_macros.h"
#include "kiln/v1/resource_usage.pb.h"
#include "sandbox/uid_pool.h"
#include "server/cas/directory_tree.h"
#include "server/exec/disk_watchdog.h"
#include "server/exec/output_collector.h"
#include "server/exec/sandbox_stats.h"

namespace kiln::exec {
namespace {

using google::protobuf::util::TimeUtil;

// Nanosecond precision: protobuf's TimeUtil::GetCurrentTime() drops to
// whole seconds in Debian's version.
google::protobuf::Timestamp Now() {
  return TimeUtil::NanosecondsToTimestamp(absl::ToUnixNanos(absl::Now()));
}

// What `inline_stdout` / `inline_stderr` return at most: the rest is in the
// CAS under stdout_digest / stderr_digest.
constexpr int64_t kMaxInlineLogBytes = 1 << 20;

absl::StatusOr<rev2::Action> ReadAction(cas::BlobStore& cas, const Digest& digest) {
  absl::StatusOr<std::string> bytes = cas::ReadMessageBlob(cas, digest, "Action");
  if (absl::IsNotFound(bytes.status())) return MissingBlobsError({digest});
  if (!bytes.ok()) return bytes.status();
  rev2::Action action;
  if (!action.ParseFromString(*bytes)) {
    return absl::InvalidArgumentError(absl::StrCat("blob ", digest.ToString(), " is not an Action"));
  }
  return action;
}

// True when the filesystem holding `path` has (nearly) no space left for
// unprivileged writers: less than the 1 MiB a stats file and a few log
// lines could need.
bool AlmostFull(const std::string& path) {
  struct statvfs st;
  if (statvfs(path.c_str(), &st) != 0) return false;
  return static_cast<int64_t>(st.f_bavail) * static_cast<int64_t>(st.f_frsize) < (int64_t{1} << 20) ||
         (st.f_files > 0 && st.f_favail == 0);
}

absl::Duration ToDuration(const google::protobuf::Duration& d) {
  return absl::Seconds(d.seconds()) + absl::Nanoseconds(d.nanos());
}

// Milliseconds from a to b; 0 when the stage did not finish (an action that
// failed before it leaves the later timestamp unset).
double Between(const google::protobuf::Timestamp& a, const google::protobuf::Timestamp& b) {
  const int64_t from = TimeUtil::TimestampToNanoseconds(a);
  const int64_t to = TimeUtil::TimestampToNanoseconds(b);
  if (from == 0 || to == 0) return 0;
  return (to - from) / 1e6;
}


}  // namespace

const char* OutcomeName(RunReport::Outcome outcome) {
  switch (outcome) {
    case RunReport::Outcome::kSuccess: return "success";
    case RunReport::Outcome::kNonZeroExit: return "nonzero_exit";
    case RunReport::Outcome::kTimeout: return "timeout";
    case RunReport::Outcome::kOom: return "oom";
    case RunReport::Outcome::kCancelled: return "cancelled";
    case RunReport::Outcome::kError: return "error";
  }
  return "error";
}

void LogActionLine(const Digest& action_digest, const rev2::ExecuteResponse& response,
                   const RunReport& report) {
  const auto& m = response.result().execution_metadata();
  spdlog::info(
      "action {} outcome={} exit={} status={} queued={:.1f} fetch={:.1f} exec={:.1f} upload={:.1f} "
      "total={:.1f} orphans={} killed_at_teardown={}",
      action_digest.ToString(), OutcomeName(report.outcome), response.result().exit_code(),
      response.status().code(), Between(m.queued_timestamp(), m.worker_start_timestamp()),
      Between(m.input_fetch_start_timestamp(), m.input_fetch_completed_timestamp()),
      Between(m.execution_start_timestamp(), m.execution_completed_timestamp()),
      Between(m.output_upload_start_timestamp(), m.output_upload_completed_timestamp()),
      Between(m.queued_timestamp(), m.worker_completed_timestamp()), report.orphans_reaped,
      report.killed_at_teardown);
}

void CancelToken::Cancel() {
  cancelled_ = true;
  absl::MutexLock lock(&mu_);
  if (process_ != nullptr) process_->Terminate();
}

void CancelToken::SetProcess(SandboxProcess* process) {
  absl::MutexLock lock(&mu_);
  process_ = process;
  if (process_ != nullptr && cancelled_) process_->Terminate();
}

absl::StatusOr<ActionRunner::Loaded> ActionRunner::LoadFromCas(const Digest& action_digest) {
  Loaded loaded;
  ASSIGN_OR_RETURN(loaded.action, ReadAction(*cas_, action_digest));
  absl::StatusOr<Digest> command_digest = ParseDigest(loaded.action.command_digest());
  if (!command_digest.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("action.command_digest: ", command_digest.status().message()));
  }
  absl::StatusOr<Digest> root_digest = ParseDigest(loaded.action.input_root_digest());
  if (!root_digest.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("action.input_root_digest: ", root_digest.status().message()));
  }
  absl::StatusOr<std::string> command_bytes = cas::ReadMessageBlob(*cas_, *command_digest, "Command");
  if (absl::IsNotFound(command_bytes.status())) {
    std::vector<Digest> missing = {*command_digest};
    if (!cas_->Contains(*root_digest)) missing.push_back(*root_digest);
    return MissingBlobsError(missing);
  }
  if (!command_bytes.ok()) return command_bytes.status();
  if (!loaded.command.ParseFromString(*command_bytes)) {
    return absl::InvalidArgumentError(absl::StrCat("blob ", command_digest->ToString(), " is not a Command"));
  }
  return loaded;
}

absl::StatusOr<ActionRunner::Loaded> ActionRunner::Load(const Digest& action_digest,
                                                        const Preloaded* preloaded) {
  Loaded loaded;
  if (preloaded != nullptr) {
    loaded.action = preloaded->action;
    loaded.command = preloaded->command;
    absl::StatusOr<Digest> root_digest = ParseDigest(loaded.action.input_root_digest());
    if (!root_digest.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("action.input_root_digest: ", root_digest.status().message()));
    }
  } else {
    ASSIGN_OR_RETURN(loaded, LoadFromCas(action_digest));
  }
  if (loaded.command.arguments_size() == 0) {
    return absl::InvalidArgumentError("the Command has no arguments");
  }
  RETURN_IF_ERROR(ValidateOutputPaths(loaded.command));
  ASSIGN_OR_RETURN(loaded.limits, ParsePlatform(loaded.action, loaded.command, options_.platform));
  if (loaded.limits.memory_bytes == 0) loaded.limits.memory_bytes = options_.default_memory_bytes;
  loaded.timeout = options_.default_timeout;
  if (loaded.action.has_timeout()) {
    absl::Duration asked = ToDuration(loaded.action.timeout());
    if (asked < absl::ZeroDuration()) return absl::InvalidArgumentError("action.timeout is negative");
    if (asked > options_.max_timeout) {
      return absl::InvalidArgumentError(absl::StrCat(
          "action.timeout ", absl::FormatDuration(asked), " is above this worker's maximum of ",
          absl::FormatDuration(options_.max_timeout), " (kiln-worker --max_action_timeout)"));
    }
    if (asked > absl::ZeroDuration()) loaded.timeout = asked;
  }
  return loaded;
}

rev2::ExecuteResponse ActionRunner::Run(const rev2::ExecuteRequest& request, const Digest& action_digest,
                                        int slot, CancelToken* cancel,
                                        rev2::ExecutedActionMetadata metadata,
                                        SandboxObserver* observer, RunReport* report,
                                        const Preloaded* preloaded) {
  rev2::ExecuteResponse response;
  *response.mutable_result()->mutable_execution_metadata() = std::move(metadata);
  auto* meta = response.mutable_result()->mutable_execution_metadata();
  meta->set_worker(options_.worker_name);
  report->outcome = RunReport::Outcome::kError;
  std::string dir = absl::StrCat(options_.exec_root, "/", getpid(), "-", sequence_++);
  absl::Status status = [&]() -> absl::Status {
    ASSIGN_OR_RETURN(Loaded loaded, Load(action_digest, preloaded));
    RETURN_IF_ERROR(MakeDirectories(dir, 0700));
    RETURN_IF_ERROR(MakeDirectories(dir + "/root", 0755));
    return Execute(request, action_digest, loaded, dir, slot, cancel, observer, &response, report);
  }();
  if (!status.ok()) *response.mutable_status() = ToRpcStatus(status);
  if (cancel->cancelled() && status.ok()) {
    report->outcome = RunReport::Outcome::kCancelled;
    *response.mutable_status() = ToRpcStatus(absl::CancelledError("the action was cancelled"));
  }
  // Beneath its parent and without following the action's symlinks; modes
  // the action set (000 directories) do not stop it. Moved aside now and
  // removed after the answer has gone out.
  if (trash_ != nullptr) {
    trash_->Discard(dir);
  } else {
    (void)RemoveTreeBeneathParent(dir);
  }
  meta->mutable_worker_completed_timestamp()->CopyFrom(Now());
  return response;
}

absl::Status ActionRunner::Execute(const rev2::ExecuteRequest& request, const Digest& action_digest,
                                   const Loaded& loaded, const std::string& dir, int slot,
                                   CancelToken* cancel, SandboxObserver* observer,
                                   rev2::ExecuteResponse* response, RunReport* report) {
  rev2::ActionResult* result = response->mutable_result();
  auto* meta = result->mutable_execution_metadata();
  const bool privileged = geteuid() == 0;
  std::optional<sandbox::UidLease> lease;
  uid_t uid = options_.build_uid_base + slot;
  if (privileged) {
    absl::StatusOr<sandbox::UidLease> acquired = sandbox::AcquireBuildUid(
        options_.uid_lock_dir, options_.build_uid_base, options_.build_uid_pool_size);
    if (!acquired.ok()) {
      return absl::UnavailableError(absl::StrCat(
          "no free build uid in [", options_.build_uid_base, ", ",
          options_.build_uid_base + options_.build_uid_pool_size, "): ", acquired.status().message(),
          " (other workers or kiln-sandbox runs on this host hold them; see --build_uid_pool_size)"));
    }
    lease = *std::move(acquired);
    uid = lease->uid();
  }
  // Unprivileged, the sandbox maps the build user onto our own uid: the
  // files are already ours, and chown to another uid is not allowed.
  const uid_t owner = privileged ? uid : static_cast<uid_t>(-1);
  const std::string root = dir + "/root";
  ASSIGN_OR_RETURN(UniqueFd root_fd, OpenFile(root, O_RDONLY | O_DIRECTORY | O_NOFOLLOW));

  // A cluster worker sets it before fetching the inputs from the remote CAS.
  if (!meta->has_input_fetch_start_timestamp()) *meta->mutable_input_fetch_start_timestamp() = Now();
  StageOptions staging;
  staging.uid = owner;
  staging.gid = owner;
  // A hardlink shares its inode with the CAS: safe only when the action runs
  // as another uid than the CAS files' owner (see input_stager.h).
  staging.copy_files = !privileged;
  staging.limits = options_.staging_limits;
  staging.cancelled = [cancel] { return cancel->cancelled(); };
  RETURN_IF_ERROR(stager_->Stage(*ParseDigest(loaded.action.input_root_digest()), root_fd.get(), staging));
  const std::string& working_directory = loaded.command.working_directory();
  UniqueFd working_dir_fd;
  if (working_directory.empty()) {
    ASSIGN_OR_RETURN(working_dir_fd, OpenBeneath(root_fd.get(), "", O_RDONLY | O_DIRECTORY));
  } else {
    absl::StatusOr<UniqueFd> made = MakeDirectoriesBeneath(root_fd.get(), working_directory, 0755, owner, owner);
    if (!made.ok()) {
      return absl::Status(made.status().code(),
                          absl::StrCat("working_directory: ", made.status().message()));
    }
    working_dir_fd = *std::move(made);
  }
  RETURN_IF_ERROR(CreateOutputParents(loaded.command, working_dir_fd.get(), owner, owner));
  working_dir_fd.Reset();
  *meta->mutable_input_fetch_completed_timestamp() = Now();

  std::vector<std::string> argv = {
      options_.sandbox_binary,
      "--work_dir=" + root,
      "--uid=" + std::to_string(uid),
      "--gid=" + std::to_string(uid),
      absl::StrCat("--timeout=", absl::ToDoubleSeconds(loaded.timeout), "s"),
      absl::StrCat("--kill_grace=", absl::ToDoubleSeconds(options_.kill_grace), "s"),
      "--stats_file=" + dir + "/stats.json",
  };
  if (!loaded.command.working_directory().empty()) argv.push_back("--cwd=" + loaded.command.working_directory());
  for (const std::string& bind : options_.sandbox_binds) argv.push_back("--bind=" + bind);
  if (loaded.limits.network) argv.insert(argv.end(), {"--share_network", "--allow_host_network"});
  if (loaded.limits.memory_bytes > 0) argv.push_back(absl::StrCat("--memory=", loaded.limits.memory_bytes));
  if (loaded.limits.pids > 0) argv.push_back(absl::StrCat("--pids=", loaded.limits.pids));
  if (loaded.limits.cpus > 0) argv.push_back(absl::StrCat("--cpus=", loaded.limits.cpus));
  if (!options_.cgroup_parent.empty()) argv.push_back("--cgroup_parent=" + options_.cgroup_parent);
  if (loaded.limits.linux32) argv.push_back("--linux32");
  if (options_.allow_nested_sandbox) argv.push_back("--allow_nested_sandbox");
  if (options_.tmp_size_bytes >= 0) argv.push_back(absl::StrCat("--tmp_size=", options_.tmp_size_bytes));
  if (options_.shm_size_bytes >= 0) argv.push_back(absl::StrCat("--shm_size=", options_.shm_size_bytes));
  if (options_.max_processes >= 0) argv.push_back(absl::StrCat("--max_processes=", options_.max_processes));
  for (const auto& variable : loaded.command.environment_variables()) {
    argv.push_back(absl::StrCat("--env=", variable.name(), "=", variable.value()));
  }
  argv.push_back("--");
  argv.insert(argv.end(), loaded.command.arguments().begin(), loaded.command.arguments().end());

  *meta->mutable_execution_start_timestamp() = Now();
  if (cancel->cancelled()) return absl::CancelledError("the action was cancelled before it started");
  // The output files exist before the sandbox starts, so live readers can
  // open them; the sandbox appends to them and never waits for a reader.
  for (const char* name : {"/stdout", "/stderr"}) {
    ASSIGN_OR_RETURN(UniqueFd created, OpenFile(dir + name, O_WRONLY | O_CREAT | O_TRUNC, 0600));
  }
  if (observer != nullptr) observer->OnSandboxStarting(dir + "/stdout", dir + "/stderr");
  absl::StatusOr<std::unique_ptr<SandboxProcess>> process =
      SandboxProcess::Start(argv, dir + "/stdout", dir + "/stderr");
  int sandbox_exit = -1;
  std::string disk_exceeded;  // written by the watchdog's thread, read after it is joined
  if (process.ok()) {
    cancel->SetProcess(process->get());
    {
      std::optional<DiskWatchdog> watchdog;
      if (options_.max_disk_bytes > 0) {
        SandboxProcess* running = process->get();
        watchdog.emplace(root, privileged ? geteuid() : static_cast<uid_t>(-1),
                         std::vector<std::string>{dir + "/stdout", dir + "/stderr"},
                         options_.max_disk_bytes, options_.disk_check_interval,
                         [&disk_exceeded, running](const std::string& why) {
                           disk_exceeded = why;
                           running->Terminate();
                         });
      }
      sandbox_exit = (*process)->Wait();
    }
    cancel->SetProcess(nullptr);
  }
  if (observer != nullptr) observer->OnSandboxExited();
  if (!process.ok()) return process.status();
  *meta->mutable_execution_completed_timestamp() = Now();

  *meta->mutable_output_upload_start_timestamp() = Now();
  // stdout and stderr over --max_log_bytes keep their beginning; the
  // response says so, and the result is not lost.
  std::string truncated_logs;
  for (const char* name : {"stdout", "stderr"}) {
    std::string path = absl::StrCat(dir, "/", name);
    ASSIGN_OR_RETURN(UniqueFd log, OpenFile(path, O_RDONLY | O_NOFOLLOW));
    ASSIGN_OR_RETURN(Digest digest, StoreOpenFile(*cas_, log.get(), options_.max_log_bytes, path));
    struct stat st;
    if (fstat(log.get(), &st) == 0 && st.st_size > digest.size) {
      absl::StrAppend(&truncated_logs, absl::StrFormat(
          "; %s was truncated to its first %d of %d bytes (kiln-worker --max_log_bytes)", name,
          digest.size, st.st_size));
    }
    *(std::string(name) == "stdout" ? result->mutable_stdout_digest() : result->mutable_stderr_digest()) =
        digest.ToProto();
  }
  // Reads at most what it returns, whatever the file's size.
  auto read_small = [&](const std::string& path) {
    absl::StatusOr<UniqueFd> fd = OpenFile(path, O_RDONLY);
    if (!fd.ok()) return std::string();
    absl::StatusOr<std::string> text = ReadAt(fd->get(), 0, kMaxInlineLogBytes, path);
    return text.ok() ? *text : std::string();
  };
  if (request.inline_stdout()) result->set_stdout_raw(read_small(dir + "/stdout"));
  if (request.inline_stderr()) result->set_stderr_raw(read_small(dir + "/stderr"));

  absl::StatusOr<std::string> stats_text = ReadFileToString(dir + "/stats.json");
  absl::StatusOr<SandboxStats> stats =
      stats_text.ok() ? ParseSandboxStats(*stats_text, sandbox_exit) : stats_text.status();
  if (cancel->cancelled() && !stats.ok()) {
    // Cancelled before the sandbox was up (SIGTERM during its start-up).
    report->outcome = RunReport::Outcome::kCancelled;
    return absl::CancelledError("the action was cancelled");
  }
  if (!stats.ok()) {
    report->teardown_failed = true;
    if (AlmostFull(dir)) {
      // kiln-sandbox had no room for its stats file (nor its stderr for
      // saying so): the state dir's filesystem is full (found by
      // tests/stress/full_disk_test.py).
      return absl::ResourceExhaustedError(absl::StrCat(
          "no space left on the filesystem of the worker's state dir: the action's results could "
          "not be written (kiln-sandbox exit ", sandbox_exit, ")"));
    }
    // kiln-sandbox failed before running the action: its stderr says why.
    std::string why = read_small(dir + "/stderr");
    return absl::InternalError(absl::StrCat("the sandbox could not run the action (kiln-sandbox exit ",
                                            sandbox_exit, "): ", why));
  }
  result->set_exit_code(stats->exit_code);
  const bool timed_out = stats->timed_out;
  const bool oom = stats->oom_killed;
  report->sandbox_ran = true;
  report->orphans_reaped = stats->orphans_reaped;
  report->killed_at_teardown = stats->killed_at_teardown;

  kiln::v1::SandboxResourceUsage usage = stats->usage;
  usage.set_uid(uid);
  report->sandbox_setup_seconds = stats->setup_seconds;
  meta->add_auxiliary_metadata()->PackFrom(usage);

  if (!disk_exceeded.empty()) {
    // Like a timeout: the partial stdout/stderr are attached, the outputs
    // (whatever filled the disk) are not collected, nothing is cached.
    response->set_message(absl::StrCat("kiln: the action was stopped: ", disk_exceeded, truncated_logs));
    return absl::ResourceExhaustedError(absl::StrCat(disk_exceeded, "; the action was stopped"));
  }
  RETURN_IF_ERROR(CollectOutputs(*cas_, loaded.command, root_fd.get(), working_directory,
                                 options_.output_limits, result));
  *meta->mutable_output_upload_completed_timestamp() = Now();

  // Kiln's remarks go here, and only when there is something to say; the
  // action's stdout and stderr stay the action's own.
  std::vector<std::string> remarks;
  if (report->orphans_reaped > 0) {
    remarks.push_back(absl::StrFormat("orphans reaped by the sandbox init: %d", report->orphans_reaped));
  }
  if (report->killed_at_teardown > 0) {
    remarks.push_back(absl::StrFormat("processes killed at teardown: %d", report->killed_at_teardown));
  }
  if (!truncated_logs.empty()) remarks.push_back(truncated_logs.substr(2));  // drop the leading "; "
  if (stats->tmp_full) remarks.push_back("/tmp was full (kiln-worker --action_tmp_size)");
  if (stats->shm_full) remarks.push_back("/dev/shm was full (kiln-worker --action_shm_size)");
  if (timed_out) {
    remarks.push_back(absl::StrCat("timed out after ", absl::FormatDuration(loaded.timeout)));
  }
  if (oom) {
    remarks.push_back(absl::StrFormat("OOM-killed at its memory limit of %d bytes", loaded.limits.memory_bytes));
  }
  const std::string message = remarks.empty() ? "" : absl::StrCat("kiln: ", absl::StrJoin(remarks, "; "));
  if (cancel->cancelled()) {
    report->outcome = RunReport::Outcome::kCancelled;
    return absl::CancelledError("the action was cancelled");
  }
  if (timed_out) {
    report->outcome = RunReport::Outcome::kTimeout;
    response->set_message(message);
    return absl::DeadlineExceededError(absl::StrCat(
        "the action exceeded its timeout of ", absl::FormatDuration(loaded.timeout),
        " and was killed; its partial stdout and stderr are attached"));
  }
  if (oom) {
    report->outcome = RunReport::Outcome::kOom;
    response->set_message(message);
    return absl::ResourceExhaustedError(absl::StrCat(
        "the action exceeded its memory limit of ", loaded.limits.memory_bytes,
        " bytes and was killed by the OOM killer (exit code ", result->exit_code(), ")"));
  }
  response->set_message(message);
  report->outcome = result->exit_code() == 0 ? RunReport::Outcome::kSuccess
                                             : RunReport::Outcome::kNonZeroExit;
  if (result->exit_code() == 0 && !loaded.action.do_not_cache()) {
    rev2::ActionResult cached = *result;
    cached.clear_stdout_raw();  // inlining is per request, not part of the entry
    cached.clear_stderr_raw();
    RETURN_IF_ERROR(action_cache_->Put(request.instance_name(), action_digest, cached,
                                       cas::ActionCache::Durability::kCacheOnly));
  }
  return absl::OkStatus();
}

}  // namespace kiln::exec
