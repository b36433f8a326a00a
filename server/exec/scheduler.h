// The worker's own scheduler: a bounded priority queue in front of a fixed
// number of execution slots, one thread each. It owns the operations that
// Execute, WaitExecution and the Operations service look at.
//
// - Identical actions (same instance and action digest) in flight at the same
//   time share one operation: they run once and every waiter gets the result.
// - Lower ExecutionPolicy.priority runs sooner; equal priorities are FIFO.
// - A full queue is RESOURCE_EXHAUSTED at submission, never a wait.
// - Cancel stops a queued action at once and a running one through its
//   sandbox (SIGTERM, then SIGKILL after the grace period).
// - Drain stops accepting work, lets running actions finish for a grace
//   period, then cancels what is left.
// Thread-safe.
#ifndef KILN_SERVER_EXEC_SCHEDULER_H_
#define KILN_SERVER_EXEC_SCHEDULER_H_

#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "google/longrunning/operations.pb.h"
#include "server/exec/action_runner.h"
#include "server/exec/log_stream.h"

namespace kiln::exec {

// One execution as clients see it. Thread-safe.
class Operation {
 public:
  // `owner` is the principal that submitted it ("" when authorization is
  // off); only it (or an operations admin) may see or touch the operation.
  Operation(std::string name, Digest action_digest, std::string instance, std::string owner = "");

  const std::string& name() const { return name_; }
  const Digest& action_digest() const { return action_digest_; }
  const std::string& instance() const { return instance_; }
  const std::string& owner() const { return owner_; }

  // The google.longrunning form, with a version that grows with each change.
  google::longrunning::Operation Snapshot(int64_t* version) const;
  bool done() const;

  // `on_change` runs (outside any lock of the operation) after each change
  // until Unsubscribe returns.
  int Subscribe(std::function<void()> on_change);
  void Unsubscribe(int id);

  // EXECUTING, with the live stdout/stderr streams (ByteStream resource
  // names, empty if none) and what is known of the execution so far
  // (ExecuteOperationMetadata.partial_execution_metadata, v2.6) in the same
  // change: one EXECUTING message per stream follower, never two.
  void SetExecuting(std::string stdout_name, std::string stderr_name,
                    rev2::ExecutedActionMetadata partial);
  void Complete(rev2::ExecuteResponse response);
  CancelToken& cancel_token() { return cancel_; }

 private:
  void Notify();

  const std::string name_;
  const Digest action_digest_;
  const std::string instance_;
  const std::string owner_;
  CancelToken cancel_;
  mutable absl::Mutex mu_;
  rev2::ExecutionStage::Value stage_ ABSL_GUARDED_BY(mu_) = rev2::ExecutionStage::QUEUED;
  std::optional<rev2::ExecuteResponse> response_ ABSL_GUARDED_BY(mu_);
  std::string stdout_stream_name_ ABSL_GUARDED_BY(mu_);
  std::string stderr_stream_name_ ABSL_GUARDED_BY(mu_);
  std::optional<rev2::ExecutedActionMetadata> partial_ ABSL_GUARDED_BY(mu_);
  int64_t version_ ABSL_GUARDED_BY(mu_) = 0;
  // Subscribers are called under their own lock so Unsubscribe can wait out
  // a call in progress.
  mutable absl::Mutex subscribers_mu_;
  std::map<int, std::function<void()>> subscribers_ ABSL_GUARDED_BY(subscribers_mu_);
  int next_subscriber_ ABSL_GUARDED_BY(subscribers_mu_) = 0;
};


struct SchedulerStats {
  int queued = 0;
  int running = 0;
  int slots = 0;
  int max_queued = 0;
  // Submissions that joined an identical action already in flight.
  int64_t merged = 0;
};

class Scheduler {
 public:
  // Called after each action that ran (on its slot thread), and for each one
  // cancelled while it waited for a slot (outcome kCancelled, on the thread
  // that cancelled it), so that every operation is counted once. Not for
  // cache hits, nor for submissions merged into an action in flight.
  using ActionDoneCallback =
      std::function<void(const rev2::ExecuteResponse& response, const RunReport& report)>;

  // `logs` receives the live output streams of running actions. Completed
  // operations are kept for kKeepCompleted, the newest `max_kept_completed`
  // at most (each holds its ExecuteResponse, a few KiB).
  Scheduler(ActionRunner* runner, LogRegistry* logs, int slots, int max_queued,
            ActionDoneCallback on_action_done = nullptr, int max_kept_completed = kDefaultMaxKeptCompleted);
  ~Scheduler();  // drains with no grace

  // Returns the operation for the action, new or shared with an identical
  // one in flight for the same owner. Operations are never shared between
  // owners: one principal must not see another's live output or cancel its
  // action. RESOURCE_EXHAUSTED when the queue is full, UNAVAILABLE when
  // draining.
  absl::StatusOr<std::shared_ptr<Operation>> Submit(const rev2::ExecuteRequest& request,
                                                    const Digest& action_digest,
                                                    const std::string& owner = "");
  // Running, queued, or completed in the last few minutes; nullptr if unknown.
  std::shared_ptr<Operation> Find(const std::string& name);
  // Every known operation, sorted by name.
  std::vector<std::shared_ptr<Operation>> List();
  absl::Status Cancel(const std::string& name);
  // Forgets a completed operation (google.longrunning DeleteOperation: the
  // client no longer wants its result). FAILED_PRECONDITION while it runs.
  absl::Status Delete(const std::string& name);
  void Drain(absl::Duration grace);
  SchedulerStats GetStats();

  static constexpr absl::Duration kKeepCompleted = absl::Minutes(10);
  static constexpr int kDefaultMaxKeptCompleted = 10000;

 private:
  struct Queued {
    int32_t priority;
    uint64_t sequence;
    std::shared_ptr<Operation> operation;
    rev2::ExecuteRequest request;
    google::protobuf::Timestamp queued_at;
  };
  struct Order {
    bool operator()(const std::pair<int32_t, uint64_t>& a, const std::pair<int32_t, uint64_t>& b) const {
      return a < b;
    }
  };
  void RunSlot(int slot);
  absl::Status CancelWith(const std::string& name, const absl::Status& why);
  // An operation completes: remembered in completion order (before its
  // waiters hear of it, so that what they see next is already trimmed),
  // so that forgetting the old ones never scans every operation.
  void Completed(const Operation& operation);
  void ForgetOldLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  ActionRunner* const runner_;
  LogRegistry* const logs_;
  const ActionDoneCallback on_action_done_;
  const int slots_;
  const int max_queued_;
  const int max_kept_completed_;
  absl::Mutex mu_;
  std::map<std::pair<int32_t, uint64_t>, Queued, Order> queue_ ABSL_GUARDED_BY(mu_);
  uint64_t sequence_ ABSL_GUARDED_BY(mu_) = 0;
  int running_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t merged_ ABSL_GUARDED_BY(mu_) = 0;
  bool accepting_ ABSL_GUARDED_BY(mu_) = true;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  // Every operation by name, and the in-flight ones by action.
  absl::flat_hash_map<std::string, std::shared_ptr<Operation>> operations_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<std::string, std::shared_ptr<Operation>> in_flight_ ABSL_GUARDED_BY(mu_);
  // Completed operations by name, oldest first (some may be deleted already).
  std::deque<std::pair<absl::Time, std::string>> completed_ ABSL_GUARDED_BY(mu_);
  std::vector<std::thread> threads_;
};

}  // namespace kiln::exec

#endif  // KILN_SERVER_EXEC_SCHEDULER_H_
