// The kiln-worker server: opens the state directory (CAS, action cache),
// builds the gRPC server with every service plus health and reflection, and
// the Prometheus endpoint. Used by worker_main.cc and, in-process, by tests.
#ifndef KILN_SERVER_WORKER_SERVER_H_
#define KILN_SERVER_WORKER_SERVER_H_

#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include <grpcpp/server.h>
#include <prometheus/exposer.h>
#include <prometheus/registry.h>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/posix.h"
#include "common/thread_pool.h"
#include "server/api/action_cache_service.h"
#include "server/api/bytestream_service.h"
#include "server/api/capabilities_service.h"
#include "server/api/cas_service.h"
#include "server/api/execution_service.h"
#include "server/cas/action_cache.h"
#include "server/cas/blob_store.h"
#include "server/api/jwt_verifier.h"
#include "server/memory_trimmer.h"
#include "server/cluster/cluster_metrics.h"
#include "server/cluster/cluster_worker.h"
#include "server/exec/action_runner.h"
#include "server/exec/input_stager.h"
#include "server/exec/scheduler.h"
#include "server/metrics/worker_metrics.h"

namespace kiln {

struct WorkerOptions {
  std::string listen = "127.0.0.1:8980";       // gRPC; port 0 picks a free port
  std::string metrics_listen = "127.0.0.1:8981";  // Prometheus; empty disables it
  std::string state_dir;
  int64_t cas_max_bytes = int64_t{10} << 30;
  int64_t cas_max_blob_bytes = 0;  // 0: same as cas_max_bytes
  int io_threads = 8;
  // Whether CAS and action-cache writes are fsynced before they are
  // acknowledged: "always", "never" (safe across a worker crash; after a
  // machine crash the next start verifies the state dir, see
  // server/cas/unsynced_writes.h), or "auto": never in cluster mode, where
  // the local CAS is only a cache of the cluster's, else always.
  std::string fsync = "auto";
  // Execution. Zero concurrency serves storage only (exec_enabled: false).
  int concurrency = 0;
  int max_queued_actions = 1000;
  // Finished operations kept for WaitExecution/GetOperation (10 minutes, at
  // most this many).
  int max_kept_operations = exec::Scheduler::kDefaultMaxKeptCompleted;
  exec::ExecOptions exec;  // exec_root is set from state_dir
  // TLS: with a certificate and key the listener speaks TLS only; with a
  // client CA, clients must present a certificate it signed. The files are
  // re-read when they change (every tls_reload_interval).
  std::string tls_cert, tls_key, tls_client_ca;
  absl::Duration tls_reload_interval = absl::Seconds(1);
  // The principals file (see server/api/authorizer.h); empty: none. With
  // neither this, nor tls_client_ca, nor JWT keys, authorization is off.
  std::string token_file;
  api::JwtOptions jwt;  // JWT bearer tokens when jwt.public_keys_file is set
  // gRPC server reflection (v1 and v1alpha), open to every caller like
  // Health: it shows the API's shape, never data.
  bool reflection = true;
  // Cluster mode when cluster.scheduler is set: the slots serve that
  // Buildbarn scheduler instead of this server's Execution service, and the
  // CAS is a cache of cluster.cas (slots, platform and worker name are
  // filled from the fields above).
  cluster::ClusterOptions cluster;
};

// The largest gRPC message the server accepts; batch calls are capped lower
// (kMaxBatchTotalBytes) so that their responses fit clients' 4 MiB default.
inline constexpr int kMaxGrpcMessageBytes = 16 << 20;
inline constexpr int64_t kMaxBatchTotalBytes = 4000000;

class WorkerServer {
 public:
  // Opens the state dir (taking its lock: one worker per state dir), recovers
  // the stores and starts serving. Errors name what to fix.
  static absl::StatusOr<std::unique_ptr<WorkerServer>> Start(const WorkerOptions& options);
  ~WorkerServer();

  int grpc_port() const { return grpc_port_; }
  int metrics_port() const { return metrics_port_; }
  // Blocks until Shutdown.
  void Wait();
  // Drains: health turns NOT_SERVING, no new actions are accepted, running
  // ones get `grace` to finish before they are cancelled; then the server
  // stops.
  void Shutdown(absl::Duration grace);
  exec::Scheduler* scheduler() { return scheduler_.get(); }
  cluster::ClusterWorker* cluster_worker() { return cluster_worker_.get(); }
  // Re-reads the principals file now if it changed (SIGHUP). The TLS files
  // are watched by gRPC every tls_reload_interval.
  void ReloadCredentials() {
    if (authorizer_ != nullptr) authorizer_->ReloadIfChanged();
  }

 private:
  WorkerServer() = default;

  UniqueFd state_lock_;
  std::unique_ptr<cas::BlobStore> cas_;
  std::unique_ptr<cas::ActionCache> action_cache_;
  std::unique_ptr<ThreadPool> io_;
  std::unique_ptr<api::Authorizer> authorizer_;  // null: authorization off
  std::unique_ptr<api::CapabilitiesService> capabilities_service_;
  std::unique_ptr<api::CasService> cas_service_;
  std::unique_ptr<api::ByteStreamService> bytestream_service_;
  std::unique_ptr<api::ActionCacheService> action_cache_service_;
  exec::LogRegistry logs_;
  std::unique_ptr<exec::InputStager> stager_;
  std::unique_ptr<exec::ActionRunner> runner_;
  std::unique_ptr<exec::Scheduler> scheduler_;
  std::unique_ptr<cluster::ClusterMetrics> cluster_metrics_;
  std::unique_ptr<cluster::ClusterWorker> cluster_worker_;
  std::unique_ptr<api::ExecutionService> execution_service_;
  std::unique_ptr<api::OperationsService> operations_service_;
  std::vector<std::unique_ptr<grpc::Service>> reflection_services_;  // empty: --noreflection
  std::unique_ptr<grpc::Server> server_;
  std::shared_ptr<prometheus::Registry> registry_ = std::make_shared<prometheus::Registry>();
  std::unique_ptr<metrics::WorkerMetrics> metrics_;
  std::shared_ptr<prometheus::Collectable> state_collector_;
  std::shared_ptr<prometheus::Collectable> process_metrics_;
  std::unique_ptr<prometheus::Exposer> exposer_;
  std::unique_ptr<MemoryTrimmer> memory_trimmer_;
  std::atomic<bool> shut_down_{false};
  int grpc_port_ = 0;
  int metrics_port_ = 0;
};

}  // namespace kiln

#endif  // KILN_SERVER_WORKER_SERVER_H_
