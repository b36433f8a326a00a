// REAPI Execution (Execute, WaitExecution) and google.longrunning.Operations
// over the worker's scheduler. Execute answers from the action cache when it
// can (unless skip_cache_lookup), else streams the operation through QUEUED,
// EXECUTING and COMPLETED. Errors of the action itself travel in
// ExecuteResponse.status; the call fails only for a malformed request, a full
// queue or a draining worker.
#ifndef KILN_SERVER_API_EXECUTION_SERVICE_H_
#define KILN_SERVER_API_EXECUTION_SERVICE_H_

#include "build/bazel/remote/execution/v2/remote_execution.grpc.pb.h"
#include "google/longrunning/operations.grpc.pb.h"
#include "server/api/reactor_lifetime.h"
#include "server/api/storage.h"
#include "server/exec/scheduler.h"

namespace kiln::api {

namespace rev2 = ::build::bazel::remote::execution::v2;
namespace lro = ::google::longrunning;

class ExecutionService final : public rev2::Execution::CallbackService {
 public:
  // `on_cache_hit` runs for each Execute answered from the action cache.
  ExecutionService(Storage storage, exec::Scheduler* scheduler, std::function<void()> on_cache_hit)
      : storage_(storage), scheduler_(scheduler), on_cache_hit_(std::move(on_cache_hit)) {}

  grpc::ServerWriteReactor<lro::Operation>* Execute(grpc::CallbackServerContext* context,
                                                    const rev2::ExecuteRequest* request) override;
  grpc::ServerWriteReactor<lro::Operation>* WaitExecution(
      grpc::CallbackServerContext* context, const rev2::WaitExecutionRequest* request) override;

 private:
  Storage storage_;
  exec::Scheduler* const scheduler_;
  const std::function<void()> on_cache_hit_;
  LiveReactors live_reactors_;  // last: waits for the operation streams
};

class OperationsService final : public lro::Operations::CallbackService {
 public:
  // `authorizer` may be null (authorization off).
  OperationsService(exec::Scheduler* scheduler, const Authorizer* authorizer = nullptr)
      : scheduler_(scheduler), authorizer_(authorizer) {}

  grpc::ServerUnaryReactor* GetOperation(grpc::CallbackServerContext* context,
                                         const lro::GetOperationRequest* request,
                                         lro::Operation* response) override;
  grpc::ServerUnaryReactor* ListOperations(grpc::CallbackServerContext* context,
                                           const lro::ListOperationsRequest* request,
                                           lro::ListOperationsResponse* response) override;
  grpc::ServerUnaryReactor* CancelOperation(grpc::CallbackServerContext* context,
                                            const lro::CancelOperationRequest* request,
                                            google::protobuf::Empty* response) override;
  // Forgets a finished operation; a running one must be cancelled first.
  grpc::ServerUnaryReactor* DeleteOperation(grpc::CallbackServerContext* context,
                                            const lro::DeleteOperationRequest* request,
                                            google::protobuf::Empty* response) override;

 private:
  exec::Scheduler* const scheduler_;
  const Authorizer* const authorizer_;
};

}  // namespace kiln::api

#endif  // KILN_SERVER_API_EXECUTION_SERVICE_H_
