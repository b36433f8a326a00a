// The cluster's CAS and action cache (bb_storage, or any REAPI storage) seen
// from a Kiln worker, with the worker's embedded CAS as a local LRU cache in
// front of it:
// - Before an action runs, its Action, Command and whole input tree are made
//   present in the local CAS (only what the local cache lacks is fetched:
//   BatchReadBlobs for small blobs, ByteStream for large ones, a bounded
//   number of calls in flight across all slots), so staging hardlinks from
//   local files exactly as in standalone mode.
// - After it ran, the blobs its ActionResult names (outputs, output trees and
//   their files, stdout, stderr) are uploaded, only those FindMissingBlobs
//   reports missing, and the ActionResult is written to the remote action
//   cache, as Buildbarn's own bb_worker does.
// Every downloaded blob is verified by the local CAS before it is visible.
// Thread-safe.
#ifndef KILN_SERVER_CLUSTER_REMOTE_CAS_H_
#define KILN_SERVER_CLUSTER_REMOTE_CAS_H_

#include <memory>
#include <string>
#include <vector>

#include <grpcpp/channel.h>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "build/bazel/remote/execution/v2/remote_execution.grpc.pb.h"
#include "common/digest.h"
#include "common/thread_pool.h"
#include "google/bytestream/bytestream.grpc.pb.h"
#include "server/cas/blob_store.h"
#include "server/cluster/cluster_metrics.h"
#include "server/exec/action_runner.h"

namespace kiln::cluster {

struct RemoteCasOptions {
  int max_concurrent_calls = 8;            // across every slot
  int64_t max_batch_bytes = 2 << 20;       // per BatchReadBlobs / BatchUpdateBlobs
  int64_t bytestream_chunk_bytes = 1 << 20;
  absl::Duration call_timeout = absl::Minutes(5);
};

struct FetchReport {
  int64_t local_hits = 0;  // blobs the local cache already had
  int64_t fetched = 0;     // blobs downloaded
  int64_t bytes = 0;       // bytes downloaded
};

class RemoteCas {
 public:
  // `local` and `metrics` (may be null) outlive this.
  RemoteCas(std::shared_ptr<grpc::Channel> channel, cas::BlobStore* local, ClusterMetrics* metrics,
            RemoteCasOptions options = {});
  ~RemoteCas();

  // Returns the action's Action and Command (in memory: they are never
  // written to the local CAS) and makes its whole input tree present in the
  // local CAS. FAILED_PRECONDITION with one "MISSING" violation per blob the
  // remote CAS does not have either (REAPI's answer to missing inputs);
  // other errors are the remote's or the local store's.
  //
  // `inline_action` is the Action the scheduler sent along (may be null):
  // when its serialization has exactly `action_digest` (with or without the
  // timeout the scheduler adds), it is used instead of fetching the blob.
  absl::StatusOr<exec::ActionRunner::Preloaded> FetchActionInputs(const std::string& instance,
                                                                  const Digest& action_digest,
                                                                  const rev2::Action* inline_action,
                                                                  FetchReport* report);

  // Makes these blobs present in the local CAS, pinned there by `pins`.
  absl::Status FetchBlobs(const std::string& instance, const std::vector<Digest>& digests,
                          FetchReport* report, std::vector<cas::BlobPin>* pins);

  // Uploads every blob `result` names that the remote CAS lacks (read from
  // the local CAS). Empty blobs are never asked about nor sent: REAPI
  // servers treat them as always present.
  absl::Status UploadResultBlobs(const std::string& instance, const rev2::ActionResult& result);

  absl::Status UpdateActionResult(const std::string& instance, const Digest& action_digest,
                                  const rev2::ActionResult& result);

 private:
  absl::StatusOr<std::vector<Digest>> FindMissingRemote(const std::string& instance,
                                                        const std::vector<Digest>& digests);
  // Blobs whose digest is a key of `in_memory` (may be null) are verified and
  // returned there; the others are stored in the local CAS and pinned into
  // `pins`.
  absl::Status BatchRead(const std::string& instance, const std::vector<Digest>& digests,
                         std::vector<Digest>* not_found, std::vector<cas::BlobPin>* pins,
                         absl::flat_hash_map<Digest, std::string>* in_memory = nullptr);
  // Stores the blob in the local CAS; returns its pin.
  absl::StatusOr<cas::BlobPin> ByteStreamRead(const std::string& instance, const Digest& digest);
  // Pins a blob just stored. Another slot's fetch may have evicted it in
  // between only when the local cache cannot hold the inputs of the actions
  // running at once: RESOURCE_EXHAUSTED, naming the flag.
  absl::StatusOr<cas::BlobPin> PinStored(const Digest& digest);
  absl::Status BatchUpdate(const std::string& instance, const std::vector<Digest>& digests);
  absl::Status ByteStreamWrite(const std::string& instance, const Digest& digest);
  // Runs each of `calls` on the bounded pool and waits for all of them; the
  // first error wins.
  absl::Status RunBounded(std::vector<std::function<absl::Status()>> calls);
  void Record(const char* operation, const absl::Status& status, absl::Time start);

  cas::BlobStore* const local_;
  ClusterMetrics* const metrics_;
  const RemoteCasOptions options_;
  std::unique_ptr<rev2::ContentAddressableStorage::Stub> cas_;
  std::unique_ptr<rev2::ActionCache::Stub> action_cache_;
  std::unique_ptr<google::bytestream::ByteStream::Stub> bytestream_;
  std::unique_ptr<ThreadPool> pool_;
};

}  // namespace kiln::cluster

#endif  // KILN_SERVER_CLUSTER_REMOTE_CAS_H_
