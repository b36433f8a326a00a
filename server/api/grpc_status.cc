#include "server/api/grpc_status.h"

#include <string>

#include "absl/strings/cord.h"

namespace kiln::api {

grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  // absl and gRPC share the canonical code numbering. Details go in the
  // standard grpc-status-details-bin trailer as a google.rpc.Status.
  std::string details;
  bool has_details = false;
  status.ForEachPayload([&](absl::string_view, const absl::Cord&) { has_details = true; });
  if (has_details) details = ToRpcStatus(status).SerializeAsString();
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()), std::string(status.message()),
                      details);
}

}  // namespace kiln::api
