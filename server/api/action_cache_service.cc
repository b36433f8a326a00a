#include "server/api/action_cache_service.h"

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "common/path_beneath.h"
#include "common/status_macros.h"
#include "server/api/grpc_status.h"
#include "server/api/reactor_lifetime.h"

// REAPI v2.0's output_files, output_directories and the typed output
// symlinks are deprecated upstream, yet Bazel 4 and other v2.0 clients still
// send and read them: Kiln honours them on purpose.
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"

namespace kiln::api {
namespace {

absl::Status CheckDigestField(const rev2::Digest& proto, const std::string& field) {
  absl::StatusOr<Digest> digest = ParseDigest(proto);
  if (!digest.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(field, ": ", digest.status().message()));
  }
  return absl::OkStatus();
}

// As strict as output collection: a client that later downloads this result
// writes each path beneath its own directory.
absl::Status CheckOutputPath(const std::string& path, const std::string& field) {
  return kiln::CheckRelativePath(path, field + ": path");
}

// Inlines a blob into `out` if it fits the remaining budget.
void InlineIfSmall(cas::BlobStore& cas, const rev2::Digest& proto, int64_t* budget,
                   std::string* out) {
  absl::StatusOr<Digest> digest = ParseDigest(proto);
  if (!digest.ok() || digest->size > *budget) return;
  absl::StatusOr<std::string> data = cas.ReadBlob(*digest);
  if (!data.ok()) return;  // inlining is a hint; the digest still names it
  *budget -= digest->size;
  *out = *std::move(data);
}

}  // namespace

absl::Status ValidateActionResult(const rev2::ActionResult& result) {
  for (int i = 0; i < result.output_files_size(); ++i) {
    const auto& file = result.output_files(i);
    std::string field = absl::StrCat("action_result.output_files[", i, "]");
    RETURN_IF_ERROR(CheckDigestField(file.digest(), field));
    RETURN_IF_ERROR(CheckOutputPath(file.path(), field));
  }
  for (int i = 0; i < result.output_directories_size(); ++i) {
    const auto& dir = result.output_directories(i);
    std::string field = absl::StrCat("action_result.output_directories[", i, "]");
    RETURN_IF_ERROR(CheckDigestField(dir.tree_digest(), field));
    RETURN_IF_ERROR(CheckOutputPath(dir.path(), field));
  }
  for (const auto* links : {&result.output_symlinks(), &result.output_file_symlinks(),
                            &result.output_directory_symlinks()}) {
    for (const auto& link : *links) {
      RETURN_IF_ERROR(CheckOutputPath(link.path(), "action_result output symlink"));
    }
  }
  if (result.has_stdout_digest()) {
    RETURN_IF_ERROR(CheckDigestField(result.stdout_digest(), "action_result.stdout_digest"));
  }
  if (result.has_stderr_digest()) {
    RETURN_IF_ERROR(CheckDigestField(result.stderr_digest(), "action_result.stderr_digest"));
  }
  return absl::OkStatus();
}

absl::Status ActionCacheService::Get(const rev2::GetActionResultRequest& request,
                                     rev2::ActionResult* response) {
  RETURN_IF_ERROR(CheckDigestFunction(request.digest_function()));
  absl::StatusOr<Digest> action = ParseDigest(request.action_digest());
  if (!action.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("action_digest: ", action.status().message()));
  }
  ASSIGN_OR_RETURN(*response, storage_.action_cache->Get(request.instance_name(), *action));
  int64_t budget = kMaxInlineBytes;
  if (request.inline_stdout() && response->has_stdout_digest()) {
    InlineIfSmall(*storage_.cas, response->stdout_digest(), &budget,
                  response->mutable_stdout_raw());
  }
  if (request.inline_stderr() && response->has_stderr_digest()) {
    InlineIfSmall(*storage_.cas, response->stderr_digest(), &budget,
                  response->mutable_stderr_raw());
  }
  absl::flat_hash_set<std::string> inline_paths(request.inline_output_files().begin(),
                                                request.inline_output_files().end());
  for (auto& file : *response->mutable_output_files()) {
    if (inline_paths.contains(file.path())) {
      InlineIfSmall(*storage_.cas, file.digest(), &budget, file.mutable_contents());
    }
  }
  return absl::OkStatus();
}

absl::Status ActionCacheService::Update(const rev2::UpdateActionResultRequest& request,
                                        rev2::ActionResult* response) {
  RETURN_IF_ERROR(CheckDigestFunction(request.digest_function()));
  absl::StatusOr<Digest> action = ParseDigest(request.action_digest());
  if (!action.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("action_digest: ", action.status().message()));
  }
  RETURN_IF_ERROR(ValidateActionResult(request.action_result()));
  RETURN_IF_ERROR(
      storage_.action_cache->Put(request.instance_name(), *action, request.action_result()));
  *response = request.action_result();
  return absl::OkStatus();
}

grpc::ServerUnaryReactor* ActionCacheService::GetActionResult(
    grpc::CallbackServerContext* context, const rev2::GetActionResultRequest* request,
    rev2::ActionResult* response) {
  return RunOnPool(storage_.io, [=]() -> absl::Status {
    RETURN_IF_ERROR(Authorize(storage_.authorizer, *context, Permission::kAcRead, request->instance_name()));
    return Get(*request, response);
  });
}

grpc::ServerUnaryReactor* ActionCacheService::UpdateActionResult(
    grpc::CallbackServerContext* context, const rev2::UpdateActionResultRequest* request,
    rev2::ActionResult* response) {
  return RunOnPool(storage_.io, [=]() -> absl::Status {
    // A client-written result is trusted by everyone reading this instance.
    RETURN_IF_ERROR(Authorize(storage_.authorizer, *context, Permission::kAcWrite, request->instance_name()));
    return Update(*request, response);
  });
}

}  // namespace kiln::api
