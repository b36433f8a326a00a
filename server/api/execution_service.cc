#include "server/api/execution_service.h"

#include <optional>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace kiln::api {
namespace {

// Streams one operation's changes to a client, one write at a time, and
// finishes with the completed operation.
class OperationStreamReactor final : public grpc::ServerWriteReactor<lro::Operation> {
 public:
  OperationStreamReactor() = default;

  // Either Follow an operation, or FinishWith a one-off result or error.
  void Follow(std::shared_ptr<exec::Operation> operation) {
    operation_ = std::move(operation);
    subscription_ = operation_->Subscribe([this] { MaybeWrite(); });
    MaybeWrite();
  }
  void FinishWithOperation(lro::Operation operation) {
    {
      absl::MutexLock lock(&mu_);
      current_ = std::move(operation);
      finishing_ = true;
    }
    StartWriteAndFinish(&current_, grpc::WriteOptions(), grpc::Status::OK);
  }
  void FinishWithError(const absl::Status& status) {
    {
      absl::MutexLock lock(&mu_);
      finishing_ = true;
    }
    Finish(ToGrpcStatus(status));
  }

  void OnWriteDone(bool ok) override {
    {
      absl::MutexLock lock(&mu_);
      writing_ = false;
      if (finishing_) return;
      if (!ok) {
        finishing_ = true;  // the client went away; the action keeps running for others
      }
    }
    if (!ok) {
      Finish(grpc::Status(grpc::StatusCode::CANCELLED, "the client went away"));
      return;
    }
    MaybeWrite();
  }

  void OnCancel() override {
    bool finish = false;
    {
      absl::MutexLock lock(&mu_);
      if (!finishing_ && !writing_) finish = finishing_ = true;
    }
    if (finish) Finish(grpc::Status(grpc::StatusCode::CANCELLED, "the client cancelled the call"));
  }

  void OnDone() override {
    if (operation_ != nullptr) operation_->Unsubscribe(subscription_);
    delete this;
  }

 private:
  void MaybeWrite() {
    bool last = false;
    {
      absl::MutexLock lock(&mu_);
      if (writing_ || finishing_) return;
      int64_t version = 0;
      lro::Operation snapshot = operation_->Snapshot(&version);
      if (version == sent_version_) return;
      sent_version_ = version;
      current_ = std::move(snapshot);
      writing_ = true;
      last = current_.done();
      if (last) finishing_ = true;
    }
    if (last) {
      StartWriteAndFinish(&current_, grpc::WriteOptions(), grpc::Status::OK);
    } else {
      StartWrite(&current_);
    }
  }

  std::shared_ptr<exec::Operation> operation_;
  int subscription_ = -1;
  absl::Mutex mu_;
  lro::Operation current_;  // the message being written
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool finishing_ ABSL_GUARDED_BY(mu_) = false;
  int64_t sent_version_ ABSL_GUARDED_BY(mu_) = -1;
};

lro::Operation CachedOperation(const Digest& action_digest, rev2::ActionResult result) {
  lro::Operation operation;
  operation.set_name(absl::StrCat("operations/cached-", action_digest.hash));
  rev2::ExecuteOperationMetadata metadata;
  metadata.set_stage(rev2::ExecutionStage::COMPLETED);
  *metadata.mutable_action_digest() = action_digest.ToProto();
  operation.mutable_metadata()->PackFrom(metadata);
  operation.set_done(true);
  rev2::ExecuteResponse response;
  *response.mutable_result() = std::move(result);
  response.set_cached_result(true);
  operation.mutable_response()->PackFrom(response);
  return operation;
}

}  // namespace

grpc::ServerWriteReactor<lro::Operation>* ExecutionService::Execute(
    grpc::CallbackServerContext* context, const rev2::ExecuteRequest* request) {
  auto* reactor = new OperationStreamReactor();
  storage_.io->Schedule([this, reactor, request] {
    absl::Status valid = CheckDigestFunction(request->digest_function());
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
        scheduler_->Submit(*request, *action_digest);
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
  auto* reactor = new OperationStreamReactor();
  std::shared_ptr<exec::Operation> operation = scheduler_->Find(request->name());
  if (operation == nullptr) {
    reactor->FinishWithError(absl::NotFoundError(absl::StrCat(
        "no operation named \"", request->name(), "\" on this worker (finished long ago, or never started)")));
  } else {
    reactor->Follow(std::move(operation));
  }
  return reactor;
}

grpc::ServerUnaryReactor* OperationsService::GetOperation(grpc::CallbackServerContext* context,
                                                          const lro::GetOperationRequest* request,
                                                          lro::Operation* response) {
  auto* reactor = context->DefaultReactor();
  std::shared_ptr<exec::Operation> operation = scheduler_->Find(request->name());
  if (operation == nullptr) {
    reactor->Finish(grpc::Status(grpc::StatusCode::NOT_FOUND, "no operation named " + request->name()));
  } else {
    *response = operation->Snapshot(nullptr);
    reactor->Finish(grpc::Status::OK);
  }
  return reactor;
}

grpc::ServerUnaryReactor* OperationsService::ListOperations(grpc::CallbackServerContext* context,
                                                            const lro::ListOperationsRequest* request,
                                                            lro::ListOperationsResponse* response) {
  for (const auto& operation : scheduler_->List()) *response->add_operations() = operation->Snapshot(nullptr);
  auto* reactor = context->DefaultReactor();
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerUnaryReactor* OperationsService::CancelOperation(grpc::CallbackServerContext* context,
                                                             const lro::CancelOperationRequest* request,
                                                             google::protobuf::Empty* response) {
  auto* reactor = context->DefaultReactor();
  reactor->Finish(ToGrpcStatus(scheduler_->Cancel(request->name())));
  return reactor;
}

}  // namespace kiln::api
