// google.bytestream.ByteStream for CAS blobs: Read with offset and limit,
// Write (chunked, verified before the blob becomes visible, resumable), and
// QueryWriteStatus. "compressed-blobs/zstd" names work for both directions.
//
// Resuming: when a Write stream breaks before finish_write, its upload is
// parked under its resource name (for kParkedUploadLifetime). A new Write
// with the same name and write_offset == committed_size continues it; for a
// zstd upload the decompressor state is kept too, so committed_size counts
// compressed bytes, as REAPI specifies.
#ifndef KILN_SERVER_API_BYTESTREAM_SERVICE_H_
#define KILN_SERVER_API_BYTESTREAM_SERVICE_H_

#include <atomic>
#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/zstd.h"
#include "google/bytestream/bytestream.grpc.pb.h"
#include "server/api/reactor_lifetime.h"
#include "server/api/resource_name.h"
#include "server/api/storage.h"

namespace kiln::api {

namespace bs = ::google::bytestream;

// Read is a raw method: its chunks are sent as the bytes read from disk,
// framed as a ReadResponse, without a copy into a protobuf message.
class ByteStreamService final
    : public bs::ByteStream::WithRawCallbackMethod_Read<bs::ByteStream::CallbackService> {
 public:
  explicit ByteStreamService(Storage storage) : storage_(storage) {}

  grpc::ServerWriteReactor<grpc::ByteBuffer>* Read(grpc::CallbackServerContext* context,
                                                   const grpc::ByteBuffer* request) override;
  grpc::ServerReadReactor<bs::WriteRequest>* Write(grpc::CallbackServerContext* context,
                                                   bs::WriteResponse* response) override;
  grpc::ServerUnaryReactor* QueryWriteStatus(grpc::CallbackServerContext* context,
                                             const bs::QueryWriteStatusRequest* request,
                                             bs::QueryWriteStatusResponse* response) override;

  // Bytes per ReadResponse: large enough that per-message costs vanish, and
  // under gRPC's default 4 MiB receive limit of clients even when zstd
  // expands incompressible data slightly.
  static constexpr int64_t kReadChunkBytes = 3 << 20;
  static constexpr absl::Duration kParkedUploadLifetime = absl::Minutes(15);
  // At most this many interrupted uploads wait to be resumed.
  static constexpr size_t kMaxParkedUploads = 256;

  // One blob upload, owned by one Write stream at a time.
  struct Upload {
    BlobResource resource;
    std::unique_ptr<cas::BlobWriter> writer;
    std::unique_ptr<ZstdDecompressor> zstd;  // set for compressed-blobs/zstd
    std::atomic<int64_t> committed{0};      // bytes received on the wire
    absl::Time parked_at;
  };

  // For the Write reactor: takes over the parked upload named `name`, or
  // starts a new one. ABORTED if another stream is writing it right now.
  absl::StatusOr<std::unique_ptr<Upload>> AcquireUpload(const std::string& name,
                                                        const BlobResource& resource);
  // Keeps an interrupted upload for a later resume.
  void ParkUpload(const std::string& name, std::unique_ptr<Upload> upload);
  // Forgets that a stream owns `name` (after commit or failure).
  void ReleaseUpload(const std::string& name);
  Storage& storage() { return storage_; }
  LiveReactors* live_reactors() { return &live_reactors_; }

 private:
  void DropExpiredLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  Storage storage_;
  absl::Mutex mu_;
  absl::flat_hash_map<std::string, std::unique_ptr<Upload>> parked_ ABSL_GUARDED_BY(mu_);
  // Uploads owned by a live stream; the pointee belongs to that stream.
  absl::flat_hash_map<std::string, const Upload*> active_ ABSL_GUARDED_BY(mu_);
  LiveReactors live_reactors_;  // last: waits for the reactors using the above
};

}  // namespace kiln::api

#endif  // KILN_SERVER_API_BYTESTREAM_SERVICE_H_
