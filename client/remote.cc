#include "client/remote.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <random>

#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>
#include <grpcpp/support/client_interceptor.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/path_beneath.h"
#include "common/bearer_interceptor.h"
#include "common/posix.h"
#include "common/sha256.h"
#include "common/status_macros.h"
#include "grpc/health/v1/health.grpc.pb.h"

namespace kiln::client {
namespace {

constexpr int64_t kBatchBytes = 3 << 20;     // under the server's 4,000,000 limit
constexpr int64_t kChunkBytes = 1 << 20;
constexpr int kFindMissingPerCall = 10000;

std::string UploadId() {
  std::mt19937_64 random(std::random_device{}());
  return absl::StrFormat("%016x%016x", random(), random());
}

}  // namespace

absl::Status FromGrpc(const grpc::Status& status) {
  if (status.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()), status.error_message());
}

RemoteClient::RemoteClient(const std::string& server, std::string instance,
                           const Credentials& credentials)
    : instance_(std::move(instance)) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(64 << 20);
  std::shared_ptr<grpc::ChannelCredentials> channel_credentials = grpc::InsecureChannelCredentials();
  if (credentials.tls()) {
    grpc::SslCredentialsOptions ssl;
    ssl.pem_root_certs = credentials.tls_ca;
    ssl.pem_cert_chain = credentials.tls_cert;
    ssl.pem_private_key = credentials.tls_key;
    channel_credentials = grpc::SslCredentials(ssl);
  }
  std::vector<std::unique_ptr<grpc::experimental::ClientInterceptorFactoryInterface>> interceptors;
  if (!credentials.token.empty()) {
    interceptors.push_back(std::make_unique<kiln::BearerInterceptorFactory>(credentials.token));
  }
  channel_ = grpc::experimental::CreateCustomChannelWithInterceptors(
      server, channel_credentials, args, std::move(interceptors));
  cas_ = rev2::ContentAddressableStorage::NewStub(channel_);
  bytestream_ = google::bytestream::ByteStream::NewStub(channel_);
  execution_ = rev2::Execution::NewStub(channel_);
  action_cache_ = rev2::ActionCache::NewStub(channel_);
  capabilities_ = rev2::Capabilities::NewStub(channel_);
}

absl::StatusOr<bool> RemoteClient::CheckHealth(const std::string& service, absl::Duration timeout) {
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + timeout));
  grpc::health::v1::HealthCheckRequest request;
  request.set_service(service);
  grpc::health::v1::HealthCheckResponse response;
  grpc::Status status = grpc::health::v1::Health::NewStub(channel_)->Check(&context, request, &response);
  if (!status.ok()) return FromGrpc(status);
  return response.status() == grpc::health::v1::HealthCheckResponse::SERVING;
}

absl::Status RemoteClient::CheckReachable(absl::Duration timeout) {
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + timeout));
  rev2::GetCapabilitiesRequest request;
  request.set_instance_name(instance_);
  rev2::ServerCapabilities capabilities;
  grpc::Status status = capabilities_->GetCapabilities(&context, request, &capabilities);
  if (status.error_code() == grpc::StatusCode::UNAUTHENTICATED ||
      status.error_code() == grpc::StatusCode::PERMISSION_DENIED) {
    return FromGrpc(status);  // reached, but refused: the caller names the credential
  }
  if (!status.ok()) {
    return absl::UnavailableError(status.error_message());
  }
  absolute_symlinks_allowed_ = capabilities.cache_capabilities().symlink_absolute_path_strategy() ==
                               rev2::SymlinkAbsolutePathStrategy::ALLOWED;
  return absl::OkStatus();
}

absl::StatusOr<UploadStats> RemoteClient::UploadMissing(const BlobSet& blobs, Progress* progress) {
  UploadStats stats;
  stats.blobs_total = static_cast<int64_t>(blobs.digests.size());
  std::vector<Digest> missing;
  rev2::FindMissingBlobsRequest find;
  find.set_instance_name(instance_);
  auto flush_find = [&]() -> absl::Status {
    if (find.blob_digests_size() == 0) return absl::OkStatus();
    rev2::FindMissingBlobsResponse response;
    grpc::ClientContext context;
    RETURN_IF_ERROR(FromGrpc(cas_->FindMissingBlobs(&context, find, &response)));
    for (const auto& d : response.missing_blob_digests()) missing.push_back(*ParseDigest(d));
    find.clear_blob_digests();
    return absl::OkStatus();
  };
  for (const auto& [hash, digest] : blobs.digests) {
    *find.add_blob_digests() = digest.ToProto();
    if (find.blob_digests_size() == kFindMissingPerCall) RETURN_IF_ERROR(flush_find());
  }
  RETURN_IF_ERROR(flush_find());

  rev2::BatchUpdateBlobsRequest batch;
  batch.set_instance_name(instance_);
  int64_t batch_bytes = 0;
  auto flush_batch = [&]() -> absl::Status {
    if (batch.requests_size() == 0) return absl::OkStatus();
    rev2::BatchUpdateBlobsResponse response;
    grpc::ClientContext context;
    RETURN_IF_ERROR(FromGrpc(cas_->BatchUpdateBlobs(&context, batch, &response)));
    for (const auto& r : response.responses()) {
      if (r.status().code() != 0) {
        return absl::Status(static_cast<absl::StatusCode>(r.status().code()),
                            absl::StrCat("uploading ", r.digest().hash(), ": ", r.status().message()));
      }
    }
    if (progress != nullptr) progress->Add(batch_bytes);
    batch.clear_requests();
    batch_bytes = 0;
    return absl::OkStatus();
  };
  for (const Digest& digest : missing) {
    const BlobSource& source = blobs.by_hash.at(digest.hash);
    ++stats.blobs_uploaded;
    stats.bytes_uploaded += digest.size;
    if (digest.size >= kChunkBytes) {
      RETURN_IF_ERROR(WriteBlob(digest, source, progress));
      continue;
    }
    std::string data = source.content;
    if (!source.path.empty()) {
      ASSIGN_OR_RETURN(data, ReadFileToString(source.path));
    }
    if (batch_bytes + digest.size > kBatchBytes) RETURN_IF_ERROR(flush_batch());
    auto* entry = batch.add_requests();
    *entry->mutable_digest() = digest.ToProto();
    entry->set_data(std::move(data));
    batch_bytes += digest.size;
  }
  RETURN_IF_ERROR(flush_batch());
  return stats;
}

absl::Status RemoteClient::WriteBlob(const Digest& digest, const BlobSource& source,
                                     Progress* progress) {
  grpc::ClientContext context;
  google::bytestream::WriteResponse response;
  auto writer = bytestream_->Write(&context, &response);
  UniqueFd fd;
  if (!source.path.empty()) {
    ASSIGN_OR_RETURN(fd, OpenFile(source.path, O_RDONLY));
  }
  google::bytestream::WriteRequest request;
  request.set_resource_name(absl::StrCat(instance_, instance_.empty() ? "" : "/", "uploads/",
                                         UploadId(), "/blobs/", digest.ToString()));
  for (int64_t offset = 0; offset < digest.size || offset == 0; offset += kChunkBytes) {
    std::string chunk;
    if (fd.valid()) {
      ASSIGN_OR_RETURN(chunk, ReadAt(fd.get(), offset, kChunkBytes, source.path));
    } else {
      chunk = source.content.substr(offset, kChunkBytes);
    }
    request.set_write_offset(offset);
    request.set_finish_write(offset + static_cast<int64_t>(chunk.size()) >= digest.size);
    request.set_data(chunk);
    if (!writer->Write(request)) break;  // the server ended the call early (e.g. already stored)
    if (progress != nullptr) progress->Add(static_cast<int64_t>(chunk.size()));
    request.clear_resource_name();
    if (request.finish_write()) break;
  }
  writer->WritesDone();
  return FromGrpc(writer->Finish());
}

namespace {

std::string BlobName(const std::string& instance, const rev2::Digest& digest) {
  return absl::StrCat(instance, instance.empty() ? "" : "/", "blobs/", digest.hash(), "/",
                      digest.size_bytes());
}

// The server is not trusted with content: what it sends must hash to the
// digest that was asked for.
absl::Status CheckReceived(const rev2::Digest& digest, Sha256& hash, int64_t size) {
  std::string got = hash.FinishHex();
  if (got != digest.hash() || size != digest.size_bytes()) {
    return absl::DataLossError(absl::StrCat(
        "the server sent ", size, " bytes hashing to ", got, " for blob ", digest.hash(), "/",
        digest.size_bytes(), "; nothing was written"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::string> RemoteClient::ReadBlob(const rev2::Digest& digest) {
  std::string out;
  RETURN_IF_ERROR(FollowStream(BlobName(instance_, digest), 0, [&](absl::string_view chunk) {
    out.append(chunk.data(), chunk.size());
  }));
  Sha256 hash;
  hash.Update(out);
  RETURN_IF_ERROR(CheckReceived(digest, hash, static_cast<int64_t>(out.size())));
  return out;
}

absl::Status RemoteClient::DownloadFileAt(const rev2::Digest& digest, int dirfd, const std::string& name,
                                          bool executable, Progress* progress) {
  RETURN_IF_ERROR(CheckPathComponent(name, "output name"));
  std::string temp = absl::StrCat(".", name, ".kiln-download-", UploadId());
  int raw = openat(dirfd, temp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
                   executable ? 0755 : 0644);
  if (raw < 0) return PosixError("create " + temp, errno);
  UniqueFd fd(raw);
  absl::Status written = absl::OkStatus();
  Sha256 hash;
  int64_t size = 0;
  absl::Status streamed = FollowStream(BlobName(instance_, digest), 0, [&](absl::string_view chunk) {
    hash.Update(chunk);
    size += static_cast<int64_t>(chunk.size());
    if (written.ok()) written = WriteAll(fd.get(), chunk, temp);
    if (progress != nullptr) progress->Add(static_cast<int64_t>(chunk.size()));
  });
  fd.Reset();
  if (streamed.ok()) streamed = written;
  if (streamed.ok()) streamed = CheckReceived(digest, hash, size);
  if (streamed.ok() && renameat(dirfd, temp.c_str(), dirfd, name.c_str()) != 0) {
    streamed = PosixError("rename " + temp + " to " + name, errno);
  }
  if (!streamed.ok()) unlinkat(dirfd, temp.c_str(), 0);
  return streamed;
}

absl::Status RemoteClient::DownloadFile(const rev2::Digest& digest, const std::string& path,
                                        bool executable, Progress* progress) {
  ASSIGN_OR_RETURN(ParentAndName at, OpenParentOfPath(path));
  return DownloadFileAt(digest, at.parent.get(), at.name, executable, progress);
}

absl::Status RemoteClient::FollowStream(const std::string& name, int64_t offset,
                                        const std::function<void(absl::string_view)>& sink) {
  grpc::ClientContext context;
  google::bytestream::ReadRequest request;
  request.set_resource_name(name);
  request.set_read_offset(offset);
  auto reader = bytestream_->Read(&context, request);
  google::bytestream::ReadResponse response;
  while (reader->Read(&response)) sink(response.data());
  return FromGrpc(reader->Finish());
}

}  // namespace kiln::client
