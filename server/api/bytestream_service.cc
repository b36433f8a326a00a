#include "server/api/bytestream_service.h"

#include <algorithm>
#include <deque>
#include <optional>

#include <cstdlib>

#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/wire_format_lite.h>
#include <grpcpp/alarm.h>
#include <grpcpp/impl/codegen/proto_utils.h>
#include <grpcpp/support/byte_buffer.h>
#include <grpcpp/support/slice.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/status_macros.h"
#include "server/api/grpc_status.h"
#include "server/api/reactor_lifetime.h"

namespace kiln::api {
namespace {

// A ReadResponse as the bytes gRPC sends: the field's tag and length, then
// `data` itself, so a chunk read from disk goes to the transport uncopied.
grpc::ByteBuffer ReadResponseBuffer(grpc::Slice data) {
  if (data.size() == 0) return grpc::ByteBuffer(&data, 1);  // proto3 omits an empty field
  uint8_t header[16];  // a one-byte tag and a varint of at most 5 bytes
  uint8_t* end = google::protobuf::internal::WireFormatLite::WriteTagToArray(
      bs::ReadResponse::kDataFieldNumber,
      google::protobuf::internal::WireFormatLite::WIRETYPE_LENGTH_DELIMITED, header);
  end = google::protobuf::io::CodedOutputStream::WriteVarint32ToArray(
      static_cast<uint32_t>(data.size()), end);
  grpc::Slice slices[2] = {grpc::Slice(header, end - header), std::move(data)};
  return grpc::ByteBuffer(slices, 2);
}

// A slice that owns `bytes` without copying them.
grpc::Slice OwningSlice(std::string bytes) {
  auto* owned = new std::string(std::move(bytes));
  return grpc::Slice(owned->data(), owned->size(),
                     [](void* string) { delete static_cast<std::string*>(string); }, owned);
}

// Streams one blob (or a range of it). The next chunk is read on the pool
// while the previous one is being sent, so disk and network overlap; each
// chunk is pread into a buffer that gRPC then sends as it is.
//
// At most one read task, one buffered chunk and one write are in flight;
// `mu_` guards the hand-off between the read task and OnWriteDone. The
// reading state (reader_, position_, compressor_) is used only by the one
// read task at a time.
class ReadReactor final : public ManagedReactor<grpc::ServerWriteReactor<grpc::ByteBuffer>> {
 public:
  ReadReactor(Storage storage, grpc::CallbackServerContext* context, bs::ReadRequest request,
              LiveReactors* live)
      : ManagedReactor(live), storage_(storage), context_(context), request_(std::move(request)) {
    {
      absl::MutexLock lock(&mu_);
      reading_ = true;
    }
    RunOnPool(storage_.io, [this] { Start(); });
  }

  void OnWriteDone(bool ok) override {
    ScopedRelease release(this);
    if (!ok) {
      FinishOnce(grpc::Status(grpc::StatusCode::CANCELLED, "the client went away"));
      return;
    }
    std::optional<Chunk> next;
    bool read_more = false;
    {
      absl::MutexLock lock(&mu_);
      writing_ = false;
      if (ready_.has_value()) {
        next = std::move(ready_);
        ready_.reset();
        writing_ = true;
        read_more = !next->last && !reading_;
        if (read_more) reading_ = true;
      }
    }
    if (next.has_value()) Send(*std::move(next));
    if (read_more) RunOnPool(storage_.io, [this] { ReadAhead(); });
  }

 private:
  struct Chunk {
    grpc::ByteBuffer message;
    bool empty = false;
    bool last = false;
  };

  absl::Status Open() {
    RETURN_IF_ERROR(Authorize(storage_.authorizer, *context_, Permission::kCasRead,
                              ResourceInstance(request_.resource_name())));
    ASSIGN_OR_RETURN(BlobResource resource, ParseReadResource(request_.resource_name()));
    if (request_.read_offset() < 0) {
      return absl::OutOfRangeError(
          absl::StrCat("read_offset ", request_.read_offset(), " is negative"));
    }
    if (request_.read_limit() < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("read_limit ", request_.read_limit(), " is negative"));
    }
    ASSIGN_OR_RETURN(cas::BlobReader reader, storage_.cas->OpenBlob(resource.digest));
    reader_ = std::make_unique<cas::BlobReader>(std::move(reader));
    const int64_t size = resource.digest.size;
    if (request_.read_offset() > size) {
      return absl::OutOfRangeError(absl::StrFormat(
          "read_offset %d is past the end of blob %s", request_.read_offset(),
          resource.digest.ToString()));
    }
    position_ = request_.read_offset();
    end_ = request_.read_limit() == 0 ? size : std::min(size, position_ + request_.read_limit());
    if (resource.zstd) compressor_ = std::make_unique<ZstdCompressor>();
    return absl::OkStatus();
  }

  void Start() {
    absl::Status opened = Open();
    if (!opened.ok()) {
      FinishOnce(opened);
      return;
    }
    ReadAhead();
  }

  // On the pool: reads the next chunk, and sends it at once unless a write
  // is in flight, whose OnWriteDone then sends it.
  void ReadAhead() {
    absl::StatusOr<Chunk> chunk = NextChunk();
    if (!chunk.ok()) {
      FinishOnce(chunk.status());
      return;
    }
    bool send_now = false, read_more = false;
    {
      absl::MutexLock lock(&mu_);
      reading_ = false;
      send_now = !writing_;
      if (send_now) {
        writing_ = true;
        read_more = reading_ = !chunk->last;
      } else {
        ready_ = *std::move(chunk);
      }
    }
    if (!send_now) return;
    Send(*std::move(chunk));
    if (read_more) RunOnPool(storage_.io, [this] { ReadAhead(); });
  }

  absl::StatusOr<Chunk> NextChunk() {
    Chunk chunk;
    if (compressor_ == nullptr) {
      const int64_t length = std::min(kChunk, end_ - position_);
      chunk.last = position_ + length >= end_;
      chunk.empty = length == 0;
      if (chunk.empty) return chunk;
      void* buffer = std::malloc(length);
      if (buffer == nullptr) return absl::ResourceExhaustedError("out of memory for a read buffer");
      absl::StatusOr<int64_t> read = reader_->ReadInto(position_, static_cast<char*>(buffer), length);
      if (!read.ok() || *read != length) {
        std::free(buffer);
        if (!read.ok()) return read.status();
        return absl::DataLossError(absl::StrCat("blob ", reader_->digest().ToString(),
                                                " is shorter on disk than its digest says"));
      }
      position_ += length;
      chunk.message = ReadResponseBuffer(grpc::Slice(buffer, length, std::free));
      return chunk;
    }
    // A zstd stream may buffer a whole chunk; read until it yields bytes or ends.
    std::string compressed;
    while (compressed.empty() && !chunk.last) {
      const int64_t length = std::min(kChunk, end_ - position_);
      ASSIGN_OR_RETURN(std::string plain, reader_->Read(position_, length));
      if (static_cast<int64_t>(plain.size()) != length) {
        return absl::DataLossError(absl::StrCat("blob ", reader_->digest().ToString(),
                                                " is shorter on disk than its digest says"));
      }
      position_ += length;
      chunk.last = position_ >= end_;
      compressor_->Compress(plain, chunk.last, &compressed);
    }
    chunk.empty = compressed.empty();
    if (!chunk.empty) chunk.message = ReadResponseBuffer(OwningSlice(std::move(compressed)));
    return chunk;
  }

  // Starts the write of `chunk`; the caller set writing_.
  void Send(Chunk chunk) {
    if (chunk.empty) {
      FinishOnce(grpc::Status::OK);  // nothing (more) to send
      return;
    }
    writing_message_ = std::move(chunk.message);
    if (chunk.last) {
      if (ClaimFinish()) StartWriteAndFinish(&writing_message_, grpc::WriteOptions(), grpc::Status::OK);
    } else {
      StartWriteHeld(&writing_message_);
    }
  }

  static constexpr int64_t kChunk = ByteStreamService::kReadChunkBytes;
  Storage storage_;
  grpc::CallbackServerContext* const context_;
  const bs::ReadRequest request_;

  // Used by the one read task at a time.
  std::unique_ptr<cas::BlobReader> reader_;
  std::unique_ptr<ZstdCompressor> compressor_;
  int64_t position_ = 0;
  int64_t end_ = 0;

  // Used by whoever set writing_, until the write's OnWriteDone.
  grpc::ByteBuffer writing_message_;

  absl::Mutex mu_;
  bool reading_ ABSL_GUARDED_BY(mu_) = false;  // a read task is scheduled or running
  bool writing_ ABSL_GUARDED_BY(mu_) = false;  // a write is in flight (or being started)
  std::optional<Chunk> ready_ ABSL_GUARDED_BY(mu_);  // read, waiting for the write in flight
};

// Answers a Read whose request could not be parsed.
class FailedReadReactor final : public ManagedReactor<grpc::ServerWriteReactor<grpc::ByteBuffer>> {
 public:
  FailedReadReactor(grpc::Status status, LiveReactors* live) : ManagedReactor(live) {
    FinishOnce(std::move(status));
  }
};

// Follows a running action's stdout or stderr: sends what is there, then
// polls for more every kPollInterval, and ends when the action has ended and
// every byte up to the limit was sent. A slow reader only delays itself: the
// action writes to a file, never to this stream.
//
// One task, write or poll alarm at a time, each under a hold, so the members
// below need no lock. A cancel is noticed by the next task or alarm (within
// kPollInterval), whose release sends the CANCELLED finish; the alarm is
// never cancelled from another thread.
class LogReadReactor final : public ManagedReactor<grpc::ServerWriteReactor<grpc::ByteBuffer>> {
 public:
  LogReadReactor(Storage storage, grpc::CallbackServerContext* context,
                 const bs::ReadRequest request_value, LiveReactors* live)
      : ManagedReactor(live), storage_(storage) {
    const bs::ReadRequest* request = &request_value;
    // Live output belongs to execution: reading it needs the execute grant,
    // and the operation must be the caller's (or it an operations admin).
    absl::StatusOr<std::shared_ptr<const Principal>> caller =
        AuthorizeCaller(storage_.authorizer, *context, Permission::kExecute,
                        ResourceInstance(request->resource_name()));
    if (!caller.ok()) {
      FinishOnce(ToGrpcStatus(caller.status()));
      return;
    }
    if (request->read_offset() < 0) {
      FinishOnce(grpc::Status(grpc::StatusCode::OUT_OF_RANGE,
                              absl::StrCat("read_offset ", request->read_offset(), " is negative")));
      return;
    }
    if (request->read_limit() < 0) {
      FinishOnce(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                              absl::StrCat("read_limit ", request->read_limit(), " is negative")));
      return;
    }
    std::string owner;
    stream_ = storage_.logs == nullptr ? nullptr : storage_.logs->Find(request->resource_name(), &owner);
    if (stream_ != nullptr &&
        !MayAccessOperation(caller->get(), owner, ResourceInstance(request->resource_name()))) {
      stream_ = nullptr;  // another principal's: as if it did not exist
    }
    if (stream_ == nullptr) {
      FinishOnce(grpc::Status(grpc::StatusCode::NOT_FOUND,
                              absl::StrCat("no live output stream named ", request->resource_name(),
                                           ": its operation has finished (read the ActionResult's "
                                           "stdout_digest / stderr_digest) or never existed")));
      return;
    }
    offset_ = request->read_offset();
    remaining_ = request->read_limit() == 0 ? INT64_MAX : request->read_limit();
    RunOnPool(storage_.io, [this] { ReadMore(); });
  }

  void OnWriteDone(bool ok) override {
    ScopedRelease release(this);
    if (!ok) {
      FinishOnce(grpc::Status(grpc::StatusCode::CANCELLED, "the client went away"));
      return;
    }
    RunOnPool(storage_.io, [this] { ReadMore(); });
  }

 private:
  static constexpr int64_t kChunk = 1 << 20;
  static constexpr absl::Duration kPollInterval = absl::Milliseconds(50);

  void ReadMore() {
    if (remaining_ == 0) {
      FinishOnce(grpc::Status::OK);
      return;
    }
    // Seen finished before the read: nothing can be written after it.
    const bool finished = stream_->finished();
    absl::StatusOr<std::string> data = stream_->Read(offset_, std::min(kChunk, remaining_));
    if (!data.ok()) {
      FinishOnce(data.status());
      return;
    }
    if (!data->empty()) {
      offset_ += static_cast<int64_t>(data->size());
      remaining_ -= static_cast<int64_t>(data->size());
      response_ = ReadResponseBuffer(OwningSlice(*std::move(data)));
      StartWriteHeld(&response_);
      return;
    }
    if (finished) {
      FinishOnce(grpc::Status::OK);
      return;
    }
    // Still under the task's hold, so Hold cannot fail here.
    if (!Hold()) return;
    alarm_.Set(absl::ToChronoTime(absl::Now() + kPollInterval), [this](bool fired) {
      if (!fired) {
        FinishOnce(grpc::Status(grpc::StatusCode::CANCELLED, "the server is shutting down"));
      } else {
        RunOnPool(storage_.io, [this] { ReadMore(); });
      }
      Release();
    });
  }

  Storage storage_;
  std::shared_ptr<exec::LogStream> stream_;
  int64_t offset_ = 0;
  int64_t remaining_ = 0;
  grpc::ByteBuffer response_;
  grpc::Alarm alarm_;
};

// Receives one upload. Requests are processed on the pool, in order, one at
// a time; meanwhile gRPC keeps receiving the next few, so the network, the
// hashing and the disk work overlap.
//
// Reactor rules kept here: at most one read is in flight, and Finish waits
// for it (the read holds the call, see ManagedReactor). `mu_` guards the
// hand-off between OnReadDone and Drain; reactor methods are called outside
// it. Drain runs even after a cancel (AfterFinish::kRun) so that an
// interrupted upload is still parked for a resume.
class WriteReactor final : public ManagedReactor<grpc::ServerReadReactor<bs::WriteRequest>> {
 public:
  // `caller`: the authenticated principal (unused when authorization is off),
  // or why the caller is not authenticated; checked against the first
  // message's instance.
  WriteReactor(ByteStreamService* service, bs::WriteResponse* response,
               absl::StatusOr<std::shared_ptr<const Principal>> caller)
      : ManagedReactor(service->live_reactors()), service_(service), response_(response),
        caller_(std::move(caller)) {
    {
      // Under mu_ so that OnReadDone, on another thread, is ordered after
      // the members' construction through a lock (gRPC's own ordering is
      // invisible to ThreadSanitizer).
      absl::MutexLock lock(&mu_);
      reading_ = true;
    }
    StartReadHeld(&incoming_);  // cannot fail: nothing is decided yet
  }

  void OnReadDone(bool ok) override {
    ScopedRelease release(this);
    bool start_read = false, start_drain = false;
    {
      absl::MutexLock lock(&mu_);
      reading_ = false;
      if (stopped_) return;  // the outcome is decided; drop the message
      if (ok) {
        queue_.push_back(std::move(incoming_));
        incoming_.Clear();
        start_read = reading_ = queue_.size() < kMaxQueued;
      } else {
        stream_ended_ = true;
      }
      start_drain = !draining_;
      draining_ = true;
    }
    if (start_read && !StartReadHeld(&incoming_)) ReadNotStarted();
    if (start_drain) {
      RunOnPool(service_->storage().io, [this] { Drain(); }, AfterFinish::kRun);
    }
  }

 private:
  static constexpr size_t kMaxQueued = 4;

  // A read was planned but the call is already finishing (cancelled): no
  // more messages will come, so end the stream for Drain.
  void ReadNotStarted() {
    absl::MutexLock lock(&mu_);
    reading_ = false;
    stream_ended_ = true;
  }

  void Drain() {
    while (true) {
      bs::WriteRequest request;
      bool start_read = false;
      {
        absl::MutexLock lock(&mu_);
        if (queue_.empty()) {
          if (!stream_ended_) {
            draining_ = false;
            return;
          }
          break;  // the client ended the stream before finish_write
        }
        request = std::move(queue_.front());
        queue_.pop_front();
        if (!reading_ && !stream_ended_) start_read = reading_ = true;
      }
      if (start_read && !StartReadHeld(&incoming_)) ReadNotStarted();
      absl::Status status = Consume(request);
      if (!status.ok()) {
        if (upload_ != nullptr) service_->ReleaseUpload(name_);
        upload_.reset();  // removes the temp file: nothing of a bad upload is kept
        Stop(ToGrpcStatus(status));
        return;
      }
      if (done_) {
        Stop(grpc::Status::OK);
        return;
      }
    }
    if (upload_ == nullptr) {
      Stop(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        "the Write stream ended before its first request"));
      return;
    }
    int64_t committed = upload_->committed;
    service_->ParkUpload(name_, std::move(upload_));
    Stop(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                      absl::StrCat("the Write stream for ", name_,
                                   " ended without finish_write; ", committed,
                                   " bytes are kept: resume at that write_offset")));
  }

  // Ends the call; the Finish waits for a read in flight (its hold).
  void Stop(grpc::Status status) {
    {
      absl::MutexLock lock(&mu_);
      stopped_ = true;
      queue_.clear();
    }
    FinishOnce(std::move(status));
  }

  absl::Status Consume(const bs::WriteRequest& request) {
    if (upload_ == nullptr) {
      if (request.resource_name().empty()) {
        return absl::InvalidArgumentError("the first WriteRequest must set resource_name");
      }
      name_ = request.resource_name();
      if (const Authorizer* authorizer = service_->storage().authorizer; authorizer != nullptr) {
        RETURN_IF_ERROR(authorizer->Decide(caller_, Permission::kCasWrite, ResourceInstance(name_)));
      }
      ASSIGN_OR_RETURN(BlobResource resource, ParseWriteResource(name_));
      if (service_->storage().cas->Contains(resource.digest)) {
        // Already stored: end the upload early, as REAPI allows.
        response_->set_committed_size(resource.zstd ? -1 : resource.digest.size);
        done_ = true;
        return absl::OkStatus();
      }
      ASSIGN_OR_RETURN(upload_, service_->AcquireUpload(name_, resource));
    } else if (!request.resource_name().empty() && request.resource_name() != name_) {
      return absl::InvalidArgumentError(absl::StrCat("resource_name changed within one stream, from ",
                                                     name_, " to ", request.resource_name()));
    }
    if (request.write_offset() != upload_->committed) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "write_offset %d does not continue %s, which has %d bytes committed (see "
          "QueryWriteStatus)",
          request.write_offset(), name_, upload_->committed.load()));
    }
    if (upload_->zstd != nullptr) {
      std::string plain;
      RETURN_IF_ERROR(upload_->zstd->Decompress(request.data(), &plain));
      RETURN_IF_ERROR(upload_->writer->Append(plain));
    } else {
      RETURN_IF_ERROR(upload_->writer->Append(request.data()));
    }
    upload_->committed += static_cast<int64_t>(request.data().size());
    if (request.finish_write()) {
      RETURN_IF_ERROR(upload_->writer->Commit());
      response_->set_committed_size(upload_->committed);
      service_->ReleaseUpload(name_);
      upload_.reset();
      done_ = true;
    }
    return absl::OkStatus();
  }

  ByteStreamService* const service_;
  bs::WriteResponse* const response_;
  const absl::StatusOr<std::shared_ptr<const Principal>> caller_;
  bs::WriteRequest incoming_;  // the buffer of the read in flight

  absl::Mutex mu_;
  std::deque<bs::WriteRequest> queue_ ABSL_GUARDED_BY(mu_);
  bool reading_ ABSL_GUARDED_BY(mu_) = false;       // a read is in flight
  bool draining_ ABSL_GUARDED_BY(mu_) = false;      // Drain is scheduled or running
  bool stream_ended_ ABSL_GUARDED_BY(mu_) = false;  // the client sent its last message
  bool stopped_ ABSL_GUARDED_BY(mu_) = false;       // Drain decided the outcome

  // Used only by Drain, which never runs twice at once.
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
  // Each parked upload keeps a partial temp file: a client that opens and
  // abandons uploads without end must not fill the disk. The oldest go first.
  while (parked_.size() >= kMaxParkedUploads) {
    auto oldest = std::min_element(parked_.begin(), parked_.end(), [](const auto& a, const auto& b) {
      return a.second->parked_at < b.second->parked_at;
    });
    parked_.erase(oldest);
  }
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

grpc::ServerWriteReactor<grpc::ByteBuffer>* ByteStreamService::Read(
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* raw_request) {
  // Read is registered raw so that chunks go out without a copy; its
  // request is parsed here.
  bs::ReadRequest request;
  grpc::ByteBuffer request_bytes(*raw_request);
  grpc::Status parsed =
      grpc::SerializationTraits<bs::ReadRequest>::Deserialize(&request_bytes, &request);
  if (!parsed.ok()) {
    return new FailedReadReactor(
        grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "the ReadRequest does not parse"),
        &live_reactors_);
  }
  if (exec::LogRegistry::IsStreamName(request.resource_name())) {
    return new LogReadReactor(storage_, context, std::move(request), &live_reactors_);
  }
  return new ReadReactor(storage_, context, std::move(request), &live_reactors_);
}

grpc::ServerReadReactor<bs::WriteRequest>* ByteStreamService::Write(
    grpc::CallbackServerContext* context, bs::WriteResponse* response) {
  // The instance comes with the first message; the caller is known now.
  absl::StatusOr<std::shared_ptr<const Principal>> caller = std::shared_ptr<const Principal>();
  if (storage_.authorizer != nullptr) caller = storage_.authorizer->Authenticate(*context);
  return new WriteReactor(this, response, std::move(caller));
}

grpc::ServerUnaryReactor* ByteStreamService::QueryWriteStatus(
    grpc::CallbackServerContext* context, const bs::QueryWriteStatusRequest* request,
    bs::QueryWriteStatusResponse* response) {
  return RunOnPool(storage_.io, [this, context, request, response]() -> absl::Status {
    RETURN_IF_ERROR(Authorize(storage_.authorizer, *context, Permission::kCasWrite,
                              ResourceInstance(request->resource_name())));
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
