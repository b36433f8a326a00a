// A Kiln worker serving a Buildbarn scheduler (bb_scheduler) over its worker
// protocol, buildbarn.remoteworker.OperationQueue.Synchronize.
//
// Each execution slot runs its own Synchronize loop with its own worker_id
// ({hostname, worker, thread}: two workers on one host never collide):
// - Idle, the slot calls Synchronize and the scheduler may hold the call
//   until work arrives. A desired state of "executing" starts the action on
//   a thread of its own: its inputs come from the remote CAS into the local
//   one (RemoteCas), the same ActionRunner as standalone mode runs it, and
//   its outputs and ActionResult go back to the remote CAS and action cache.
// - Executing, the slot reports started, fetching_inputs, running and
//   uploading_outputs at the times the scheduler asks for
//   (next_synchronization_at), and the completed ExecuteResponse as soon as
//   it exists. The scheduler may answer a completion with the next action.
// - A desired "idle" while executing cancels the action: its sandbox is
//   killed, and the slot reports idle.
// - When a call fails (scheduler down or restarting), the slot retries with
//   jittered exponential backoff, reporting what it is doing; a completed
//   response is kept and sent again until the scheduler took it.
// - Drain sets prefer_being_idle: no new work; running actions may finish for
//   a grace period and are cancelled after it.
// Thread-safe.
#ifndef KILN_SERVER_CLUSTER_CLUSTER_WORKER_H_
#define KILN_SERVER_CLUSTER_CLUSTER_WORKER_H_

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <grpcpp/channel.h>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "server/cluster/channel.h"
#include "server/cluster/cluster_metrics.h"
#include "server/cluster/remote_cas.h"
#include "server/exec/action_runner.h"
#include "server/exec/log_stream.h"

namespace kiln::cluster {

struct ClusterOptions {
  std::string scheduler;  // bb_scheduler's worker address (workerGrpcServers)
  std::string cas;        // the cluster's CAS and action cache (bb_storage)
  ChannelCredentialFiles credentials;  // for both
  std::string worker_name;             // in worker_id and ExecutedActionMetadata.worker
  std::string instance_name_prefix;
  uint32_t size_class = 0;
  int slots = 1;
  rev2::Platform platform;  // sorted (exec::AdvertisedPlatform)
  // Idle calls may block this long on the scheduler's side before it answers.
  absl::Duration idle_call_timeout = absl::Minutes(2);
  absl::Duration executing_call_timeout = absl::Seconds(30);
  absl::Duration min_backoff = absl::Milliseconds(100);
  absl::Duration max_backoff = absl::Seconds(10);
  RemoteCasOptions remote_cas;
};

class ClusterWorker {
 public:
  using ActionDoneCallback =
      std::function<void(const rev2::ExecuteResponse& response, const exec::RunReport& report)>;
  // Told whenever the scheduler turns reachable (some slot's last call
  // succeeded) or unreachable.
  using ReachabilityCallback = std::function<void(bool reachable)>;

  // Starts the slots. `runner`, `local_cas`, `logs` (live output of running
  // actions, may be null) and `metrics` (may be null) outlive the worker.
  static absl::StatusOr<std::unique_ptr<ClusterWorker>> Start(
      const ClusterOptions& options, exec::ActionRunner* runner, cas::BlobStore* local_cas,
      exec::LogRegistry* logs, ClusterMetrics* metrics, ActionDoneCallback on_action_done,
      ReachabilityCallback on_reachability);
  ~ClusterWorker();  // Drain with no grace

  // Stops taking work (prefer_being_idle), lets running actions finish and
  // report for `grace`, cancels the rest, and stops every slot.
  void Drain(absl::Duration grace);

  bool scheduler_reachable() const;
  int executing() const;

  class Slot;

 private:
  ClusterWorker() = default;
  void OnSlotReachability();
  // Marks slots whose call waits at the scheduler as connected.
  void MonitorChannel();

  ClusterOptions options_;  // the slots refer to it
  std::vector<std::unique_ptr<Slot>> slots_;
  std::unique_ptr<RemoteCas> remote_cas_;
  std::shared_ptr<grpc::Channel> scheduler_channel_;
  std::thread monitor_;
  ClusterMetrics* metrics_ = nullptr;
  ReachabilityCallback on_reachability_;
  mutable absl::Mutex mu_;
  bool reported_reachable_ ABSL_GUARDED_BY(mu_) = false;
  bool drained_ ABSL_GUARDED_BY(mu_) = false;
};

// The worker_id of one slot: {"hostname", "worker", "thread"}.
std::map<std::string, std::string> SlotWorkerId(const std::string& hostname, const std::string& worker_name,
                                                int slot);

// The full instance name of an action: prefix and suffix joined by "/".
std::string JoinInstanceName(const std::string& prefix, const std::string& suffix);

}  // namespace kiln::cluster

#endif  // KILN_SERVER_CLUSTER_CLUSTER_WORKER_H_
