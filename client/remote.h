// The client side of REAPI that `kiln` needs: reachability, uploading only
// missing blobs, downloads, and following a live output stream.
#ifndef KILN_CLIENT_REMOTE_H_
#define KILN_CLIENT_REMOTE_H_

#include <functional>
#include <memory>
#include <string>

#include <grpcpp/channel.h>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "build/bazel/remote/execution/v2/remote_execution.grpc.pb.h"
#include "client/progress.h"
#include "client/tree_builder.h"
#include "google/bytestream/bytestream.grpc.pb.h"
#include "google/longrunning/operations.grpc.pb.h"

namespace kiln::client {

absl::Status FromGrpc(const grpc::Status& status);

struct UploadStats {
  int64_t blobs_total = 0;
  int64_t blobs_uploaded = 0;
  int64_t bytes_uploaded = 0;
};

// How the client proves who it is. TLS is used when tls_ca or tls_cert is
// set (tls_ca empty: the system's roots); the token goes in every call's
// `authorization: Bearer` metadata.
struct Credentials {
  std::string tls_ca;  // PEM contents, not paths
  std::string tls_cert;
  std::string tls_key;
  std::string token;
  bool tls() const { return !tls_ca.empty() || !tls_cert.empty(); }
};

class RemoteClient {
 public:
  RemoteClient(const std::string& server, std::string instance, const Credentials& credentials = {});

  // UNAVAILABLE with a readable message when the server cannot be reached;
  // UNAUTHENTICATED or PERMISSION_DENIED when it refuses the credentials.
  absl::Status CheckReachable(absl::Duration timeout);
  // From the Capabilities CheckReachable read: whether the server accepts
  // absolute symlink targets in input roots.
  bool absolute_symlinks_allowed() const { return absolute_symlinks_allowed_; }
  // grpc.health.v1 Check of `service` ("" for the whole server): true when
  // SERVING. Health needs no credentials, only the TLS trust.
  absl::StatusOr<bool> CheckHealth(const std::string& service, absl::Duration timeout);
  // FindMissingBlobs, then uploads only what is missing (batches for small
  // blobs, ByteStream for large ones).
  absl::StatusOr<UploadStats> UploadMissing(const BlobSet& blobs, Progress* progress);
  // Reads a whole blob; DATA_LOSS unless its bytes hash to `digest`.
  absl::StatusOr<std::string> ReadBlob(const rev2::Digest& digest);
  // Downloads a blob into a new entry `name` of the open directory `dirfd`
  // (a temp file renamed into place, never following a symlink). The bytes
  // are hashed on the way: DATA_LOSS, and nothing written, unless they match
  // `digest`.
  absl::Status DownloadFileAt(const rev2::Digest& digest, int dirfd, const std::string& name,
                              bool executable, Progress* progress);
  // DownloadFileAt for a path the user gave (kiln cas get).
  absl::Status DownloadFile(const rev2::Digest& digest, const std::string& path, bool executable,
                            Progress* progress);
  // Reads a ByteStream resource from `offset`, handing each chunk to `sink`,
  // until the server ends it (a live stream ends with its action).
  absl::Status FollowStream(const std::string& name, int64_t offset,
                            const std::function<void(absl::string_view)>& sink);

  const std::string& instance() const { return instance_; }
  rev2::Execution::Stub& execution() { return *execution_; }
  rev2::ActionCache::Stub& action_cache() { return *action_cache_; }

 private:
  absl::Status WriteBlob(const Digest& digest, const BlobSource& source, Progress* progress);

  std::string instance_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<rev2::ContentAddressableStorage::Stub> cas_;
  std::unique_ptr<google::bytestream::ByteStream::Stub> bytestream_;
  std::unique_ptr<rev2::Execution::Stub> execution_;
  std::unique_ptr<rev2::ActionCache::Stub> action_cache_;
  std::unique_ptr<rev2::Capabilities::Stub> capabilities_;
  bool absolute_symlinks_allowed_ = false;
};

}  // namespace kiln::client

#endif  // KILN_CLIENT_REMOTE_H_
