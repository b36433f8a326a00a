#include "server/metrics/worker_metrics.h"

#include <chrono>

#include <google/protobuf/util/time_util.h>

namespace kiln::metrics {
namespace {

using google::protobuf::util::TimeUtil;

// 1 ms to ~17 min: sandbox setup at the low end, long compiles at the top.
const prometheus::Histogram::BucketBoundaries& DurationBuckets() {
  static const auto* buckets = new prometheus::Histogram::BucketBoundaries{
      0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1200};
  return *buckets;
}

double Seconds(const google::protobuf::Timestamp& from, const google::protobuf::Timestamp& to) {
  if (from.seconds() == 0 || to.seconds() == 0) return -1;
  return (TimeUtil::TimestampToNanoseconds(to) - TimeUtil::TimestampToNanoseconds(from)) / 1e9;
}

const char* CodeName(int code) {
  static const char* kNames[] = {"OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED",
                                 "NOT_FOUND", "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED",
                                 "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED",
                                 "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED"};
  return code >= 0 && code <= 16 ? kNames[code] : "UNKNOWN";
}

prometheus::MetricFamily Single(const std::string& name, const std::string& help,
                                prometheus::MetricType type, double value) {
  prometheus::MetricFamily family{name, help, type, {}};
  prometheus::ClientMetric metric;
  if (type == prometheus::MetricType::Counter) {
    metric.counter.value = value;
  } else {
    metric.gauge.value = value;
  }
  family.metric.push_back(metric);
  return family;
}

class GrpcMetricsInterceptor : public grpc::experimental::Interceptor {
 public:
  GrpcMetricsInterceptor(WorkerMetrics* metrics, std::string method)
      : metrics_(metrics), method_(std::move(method)), start_(std::chrono::steady_clock::now()) {}

  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(
            grpc::experimental::InterceptionHookPoints::PRE_SEND_STATUS)) {
      double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
      metrics_->RecordGrpc(method_, methods->GetSendStatus().error_code(), seconds);
    }
    methods->Proceed();
  }

 private:
  WorkerMetrics* const metrics_;
  const std::string method_;
  const std::chrono::steady_clock::time_point start_;
};

class GrpcMetricsInterceptorFactory : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  explicit GrpcMetricsInterceptorFactory(WorkerMetrics* metrics) : metrics_(metrics) {}
  grpc::experimental::Interceptor* CreateServerInterceptor(grpc::experimental::ServerRpcInfo* info) override {
    // Only Kiln's own methods: a closed set, safe as a label value.
    std::string method = info->method();
    if (method.rfind("/build.bazel.", 0) != 0 && method.rfind("/google.", 0) != 0 &&
        method.rfind("/grpc.health.", 0) != 0) {
      method = "other";
    }
    return new GrpcMetricsInterceptor(metrics_, method);
  }

 private:
  WorkerMetrics* const metrics_;
};

}  // namespace

WorkerMetrics::WorkerMetrics(prometheus::Registry& registry)
    : stage_duration_(prometheus::BuildHistogram()
                          .Name("kiln_action_stage_duration_seconds")
                          .Help("Duration of each stage of an action, by stage and outcome.")
                          .Register(registry)),
      actions_(prometheus::BuildCounter()
                   .Name("kiln_actions_total")
                   .Help("Actions finished, by outcome (success, nonzero_exit, timeout, oom, cancelled, "
                         "error, cache_hit) and gRPC status code.")
                   .Register(registry)),
      orphans_reaped_(prometheus::BuildCounter()
                          .Name("kiln_sandbox_orphans_reaped_total")
                          .Help("Processes reaped by the sandboxes' PID-1 init besides the actions themselves.")
                          .Register(registry)
                          .Add({})),
      orphans_per_action_(prometheus::BuildHistogram()
                              .Name("kiln_sandbox_orphans_per_action")
                              .Help("Orphaned processes the PID-1 init reaped, per action.")
                              .Register(registry)
                              .Add({}, prometheus::Histogram::BucketBoundaries{0, 1, 2, 5, 10, 50, 100, 1000})),
      zombies_reaped_(prometheus::BuildCounter()
                          .Name("kiln_sandbox_zombies_reaped_total")
                          .Help("Every process the PID-1 init reaped: actions and orphans.")
                          .Register(registry)
                          .Add({})),
      killed_at_teardown_(prometheus::BuildCounter()
                              .Name("kiln_sandbox_processes_killed_at_teardown_total")
                              .Help("Processes still running when their action ended, killed with the sandbox.")
                              .Register(registry)
                              .Add({})),
      teardown_failures_(prometheus::BuildCounter()
                             .Name("kiln_sandbox_teardown_failures_total")
                             .Help("Sandboxes that ended without a result (setup or teardown failed).")
                             .Register(registry)
                             .Add({})),
      grpc_requests_(prometheus::BuildCounter()
                         .Name("kiln_grpc_requests_total")
                         .Help("gRPC requests served, by method and status code.")
                         .Register(registry)),
      grpc_duration_(prometheus::BuildHistogram()
                         .Name("kiln_grpc_request_duration_seconds")
                         .Help("gRPC request latency, by method (streams: until the status is sent).")
                         .Register(registry)),
      authorization_(prometheus::BuildCounter()
                         .Name("kiln_authorization_decisions_total")
                         .Help("Authorization decisions by principal (\"\" when not authenticated) and "
                               "result: allowed, unauthenticated, permission_denied.")
                         .Register(registry)) {}

void WorkerMetrics::ObserveStage(const std::string& stage, const std::string& outcome, double seconds) {
  if (seconds < 0) return;  // the stage did not happen
  stage_duration_.Add({{"stage", stage}, {"outcome", outcome}}, DurationBuckets()).Observe(seconds);
}

void WorkerMetrics::RecordAction(const rev2::ExecuteResponse& response, const exec::RunReport& report) {
  const std::string outcome = exec::OutcomeName(report.outcome);
  actions_.Add({{"outcome", outcome}, {"code", CodeName(response.status().code())}}).Increment();
  const auto& m = response.result().execution_metadata();
  ObserveStage("queued", outcome, Seconds(m.queued_timestamp(), m.worker_start_timestamp()));
  ObserveStage("input_fetch", outcome, Seconds(m.worker_start_timestamp(), m.input_fetch_completed_timestamp()));
  ObserveStage("staging", outcome, Seconds(m.input_fetch_start_timestamp(), m.input_fetch_completed_timestamp()));
  if (report.sandbox_ran) ObserveStage("sandbox_setup", outcome, report.sandbox_setup_seconds);
  ObserveStage("execution", outcome, Seconds(m.execution_start_timestamp(), m.execution_completed_timestamp()));
  ObserveStage("output_upload", outcome, Seconds(m.output_upload_start_timestamp(), m.output_upload_completed_timestamp()));
  ObserveStage("total", outcome, Seconds(m.queued_timestamp(), m.worker_completed_timestamp()));
  if (report.sandbox_ran) {
    orphans_reaped_.Increment(report.orphans_reaped);
    orphans_per_action_.Observe(report.orphans_reaped);
    zombies_reaped_.Increment(report.orphans_reaped + 1);
    killed_at_teardown_.Increment(report.killed_at_teardown);
  }
  if (report.teardown_failed) teardown_failures_.Increment();
}

void WorkerMetrics::RecordCacheHit() {
  actions_.Add({{"outcome", "cache_hit"}, {"code", "OK"}}).Increment();
}

void WorkerMetrics::RecordGrpc(const std::string& method, grpc::StatusCode code, double seconds) {
  grpc_requests_.Add({{"method", method}, {"code", CodeName(code)}}).Increment();
  grpc_duration_.Add({{"method", method}}, DurationBuckets()).Observe(seconds);
}

void WorkerMetrics::RecordAuthorization(const std::string& principal, absl::StatusCode code) {
  const char* result = code == absl::StatusCode::kOk                 ? "allowed"
                       : code == absl::StatusCode::kUnauthenticated ? "unauthenticated"
                                                                    : "permission_denied";
  authorization_.Add({{"principal", principal}, {"result", result}}).Increment();
}

std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface> WorkerMetrics::InterceptorFactory() {
  return std::make_unique<GrpcMetricsInterceptorFactory>(this);
}

std::vector<prometheus::MetricFamily> WorkerStateCollector::Collect() const {
  using prometheus::MetricType;
  std::vector<prometheus::MetricFamily> out;
  if (scheduler_ != nullptr) {
    exec::SchedulerStats s = scheduler_->GetStats();
    out.push_back(Single("kiln_actions_in_flight", "Actions running now.", MetricType::Gauge, s.running));
    out.push_back(Single("kiln_action_queue_depth", "Actions waiting for an execution slot.", MetricType::Gauge, s.queued));
    out.push_back(Single("kiln_action_queue_capacity", "Most actions that may wait (--max_queued_actions).", MetricType::Gauge, s.max_queued));
    out.push_back(Single("kiln_execution_slots", "Actions that may run at once (--concurrency).", MetricType::Gauge, s.slots));
  }
  if (cas_ != nullptr) {
    cas::BlobStoreStats c = cas_->GetStats();
    out.push_back(Single("kiln_cas_stored_bytes", "Bytes of blobs in the CAS.", MetricType::Gauge, c.bytes));
    out.push_back(Single("kiln_cas_capacity_bytes", "The CAS size cap (--cas_max_bytes).", MetricType::Gauge, c.max_bytes));
    out.push_back(Single("kiln_cas_blobs", "Blobs in the CAS.", MetricType::Gauge, c.blobs));
    out.push_back(Single("kiln_cas_evictions_total", "Blobs evicted to stay under the cap.", MetricType::Counter, c.evictions));
    prometheus::MetricFamily lookups{"kiln_cas_lookups_total", "CAS lookups, by result (hit or miss).", MetricType::Counter, {}};
    for (auto [result, value] : {std::pair<const char*, int64_t>{"hit", c.hits}, {"miss", c.misses}}) {
      prometheus::ClientMetric metric;
      metric.label.push_back({"result", result});
      metric.counter.value = static_cast<double>(value);
      lookups.metric.push_back(metric);
    }
    out.push_back(lookups);
    out.push_back(Single("kiln_cas_read_bytes_total", "Bytes read out of CAS blobs.", MetricType::Counter, c.bytes_read));
    out.push_back(Single("kiln_cas_written_bytes_total", "Bytes of new blobs stored.", MetricType::Counter, c.bytes_written));
  }
  return out;
}

}  // namespace kiln::metrics
