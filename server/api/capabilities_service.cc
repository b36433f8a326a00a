#include "server/api/capabilities_service.h"

#include <cstdint>

#include "server/api/grpc_status.h"

namespace kiln::api {

CapabilitiesService::CapabilitiesService(int64_t max_batch_total_bytes, bool exec_enabled,
                                         const Authorizer* authorizer, int64_t max_blob_bytes)
    : authorizer_(authorizer) {
  auto* cache = capabilities_.mutable_cache_capabilities();
  cache->add_digest_functions(rev2::DigestFunction::SHA256);
  cache->mutable_action_cache_update_capabilities()->set_update_enabled(true);
  auto* priority = cache->mutable_cache_priority_capabilities()->add_priorities();
  priority->set_min_priority(0);
  priority->set_max_priority(0);
  cache->set_max_batch_total_size_bytes(max_batch_total_bytes);
  cache->set_max_cas_blob_size_bytes(max_blob_bytes);
  cache->set_symlink_absolute_path_strategy(rev2::SymlinkAbsolutePathStrategy::DISALLOWED);
  cache->add_supported_compressors(rev2::Compressor::ZSTD);
  cache->add_supported_batch_update_compressors(rev2::Compressor::ZSTD);

  auto* exec = capabilities_.mutable_execution_capabilities();
  exec->set_digest_function(rev2::DigestFunction::SHA256);
  exec->add_digest_functions(rev2::DigestFunction::SHA256);
  exec->set_exec_enabled(exec_enabled);
  // ExecutionPolicy.priority: lower runs sooner, any int32.
  auto* range = exec->mutable_execution_priority_capabilities()->add_priorities();
  range->set_min_priority(INT32_MIN);
  range->set_max_priority(INT32_MAX);

  // 2.0 to 2.11, each minor version's additions served (docs: README,
  // "What the server implements"): 2.1 output_paths, 2.2 Action.platform,
  // 2.3 PATH semantics and virtual_execution_duration, 2.4 a hint only,
  // 2.5 digest functions and compressors Kiln does not advertise, 2.6
  // partial_execution_metadata, 2.7 ExecutionCapabilities.digest_functions,
  // 2.8 output_directory_format, 2.9 inline hints on Execute, 2.10 nothing
  // of REv2, 2.11 digest_function in every ExecuteOperationMetadata. Not
  // 2.12: its SplitBlob/SpliceBlob are not served (max_cas_blob_size_bytes
  // is, and older clients ignore it).
  capabilities_.mutable_deprecated_api_version()->set_major(2);
  capabilities_.mutable_low_api_version()->set_major(2);
  capabilities_.mutable_high_api_version()->set_major(2);
  capabilities_.mutable_high_api_version()->set_minor(11);
}

grpc::ServerUnaryReactor* CapabilitiesService::GetCapabilities(
    grpc::CallbackServerContext* context, const rev2::GetCapabilitiesRequest* request,
    rev2::ServerCapabilities* response) {
  auto* reactor = context->DefaultReactor();
  // Any grant on the instance: a client learns what it may use.
  absl::Status allowed = Authorize(authorizer_, *context, Permission::kAny, request->instance_name());
  if (allowed.ok()) *response = capabilities_;
  reactor->Finish(ToGrpcStatus(allowed));
  return reactor;
}

}  // namespace kiln::api
