#include "server/api/grpc_status.h"

#include <string>

#include "absl/strings/cord.h"

namespace kiln::api {

google::rpc::Status ToRpcStatus(const absl::Status& status) {
  google::rpc::Status out;
  out.set_code(static_cast<int>(status.code()));
  out.set_message(std::string(status.message()));
  // Typed details (e.g. PreconditionFailure) travel as payloads keyed by
  // their type URL.
  status.ForEachPayload([&](absl::string_view type_url, const absl::Cord& payload) {
    auto* detail = out.add_details();
    detail->set_type_url(std::string(type_url));
    detail->set_value(std::string(payload));
  });
  return out;
}

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
