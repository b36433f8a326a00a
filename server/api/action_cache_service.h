// REAPI ActionCache over the embedded action cache. GetActionResult inlines
// stdout, stderr and output files when asked and when they are small.
#ifndef KILN_SERVER_API_ACTION_CACHE_SERVICE_H_
#define KILN_SERVER_API_ACTION_CACHE_SERVICE_H_

#include "build/bazel/remote/execution/v2/remote_execution.grpc.pb.h"
#include "server/api/storage.h"

namespace kiln::api {

namespace rev2 = ::build::bazel::remote::execution::v2;

class ActionCacheService final : public rev2::ActionCache::CallbackService {
 public:
  explicit ActionCacheService(Storage storage) : storage_(storage) {}

  grpc::ServerUnaryReactor* GetActionResult(grpc::CallbackServerContext* context,
                                            const rev2::GetActionResultRequest* request,
                                            rev2::ActionResult* response) override;
  grpc::ServerUnaryReactor* UpdateActionResult(grpc::CallbackServerContext* context,
                                               const rev2::UpdateActionResultRequest* request,
                                               rev2::ActionResult* response) override;

  // Inlined content per GetActionResult response, all blobs together.
  static constexpr int64_t kMaxInlineBytes = 1 << 20;

 private:
  absl::Status Get(const rev2::GetActionResultRequest& request, rev2::ActionResult* response);
  absl::Status Update(const rev2::UpdateActionResultRequest& request,
                      rev2::ActionResult* response);

  Storage storage_;
};

// Checks that every digest an ActionResult carries is well formed and every
// path is relative; INVALID_ARGUMENT names the field.
absl::Status ValidateActionResult(const rev2::ActionResult& result);

}  // namespace kiln::api

#endif  // KILN_SERVER_API_ACTION_CACHE_SERVICE_H_
