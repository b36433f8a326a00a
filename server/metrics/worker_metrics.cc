#include "server/metrics/worker_metrics.h"

#include <chrono>
#include <optional>

#include <google/protobuf/util/time_util.h>

#include <grpcpp/server_context.h>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"

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

// Counts each call once, with the code the client actually got, when the
// call is over (POST_RECV_CLOSE: status sent, or cancelled):
//   - A call cancelled by the client or by its deadline counts as CANCELLED
//     or DEADLINE_EXCEEDED, whatever status the handler chose afterwards
//     (gRPC's Health.Watch finishes such a call with UNKNOWN; a call cancelled
//     before its request arrived gets gRPC's empty UNIMPLEMENTED). Neither
//     reaches the client, and neither is a server error.
//   - A request that could not be parsed is answered by gRPC with an empty
//     UNIMPLEMENTED, as if the method did not exist; it is rewritten here to
//     INVALID_ARGUMENT with a message, which is what happened.
class GrpcMetricsInterceptor : public grpc::experimental::Interceptor {
 public:
  GrpcMetricsInterceptor(WorkerMetrics* metrics, std::string method, grpc::experimental::ServerRpcInfo* info)
      : metrics_(metrics),
        method_(std::move(method)),
        info_(info),
        single_request_(info->type() == grpc::experimental::ServerRpcInfo::Type::UNARY ||
                        info->type() == grpc::experimental::ServerRpcInfo::Type::SERVER_STREAMING),
        start_(std::chrono::steady_clock::now()) {}

  ~GrpcMetricsInterceptor() override {
    // Only if gRPC never reported the close (it always should).
    absl::MutexLock lock(&mu_);
    if (!recorded_) Record(sent_code_.value_or(grpc::StatusCode::CANCELLED));
  }

  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    using grpc::experimental::InterceptionHookPoints;
    if (methods->QueryInterceptionHookPoint(InterceptionHookPoints::POST_RECV_MESSAGE) &&
        single_request_ && methods->GetRecvMessage() == nullptr) {
      absl::MutexLock lock(&mu_);
      undecodable_ = true;
    }
    if (methods->QueryInterceptionHookPoint(InterceptionHookPoints::PRE_SEND_STATUS)) {
      grpc::Status status = methods->GetSendStatus();
      absl::MutexLock lock(&mu_);
      if (undecodable_ && status.error_code() == grpc::StatusCode::UNIMPLEMENTED &&
          status.error_message().empty()) {
        status = grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                              absl::StrCat("the request message of ", info_->method(),
                                           " could not be parsed (not the method's request type?)"));
        methods->ModifySendStatus(status);
      }
      sent_code_ = status.error_code();
      sent_at_ = std::chrono::steady_clock::now();
    }
    if (methods->QueryInterceptionHookPoint(InterceptionHookPoints::POST_RECV_CLOSE)) {
      grpc::ServerContextBase* context = info_->server_context();
      absl::MutexLock lock(&mu_);
      if (!recorded_) {
        if (context->IsCancelled()) {
          // The client's own deadline timer usually fires first and cancels
          // the call a moment before the server's copy of the deadline
          // (sent as a relative timeout, so it ends a transit time later).
          const bool expired = context->deadline() <= std::chrono::system_clock::now() + kDeadlineSlack;
          Record(expired ? grpc::StatusCode::DEADLINE_EXCEEDED : grpc::StatusCode::CANCELLED);
        } else {
          Record(sent_code_.value_or(grpc::StatusCode::UNKNOWN));
        }
      }
    }
    methods->Proceed();
  }

 private:
  void Record(grpc::StatusCode code) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    recorded_ = true;
    // Streams: until the status was sent (or until now, if it never was).
    auto end = sent_at_.value_or(std::chrono::steady_clock::now());
    metrics_->RecordGrpc(method_, code, std::chrono::duration<double>(end - start_).count());
  }

  static constexpr std::chrono::milliseconds kDeadlineSlack{500};

  WorkerMetrics* const metrics_;
  const std::string method_;
  grpc::experimental::ServerRpcInfo* const info_;
  const bool single_request_;  // one request message: unary or server-streaming
  const std::chrono::steady_clock::time_point start_;
  // Hooks of one call may run on different threads.
  absl::Mutex mu_;
  bool undecodable_ ABSL_GUARDED_BY(mu_) = false;
  std::optional<grpc::StatusCode> sent_code_ ABSL_GUARDED_BY(mu_);
  std::optional<std::chrono::steady_clock::time_point> sent_at_ ABSL_GUARDED_BY(mu_);
  bool recorded_ ABSL_GUARDED_BY(mu_) = false;
};

class GrpcMetricsInterceptorFactory : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  explicit GrpcMetricsInterceptorFactory(WorkerMetrics* metrics) : metrics_(metrics) {}
  grpc::experimental::Interceptor* CreateServerInterceptor(grpc::experimental::ServerRpcInfo* info) override {
    // Only Kiln's own methods: a closed set, safe as a label value.
    std::string method = info->method();
    if (method.rfind("/build.bazel.", 0) != 0 && method.rfind("/google.", 0) != 0 &&
        method.rfind("/grpc.health.", 0) != 0 && method.rfind("/grpc.reflection.", 0) != 0) {
      method = "other";
    }
    return new GrpcMetricsInterceptor(metrics_, method, info);
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
      sandboxes_(prometheus::BuildCounter()
                     .Name("kiln_sandboxes_total")
                     .Help("Actions run in a sandbox, by kind: warm (prepared before the action came) or cold "
                           "(started for it: warm sandboxes off or not ready yet, or an action needing other "
                           "binds, network or limits).")
                     .Register(registry)),
      grpc_requests_(prometheus::BuildCounter()
                         .Name("kiln_grpc_requests_total")
                         .Help("gRPC requests served, by method and the status code the client got (CANCELLED or "
                               "DEADLINE_EXCEEDED when the client or its deadline ended the call).")
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
    sandboxes_.Add({{"kind", report.warm_sandbox ? "warm" : "cold"}}).Increment();
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
    out.push_back(Single("kiln_actions_merged_total",
                         "Execute requests that joined an identical action already queued or running (same "
                         "instance, action digest and principal) instead of running it again.",
                         MetricType::Counter, static_cast<double>(s.merged)));
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
