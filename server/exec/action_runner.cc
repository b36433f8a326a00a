#include "server/exec/action_runner.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <optional>

#include <google/protobuf/util/time_util.h>
#include <spdlog/spdlog.h>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/path_beneath.h"
#include "common/posix.h"
#include "common/rpc_status.h"
#include "common/status_macros.h"
#include "kiln/v1/resource_usage.pb.h"
#include "server/cas/directory_tree.h"
#include "server/exec/disk_watchdog.h"
#include "server/exec/output_collector.h"
#include "server/exec/sandbox_stats.h"

namespace kiln::exec {
namespace {

using google::protobuf::util::TimeUtil;
namespace pb = kiln::sandbox::v1;

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
      "total={:.1f} orphans={} killed_at_teardown={} sandbox_setup={:.2f} sandbox_completion={:.2f} "
      "warm_sandbox={} sandbox_ready_wait={:.2f}",
      action_digest.ToString(), OutcomeName(report.outcome), response.result().exit_code(),
      response.status().code(), Between(m.queued_timestamp(), m.worker_start_timestamp()),
      Between(m.input_fetch_start_timestamp(), m.input_fetch_completed_timestamp()),
      Between(m.execution_start_timestamp(), m.execution_completed_timestamp()),
      Between(m.output_upload_start_timestamp(), m.output_upload_completed_timestamp()),
      Between(m.queued_timestamp(), m.worker_completed_timestamp()), report.orphans_reaped,
      report.killed_at_teardown, report.sandbox_setup_seconds * 1e3,
      report.sandbox_completion_seconds * 1e3, report.warm_sandbox, report.sandbox_ready_wait_seconds * 1e3);
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
  std::string dir;  // set once the action has one
  cas::DirectorySyncs syncs;
  cas::BlobBatch batch(&syncs);
  absl::Status status = [&]() -> absl::Status {
    ASSIGN_OR_RETURN(Loaded loaded, Load(action_digest, preloaded));
    ASSIGN_OR_RETURN(dir, dirs_->Take());
    return Execute(request, action_digest, loaded, dir, slot, cancel, observer, &batch, &response, report);
  }();
  // The logs and outputs the response names are acknowledged by it, also
  // when it is an error (a timeout's partial logs): they are synced and
  // published (if Execute ended before it did so), and the renames that
  // published them made durable, before it goes out. The directories after
  // the action-cache entry's own fsync, on purpose: on ext4 and xfs that
  // commits these renames too, so one journal commit fewer is waited for.
  // (The entry may outlive its outputs' renames in a crash; Get checks
  // that every output is present.)
  absl::Status synced = batch.CommitAll();
  if (synced.ok()) synced = syncs.SyncAll();
  if (!synced.ok()) {
    status = absl::Status(synced.code(), absl::StrCat("the action's outputs could not be made durable: ",
                                                      synced.message(), status.ok() ? "" : "; ",
                                                      status.ok() ? "" : status.message()));
    report->outcome = RunReport::Outcome::kError;
  }
  if (!status.ok()) *response.mutable_status() = ToRpcStatus(status);
  // However far it got (staging, before the sandbox started, in it), a
  // cancelled action that ends CANCELLED is counted as cancelled, not as an
  // error (found by the soak: the metrics must match what clients saw).
  if (cancel->cancelled() && (status.ok() || status.code() == absl::StatusCode::kCancelled)) {
    report->outcome = RunReport::Outcome::kCancelled;
    if (status.ok()) *response.mutable_status() = ToRpcStatus(absl::CancelledError("the action was cancelled"));
  }
  // Beneath its parent and without following the action's symlinks; modes
  // the action set (000 directories) do not stop it. Moved aside now and
  // removed after the answer has gone out.
  if (!dir.empty() && trash_ != nullptr) {
    trash_->Discard(dir);
  } else if (!dir.empty()) {
    (void)RemoveTreeBeneathParent(dir);
  }
  meta->mutable_worker_completed_timestamp()->CopyFrom(Now());
  return response;
}

namespace {

// The sandbox's request as far as the worker's options say: what warm
// sandboxes are prepared with, and the base of every action's request.
pb::SandboxRequest BaseSandboxRequest(const ExecOptions& options) {
  pb::SandboxRequest request;
  if (options.sandbox_binds.empty()) {
    request.set_use_default_binds(true);
  } else {
    // SRC[:DST], as kiln-sandbox --bind.
    for (const std::string& bind : options.sandbox_binds) {
      size_t colon = bind.find(':');
      pb::BindMount* mount = request.add_binds();
      mount->set_source(bind.substr(0, colon));
      mount->set_target(colon == std::string::npos ? bind : bind.substr(colon + 1));
    }
  }
  // Every action's directory is beneath the exec root: the sandbox can
  // pivot before its action comes (sandbox_spec.h).
  request.set_work_dir_parent(options.exec_root);
  request.set_memory_bytes(options.default_memory_bytes);
  request.set_cgroup_parent(options.cgroup_parent);
  request.set_allow_nested_sandbox(options.allow_nested_sandbox);
  if (options.tmp_size_bytes >= 0) request.set_tmp_size_bytes(options.tmp_size_bytes);
  if (options.shm_size_bytes >= 0) request.set_shm_size_bytes(options.shm_size_bytes);
  if (options.max_processes >= 0) request.set_max_processes(options.max_processes);
  request.set_kill_grace_nanos(absl::ToInt64Nanoseconds(options.kill_grace));
  return request;
}

SandboxPoolOptions PoolOptions(const ExecOptions& options) {
  SandboxPoolOptions pool;
  pool.sandbox_binary = options.sandbox_binary;
  pool.warm = options.warm_sandboxes;
  pool.warm_template = BaseSandboxRequest(options);
  pool.privileged = geteuid() == 0;
  pool.build_uid_base = options.build_uid_base;
  pool.build_uid_pool_size = options.build_uid_pool_size;
  pool.uid_lock_dir = options.uid_lock_dir;
  pool.wait_for_uid = options.wait_for_build_uid;
  return pool;
}

}  // namespace

ActionRunner::ActionRunner(cas::BlobStore* cas, cas::ActionCache* action_cache, InputStager* stager,
                           ExecOptions options)
    : cas_(cas),
      action_cache_(action_cache),
      stager_(stager),
      options_(std::move(options)),
      sandboxes_(std::make_unique<SandboxPool>(PoolOptions(options_))),
      // None made ahead without an exec root (never the case in a worker).
      dirs_(std::make_unique<SpareActionDirs>(options_.exec_root, options_.exec_root.empty() ? 0 : 1)),
      trash_(options_.exec_root.empty() ? nullptr
                                        : std::make_unique<DirectoryTrash>(options_.exec_root + "/.trash", dirs_.get())) {}

ActionRunner::~ActionRunner() = default;

void ActionRunner::Prewarm(int slots) {
  dirs_->KeepAtLeast(slots);
  sandboxes_->Prewarm(slots);
}

absl::Status ActionRunner::Execute(const rev2::ExecuteRequest& request, const Digest& action_digest,
                                   const Loaded& loaded, const std::string& dir, int slot,
                                   CancelToken* cancel, SandboxObserver* observer,
                                   cas::BlobBatch* batch, rev2::ExecuteResponse* response,
                                   RunReport* report) {
  rev2::ActionResult* result = response->mutable_result();
  auto* meta = result->mutable_execution_metadata();
  const bool privileged = geteuid() == 0;

  // The action's request to the sandbox; the paths are added once staged.
  pb::SandboxRequest sandbox_request = BaseSandboxRequest(options_);
  if (loaded.limits.network) {
    sandbox_request.set_share_network(true);
    sandbox_request.set_allow_host_network(true);
  }
  if (loaded.limits.memory_bytes > 0) sandbox_request.set_memory_bytes(loaded.limits.memory_bytes);
  sandbox_request.set_pids(loaded.limits.pids);
  sandbox_request.set_cpus(loaded.limits.cpus);
  sandbox_request.set_personality_linux32(loaded.limits.linux32);
  sandbox_request.set_timeout_nanos(absl::ToInt64Nanoseconds(loaded.timeout));
  sandbox_request.set_cwd(loaded.command.working_directory());
  for (const auto& variable : loaded.command.environment_variables()) {
    pb::EnvironmentVariable* env = sandbox_request.add_env();
    env->set_name(variable.name());
    env->set_value(variable.value());
  }
  sandbox_request.mutable_argv()->CopyFrom(loaded.command.arguments());

  // The slot's warm sandbox, or a cold one that prepares while the inputs
  // are staged. Either way it comes with its build user: as root a uid
  // leased from the pool shared with other workers on the host, so no two
  // actions on one machine ever run as the same uid at once.
  ASSIGN_OR_RETURN(ReadySandbox sandbox, sandboxes_->Acquire(slot, sandbox_request));
  const bool sandbox_was_warm = sandbox.warm;
  bool answered = false;
  auto release = absl::MakeCleanup([&] {
    // Not run, or no answer: a waiting kiln-sandbox stops on SIGTERM.
    if (!answered) sandbox.process->Terminate();
    sandboxes_->Release(slot, std::move(sandbox), /*tree_gone=*/answered);
  });
  const uid_t uid = sandbox.uid;
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

  sandbox_request.set_work_dir(root);
  sandbox_request.set_uid(uid);
  sandbox_request.set_gid(uid);
  sandbox_request.set_stdout_path(dir + "/stdout");
  sandbox_request.set_stderr_path(dir + "/stderr");

  *meta->mutable_execution_start_timestamp() = Now();
  if (cancel->cancelled()) return absl::CancelledError("the action was cancelled before it started");
  // The output files exist already (SpareActionDirs), so live readers can
  // open them; the sandbox appends to them and never waits for a reader.
  if (observer != nullptr) observer->OnSandboxStarting(dir + "/stdout", dir + "/stderr");
  SandboxProcess* running = sandbox.process.get();
  absl::Status sent = running->Send(sandbox_request);
  absl::StatusOr<pb::SandboxResult> sandbox_result = absl::UnknownError("the sandbox was not asked");
  if (!sent.ok()) sandbox_result = sent;
  std::string disk_exceeded;  // why the disk watchdog stopped the action, if it did
  if (sent.ok()) {
    cancel->SetProcess(running);
    if (options_.max_disk_bytes > 0) {
      // The disk is measured on this thread while it waits for the result:
      // no watchdog thread is started and joined for each action.
      DiskWatchdog watchdog(root, privileged ? geteuid() : static_cast<uid_t>(-1),
                            std::vector<std::string>{dir + "/stdout", dir + "/stderr"},
                            options_.max_disk_bytes, options_.disk_check_interval);
      while (!running->WaitForResult(watchdog.next_check())) {
        if (std::optional<std::string> why = watchdog.Check()) {
          disk_exceeded = *std::move(why);
          running->Terminate();
        }
      }
    }
    // Early completion: the result comes once every process of the action
    // is gone; kiln-sandbox tears its namespaces and cgroup down after.
    sandbox_result = running->AwaitResult();
    cancel->SetProcess(nullptr);
  }
  answered = sandbox_result.ok();
  // Reaped in the background; the slot's next warm sandbox starts now,
  // while the outputs are collected.
  std::move(release).Invoke();
  if (observer != nullptr) observer->OnSandboxExited();
  *meta->mutable_execution_completed_timestamp() = Now();

  *meta->mutable_output_upload_start_timestamp() = Now();
  absl::StatusOr<SandboxStats> stats =
      sandbox_result.ok() ? ReadSandboxResult(*sandbox_result) : sandbox_result.status();
  if (stats.ok() && !stats->exec_error.empty()) {
    // Where kiln-sandbox on a terminal says it, for the action's author.
    absl::StatusOr<UniqueFd> err = OpenFile(dir + "/stderr", O_WRONLY | O_APPEND | O_NOFOLLOW);
    if (err.ok()) {
      (void)WriteAll(err->get(), absl::StrCat("kiln-sandbox: cannot execute ", stats->exec_error, "\n"),
                     "stderr");
    }
  }
  // stdout and stderr over --max_log_bytes keep their beginning; the
  // response says so, and the result is not lost.
  std::string truncated_logs;
  for (const char* name : {"stdout", "stderr"}) {
    std::string path = absl::StrCat(dir, "/", name);
    ASSIGN_OR_RETURN(UniqueFd log, OpenFile(path, O_RDONLY | O_NOFOLLOW));
    ASSIGN_OR_RETURN(Digest digest, StoreOpenFile(*cas_, log.get(), options_.max_log_bytes, path, batch));
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

  if (cancel->cancelled() && !stats.ok()) {
    // Cancelled before the sandbox was up (SIGTERM during its start-up).
    report->outcome = RunReport::Outcome::kCancelled;
    return absl::CancelledError("the action was cancelled");
  }
  if (!stats.ok()) {
    report->teardown_failed = true;
    if (absl::IsResourceExhausted(stats.status()) || absl::IsUnavailable(stats.status())) return stats.status();
    return absl::InternalError(
        absl::StrCat("the sandbox could not run the action: ", stats.status().message()));
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
  report->sandbox_completion_seconds = stats->completion_seconds;
  report->sandbox_ready_wait_seconds = stats->ready_wait_seconds;
  report->warm_sandbox = sandbox_was_warm;
  meta->add_auxiliary_metadata()->PackFrom(usage);

  if (!disk_exceeded.empty()) {
    // Like a timeout: the partial stdout/stderr are attached, the outputs
    // (whatever filled the disk) are not collected, nothing is cached.
    response->set_message(absl::StrCat("kiln: the action was stopped: ", disk_exceeded, truncated_logs));
    return absl::ResourceExhaustedError(absl::StrCat(disk_exceeded, "; the action was stopped"));
  }
  RETURN_IF_ERROR(CollectOutputs(*cas_, loaded.command, root_fd.get(), working_directory,
                                 options_.output_limits, result, batch));
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
    // Its outputs are in the store before the entry that names them.
    RETURN_IF_ERROR(batch->CommitAll());
    RETURN_IF_ERROR(action_cache_->Put(request.instance_name(), action_digest, cached,
                                       cas::ActionCache::Durability::kCacheOnly));
  }
  return absl::OkStatus();
}

}  // namespace kiln::exec
