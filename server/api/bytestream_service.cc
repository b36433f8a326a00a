#include "server/api/bytestream_service.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/status_macros.h"
#include "server/api/grpc_status.h"

namespace kiln::api {
namespace {

// Streams one blob (or a range of it) in chunks read on the pool.
class ReadReactor final : public grpc::ServerWriteReactor<bs::ReadResponse> {
 public:
  ReadReactor(Storage storage, const bs::ReadRequest* request)
      : storage_(storage), request_(request) {
    storage_.io->Schedule([this] { Start(); });
  }

  void OnWriteDone(bool ok) override {
    if (!ok) {
      Finish(grpc::Status(grpc::StatusCode::CANCELLED, "the client went away"));
      return;
    }
    storage_.io->Schedule([this] { SendNext(); });
  }

  void OnDone() override { delete this; }

 private:
  absl::Status Open() {
    ASSIGN_OR_RETURN(BlobResource resource, ParseReadResource(request_->resource_name()));
    if (request_->read_offset() < 0) {
      return absl::OutOfRangeError(
          absl::StrCat("read_offset ", request_->read_offset(), " is negative"));
    }
    if (request_->read_limit() < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("read_limit ", request_->read_limit(), " is negative"));
    }
    ASSIGN_OR_RETURN(cas::BlobReader reader, storage_.cas->OpenBlob(resource.digest));
    reader_ = std::make_unique<cas::BlobReader>(std::move(reader));
    const int64_t size = resource.digest.size;
    if (request_->read_offset() > size) {
      return absl::OutOfRangeError(absl::StrFormat(
          "read_offset %d is past the end of blob %s", request_->read_offset(),
          resource.digest.ToString()));
    }
    position_ = request_->read_offset();
    end_ = request_->read_limit() == 0 ? size : std::min(size, position_ + request_->read_limit());
    if (resource.zstd) compressor_ = std::make_unique<ZstdCompressor>();
    return absl::OkStatus();
  }

  void Start() {
    absl::Status opened = Open();
    if (!opened.ok()) {
      Finish(ToGrpcStatus(opened));
      return;
    }
    SendNext();
  }

  void SendNext() {
    std::string* data = response_.mutable_data();
    data->clear();
    // A zstd stream may buffer a whole chunk; read until it yields bytes or ends.
    while (data->empty() && !sent_last_) {
      if (position_ >= end_ && compressor_ == nullptr) {
        sent_last_ = true;
        break;
      }
      absl::StatusOr<std::string> chunk =
          reader_->Read(position_, std::min(kChunk, end_ - position_));
      if (!chunk.ok()) {
        Finish(ToGrpcStatus(chunk.status()));
        return;
      }
      position_ += static_cast<int64_t>(chunk->size());
      bool last = position_ >= end_;
      if (compressor_ != nullptr) {
        compressor_->Compress(*chunk, last, data);
        sent_last_ = last;
      } else {
        *data = *std::move(chunk);
        sent_last_ = last;
      }
    }
    if (data->empty()) {
      Finish(grpc::Status::OK);
      return;
    }
    if (sent_last_) {
      StartWriteAndFinish(&response_, grpc::WriteOptions(), grpc::Status::OK);
    } else {
      StartWrite(&response_);
    }
  }

  static constexpr int64_t kChunk = ByteStreamService::kReadChunkBytes;
  Storage storage_;
  const bs::ReadRequest* request_;
  std::unique_ptr<cas::BlobReader> reader_;
  std::unique_ptr<ZstdCompressor> compressor_;
  int64_t position_ = 0;
  int64_t end_ = 0;
  bool sent_last_ = false;
  bs::ReadResponse response_;
};

// Receives one upload. Requests are handled on the pool, one at a time.
class WriteReactor final : public grpc::ServerReadReactor<bs::WriteRequest> {
 public:
  WriteReactor(ByteStreamService* service, bs::WriteResponse* response)
      : service_(service), response_(response) {
    StartRead(&request_);
  }

  void OnReadDone(bool ok) override {
    if (ok) {
      service_->storage().io->Schedule([this] { HandleRequest(); });
    } else {
      service_->storage().io->Schedule([this] { HandleEndOfStream(); });
    }
  }

  void OnDone() override { delete this; }

 private:
  void HandleRequest() {
    absl::Status status = Consume();
    if (!status.ok()) {
      if (upload_ != nullptr) service_->ReleaseUpload(name_);
      upload_.reset();  // removes the temp file: nothing of a bad upload is kept
      Finish(ToGrpcStatus(status));
      return;
    }
    if (done_) {
      Finish(grpc::Status::OK);
      return;
    }
    StartRead(&request_);
  }

  // The stream ended (client half-close or disconnect) before finish_write.
  void HandleEndOfStream() {
    if (upload_ == nullptr) {
      Finish(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                          "the Write stream ended before its first request"));
      return;
    }
    int64_t committed = upload_->committed;
    service_->ParkUpload(name_, std::move(upload_));
    Finish(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        absl::StrCat("the Write stream for ", name_,
                                     " ended without finish_write; ", committed,
                                     " bytes are kept: resume at that write_offset")));
  }

  absl::Status Consume() {
    if (upload_ == nullptr) {
      if (request_.resource_name().empty()) {
        return absl::InvalidArgumentError("the first WriteRequest must set resource_name");
      }
      name_ = request_.resource_name();
      ASSIGN_OR_RETURN(BlobResource resource, ParseWriteResource(name_));
      if (service_->storage().cas->Contains(resource.digest)) {
        // Already stored: end the upload early, as REAPI allows.
        response_->set_committed_size(resource.zstd ? -1 : resource.digest.size);
        done_ = true;
        return absl::OkStatus();
      }
      ASSIGN_OR_RETURN(upload_, service_->AcquireUpload(name_, resource));
    } else if (!request_.resource_name().empty() && request_.resource_name() != name_) {
      return absl::InvalidArgumentError(absl::StrCat("resource_name changed within one stream, from ",
                                                     name_, " to ", request_.resource_name()));
    }
    if (request_.write_offset() != upload_->committed) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "write_offset %d does not continue %s, which has %d bytes committed (see "
          "QueryWriteStatus)",
          request_.write_offset(), name_, upload_->committed.load()));
    }
    if (upload_->zstd != nullptr) {
      std::string plain;
      RETURN_IF_ERROR(upload_->zstd->Decompress(request_.data(), &plain));
      RETURN_IF_ERROR(upload_->writer->Append(plain));
    } else {
      RETURN_IF_ERROR(upload_->writer->Append(request_.data()));
    }
    upload_->committed += static_cast<int64_t>(request_.data().size());
    if (request_.finish_write()) {
      RETURN_IF_ERROR(upload_->writer->Commit());
      response_->set_committed_size(upload_->committed);
      service_->ReleaseUpload(name_);
      upload_.reset();
      done_ = true;
    }
    return absl::OkStatus();
  }

  ByteStreamService* service_;
  bs::WriteResponse* response_;
  bs::WriteRequest request_;
  std::string name_;
  std::unique_ptr<ByteStreamService::Upload> upload_;
  bool done_ = false;
};

}  // namespace

absl::StatusOr<std::unique_ptr<ByteStreamService::Upload>> ByteStreamService::AcquireUpload(
    const std::string& name, const BlobResource& resource) {
  {
    absl::MutexLock lock(&mu_);
    DropExpiredLocked();
    if (active_.contains(name)) {
      return absl::AbortedError(
          absl::StrCat("upload ", name, " is being written by another stream"));
    }
    auto parked = parked_.find(name);
    if (parked != parked_.end()) {
      std::unique_ptr<Upload> upload = std::move(parked->second);
      parked_.erase(parked);
      active_[name] = upload.get();
      return upload;
    }
  }
  auto upload = std::make_unique<Upload>();
  upload->resource = resource;
  ASSIGN_OR_RETURN(upload->writer, storage_.cas->StartWrite(resource.digest));
  if (resource.zstd) {
    upload->zstd = std::make_unique<ZstdDecompressor>();
    upload->zstd->set_max_output(resource.digest.size);
  }
  absl::MutexLock lock(&mu_);
  if (active_.contains(name) || parked_.contains(name)) {
    return absl::AbortedError(
        absl::StrCat("upload ", name, " is being written by another stream"));
  }
  active_[name] = upload.get();
  return upload;
}

void ByteStreamService::ParkUpload(const std::string& name, std::unique_ptr<Upload> upload) {
  upload->parked_at = absl::Now();
  absl::MutexLock lock(&mu_);
  active_.erase(name);
  parked_[name] = std::move(upload);
}

void ByteStreamService::ReleaseUpload(const std::string& name) {
  absl::MutexLock lock(&mu_);
  active_.erase(name);
}

void ByteStreamService::DropExpiredLocked() {
  absl::Time cutoff = absl::Now() - kParkedUploadLifetime;
  absl::erase_if(parked_, [&](const auto& entry) { return entry.second->parked_at < cutoff; });
}

grpc::ServerWriteReactor<bs::ReadResponse>* ByteStreamService::Read(
    grpc::CallbackServerContext* context, const bs::ReadRequest* request) {
  return new ReadReactor(storage_, request);
}

grpc::ServerReadReactor<bs::WriteRequest>* ByteStreamService::Write(
    grpc::CallbackServerContext* context, bs::WriteResponse* response) {
  return new WriteReactor(this, response);
}

grpc::ServerUnaryReactor* ByteStreamService::QueryWriteStatus(
    grpc::CallbackServerContext* context, const bs::QueryWriteStatusRequest* request,
    bs::QueryWriteStatusResponse* response) {
  return RunOnPool(context, storage_.io, [this, request, response]() -> absl::Status {
    ASSIGN_OR_RETURN(BlobResource resource, ParseWriteResource(request->resource_name()));
    if (storage_.cas->Contains(resource.digest)) {
      response->set_committed_size(resource.digest.size);
      response->set_complete(true);
      return absl::OkStatus();
    }
    absl::MutexLock lock(&mu_);
    const Upload* upload = nullptr;
    if (auto it = parked_.find(request->resource_name()); it != parked_.end()) {
      upload = it->second.get();
    } else if (auto it = active_.find(request->resource_name()); it != active_.end()) {
      upload = it->second;
    }
    if (upload == nullptr) {
      return absl::NotFoundError(absl::StrCat("no upload in progress under ",
                                              request->resource_name(), "; start at offset 0"));
    }
    response->set_committed_size(upload->committed);
    return absl::OkStatus();
  });
}

}  // namespace kiln::api
