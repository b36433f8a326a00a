#include "server/cluster/cluster_worker.h"

#include <unistd.h>

#include <optional>
#include <thread>

#include <google/protobuf/util/time_util.h>
#include <grpcpp/client_context.h>
#include <spdlog/spdlog.h>

#include "absl/random/random.h"
#include "absl/strings/str_cat.h"
#include "buildbarn/remoteworker/remoteworker.grpc.pb.h"
#include "common/rpc_status.h"
#include "common/status_macros.h"

namespace kiln::cluster {
namespace {

namespace rw = ::buildbarn::remoteworker;
using google::protobuf::util::TimeUtil;

google::protobuf::Timestamp Now() {
  return TimeUtil::NanosecondsToTimestamp(absl::ToUnixNanos(absl::Now()));
}

absl::Time FromProto(const google::protobuf::Timestamp& t) {
  return absl::FromUnixNanos(TimeUtil::TimestampToNanoseconds(t));
}

std::string Hostname() {
  char host[256] = {};
  gethostname(host, sizeof host - 1);
  return host;
}

}  // namespace

std::map<std::string, std::string> SlotWorkerId(const std::string& hostname, const std::string& worker_name,
                                                int slot) {
  return {{"hostname", hostname}, {"worker", worker_name}, {"thread", std::to_string(slot)}};
}

std::string JoinInstanceName(const std::string& prefix, const std::string& suffix) {
  if (prefix.empty()) return suffix;
  if (suffix.empty()) return prefix;
  return absl::StrCat(prefix, "/", suffix);
}

// One execution slot: its Synchronize loop on one thread, its current action
// on another.
class ClusterWorker::Slot {
 public:
  Slot(int index, const ClusterOptions& options, std::shared_ptr<grpc::Channel> scheduler,
       RemoteCas* remote_cas, exec::ActionRunner* runner, exec::LogRegistry* logs, ClusterMetrics* metrics,
       ActionDoneCallback on_action_done, std::function<void()> on_reachability)
      : index_(index),
        options_(options),
        stub_(rw::OperationQueue::NewStub(std::move(scheduler))),
        remote_cas_(remote_cas),
        runner_(runner),
        logs_(logs),
        metrics_(metrics),
        on_action_done_(std::move(on_action_done)),
        on_reachability_(std::move(on_reachability)) {
    for (const auto& [key, value] : SlotWorkerId(Hostname(), options.worker_name, index)) {
      (*base_request_.mutable_worker_id())[key] = value;
    }
    base_request_.set_instance_name_prefix(options.instance_name_prefix);
    *base_request_.mutable_platform() = options.platform;
    base_request_.set_size_class(options.size_class);
  }

  ~Slot() { Stop(); }

  void Start() { thread_ = std::thread([this] { Loop(); }); }

  // No new work; an idle slot stops at once, an executing one after it
  // reported its completion.
  void BeginDrain() {
    absl::MutexLock lock(&mu_);
    draining_ = true;
    if (execution_ == nullptr && call_ != nullptr) call_->TryCancel();
  }

  void CancelRunning() {
    absl::MutexLock lock(&mu_);
    if (execution_ != nullptr) execution_->cancel.Cancel();
  }

  // Waits until the loop has ended (drained), or `deadline`.
  bool AwaitLoopEnd(absl::Time deadline) {
    absl::MutexLock lock(&mu_);
    return mu_.AwaitWithDeadline(absl::Condition(&loop_ended_), deadline);
  }

  void Stop() {
    {
      absl::MutexLock lock(&mu_);
      stopping_ = true;
      if (call_ != nullptr) call_->TryCancel();
      if (execution_ != nullptr) execution_->cancel.Cancel();
    }
    if (thread_.joinable()) thread_.join();
    std::vector<std::unique_ptr<Execution>> left;
    {
      absl::MutexLock lock(&mu_);
      if (execution_ != nullptr) left.push_back(std::move(execution_));
      for (auto& e : abandoned_) left.push_back(std::move(e));
      abandoned_.clear();
    }
    for (auto& e : left) {
      if (e->thread.joinable()) e->thread.join();
    }
  }

  // An idle call may wait at the scheduler for minutes: while it does on a
  // ready channel, the scheduler has it, so the slot counts as connected.
  void NoteChannelReady(bool ready) {
    {
      absl::MutexLock lock(&mu_);
      if (call_ == nullptr || !ready || connected_) return;
      connected_ = true;
    }
    on_reachability_();
  }

  bool connected() const {
    absl::MutexLock lock(&mu_);
    return connected_;
  }
  bool executing() const {
    absl::MutexLock lock(&mu_);
    return execution_ != nullptr;
  }

 private:
  struct Execution {
    rev2::Digest action_digest;
    enum class Phase { kStarted, kFetchingInputs, kRunning, kUploadingOutputs };
    Phase phase = Phase::kStarted;
    std::optional<rev2::ExecuteResponse> completed;
    exec::CancelToken cancel;
    bool finished = false;  // the thread is about to end; join it
    std::thread thread;
  };

  // Live output while the sandbox runs, under a name that this worker's own
  // ByteStream serves, and the phase the scheduler sees.
  class Observer : public exec::SandboxObserver {
   public:
    Observer(Slot* slot, Execution* execution, std::string instance)
        : slot_(slot), execution_(execution), instance_(std::move(instance)) {}
    void OnSandboxStarting(const std::string& stdout_path, const std::string& stderr_path) override {
      slot_->SetPhase(execution_, Execution::Phase::kRunning);
      if (slot_->logs_ == nullptr) return;
      const std::string id = absl::StrCat("cluster-", execution_->action_digest.hash().substr(0, 16), "-",
                                          slot_->index_);
      stdout_name_ = exec::LogRegistry::StreamName(instance_, id, "stdout");
      stderr_name_ = exec::LogRegistry::StreamName(instance_, id, "stderr");
      std::shared_ptr<exec::LogStream> out = exec::LogStream::Pending();
      std::shared_ptr<exec::LogStream> err = exec::LogStream::Pending();
      if (!out->Attach(stdout_path).ok() || !err->Attach(stderr_path).ok()) return;
      out_ = std::move(out);
      err_ = std::move(err);
      slot_->logs_->Register(stdout_name_, out_);
      slot_->logs_->Register(stderr_name_, err_);
      spdlog::debug("slot {}: live output at {} and {}", slot_->index_, stdout_name_, stderr_name_);
    }
    void OnSandboxExited() override {
      if (out_ != nullptr) out_->MarkFinished();
      if (err_ != nullptr) err_->MarkFinished();
      slot_->SetPhase(execution_, Execution::Phase::kUploadingOutputs);
    }
    ~Observer() override {
      if (out_ == nullptr) return;
      out_->MarkFinished();
      err_->MarkFinished();
      slot_->logs_->Unregister(stdout_name_);
      slot_->logs_->Unregister(stderr_name_);
    }

   private:
    Slot* const slot_;
    Execution* const execution_;
    const std::string instance_;
    std::string stdout_name_, stderr_name_;
    std::shared_ptr<exec::LogStream> out_, err_;
  };

  // What the scheduler should hear at once rather than at
  // next_synchronization_at.
  bool HasNewsLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return stopping_ || (draining_ && execution_ == nullptr) ||
           (execution_ != nullptr && (execution_->completed.has_value() || execution_->phase != reported_phase_));
  }

  void SetPhase(Execution* execution, Execution::Phase phase) {
    absl::MutexLock lock(&mu_);
    execution->phase = phase;
  }

  rw::CurrentState CurrentStateLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    rw::CurrentState state;
    if (execution_ == nullptr) {
      state.mutable_idle();
      return state;
    }
    auto* executing = state.mutable_executing();
    *executing->mutable_action_digest() = execution_->action_digest;
    if (execution_->completed.has_value()) {
      *executing->mutable_completed() = *execution_->completed;
      return state;
    }
    switch (execution_->phase) {
      case Execution::Phase::kStarted: executing->mutable_started(); break;
      case Execution::Phase::kFetchingInputs: executing->mutable_fetching_inputs(); break;
      case Execution::Phase::kRunning: executing->mutable_running(); break;
      case Execution::Phase::kUploadingOutputs: executing->mutable_uploading_outputs(); break;
    }
    return state;
  }

  void SetConnected(bool connected) {
    {
      absl::MutexLock lock(&mu_);
      if (connected_ == connected) return;
      connected_ = connected;
    }
    on_reachability_();
  }

  // The scheduler no longer wants the current action: kill it and forget
  // its result. Its thread is joined later.
  void AbandonLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    spdlog::info("slot {}: the scheduler cancelled action {}", index_, execution_->action_digest.hash());
    execution_->cancel.Cancel();
    abandoned_.push_back(std::move(execution_));
  }

  void StartExecutionLocked(const rw::DesiredState::Executing& desired) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    execution_ = std::make_unique<Execution>();
    execution_->action_digest = desired.action_digest();
    Execution* execution = execution_.get();
    execution->thread = std::thread([this, execution, desired] { Execute(execution, desired); });
  }

  void Execute(Execution* execution, const rw::DesiredState::Executing& desired) {
    const std::string instance = JoinInstanceName(options_.instance_name_prefix, desired.instance_name_suffix());
    rev2::ExecuteResponse response;
    exec::RunReport report;
    rev2::ExecutedActionMetadata metadata;
    metadata.set_worker(options_.worker_name);
    *metadata.mutable_queued_timestamp() = desired.queued_timestamp();
    *metadata.mutable_worker_start_timestamp() = Now();
    absl::Status status = [&]() -> absl::Status {
      RETURN_IF_ERROR(CheckDigestFunction(desired.digest_function()));
      ASSIGN_OR_RETURN(Digest action_digest, ParseDigest(desired.action_digest()));
      SetPhase(execution, Execution::Phase::kFetchingInputs);
      // The remote fetch is part of the input fetch the metadata reports;
      // the runner keeps this start time.
      *metadata.mutable_input_fetch_start_timestamp() = Now();
      FetchReport fetched;
      absl::StatusOr<exec::ActionRunner::Preloaded> loaded = remote_cas_->FetchActionInputs(
          instance, action_digest, desired.has_action() ? &desired.action() : nullptr, &fetched);
      if (!loaded.ok()) {
        *response.mutable_result()->mutable_execution_metadata() = metadata;
        return loaded.status();
      }
      spdlog::debug("slot {}: action {}: {} input blobs cached locally, {} fetched ({} bytes)", index_,
                    action_digest.hash, fetched.local_hits, fetched.fetched, fetched.bytes);
      rev2::ExecuteRequest request;
      request.set_instance_name(instance);
      *request.mutable_action_digest() = desired.action_digest();
      request.set_skip_cache_lookup(true);
      {
        Observer observer(this, execution, instance);
        response = runner_->Run(request, action_digest, index_, &execution->cancel, metadata, &observer, &report,
                                &*loaded);
      }
      if (execution->cancel.cancelled()) return absl::OkStatus();  // response.status says CANCELLED
      SetPhase(execution, Execution::Phase::kUploadingOutputs);
      rev2::ActionResult* result = response.mutable_result();
      // Whatever the outcome, stdout and stderr (and any outputs) go to the
      // cluster's CAS so that the client can read them.
      RETURN_IF_ERROR(remote_cas_->UploadResultBlobs(instance, *result));
      if (response.status().code() == 0 && result->exit_code() == 0 && !loaded->action.do_not_cache()) {
        rev2::ActionResult cached = *result;
        RETURN_IF_ERROR(remote_cas_->UpdateActionResult(instance, action_digest, cached));
      }
      *result->mutable_execution_metadata()->mutable_output_upload_completed_timestamp() = Now();
      return absl::OkStatus();
    }();
    if (!status.ok()) {
      spdlog::warn("slot {}: action {}: {}", index_, desired.action_digest().hash(), status.ToString());
      // A result whose blobs could not be stored remotely is useless to the
      // client: only the metadata stays, and the status says why (with its
      // typed details, so missing inputs stay FAILED_PRECONDITION with one
      // violation per blob and the client uploads them again).
      rev2::ExecutedActionMetadata kept =
          response.result().has_execution_metadata() ? response.result().execution_metadata() : metadata;
      response.clear_result();
      *response.mutable_result()->mutable_execution_metadata() = std::move(kept);
      *response.mutable_status() = ToRpcStatus(status);
      response.mutable_status()->set_message(
          absl::StrCat("kiln worker ", options_.worker_name, ": ", status.message()));
    }
    *response.mutable_result()->mutable_execution_metadata()->mutable_worker_completed_timestamp() = Now();
    if (response.has_result()) {
      absl::StatusOr<Digest> digest = ParseDigest(desired.action_digest());
      if (digest.ok()) exec::LogActionLine(*digest, response, report);
    }
    if (on_action_done_ != nullptr) on_action_done_(response, report);
    absl::MutexLock lock(&mu_);
    execution->completed = std::move(response);
    execution->finished = true;
  }

  void Loop() {
    absl::BitGen random;
    absl::Duration backoff = options_.min_backoff;
    int failures = 0;
    while (true) {
      rw::SynchronizeRequest request = base_request_;
      bool idle = false;
      bool sent_completed = false;
      std::vector<std::unique_ptr<Execution>> to_join;
      grpc::ClientContext context;
      {
        absl::MutexLock lock(&mu_);
        for (auto it = abandoned_.begin(); it != abandoned_.end();) {
          if ((*it)->finished) {
            to_join.push_back(std::move(*it));
            it = abandoned_.erase(it);
          } else {
            ++it;
          }
        }
        if (stopping_ || (draining_ && execution_ == nullptr)) break;
        *request.mutable_current_state() = CurrentStateLocked();
        if (execution_ != nullptr) reported_phase_ = execution_->phase;
        request.set_prefer_being_idle(draining_);
        idle = execution_ == nullptr;
        sent_completed = execution_ != nullptr && execution_->completed.has_value();
        context.set_deadline(absl::ToChronoTime(
            absl::Now() + (idle ? options_.idle_call_timeout : options_.executing_call_timeout)));
        call_ = &context;
      }
      for (auto& e : to_join) e->thread.join();
      to_join.clear();

      rw::SynchronizeResponse response;
      const absl::Time start = absl::Now();
      absl::Status status = FromGrpcStatus(stub_->Synchronize(&context, request, &response));
      if (metrics_ != nullptr) {
        metrics_->RecordSynchronize(status.code(), idle, absl::ToDoubleSeconds(absl::Now() - start));
      }
      {
        absl::MutexLock lock(&mu_);
        call_ = nullptr;
      }
      if (!status.ok()) {
        {
          absl::MutexLock lock(&mu_);
          if (stopping_ || (draining_ && execution_ == nullptr)) break;
        }
        // The first failure and then every tenth, so a long outage is
        // visible without flooding the log.
        if (failures++ % 10 == 0) {
          spdlog::warn("slot {}: Synchronize with {} failed ({}), retrying{}", index_, options_.scheduler,
                       status.ToString(), sent_completed ? "; the completed result is kept" : "");
        }
        if (sent_completed && metrics_ != nullptr) metrics_->RecordCompletionRetry();
        SetConnected(false);
        // Jittered: slots and workers that lost the scheduler together do
        // not all come back at the same instant.
        const absl::Duration wait = backoff * absl::Uniform(random, 0.5, 1.0);
        backoff = std::min(backoff * 2, options_.max_backoff);
        absl::MutexLock lock(&mu_);
        mu_.AwaitWithTimeout(absl::Condition(&stopping_), wait);
        continue;
      }
      if (failures > 0) spdlog::info("slot {}: Synchronize with {} works again", index_, options_.scheduler);
      failures = 0;
      backoff = options_.min_backoff;
      SetConnected(true);

      absl::Time next = absl::Now();
      {
        absl::MutexLock lock(&mu_);
        if (sent_completed) to_join.push_back(std::move(execution_));  // the scheduler has it
        const rw::DesiredState& desired = response.desired_state();
        if (desired.has_executing()) {
          const bool same = execution_ != nullptr &&
                            execution_->action_digest.hash() == desired.executing().action_digest().hash() &&
                            execution_->action_digest.size_bytes() == desired.executing().action_digest().size_bytes();
          if (!same) {
            if (execution_ != nullptr) AbandonLocked();
            StartExecutionLocked(desired.executing());
          }
        } else if (desired.has_idle() && execution_ != nullptr) {
          AbandonLocked();
        }
        if (response.has_next_synchronization_at()) next = FromProto(response.next_synchronization_at());
      }
      for (auto& e : to_join) {
        if (e != nullptr && e->thread.joinable()) e->thread.join();
      }
      // Idle, call again at once: the scheduler holds an idle call until it
      // has work (as bb_worker does). Executing, wait until the scheduler
      // wants to hear from us, unless there is news it should have at once
      // (a new phase, the completed action).
      absl::MutexLock lock(&mu_);
      if (execution_ == nullptr) continue;
      mu_.AwaitWithDeadline(absl::Condition(this, &Slot::HasNewsLocked), next);
    }
    SetConnected(false);
    absl::MutexLock lock(&mu_);
    loop_ended_ = true;
  }

  const int index_;
  const ClusterOptions& options_;
  const std::unique_ptr<rw::OperationQueue::Stub> stub_;
  RemoteCas* const remote_cas_;
  exec::ActionRunner* const runner_;
  exec::LogRegistry* const logs_;
  ClusterMetrics* const metrics_;
  const ActionDoneCallback on_action_done_;
  const std::function<void()> on_reachability_;
  rw::SynchronizeRequest base_request_;
  std::thread thread_;

  mutable absl::Mutex mu_;
  std::unique_ptr<Execution> execution_ ABSL_GUARDED_BY(mu_);
  std::vector<std::unique_ptr<Execution>> abandoned_ ABSL_GUARDED_BY(mu_);
  grpc::ClientContext* call_ ABSL_GUARDED_BY(mu_) = nullptr;  // the call in flight, to cancel it
  bool connected_ ABSL_GUARDED_BY(mu_) = false;
  bool draining_ ABSL_GUARDED_BY(mu_) = false;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  bool loop_ended_ ABSL_GUARDED_BY(mu_) = false;
  // The phase of the current action that the last request carried.
  Execution::Phase reported_phase_ ABSL_GUARDED_BY(mu_) = Execution::Phase::kStarted;
};

absl::StatusOr<std::unique_ptr<ClusterWorker>> ClusterWorker::Start(
    const ClusterOptions& options, exec::ActionRunner* runner, cas::BlobStore* local_cas,
    exec::LogRegistry* logs, ClusterMetrics* metrics, ActionDoneCallback on_action_done,
    ReachabilityCallback on_reachability) {
  if (options.scheduler.empty()) return absl::InvalidArgumentError("no scheduler address");
  if (options.cas.empty()) return absl::InvalidArgumentError("no CAS address");
  if (options.slots < 1) return absl::InvalidArgumentError("a cluster worker needs at least one slot");
  std::unique_ptr<ClusterWorker> worker(new ClusterWorker());
  worker->options_ = options;
  worker->metrics_ = metrics;
  worker->on_reachability_ = std::move(on_reachability);
  ASSIGN_OR_RETURN(std::shared_ptr<grpc::Channel> scheduler,
                   CreateClusterChannel(options.scheduler, options.credentials));
  ASSIGN_OR_RETURN(std::shared_ptr<grpc::Channel> cas, CreateClusterChannel(options.cas, options.credentials));
  worker->remote_cas_ = std::make_unique<RemoteCas>(cas, local_cas, metrics, options.remote_cas);
  if (metrics != nullptr) metrics->SetConnectedSlots(0, options.slots);
  ClusterWorker* self = worker.get();
  for (int i = 0; i < options.slots; ++i) {
    worker->slots_.push_back(std::make_unique<Slot>(i, worker->options_, scheduler, worker->remote_cas_.get(),
                                                    runner, logs, metrics, on_action_done,
                                                    [self] { self->OnSlotReachability(); }));
  }
  for (auto& slot : worker->slots_) slot->Start();
  worker->scheduler_channel_ = scheduler;
  worker->monitor_ = std::thread([self] { self->MonitorChannel(); });
  spdlog::info("kiln-worker serving the scheduler at {} with {} slots (worker {}, CAS {}, instance prefix \"{}\")",
               options.scheduler, options.slots, options.worker_name, options.cas, options.instance_name_prefix);
  return worker;
}

ClusterWorker::~ClusterWorker() { Drain(absl::ZeroDuration()); }

void ClusterWorker::Drain(absl::Duration grace) {
  {
    absl::MutexLock lock(&mu_);
    if (drained_) return;
    drained_ = true;
  }
  if (monitor_.joinable()) monitor_.join();
  for (auto& slot : slots_) slot->BeginDrain();
  const absl::Time deadline = absl::Now() + grace;
  for (auto& slot : slots_) {
    if (!slot->AwaitLoopEnd(deadline)) slot->CancelRunning();
  }
  // Cancelled actions report CANCELLED if the scheduler is there to hear it.
  for (auto& slot : slots_) slot->AwaitLoopEnd(absl::Now() + absl::Seconds(10));
  for (auto& slot : slots_) slot->Stop();
}

void ClusterWorker::MonitorChannel() {
  absl::MutexLock lock(&mu_);
  while (!drained_) {
    mu_.AwaitWithTimeout(absl::Condition(&drained_), absl::Milliseconds(500));
    if (drained_) break;
    mu_.Unlock();
    const bool ready = scheduler_channel_->GetState(false) == GRPC_CHANNEL_READY;
    for (auto& slot : slots_) slot->NoteChannelReady(ready);
    mu_.Lock();
  }
}

void ClusterWorker::OnSlotReachability() {
  int connected = 0;
  for (auto& slot : slots_) connected += slot->connected() ? 1 : 0;
  if (metrics_ != nullptr) metrics_->SetConnectedSlots(connected, static_cast<int>(slots_.size()));
  bool changed = false;
  {
    absl::MutexLock lock(&mu_);
    const bool reachable = connected > 0;
    changed = reachable != reported_reachable_;
    reported_reachable_ = reachable;
  }
  if (changed && on_reachability_ != nullptr) on_reachability_(connected > 0);
}

bool ClusterWorker::scheduler_reachable() const {
  absl::MutexLock lock(&mu_);
  return reported_reachable_;
}

int ClusterWorker::executing() const {
  int n = 0;
  for (const auto& slot : slots_) n += slot->executing() ? 1 : 0;
  return n;
}

}  // namespace kiln::cluster
