#include "server/exec/scheduler.h"

#include <google/protobuf/util/time_util.h>

#include <algorithm>
#include <random>

#include <openssl/rand.h>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/rpc_status.h"
#include <spdlog/spdlog.h>

namespace kiln::exec {
namespace {

using google::protobuf::util::TimeUtil;

std::string NewOperationName() {
  // 128 bits from OpenSSL's CSPRNG: a name must not be guessable from the
  // names other clients saw (a seeded mt19937 can be predicted).
  unsigned char bytes[16];
  if (RAND_bytes(bytes, sizeof bytes) != 1) {
    // Only if the OS gives no entropy at all; random_device reads it too.
    std::random_device device;
    for (unsigned char& byte : bytes) byte = static_cast<unsigned char>(device());
  }
  return absl::StrCat("operations/", absl::BytesToHexString(absl::string_view(
                                          reinterpret_cast<const char*>(bytes), sizeof bytes)));
}

std::string InFlightKey(const Operation& operation) {
  return absl::StrCat(operation.instance(), "\n", operation.action_digest().ToString(), "\n",
                      operation.owner());
}

rev2::ExecuteResponse ErrorResponse(const absl::Status& status) {
  rev2::ExecuteResponse response;
  *response.mutable_status() = ToRpcStatus(status);
  return response;
}

// Publishes a running action's output files as live ByteStream resources.
// The names are registered (and announced with EXECUTING) before staging,
// when the files do not exist yet: until the sandbox starts, readers see an
// empty stream that has not ended.
class LiveOutput : public SandboxObserver {
 public:
  LiveOutput(Operation& operation, LogRegistry* logs) : operation_(operation), logs_(logs) {
    if (logs_ == nullptr) return;
    stdout_name_ = LogRegistry::StreamName(operation_.instance(), operation_.name(), "stdout");
    stderr_name_ = LogRegistry::StreamName(operation_.instance(), operation_.name(), "stderr");
    logs_->Register(stdout_name_, out_, operation_.owner());
    logs_->Register(stderr_name_, err_, operation_.owner());
  }

  const std::string& stdout_name() const { return stdout_name_; }
  const std::string& stderr_name() const { return stderr_name_; }

  void OnSandboxStarting(const std::string& stdout_path, const std::string& stderr_path) override {
    if (logs_ == nullptr) return;
    absl::Status attached = out_->Attach(stdout_path);
    if (attached.ok()) attached = err_->Attach(stderr_path);
    // No live view then (readers see an empty stream); the result has both.
    if (!attached.ok()) spdlog::warn("live output of {}: {}", operation_.name(), attached.ToString());
  }
  void OnSandboxExited() override {
    out_->MarkFinished();
    err_->MarkFinished();
  }
  void Unregister() {
    if (logs_ != nullptr) {
      logs_->Unregister(stdout_name_);
      logs_->Unregister(stderr_name_);
    }
    OnSandboxExited();  // also when the sandbox never started
  }

 private:
  Operation& operation_;
  LogRegistry* const logs_;
  std::string stdout_name_, stderr_name_;
  const std::shared_ptr<LogStream> out_ = LogStream::Pending();
  const std::shared_ptr<LogStream> err_ = LogStream::Pending();
};

}  // namespace

// ---- Operation ----

Operation::Operation(std::string name, Digest action_digest, std::string instance, std::string owner)
    : name_(std::move(name)),
      action_digest_(std::move(action_digest)),
      instance_(std::move(instance)),
      owner_(std::move(owner)) {}

google::longrunning::Operation Operation::Snapshot(int64_t* version) const {
  google::longrunning::Operation out;
  out.set_name(name_);
  rev2::ExecuteOperationMetadata metadata;
  *metadata.mutable_action_digest() = action_digest_.ToProto();
  metadata.set_digest_function(rev2::DigestFunction::SHA256);
  absl::MutexLock lock(&mu_);
  if (version != nullptr) *version = version_;
  metadata.set_stage(stage_);
  metadata.set_stdout_stream_name(stdout_stream_name_);
  metadata.set_stderr_stream_name(stderr_stream_name_);
  if (partial_.has_value() && !response_.has_value()) {
    *metadata.mutable_partial_execution_metadata() = *partial_;
  }
  out.mutable_metadata()->PackFrom(metadata);
  if (response_.has_value()) {
    out.set_done(true);
    out.mutable_response()->PackFrom(*response_);
  }
  return out;
}

bool Operation::done() const {
  absl::MutexLock lock(&mu_);
  return response_.has_value();
}

int Operation::Subscribe(std::function<void()> on_change) {
  absl::MutexLock lock(&subscribers_mu_);
  subscribers_[next_subscriber_] = std::move(on_change);
  return next_subscriber_++;
}

void Operation::Unsubscribe(int id) {
  absl::MutexLock lock(&subscribers_mu_);
  subscribers_.erase(id);
}

void Operation::Notify() {
  absl::MutexLock lock(&subscribers_mu_);
  for (auto& [id, callback] : subscribers_) callback();
}

void Operation::SetExecuting(std::string stdout_name, std::string stderr_name,
                             rev2::ExecutedActionMetadata partial) {
  {
    absl::MutexLock lock(&mu_);
    if (response_.has_value()) return;
    stage_ = rev2::ExecutionStage::EXECUTING;
    partial_ = std::move(partial);
    stdout_stream_name_ = std::move(stdout_name);
    stderr_stream_name_ = std::move(stderr_name);
    ++version_;
  }
  Notify();
}

void Operation::Complete(rev2::ExecuteResponse response) {
  {
    absl::MutexLock lock(&mu_);
    if (response_.has_value()) return;
    stage_ = rev2::ExecutionStage::COMPLETED;
    response_ = std::move(response);
    ++version_;
  }
  Notify();
}

// ---- Scheduler ----

Scheduler::Scheduler(ActionRunner* runner, LogRegistry* logs, int slots, int max_queued,
                     ActionDoneCallback on_action_done, int max_kept_completed)
    : runner_(runner), logs_(logs), on_action_done_(std::move(on_action_done)), slots_(slots),
      max_queued_(max_queued), max_kept_completed_(max_kept_completed) {
  for (int slot = 0; slot < slots; ++slot) threads_.emplace_back([this, slot] { RunSlot(slot); });
}

Scheduler::~Scheduler() {
  Drain(absl::ZeroDuration());
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  for (std::thread& thread : threads_) thread.join();
}

absl::StatusOr<std::shared_ptr<Operation>> Scheduler::Submit(const rev2::ExecuteRequest& request,
                                                             const Digest& action_digest,
                                                             const std::string& owner) {
  absl::MutexLock lock(&mu_);
  if (!accepting_) {
    return absl::UnavailableError("this worker is shutting down and takes no new actions; retry elsewhere");
  }
  ForgetOldLocked();
  auto operation =
      std::make_shared<Operation>(NewOperationName(), action_digest, request.instance_name(), owner);
  const std::string key = InFlightKey(*operation);
  if (auto existing = in_flight_.find(key); existing != in_flight_.end()) {
    ++merged_;
    return existing->second;
  }
  if (static_cast<int>(queue_.size()) >= max_queued_) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "the queue is full (", max_queued_, " actions wait for ", slots_,
        " execution slots); retry later (kiln-worker --max_queued_actions)"));
  }
  uint64_t sequence = sequence_++;
  int32_t priority = request.execution_policy().priority();
  queue_[{priority, sequence}] = Queued{priority, sequence, operation, request, TimeUtil::NanosecondsToTimestamp(absl::ToUnixNanos(absl::Now()))};
  operations_[operation->name()] = operation;
  in_flight_[key] = operation;
  return operation;
}

std::shared_ptr<Operation> Scheduler::Find(const std::string& name) {
  absl::MutexLock lock(&mu_);
  auto it = operations_.find(name);
  return it == operations_.end() ? nullptr : it->second;
}

std::vector<std::shared_ptr<Operation>> Scheduler::List() {
  absl::MutexLock lock(&mu_);
  std::vector<std::shared_ptr<Operation>> out;
  for (const auto& [name, operation] : operations_) out.push_back(operation);
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a->name() < b->name(); });
  return out;
}

absl::Status Scheduler::Delete(const std::string& name) {
  absl::MutexLock lock(&mu_);
  auto it = operations_.find(name);
  if (it == operations_.end()) return absl::NotFoundError(absl::StrCat("no operation named ", name));
  if (!it->second->done()) {
    return absl::FailedPreconditionError(absl::StrCat(
        name, " is still running; cancel it first (CancelOperation), then delete it"));
  }
  operations_.erase(it);
  return absl::OkStatus();
}

absl::Status Scheduler::Cancel(const std::string& name) {
  return CancelWith(name, absl::CancelledError("the action was cancelled"));
}

absl::Status Scheduler::CancelWith(const std::string& name, const absl::Status& why) {
  std::shared_ptr<Operation> operation;
  bool was_queued = false;
  {
    absl::MutexLock lock(&mu_);
    auto it = operations_.find(name);
    if (it == operations_.end()) return absl::NotFoundError(absl::StrCat("no operation named ", name));
    operation = it->second;
    for (auto queued = queue_.begin(); queued != queue_.end(); ++queued) {
      if (queued->second.operation == operation) {
        queue_.erase(queued);
        in_flight_.erase(InFlightKey(*operation));
        was_queued = true;
        break;
      }
    }
  }
  // A queued action completes here; a running one when its sandbox stops.
  operation->cancel_token().Cancel();
  if (was_queued) {
    rev2::ExecuteResponse response = ErrorResponse(why);
    RunReport report;
    report.outcome = RunReport::Outcome::kCancelled;
    LogActionLine(operation->action_digest(), response, report);
    // Counted like one cancelled while it ran: the metrics must add up to
    // the operations clients saw end.
    if (on_action_done_) on_action_done_(response, report);
    Completed(*operation);
    operation->Complete(std::move(response));
  }
  return absl::OkStatus();
}

void Scheduler::Drain(absl::Duration grace) {
  {
    absl::MutexLock lock(&mu_);
    accepting_ = false;
    auto idle = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return running_ == 0 && queue_.empty(); };
    mu_.AwaitWithTimeout(absl::Condition(&idle), grace);
  }
  // Whatever is left is cancelled: queued actions at once, running ones
  // through their sandboxes.
  for (const auto& operation : List()) {
    if (!operation->done()) {
      (void)CancelWith(operation->name(),
                       absl::UnavailableError("the worker shut down before running the action; retry"));
    }
  }
  absl::MutexLock lock(&mu_);
  auto stopped = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return running_ == 0; };
  mu_.Await(absl::Condition(&stopped));
}

SchedulerStats Scheduler::GetStats() {
  absl::MutexLock lock(&mu_);
  return SchedulerStats{static_cast<int>(queue_.size()), running_, slots_, max_queued_, merged_};
}

void Scheduler::Completed(const Operation& operation) {
  absl::MutexLock lock(&mu_);
  completed_.emplace_back(absl::Now(), operation.name());
  ForgetOldLocked();
}

void Scheduler::ForgetOldLocked() {
  const absl::Time cutoff = absl::Now() - kKeepCompleted;
  while (!completed_.empty() && (completed_.front().first < cutoff ||
                                 static_cast<int64_t>(completed_.size()) > max_kept_completed_)) {
    operations_.erase(completed_.front().second);  // a no-op if the client deleted it
    completed_.pop_front();
  }
}

void Scheduler::RunSlot(int slot) {
  while (true) {
    Queued next;
    {
      absl::MutexLock lock(&mu_);
      auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return stopping_ || !queue_.empty(); };
      mu_.Await(absl::Condition(&ready));
      if (queue_.empty()) return;  // stopping
      next = std::move(queue_.begin()->second);
      queue_.erase(queue_.begin());
      ++running_;
    }
    rev2::ExecutedActionMetadata metadata;
    *metadata.mutable_queued_timestamp() = next.queued_at;
    *metadata.mutable_worker_start_timestamp() = TimeUtil::NanosecondsToTimestamp(absl::ToUnixNanos(absl::Now()));
    LiveOutput live(*next.operation, logs_);
    next.operation->SetExecuting(live.stdout_name(), live.stderr_name(), metadata);
    RunReport report;
    rev2::ExecuteResponse response =
        runner_->Run(next.request, next.operation->action_digest(), slot,
                     &next.operation->cancel_token(), std::move(metadata), &live, &report);
    live.Unregister();  // from now on the output is in the CAS, named by digests
    {
      absl::MutexLock lock(&mu_);
      auto key = InFlightKey(*next.operation);
      if (auto it = in_flight_.find(key); it != in_flight_.end() && it->second == next.operation) {
        in_flight_.erase(it);
      }
      --running_;
    }
    LogActionLine(next.operation->action_digest(), response, report);
    if (on_action_done_) on_action_done_(response, report);
    Completed(*next.operation);
    next.operation->Complete(std::move(response));
  }
}

}  // namespace kiln::exec
