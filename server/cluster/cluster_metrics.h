// The kiln_cluster_* and kiln_remote_cas_* metrics of a worker that serves a
// Buildbarn scheduler: whether the scheduler is reachable, Synchronize calls
// by gRPC code and their latency, the remote CAS's bytes and latency, and
// how many input blobs the local cache already had. Labels are fixed small
// sets (gRPC codes, operation and direction names). Thread-safe.
#ifndef KILN_SERVER_CLUSTER_CLUSTER_METRICS_H_
#define KILN_SERVER_CLUSTER_CLUSTER_METRICS_H_

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include "absl/status/status.h"

namespace kiln::cluster {

class ClusterMetrics {
 public:
  explicit ClusterMetrics(prometheus::Registry& registry);

  // Slots whose last Synchronize succeeded, out of all slots.
  void SetConnectedSlots(int connected, int slots);
  // One Synchronize call; blocking idle calls are timed too (label `idle`).
  void RecordSynchronize(absl::StatusCode code, bool idle, double seconds);
  // One remote CAS call: "find_missing", "batch_read", "bytestream_read",
  // "batch_update", "bytestream_write", "update_action_result".
  void RecordRemoteCas(const char* operation, absl::StatusCode code, double seconds);
  void AddRemoteCasBytes(const char* direction, int64_t bytes);  // "download" | "upload"
  // Input blobs (directories and files) an action needed: already in the
  // local cache, or fetched from the remote CAS.
  void AddInputBlobs(int64_t local_hits, int64_t fetched);
  // Completed results that a Synchronize failed to deliver and that were
  // sent again.
  void RecordCompletionRetry();

 private:
  prometheus::Gauge& connected_slots_;
  prometheus::Gauge& slots_;
  prometheus::Family<prometheus::Counter>& synchronize_;
  prometheus::Family<prometheus::Histogram>& synchronize_duration_;
  prometheus::Family<prometheus::Counter>& remote_cas_requests_;
  prometheus::Family<prometheus::Histogram>& remote_cas_duration_;
  prometheus::Family<prometheus::Counter>& remote_cas_bytes_;
  prometheus::Family<prometheus::Counter>& input_blobs_;
  prometheus::Counter& completion_retries_;
};

}  // namespace kiln::cluster

#endif  // KILN_SERVER_CLUSTER_CLUSTER_METRICS_H_
