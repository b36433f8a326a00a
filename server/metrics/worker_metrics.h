// Kiln's Prometheus metrics (prefix kiln_, base units, _total counters).
//
// Recorded as things happen: per-stage duration histograms and outcome
// counters of actions, reaping counters from each sandbox's PID 1, cache
// hits, and gRPC requests (through an interceptor). Read at scrape time:
// queue depth, in-flight actions, slots, and the CAS's size and counters.
// Labels are small fixed sets (stage, outcome, gRPC code and method); never
// a digest or a command.
#ifndef KILN_SERVER_METRICS_WORKER_METRICS_H_
#define KILN_SERVER_METRICS_WORKER_METRICS_H_

#include <functional>
#include <memory>
#include <string>

#include <grpcpp/support/server_interceptor.h>
#include <prometheus/collectable.h>
#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include "absl/status/status.h"
#include "server/cas/blob_store.h"
#include "server/exec/scheduler.h"

namespace kiln::metrics {

class WorkerMetrics {
 public:
  explicit WorkerMetrics(prometheus::Registry& registry);

  // Thread-safe (prometheus-cpp metrics are).
  void RecordAction(const rev2::ExecuteResponse& response, const exec::RunReport& report);
  void RecordCacheHit();
  void RecordGrpc(const std::string& method, grpc::StatusCode code, double seconds);
  // An authorization decision: `principal` ("" when not authenticated) and
  // OK, UNAUTHENTICATED or PERMISSION_DENIED. Principals come from the
  // principals file or the client CA, so the label set stays bounded.
  void RecordAuthorization(const std::string& principal, absl::StatusCode code);

  // An interceptor factory for grpc::ServerBuilder that feeds RecordGrpc.
  std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface> InterceptorFactory();

 private:
  void ObserveStage(const std::string& stage, const std::string& outcome, double seconds);

  prometheus::Family<prometheus::Histogram>& stage_duration_;
  prometheus::Family<prometheus::Counter>& actions_;
  prometheus::Counter& orphans_reaped_;
  prometheus::Histogram& orphans_per_action_;
  prometheus::Counter& zombies_reaped_;
  prometheus::Counter& killed_at_teardown_;
  prometheus::Counter& teardown_failures_;
  prometheus::Family<prometheus::Counter>& sandboxes_;
  prometheus::Family<prometheus::Counter>& grpc_requests_;
  prometheus::Family<prometheus::Histogram>& grpc_duration_;
  prometheus::Family<prometheus::Counter>& authorization_;
};

// Values read when Prometheus scrapes: the scheduler's queue and slots and
// the CAS's size and counters. Either source may be null.
class WorkerStateCollector : public prometheus::Collectable {
 public:
  WorkerStateCollector(cas::BlobStore* cas, exec::Scheduler* scheduler)
      : cas_(cas), scheduler_(scheduler) {}
  std::vector<prometheus::MetricFamily> Collect() const override;

 private:
  cas::BlobStore* const cas_;
  exec::Scheduler* const scheduler_;
};

}  // namespace kiln::metrics

#endif  // KILN_SERVER_METRICS_WORKER_METRICS_H_
