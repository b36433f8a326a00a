#include "server/api/cas_service.h"

#include <algorithm>
#include <vector>

#include <grpcpp/support/proto_buffer_reader.h>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/status_macros.h"
#include "common/zstd.h"
#include "server/api/find_missing_wire.h"
#include "server/api/grpc_status.h"
#include "server/api/reactor_lifetime.h"
#include "server/cas/directory_tree.h"

namespace kiln::api {
namespace {

// GetTree pages stay well below the default 4 MiB gRPC message limit.
constexpr int64_t kMaxTreePageBytes = 2 << 20;

absl::StatusOr<Digest> ParseIndexed(const rev2::Digest& proto, const char* field, int index) {
  absl::StatusOr<Digest> digest = ParseDigest(proto);
  if (!digest.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, "[", index, "]: ", digest.status().message()));
  }
  return digest;
}

absl::Status StoreOne(cas::BlobStore& cas, const rev2::BatchUpdateBlobsRequest::Request& entry,
                      cas::BlobBatch* batch) {
  ASSIGN_OR_RETURN(Digest digest, ParseDigest(entry.digest()));
  switch (entry.compressor()) {
    case rev2::Compressor::IDENTITY:
      return cas.PutInBatch(digest, entry.data(), batch);
    case rev2::Compressor::ZSTD: {
      if (digest.size > cas.max_blob_bytes()) return cas.StartWrite(digest).status();
      ASSIGN_OR_RETURN(std::string data, ZstdDecompressAll(entry.data(), digest.size));
      return cas.PutInBatch(digest, data, batch);
    }
    default:
      return absl::InvalidArgumentError(absl::StrCat(
          "compressor ", rev2::Compressor::Value_Name(entry.compressor()),
          " is not supported for batch uploads; use IDENTITY or ZSTD"));
  }
}

}  // namespace

grpc::ServerUnaryReactor* CasService::FindMissingBlobs(grpc::CallbackServerContext* context,
                                                       const grpc::ByteBuffer* request,
                                                       grpc::ByteBuffer* response) {
  return RunOnPool(storage_.io, [this, context, request, response]() -> absl::Status {
    // Read in place from gRPC's slices (the copy shares them).
    grpc::ByteBuffer request_bytes(*request);
    absl::StatusOr<FindMissingBlobsCall> parsed;
    if (request_bytes.Valid()) {
      grpc::ProtoBufferReader reader(&request_bytes);
      parsed = ParseFindMissingBlobsRequest(&reader);
    } else {
      parsed = ParseFindMissingBlobsRequest(absl::string_view());  // an empty message
    }
    ASSIGN_OR_RETURN(FindMissingBlobsCall call, std::move(parsed));
    RETURN_IF_ERROR(Authorize(storage_.authorizer, *context, Permission::kCasRead, call.instance_name));
    RETURN_IF_ERROR(CheckDigestFunction(static_cast<rev2::DigestFunction::Value>(call.digest_function)));
    RETURN_IF_ERROR(call.invalid_digest);
    // Each block is looked up under one lock of the store, so that a call
    // of 100,000 digests does not hold off writers for all of them.
    FindMissingBlobsResponseWriter answer;
    std::vector<bool> present;
    for (const auto& block : call.blocks) {
      storage_.cas->ContainsEach(block, &present);
      for (size_t i = 0; i < block.size(); ++i) {
        if (!present[i]) answer.Add(block[i]);
      }
    }
    // Handed to gRPC without another copy.
    std::vector<std::string> pieces = answer.Finish();
    std::vector<grpc::Slice> slices;
    slices.reserve(pieces.size());
    for (std::string& piece : pieces) {
      auto* owned = new std::string(std::move(piece));
      slices.emplace_back(owned->data(), owned->size(),
                          [](void* owner) { delete static_cast<std::string*>(owner); }, owned);
    }
    *response = grpc::ByteBuffer(slices.data(), slices.size());
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* CasService::BatchUpdateBlobs(
    grpc::CallbackServerContext* context, const rev2::BatchUpdateBlobsRequest* request,
    rev2::BatchUpdateBlobsResponse* response) {
  return RunOnPool(storage_.io, [this, context, request, response]() -> absl::Status {
    RETURN_IF_ERROR(Authorize(storage_.authorizer, *context, Permission::kCasWrite, request->instance_name()));
    RETURN_IF_ERROR(CheckDigestFunction(request->digest_function()));
    int64_t total = 0;
    for (const auto& entry : request->requests()) total += entry.data().size();
    if (total > storage_.max_batch_total_bytes) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "BatchUpdateBlobs carries %d bytes, over this server's max_batch_total_size_bytes "
          "of %d; upload large blobs with ByteStream.Write",
          total, storage_.max_batch_total_bytes));
    }
    // One batch: the blobs' fsyncs share journal commits, and each one is
    // acknowledged only once it is synced and published.
    cas::DirectorySyncs syncs;
    cas::BlobBatch batch(&syncs);
    std::vector<absl::Status> stored;
    stored.reserve(request->requests_size());
    for (const auto& entry : request->requests()) stored.push_back(StoreOne(*storage_.cas, entry, &batch));
    absl::flat_hash_map<Digest, absl::Status> failed;
    (void)batch.CommitAll(&failed);
    const absl::Status synced = syncs.SyncAll();
    for (int i = 0; i < request->requests_size(); ++i) {
      const auto& entry = request->requests(i);
      absl::Status status = stored[i];
      if (status.ok()) {
        auto it = failed.find(*ParseDigest(entry.digest()));  // parsed by StoreOne
        if (it != failed.end()) status = it->second;
        else if (!synced.ok()) status = synced;
      }
      auto* result = response->add_responses();
      *result->mutable_digest() = entry.digest();
      *result->mutable_status() = ToRpcStatus(status);
    }
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* CasService::BatchReadBlobs(grpc::CallbackServerContext* context,
                                                     const rev2::BatchReadBlobsRequest* request,
                                                     rev2::BatchReadBlobsResponse* response) {
  return RunOnPool(storage_.io, [this, context, request, response]() -> absl::Status {
    RETURN_IF_ERROR(Authorize(storage_.authorizer, *context, Permission::kCasRead, request->instance_name()));
    RETURN_IF_ERROR(CheckDigestFunction(request->digest_function()));
    std::vector<Digest> digests;
    int64_t total = 0;
    for (int i = 0; i < request->digests_size(); ++i) {
      ASSIGN_OR_RETURN(Digest digest, ParseIndexed(request->digests(i), "digests", i));
      total += digest.size;
      digests.push_back(std::move(digest));
    }
    if (total > storage_.max_batch_total_bytes) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "BatchReadBlobs asks for %d bytes, over this server's max_batch_total_size_bytes "
          "of %d; read large blobs with ByteStream.Read",
          total, storage_.max_batch_total_bytes));
    }
    for (int i = 0; i < request->digests_size(); ++i) {
      auto* result = response->add_responses();
      *result->mutable_digest() = request->digests(i);
      absl::StatusOr<std::string> data = storage_.cas->ReadBlob(digests[i]);
      if (data.ok()) result->set_data(*std::move(data));
      *result->mutable_status() = ToRpcStatus(data.status());
    }
    return absl::OkStatus();
  });
}

namespace {

// Streams GetTree pages; each carries the token of the next one. Pages are
// read on the pool; one task or one write at a time, so the members below
// need no lock. Lifetime and cancellation follow ManagedReactor.
class GetTreeReactor final : public ManagedReactor<grpc::ServerWriteReactor<rev2::GetTreeResponse>> {
 public:
  GetTreeReactor(Storage storage, grpc::CallbackServerContext* context,
                 const rev2::GetTreeRequest* request, LiveReactors* live)
      : ManagedReactor(live), storage_(storage), context_(context), request_(request) {
    RunOnPool(storage_.io, [this] { Start(); });
  }

  void OnWriteDone(bool ok) override {
    ScopedRelease release(this);
    if (!ok) {
      FinishOnce(grpc::Status(grpc::StatusCode::CANCELLED, "the client went away"));
      return;
    }
    if (next_index_ == 0) {
      FinishOnce(grpc::Status::OK);
      return;
    }
    RunOnPool(storage_.io, [this] { SendPage(); });
  }

 private:
  void Start() {
    absl::Status status = Validate();
    if (!status.ok()) {
      FinishOnce(status);
      return;
    }
    SendPage();
  }

  absl::Status Validate() {
    RETURN_IF_ERROR(Authorize(storage_.authorizer, *context_, Permission::kCasRead, request_->instance_name()));
    RETURN_IF_ERROR(CheckDigestFunction(request_->digest_function()));
    absl::StatusOr<Digest> root = ParseDigest(request_->root_digest());
    if (!root.ok()) return absl::InvalidArgumentError(absl::StrCat("root_digest: ", root.status().message()));
    root_ = *std::move(root);
    if (request_->page_size() < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("page_size ", request_->page_size(), " is negative"));
    }
    page_size_ = request_->page_size() == 0
                     ? CasService::kMaxTreePageSize
                     : std::min(request_->page_size(), CasService::kMaxTreePageSize);
    if (!request_->page_token().empty() &&
        (!absl::SimpleAtoi(request_->page_token(), &next_index_) || next_index_ <= 0)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "page_token \"", request_->page_token().substr(0, 100),
          "\" was not issued by this server; pass a next_page_token from a GetTreeResponse"));
    }
    if (!storage_.cas->Contains(root_)) {
      return absl::NotFoundError(
          absl::StrCat("root directory ", root_.ToString(), " is not in the CAS"));
    }
    return absl::OkStatus();
  }

  void SendPage() {
    absl::StatusOr<cas::TreePage> page =
        cas::ReadTreePage(*storage_.cas, root_, next_index_, page_size_, kMaxTreePageBytes);
    if (!page.ok()) {
      FinishOnce(page.status());
      return;
    }
    response_.Clear();
    for (auto& directory : page->directories) *response_.add_directories() = std::move(directory);
    next_index_ = page->next_index;
    if (next_index_ != 0) response_.set_next_page_token(absl::StrCat(next_index_));
    StartWriteHeld(&response_);
  }

  Storage storage_;
  grpc::CallbackServerContext* const context_;
  const rev2::GetTreeRequest* request_;
  Digest root_;
  int page_size_ = 0;
  int next_index_ = 0;
  rev2::GetTreeResponse response_;
};

}  // namespace

grpc::ServerWriteReactor<rev2::GetTreeResponse>* CasService::GetTree(
    grpc::CallbackServerContext* context, const rev2::GetTreeRequest* request) {
  return new GetTreeReactor(storage_, context, request, &live_reactors_);
}

}  // namespace kiln::api
