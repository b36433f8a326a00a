#include "common/rpc_status.h"

#include <string>

#include "absl/strings/cord.h"

namespace kiln {

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

absl::Status FromRpcStatus(const google::rpc::Status& status) {
  if (status.code() == 0) return absl::OkStatus();
  const bool canonical = status.code() > 0 && status.code() <= static_cast<int>(absl::StatusCode::kUnauthenticated);
  absl::Status out(canonical ? static_cast<absl::StatusCode>(status.code()) : absl::StatusCode::kUnknown,
                   status.message());
  for (const auto& detail : status.details()) out.SetPayload(detail.type_url(), absl::Cord(detail.value()));
  return out;
}

}  // namespace kiln
