// Converts between absl::Status (Kiln's error type) and google.rpc.Status,
// the in-message form of an error (per-blob results, ExecuteResponse.status).
// Free of gRPC: execution fills ExecuteResponse.status with it, and only the
// gRPC services and clients convert to and from grpc::Status.
#ifndef KILN_COMMON_RPC_STATUS_H_
#define KILN_COMMON_RPC_STATUS_H_

#include "absl/status/status.h"
#include "google/rpc/status.pb.h"

namespace kiln {

// Code, message and typed details (each absl payload, keyed by type URL,
// becomes one Any in `details`).
google::rpc::Status ToRpcStatus(const absl::Status& status);

// The inverse: code, message and details back as payloads. A code outside
// the canonical range becomes UNKNOWN.
absl::Status FromRpcStatus(const google::rpc::Status& status);

}  // namespace kiln

#endif  // KILN_COMMON_RPC_STATUS_H_
