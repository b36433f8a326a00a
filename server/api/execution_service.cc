#include "server/api/execution_service.h"

#include <algorithm>
#include <optional>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "common/status_macros.h"
#include "server/api/authorizer.h"
#include "server/api/grpc_status.h"
#include "server/api/reactor_lifetime.h"

namespace kiln::api {
namespace {

// Streams one operation's changes to a client, one write at a time, and
// finishes with the completed operation. Writes come from the operation's
// change notifications (scheduler threads), from OnWriteDone and from the
// Execute task; `mu_` makes sure only one is in flight. Lifetime and
// cancellation follow ManagedReactor.
class OperationStreamReactor final : public ManagedReactor<grpc::ServerWriteReactor<lro::Operation>> {
 public:
  explicit OperationStreamReactor(LiveReactors* live) : ManagedReactor(live) {}

  // Either Follow an operation, or FinishWith a one-off result or error.
  // Call them from the handler or from a task run by RunOnPool.
  void Follow(std::shared_ptr<exec::Operation> operation) {
    // Subscribe outside mu_: Notify holds the operation's subscriber lock
    // when it calls MaybeWrite, which takes mu_. Until operation_ is set,
    // MaybeWrite does nothing, so no Finish (and no OnDone) can happen
    // before subscription_ is known to OnCallDone; the MaybeWrite below
    // then sends whatever changed meanwhile.
    int subscription = operation->Subscribe([this] { OnOperationChanged(); });
    {
      absl::MutexLock lock(&mu_);
      operation_ = std::move(operation);
      subscription_ = subscription;
    }
    MaybeWrite();
  }
  void FinishWithOperation(lro::Operation operation) {
    if (!ClaimFinish()) return;  // cancelled meanwhile
    {
      absl::MutexLock lock(&mu_);
      current_ = std::move(operation);
      writing_ = true;
    }
    StartWriteAndFinish(&current_, grpc::WriteOptions(), grpc::Status::OK);
  }
  void FinishWithError(const absl::Status& status) { FinishOnce(status); }

  void OnWriteDone(bool ok) override {
    ScopedRelease release(this);
    {
      absl::MutexLock lock(&mu_);
      writing_ = false;
    }
    if (!ok) {
      // The client went away; the action keeps running for others.
      FinishOnce(grpc::Status(grpc::StatusCode::CANCELLED, "the client went away"));
      return;
    }
    MaybeWrite();
  }

 private:
  // Runs on a scheduler thread inside Operation::Notify. The hold keeps a
  // Finish decided meanwhile (a cancel) from freeing the call under the
  // write. The reactor cannot be deleted here: OnCallDone's Unsubscribe
  // waits for this callback to return before OnDone may delete.
  void OnOperationChanged() {
    if (!Hold()) return;
    MaybeWrite();
    Release();
  }

  // Unsubscribe waits out a running notification, so none can reach a
  // deleted reactor, and none can delete it from inside Notify (done is
  // not yet recorded while it runs). Called without mu_ (lock order above).
  void OnCallDone() override {
    std::shared_ptr<exec::Operation> operation;
    int subscription;
    {
      absl::MutexLock lock(&mu_);
      operation = operation_;
      subscription = subscription_;
    }
    if (operation != nullptr) operation->Unsubscribe(subscription);
  }

  void MaybeWrite() {
    bool last = false;
    {
      absl::MutexLock lock(&mu_);
      if (operation_ == nullptr || writing_ || finishing()) return;
      int64_t version = 0;
      lro::Operation snapshot = operation_->Snapshot(&version);
      if (version == sent_version_) return;
      sent_version_ = version;
      current_ = std::move(snapshot);
      writing_ = true;
      last = current_.done();
    }
    // current_ is stable from here: writing_ stays true until OnWriteDone.
    if (last) {
      if (ClaimFinish()) StartWriteAndFinish(&current_, grpc::WriteOptions(), grpc::Status::OK);
    } else {
      StartWriteHeld(&current_);
    }
  }

  absl::Mutex mu_;
  std::shared_ptr<exec::Operation> operation_ ABSL_GUARDED_BY(mu_);  // set by Follow
  int subscription_ ABSL_GUARDED_BY(mu_) = -1;
  // The message being written; changed only under mu_ while writing_ is false.
  lro::Operation current_;
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  int64_t sent_version_ ABSL_GUARDED_BY(mu_) = -1;
};

lro::Operation CachedOperation(const Digest& action_digest, rev2::ActionResult result) {
  lro::Operation operation;
  operation.set_name(absl::StrCat("operations/cached-", action_digest.hash));
  rev2::ExecuteOperationMetadata metadata;
  metadata.set_stage(rev2::ExecutionStage::COMPLETED);
  *metadata.mutable_action_digest() = action_digest.ToProto();
  metadata.set_digest_function(rev2::DigestFunction::SHA256);  // required since v2.11
  operation.mutable_metadata()->PackFrom(metadata);
  operation.set_done(true);
  rev2::ExecuteResponse response;
  *response.mutable_result() = std::move(result);
  response.set_cached_result(true);
  operation.mutable_response()->PackFrom(response);
  return operation;
}

// Authorizes a call on the operation `name`: the caller needs `permission`
// on the operation's instance and must own the operation (or hold
// operations-admin there). Another principal's operation is NOT_FOUND, as if
// it did not exist, so names cannot be probed. On OK, *operation is set.
absl::Status AuthorizeOperation(const Authorizer* authorizer, const grpc::ServerContextBase& context,
                                Permission permission, exec::Scheduler& scheduler,
                                const std::string& name, std::shared_ptr<exec::Operation>* operation) {
  std::shared_ptr<exec::Operation> found = scheduler.Find(name);
  absl::StatusOr<std::shared_ptr<const Principal>> caller = AuthorizeCaller(
      authorizer, context, permission,
      found == nullptr ? std::nullopt : std::optional<absl::string_view>(found->instance()));
  if (!caller.ok()) return caller.status();
  if (found == nullptr || !MayAccessOperation(caller->get(), found->owner(), found->instance())) {
    return absl::NotFoundError(absl::StrCat(
        "no operation named \"", name, "\" on this worker",
        *caller == nullptr ? "" : absl::StrCat(" for principal \"", (*caller)->name, "\""),
        " (finished more than ", absl::FormatDuration(exec::Scheduler::kKeepCompleted),
        " ago, deleted, or never started)"));
  }
  *operation = std::move(found);
  return absl::OkStatus();
}

// ListOperations pages: at most this many per response unless asked for fewer.
constexpr int kMaxPageSize = 1000;

}  // namespace

grpc::ServerWriteReactor<lro::Operation>* ExecutionService::Execute(
    grpc::CallbackServerContext* context, const rev2::ExecuteRequest* request) {
  auto* reactor = new OperationStreamReactor(&live_reactors_);
  // The task's hold keeps `request` and `reactor` alive until it returns,
  // even when the client cancels first; it is skipped if it cancelled first.
  reactor->RunOnPool(storage_.io, [this, context, reactor, request] {
    absl::StatusOr<std::shared_ptr<const Principal>> caller = AuthorizeCaller(
        storage_.authorizer, *context, Permission::kExecute, request->instance_name());
    absl::Status valid = caller.status();
    if (valid.ok()) valid = CheckDigestFunction(request->digest_function());
    absl::StatusOr<Digest> action_digest = ParseDigest(request->action_digest());
    if (valid.ok() && !action_digest.ok()) {
      valid = absl::InvalidArgumentError(absl::StrCat("action_digest: ", action_digest.status().message()));
    }
    if (!valid.ok()) {
      reactor->FinishWithError(valid);
      return;
    }
    if (!request->skip_cache_lookup()) {
      absl::StatusOr<rev2::ActionResult> cached =
          storage_.action_cache->Get(request->instance_name(), *action_digest);
      if (cached.ok()) {
        if (on_cache_hit_) on_cache_hit_();
        reactor->FinishWithOperation(CachedOperation(*action_digest, *std::move(cached)));
        return;
      }
    }
    absl::StatusOr<std::shared_ptr<exec::Operation>> operation =
        scheduler_->Submit(*request, *action_digest, OwnerName(caller->get()));
    if (!operation.ok()) {
      reactor->FinishWithError(operation.status());
      return;
    }
    reactor->Follow(*std::move(operation));
  });
  return reactor;
}

grpc::ServerWriteReactor<lro::Operation>* ExecutionService::WaitExecution(
    grpc::CallbackServerContext* context, const rev2::WaitExecutionRequest* request) {
  auto* reactor = new OperationStreamReactor(&live_reactors_);
  std::shared_ptr<exec::Operation> operation;
  absl::Status allowed = AuthorizeOperation(storage_.authorizer, *context, Permission::kExecute,
                                            *scheduler_, request->name(), &operation);
  if (!allowed.ok()) {
    reactor->FinishWithError(allowed);
  } else {
    reactor->Follow(std::move(operation));
  }
  return reactor;
}

grpc::ServerUnaryReactor* OperationsService::GetOperation(grpc::CallbackServerContext* context,
                                                          const lro::GetOperationRequest* request,
                                                          lro::Operation* response) {
  auto* reactor = context->DefaultReactor();
  std::shared_ptr<exec::Operation> operation;
  absl::Status allowed = AuthorizeOperation(authorizer_, *context, Permission::kOperations,
                                            *scheduler_, request->name(), &operation);
  if (allowed.ok()) *response = operation->Snapshot(nullptr);
  reactor->Finish(ToGrpcStatus(allowed));
  return reactor;
}

grpc::ServerUnaryReactor* OperationsService::ListOperations(grpc::CallbackServerContext* context,
                                                            const lro::ListOperationsRequest* request,
                                                            lro::ListOperationsResponse* response) {
  auto* reactor = context->DefaultReactor();
  absl::StatusOr<std::shared_ptr<const Principal>> caller =
      AuthorizeCaller(authorizer_, *context, Permission::kOperations, std::nullopt);
  if (!caller.ok()) {
    reactor->Finish(ToGrpcStatus(caller.status()));
    return reactor;
  }
  if (!request->filter().empty()) {
    reactor->Finish(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                                 "ListOperations filters are not supported; send an empty filter"));
    return reactor;
  }
  if (request->page_size() < 0) {
    reactor->Finish(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                                 absl::StrCat("page_size ", request->page_size(), " is negative")));
    return reactor;
  }
  const int page_size = request->page_size() == 0 ? kMaxPageSize
                                                  : std::min(request->page_size(), kMaxPageSize);
  // Names are sorted and the token is the last name sent, so a page stays
  // correct while operations come and go between calls.
  const std::string& after = request->page_token();
  const Principal* principal = caller->get();
  std::string last;
  for (const auto& operation : scheduler_->List()) {
    if (!after.empty() && operation->name() <= after) continue;
    // Only the caller's own operations on instances it holds the grant on,
    // or everyone's where it is an operations admin.
    if (principal != nullptr &&
        (!CheckGrant(*principal, Permission::kOperations, operation->instance()).ok() ||
         !MayAccessOperation(principal, operation->owner(), operation->instance()))) {
      continue;
    }
    if (response->operations_size() == page_size) {
      response->set_next_page_token(last);
      break;
    }
    *response->add_operations() = operation->Snapshot(nullptr);
    last = operation->name();
  }
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerUnaryReactor* OperationsService::CancelOperation(grpc::CallbackServerContext* context,
                                                             const lro::CancelOperationRequest* request,
                                                             google::protobuf::Empty* response) {
  auto* reactor = context->DefaultReactor();
  std::shared_ptr<exec::Operation> operation;
  absl::Status allowed = AuthorizeOperation(authorizer_, *context, Permission::kOperations,
                                            *scheduler_, request->name(), &operation);
  reactor->Finish(ToGrpcStatus(allowed.ok() ? scheduler_->Cancel(request->name()) : allowed));
  return reactor;
}

grpc::ServerUnaryReactor* OperationsService::DeleteOperation(grpc::CallbackServerContext* context,
                                                             const lro::DeleteOperationRequest* request,
                                                             google::protobuf::Empty* response) {
  auto* reactor = context->DefaultReactor();
  std::shared_ptr<exec::Operation> operation;
  absl::Status allowed = AuthorizeOperation(authorizer_, *context, Permission::kOperations,
                                            *scheduler_, request->name(), &operation);
  reactor->Finish(ToGrpcStatus(allowed.ok() ? scheduler_->Delete(request->name()) : allowed));
  return reactor;
}

}  // namespace kiln::api
