#include "server/cluster/cluster_metrics.h"

#include <string>

#include "absl/status/status.h"

namespace kiln::cluster {
namespace {

// 1 ms to 2 min: a non-blocking Synchronize or a small batch at the low end,
// an idle call that waited for work or a large blob at the top.
const prometheus::Histogram::BucketBoundaries& Buckets() {
  static const auto* buckets = new prometheus::Histogram::BucketBoundaries{
      0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120};
  return *buckets;
}

// absl's names are gRPC's ("FAILED_PRECONDITION"), as kiln_grpc_* use.
std::string CodeName(absl::StatusCode code) { return absl::StatusCodeToString(code); }

}  // namespace

ClusterMetrics::ClusterMetrics(prometheus::Registry& registry)
    : connected_slots_(prometheus::BuildGauge()
                           .Name("kiln_cluster_scheduler_connected_slots")
                           .Help("Execution slots whose last Synchronize with the scheduler succeeded")
                           .Register(registry)
                           .Add({})),
      slots_(prometheus::BuildGauge()
                 .Name("kiln_cluster_slots")
                 .Help("Execution slots this worker offers the scheduler")
                 .Register(registry)
                 .Add({})),
      synchronize_(prometheus::BuildCounter()
                       .Name("kiln_cluster_synchronize_total")
                       .Help("Synchronize calls to the scheduler by gRPC code")
                       .Register(registry)),
      synchronize_duration_(prometheus::BuildHistogram()
                                .Name("kiln_cluster_synchronize_duration_seconds")
                                .Help("Synchronize latency; idle calls may wait for work")
                                .Register(registry)),
      remote_cas_requests_(prometheus::BuildCounter()
                               .Name("kiln_remote_cas_requests_total")
                               .Help("Calls to the cluster's CAS and action cache by operation and gRPC code")
                               .Register(registry)),
      remote_cas_duration_(prometheus::BuildHistogram()
                               .Name("kiln_remote_cas_request_duration_seconds")
                               .Help("Latency of calls to the cluster's CAS and action cache")
                               .Register(registry)),
      remote_cas_bytes_(prometheus::BuildCounter()
                            .Name("kiln_remote_cas_bytes_total")
                            .Help("Blob bytes moved to or from the cluster's CAS")
                            .Register(registry)),
      input_blobs_(prometheus::BuildCounter()
                       .Name("kiln_cluster_input_blobs_total")
                       .Help("Input blobs actions needed, by where they came from (local_cache or remote)")
                       .Register(registry)),
      completion_retries_(prometheus::BuildCounter()
                              .Name("kiln_cluster_completion_retries_total")
                              .Help("Completed results sent again after a failed Synchronize")
                              .Register(registry)
                              .Add({})) {
  input_blobs_.Add({{"source", "local_cache"}});
  input_blobs_.Add({{"source", "remote"}});
  remote_cas_bytes_.Add({{"direction", "download"}});
  remote_cas_bytes_.Add({{"direction", "upload"}});
}

void ClusterMetrics::SetConnectedSlots(int connected, int slots) {
  connected_slots_.Set(connected);
  slots_.Set(slots);
}

void ClusterMetrics::RecordSynchronize(absl::StatusCode code, bool idle, double seconds) {
  synchronize_.Add({{"code", CodeName(code)}}).Increment();
  synchronize_duration_.Add({{"state", idle ? "idle" : "executing"}}, Buckets()).Observe(seconds);
}

void ClusterMetrics::RecordRemoteCas(const char* operation, absl::StatusCode code, double seconds) {
  remote_cas_requests_.Add({{"operation", operation}, {"code", CodeName(code)}}).Increment();
  remote_cas_duration_.Add({{"operation", operation}}, Buckets()).Observe(seconds);
}

void ClusterMetrics::AddRemoteCasBytes(const char* direction, int64_t bytes) {
  remote_cas_bytes_.Add({{"direction", direction}}).Increment(static_cast<double>(bytes));
}

void ClusterMetrics::AddInputBlobs(int64_t local_hits, int64_t fetched) {
  input_blobs_.Add({{"source", "local_cache"}}).Increment(static_cast<double>(local_hits));
  input_blobs_.Add({{"source", "remote"}}).Increment(static_cast<double>(fetched));
}

void ClusterMetrics::RecordCompletionRetry() { completion_retries_.Increment(); }

}  // namespace kiln::cluster
