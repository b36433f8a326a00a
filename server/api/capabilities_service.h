// REAPI Capabilities: SHA256 only, zstd for ByteStream and batch uploads, the
// batch size limit, and whether this worker executes actions.
#ifndef KILN_SERVER_API_CAPABILITIES_SERVICE_H_
#define KILN_SERVER_API_CAPABILITIES_SERVICE_H_

#include "build/bazel/remote/execution/v2/remote_execution.grpc.pb.h"
#include "server/api/authorizer.h"

namespace kiln::api {

namespace rev2 = ::build::bazel::remote::execution::v2;

class CapabilitiesService final : public rev2::Capabilities::CallbackService {
 public:
  // `authorizer` may be null (authorization off).
  // `max_blob_bytes`: the largest blob the CAS accepts (0: no limit).
  CapabilitiesService(int64_t max_batch_total_bytes, bool exec_enabled,
                      const Authorizer* authorizer = nullptr, int64_t max_blob_bytes = 0);

  grpc::ServerUnaryReactor* GetCapabilities(grpc::CallbackServerContext* context,
                                            const rev2::GetCapabilitiesRequest* request,
                                            rev2::ServerCapabilities* response) override;

 private:
  const Authorizer* const authorizer_;
  rev2::ServerCapabilities capabilities_;  // immutable after construction
};

}  // namespace kiln::api

#endif  // KILN_SERVER_API_CAPABILITIES_SERVICE_H_
