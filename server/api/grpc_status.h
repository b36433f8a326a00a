// Converts absl::Status (Kiln's error type) into the two gRPC error forms at
// the service boundary: a call's grpc::Status and an in-message
// google.rpc.Status (per-blob results, ExecuteResponse.status).
#ifndef KILN_SERVER_API_GRPC_STATUS_H_
#define KILN_SERVER_API_GRPC_STATUS_H_

#include <grpcpp/support/status.h>

#include "absl/status/status.h"
#include "common/rpc_status.h"

namespace kiln::api {

// The in-message form lives in common/ (execution uses it too).
using ::kiln::ToRpcStatus;

grpc::Status ToGrpcStatus(const absl::Status& status);

}  // namespace kiln::api

#endif  // KILN_SERVER_API_GRPC_STATUS_H_
