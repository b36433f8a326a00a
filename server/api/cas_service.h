// REAPI ContentAddressableStorage over the embedded BlobStore. Every handler
// validates its input first (digest form, digest function, sizes), then runs
// its disk work on the storage pool; no gRPC thread waits on the disk.
#ifndef KILN_SERVER_API_CAS_SERVICE_H_
#define KILN_SERVER_API_CAS_SERVICE_H_

#include "build/bazel/remote/execution/v2/remote_execution.grpc.pb.h"
#include "server/api/reactor_lifetime.h"
#include "server/api/storage.h"

namespace kiln::api {

namespace rev2 = ::build::bazel::remote::execution::v2;

// FindMissingBlobs is a raw method: its request is read and its answer
// written in wire bytes (server/api/find_missing_wire.h).
class CasService final : public rev2::ContentAddressableStorage::WithRawCallbackMethod_FindMissingBlobs<
                             rev2::ContentAddressableStorage::CallbackService> {
 public:
  explicit CasService(Storage storage) : storage_(storage) {}

  grpc::ServerUnaryReactor* FindMissingBlobs(grpc::CallbackServerContext* context,
                                             const grpc::ByteBuffer* request,
                                             grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* BatchUpdateBlobs(grpc::CallbackServerContext* context,
                                             const rev2::BatchUpdateBlobsRequest* request,
                                             rev2::BatchUpdateBlobsResponse* response) override;
  grpc::ServerUnaryReactor* BatchReadBlobs(grpc::CallbackServerContext* context,
                                           const rev2::BatchReadBlobsRequest* request,
                                           rev2::BatchReadBlobsResponse* response) override;
  grpc::ServerWriteReactor<rev2::GetTreeResponse>* GetTree(
      grpc::CallbackServerContext* context, const rev2::GetTreeRequest* request) override;

  // Largest number of directories in one GetTree page.
  static constexpr int kMaxTreePageSize = 10000;

 private:
  Storage storage_;
  LiveReactors live_reactors_;  // last: waits for GetTree reactors
};

}  // namespace kiln::api

#endif  // KILN_SERVER_API_CAS_SERVICE_H_
