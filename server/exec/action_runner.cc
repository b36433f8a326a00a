#include "server/exec/action_runner.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>

#include <google/protobuf/util/time_util.h>
#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/posix.h"
#include "common/status_macros.h"
#include "kiln/v1/resource_usage.pb.h"
#include "server/api/grpc_status.h"
#include "server/exec/output_collector.h"

namespace kiln::exec {
namespace {

using google::protobuf::util::TimeUtil;

// Nanosecond precision: protobuf's TimeUtil::GetCurrentTime() drops to
// whole seconds in Debian's version.
google::protobuf::Timestamp Now() {
  return TimeUtil::NanosecondsToTimestamp(absl::ToUnixNanos(absl::Now()));
}

absl::StatusOr<rev2::Action> ReadAction(cas::BlobStore& cas, const Digest& digest) {
  absl::StatusOr<std::string> bytes = cas.ReadBlob(digest);
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

google::protobuf::Duration ToProtoDuration(double seconds) {
  return TimeUtil::NanosecondsToDuration(static_cast<int64_t>(seconds * 1e9));
}

}  // namespace

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

absl::StatusOr<ActionRunner::Loaded> ActionRunner::Load(const Digest& action_digest) {
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
  absl::StatusOr<std::string> command_bytes = cas_->ReadBlob(*command_digest);
  if (absl::IsNotFound(command_bytes.status())) {
    std::vector<Digest> missing = {*command_digest};
    if (!cas_->Contains(*root_digest)) missing.push_back(*root_digest);
    return MissingBlobsError(missing);
  }
  if (!command_bytes.ok()) return command_bytes.status();
  if (!loaded.command.ParseFromString(*command_bytes)) {
    return absl::InvalidArgumentError(absl::StrCat("blob ", command_digest->ToString(), " is not a Command"));
  }
  if (loaded.command.arguments_size() == 0) {
    return absl::InvalidArgumentError("the Command has no arguments");
  }
  RETURN_IF_ERROR(ValidateOutputPaths(loaded.command));
  ASSIGN_OR_RETURN(loaded.limits, ParsePlatform(loaded.action, loaded.command, options_.platform));
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
                                        SandboxObserver* observer, RunReport* report) {
  rev2::ExecuteResponse response;
  *response.mutable_result()->mutable_execution_metadata() = std::move(metadata);
  auto* meta = response.mutable_result()->mutable_execution_metadata();
  meta->set_worker(options_.worker_name);
  report->outcome = RunReport::Outcome::kError;
  std::string dir = absl::StrCat(options_.exec_root, "/", getpid(), "-", sequence_++);
  absl::Status status = [&]() -> absl::Status {
    ASSIGN_OR_RETURN(Loaded loaded, Load(action_digest));
    RETURN_IF_ERROR(MakeDirectories(dir + "/root", 0755));
    return Execute(request, action_digest, loaded, dir, slot, cancel, observer, &response, report);
  }();
  if (!status.ok()) *response.mutable_status() = api::ToRpcStatus(status);
  if (cancel->cancelled() && status.ok()) {
    report->outcome = RunReport::Outcome::kCancelled;
    *response.mutable_status() = api::ToRpcStatus(absl::CancelledError("the action was cancelled"));
  }
  (void)RemoveTree(dir);
  meta->mutable_worker_completed_timestamp()->CopyFrom(Now());
  return response;
}

absl::Status ActionRunner::Execute(const rev2::ExecuteRequest& request, const Digest& action_digest,
                                   const Loaded& loaded, const std::string& dir, int slot,
                                   CancelToken* cancel, SandboxObserver* observer,
                                   rev2::ExecuteResponse* response, RunReport* report) {
  rev2::ActionResult* result = response->mutable_result();
  auto* meta = result->mutable_execution_metadata();
  const uid_t uid = options_.build_uid_base + slot;
  // Unprivileged, the sandbox maps the build user onto our own uid: the
  // files are already ours, and chown to another uid is not allowed.
  const uid_t owner = geteuid() == 0 ? uid : static_cast<uid_t>(-1);
  const std::string root = dir + "/root";

  *meta->mutable_input_fetch_start_timestamp() = Now();
  RETURN_IF_ERROR(stager_->Stage(*ParseDigest(loaded.action.input_root_digest()), root, owner, owner));
  std::string working_dir = root;
  if (!loaded.command.working_directory().empty()) {
    working_dir += "/" + loaded.command.working_directory();
    RETURN_IF_ERROR(MakeDirectories(working_dir, 0755));
    if (chown(working_dir.c_str(), owner, owner) != 0) return PosixError("chown " + working_dir, errno);
  }
  RETURN_IF_ERROR(CreateOutputParents(loaded.command, working_dir, owner, owner));
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
  if (loaded.limits.linux32) argv.push_back("--linux32");
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
  if (process.ok()) {
    cancel->SetProcess(process->get());
    sandbox_exit = (*process)->Wait();
    cancel->SetProcess(nullptr);
  }
  if (observer != nullptr) observer->OnSandboxExited();
  if (!process.ok()) return process.status();
  *meta->mutable_execution_completed_timestamp() = Now();

  *meta->mutable_output_upload_start_timestamp() = Now();
  ASSIGN_OR_RETURN(Digest stdout_digest, StoreFile(*cas_, dir + "/stdout"));
  ASSIGN_OR_RETURN(Digest stderr_digest, StoreFile(*cas_, dir + "/stderr"));
  *result->mutable_stdout_digest() = stdout_digest.ToProto();
  *result->mutable_stderr_digest() = stderr_digest.ToProto();
  auto read_small = [&](const std::string& path) {
    absl::StatusOr<std::string> text = ReadFileToString(path);
    return text.ok() ? text->substr(0, 1 << 20) : std::string();
  };
  if (request.inline_stdout()) result->set_stdout_raw(read_small(dir + "/stdout"));
  if (request.inline_stderr()) result->set_stderr_raw(read_small(dir + "/stderr"));

  std::ifstream stats_file(dir + "/stats.json");
  nlohmann::json stats = nlohmann::json::parse(stats_file, nullptr, /*allow_exceptions=*/false);
  if (cancel->cancelled() && (stats.is_discarded() || !stats.is_object())) {
    // Cancelled before the sandbox was up (SIGTERM during its start-up).
    report->outcome = RunReport::Outcome::kCancelled;
    return absl::CancelledError("the action was cancelled");
  }
  if (stats.is_discarded() || !stats.is_object()) {
    report->teardown_failed = true;
    // kiln-sandbox failed before running the action: its stderr says why.
    std::string why = read_small(dir + "/stderr");
    return absl::InternalError(absl::StrCat("the sandbox could not run the action (kiln-sandbox exit ",
                                            sandbox_exit, "): ", why));
  }
  result->set_exit_code(stats.value("exit_code", sandbox_exit));
  const bool timed_out = stats.value("timed_out", false);
  const bool oom = stats.value("oom_killed", false);
  report->sandbox_ran = true;
  report->orphans_reaped = stats.value("orphans_reaped", 0);
  report->killed_at_teardown = stats.value("killed_at_teardown", 0);

  kiln::v1::SandboxResourceUsage usage;
  const nlohmann::json rusage = stats.value("rusage", nlohmann::json::object());
  *usage.mutable_user_time() = ToProtoDuration(rusage.value("user_cpu_seconds", 0.0));
  *usage.mutable_system_time() = ToProtoDuration(rusage.value("system_cpu_seconds", 0.0));
  usage.set_maximum_resident_set_size(rusage.value("max_rss_bytes", int64_t{0}));
  usage.set_peak_memory_bytes(stats.value("peak_memory_bytes", int64_t{0}));
  usage.set_minor_page_faults(rusage.value("minor_page_faults", int64_t{0}));
  usage.set_major_page_faults(rusage.value("major_page_faults", int64_t{0}));
  usage.set_block_input_operations(rusage.value("input_blocks", int64_t{0}));
  usage.set_block_output_operations(rusage.value("output_blocks", int64_t{0}));
  usage.set_voluntary_context_switches(rusage.value("voluntary_context_switches", int64_t{0}));
  usage.set_involuntary_context_switches(rusage.value("involuntary_context_switches", int64_t{0}));
  usage.set_orphans_reaped(report->orphans_reaped);
  usage.set_killed_at_teardown(report->killed_at_teardown);
  usage.set_oom_killed(oom);
  usage.set_timed_out(timed_out);
  usage.set_uid(uid);
  const nlohmann::json stages = stats.value("stages_seconds", nlohmann::json::object());
  report->sandbox_setup_seconds = stages.value("exec", 0.0);
  *usage.mutable_sandbox_setup() = ToProtoDuration(report->sandbox_setup_seconds);
  meta->add_auxiliary_metadata()->PackFrom(usage);

  RETURN_IF_ERROR(CollectOutputs(*cas_, loaded.command, working_dir, result));
  *meta->mutable_output_upload_completed_timestamp() = Now();

  std::string message = absl::StrFormat("kiln: orphans reaped by the sandbox init: %d",
                                        report->orphans_reaped);
  if (report->killed_at_teardown > 0) {
    absl::StrAppend(&message, absl::StrFormat("; processes killed at teardown: %d",
                                              report->killed_at_teardown));
  }
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
    absl::StrAppend(&message, absl::StrFormat("; the action was OOM-killed at its memory limit of %d bytes",
                                              loaded.limits.memory_bytes));
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
    RETURN_IF_ERROR(action_cache_->Put(request.instance_name(), action_digest, cached));
  }
  return absl::OkStatus();
}

}  // namespace kiln::exec
