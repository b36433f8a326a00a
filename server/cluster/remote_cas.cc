#include "server/cluster/remote_cas.h"

#include <openssl/rand.h>

#include <grpcpp/client_context.h>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/blocking_counter.h"
#include "absl/synchronization/mutex.h"
#include "common/status_macros.h"
#include "server/cas/directory_tree.h"
#include "server/cluster/channel.h"
#include "server/exec/input_stager.h"

namespace kiln::cluster {
namespace {

std::string BlobResource(const std::string& instance, const Digest& digest) {
  return absl::StrCat(instance, instance.empty() ? "" : "/", "blobs/", digest.hash, "/", digest.size);
}

std::string UploadResource(const std::string& instance, const Digest& digest) {
  unsigned char id[16];
  RAND_bytes(id, sizeof id);
  return absl::StrCat(instance, instance.empty() ? "" : "/", "uploads/",
                      absl::BytesToHexString(absl::string_view(reinterpret_cast<char*>(id), sizeof id)),
                      "/blobs/", digest.hash, "/", digest.size);
}

// Deduplicated, in first-seen order.
std::vector<Digest> Unique(const std::vector<Digest>& digests) {
  absl::flat_hash_set<Digest> seen;
  std::vector<Digest> out;
  for (const Digest& d : digests) {
    if (seen.insert(d).second) out.push_back(d);
  }
  return out;
}

}  // namespace

RemoteCas::RemoteCas(std::shared_ptr<grpc::Channel> channel, cas::BlobStore* local,
                     ClusterMetrics* metrics, RemoteCasOptions options)
    : local_(local),
      metrics_(metrics),
      options_(options),
      cas_(rev2::ContentAddressableStorage::NewStub(channel)),
      action_cache_(rev2::ActionCache::NewStub(channel)),
      bytestream_(google::bytestream::ByteStream::NewStub(channel)),
      pool_(std::make_unique<ThreadPool>(std::max(1, options.max_concurrent_calls))) {}

RemoteCas::~RemoteCas() = default;

void RemoteCas::Record(const char* operation, const absl::Status& status, absl::Time start) {
  if (metrics_ != nullptr) {
    metrics_->RecordRemoteCas(operation, status.code(), absl::ToDoubleSeconds(absl::Now() - start));
  }
}

absl::Status RemoteCas::RunBounded(std::vector<std::function<absl::Status()>> calls) {
  if (calls.empty()) return absl::OkStatus();
  absl::Mutex mu;
  absl::Status first_error;
  absl::BlockingCounter done(static_cast<int>(calls.size()));
  for (auto& call : calls) {
    pool_->Schedule([&, call = std::move(call)] {
      absl::Status status = call();
      if (!status.ok()) {
        absl::MutexLock lock(&mu);
        if (first_error.ok()) first_error = status;
      }
      done.DecrementCount();
    });
  }
  done.Wait();
  absl::MutexLock lock(&mu);
  return first_error;
}

absl::Status RemoteCas::FetchBlobs(const std::string& instance, const std::vector<Digest>& digests,
                                   FetchReport* report, std::vector<cas::BlobPin>* pins) {
  std::vector<Digest> small_batch;
  int64_t batch_bytes = 0;
  std::vector<std::function<absl::Status()>> calls;
  absl::Mutex mu;
  std::vector<Digest> not_found;
  auto flush = [&] {
    if (small_batch.empty()) return;
    calls.push_back([this, &instance, &mu, &not_found, pins, batch = std::move(small_batch)] {
      std::vector<Digest> missing;
      std::vector<cas::BlobPin> fetched;
      absl::Status status = BatchRead(instance, batch, &missing, &fetched);
      absl::MutexLock lock(&mu);
      not_found.insert(not_found.end(), missing.begin(), missing.end());
      for (cas::BlobPin& pin : fetched) pins->push_back(std::move(pin));
      return status;
    });
    small_batch.clear();
    batch_bytes = 0;
  };
  for (const Digest& digest : Unique(digests)) {
    if (absl::StatusOr<cas::BlobPin> pin = local_->Pin(digest); pin.ok()) {
      ++report->local_hits;
      pins->push_back(*std::move(pin));
      continue;
    }
    ++report->fetched;
    report->bytes += digest.size;
    if (digest.size > options_.max_batch_bytes / 2) {
      calls.push_back([this, &instance, &mu, &not_found, pins, digest] {
        absl::StatusOr<cas::BlobPin> pin = ByteStreamRead(instance, digest);
        absl::MutexLock lock(&mu);
        if (absl::IsNotFound(pin.status())) {
          not_found.push_back(digest);
          return absl::OkStatus();
        }
        if (!pin.ok()) return pin.status();
        pins->push_back(*std::move(pin));
        return absl::OkStatus();
      });
      continue;
    }
    if (batch_bytes + digest.size > options_.max_batch_bytes) flush();
    small_batch.push_back(digest);
    batch_bytes += digest.size;
  }
  flush();
  RETURN_IF_ERROR(RunBounded(std::move(calls)));
  if (!not_found.empty()) {
    // REAPI's answer to missing inputs, so that the client uploads them.
    return exec::MissingBlobsError(not_found);
  }
  return absl::OkStatus();
}

absl::StatusOr<cas::BlobPin> RemoteCas::PinStored(const Digest& digest) {
  absl::StatusOr<cas::BlobPin> pin = local_->Pin(digest);
  if (absl::IsNotFound(pin.status())) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "blob ", digest.ToString(), " was evicted from the local CAS right after it was fetched: "
        "kiln-worker --cas_max_bytes is too small for the inputs of the actions running at once"));
  }
  return pin;
}

absl::Status RemoteCas::BatchRead(const std::string& instance, const std::vector<Digest>& digests,
                                  std::vector<Digest>* not_found, std::vector<cas::BlobPin>* pins,
                                  absl::flat_hash_map<Digest, std::string>* in_memory) {
  const absl::Time start = absl::Now();
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(start + options_.call_timeout));
  rev2::BatchReadBlobsRequest request;
  request.set_instance_name(instance);
  for (const Digest& digest : digests) *request.add_digests() = digest.ToProto();
  rev2::BatchReadBlobsResponse response;
  absl::Status status = FromGrpcStatus(cas_->BatchReadBlobs(&context, request, &response));
  Record("batch_read", status, start);
  if (!status.ok()) return status;
  int64_t bytes = 0;
  absl::flat_hash_set<Digest> answered;
  for (const auto& blob : response.responses()) {
    absl::StatusOr<Digest> digest = ParseDigest(blob.digest());
    if (!digest.ok()) return absl::DataLossError("the remote CAS answered with a malformed digest");
    answered.insert(*digest);
    if (blob.status().code() == static_cast<int>(absl::StatusCode::kNotFound)) {
      not_found->push_back(*digest);
      continue;
    }
    if (blob.status().code() != 0) {
      return absl::Status(static_cast<absl::StatusCode>(blob.status().code()),
                          absl::StrCat("remote CAS, blob ", digest->ToString(), ": ", blob.status().message()));
    }
    if (in_memory != nullptr && in_memory->contains(*digest)) {
      if (Digest::Of(blob.data()) != *digest) {
        return absl::DataLossError(absl::StrCat("blob ", digest->ToString(), " from the remote CAS has other contents"));
      }
      (*in_memory)[*digest] = blob.data();
      bytes += digest->size;
      continue;
    }
    absl::Status stored = local_->Put(*digest, blob.data());
    if (!stored.ok()) {
      return absl::DataLossError(absl::StrCat("blob ", digest->ToString(), " from the remote CAS: ", stored.message()));
    }
    ASSIGN_OR_RETURN(cas::BlobPin pin, PinStored(*digest));
    pins->push_back(std::move(pin));
    bytes += digest->size;
  }
  for (const Digest& digest : digests) {
    if (!answered.contains(digest)) not_found->push_back(digest);
  }
  if (metrics_ != nullptr) metrics_->AddRemoteCasBytes("download", bytes);
  return absl::OkStatus();
}

absl::StatusOr<cas::BlobPin> RemoteCas::ByteStreamRead(const std::string& instance, const Digest& digest) {
  const absl::Time start = absl::Now();
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(start + options_.call_timeout));
  google::bytestream::ReadRequest request;
  request.set_resource_name(BlobResource(instance, digest));
  absl::Status status = [&]() -> absl::Status {
    ASSIGN_OR_RETURN(std::unique_ptr<cas::BlobWriter> writer, local_->StartWrite(digest));
    auto reader = bytestream_->Read(&context, request);
    google::bytestream::ReadResponse chunk;
    while (reader->Read(&chunk)) {
      absl::Status appended = writer->Append(chunk.data());
      if (!appended.ok()) {
        context.TryCancel();
        reader->Finish();
        return absl::DataLossError(absl::StrCat("blob ", digest.ToString(), " from the remote CAS: ", appended.message()));
      }
    }
    RETURN_IF_ERROR(FromGrpcStatus(reader->Finish()));
    absl::Status committed = writer->Commit();
    if (!committed.ok()) {
      return absl::DataLossError(absl::StrCat("blob ", digest.ToString(), " from the remote CAS: ", committed.message()));
    }
    return absl::OkStatus();
  }();
  Record("bytestream_read", status, start);
  if (!status.ok()) return status;
  if (metrics_ != nullptr) metrics_->AddRemoteCasBytes("download", digest.size);
  return PinStored(digest);
}

absl::StatusOr<exec::ActionRunner::Preloaded> RemoteCas::FetchActionInputs(const std::string& instance,
                                                                           const Digest& action_digest,
                                                                           const rev2::Action* inline_action,
                                                                           FetchReport* report) {
  exec::ActionRunner::Preloaded preloaded;
  bool have_action = false;
  if (inline_action != nullptr) {
    // Protobuf's serialization of a message it parsed is the same bytes for
    // the messages clients write (known fields, canonical order). The
    // scheduler always sets a timeout, so an Action that had none is also
    // tried without it. When neither matches, the blob is fetched.
    preloaded.action = *inline_action;
    if (Digest::Of(preloaded.action.SerializeAsString()) != action_digest && preloaded.action.has_timeout()) {
      preloaded.action.clear_timeout();
    }
    have_action = Digest::Of(preloaded.action.SerializeAsString()) == action_digest;
  }
  // Small messages the runner needs in memory: read from the local cache if
  // it has them, else fetched (with the input root, in one call) and kept in
  // memory only, verified against their digests.
  auto read = [&](const std::vector<Digest>& in_memory, const std::vector<Digest>& to_local,
                  absl::flat_hash_map<Digest, std::string>* out) -> absl::Status {
    std::vector<Digest> remote;
    for (const Digest& digest : in_memory) {
      if (local_->Contains(digest)) {
        ++report->local_hits;
        ASSIGN_OR_RETURN((*out)[digest], local_->ReadBlob(digest));
      } else {
        ++report->fetched;
        (*out)[digest];
        remote.push_back(digest);
      }
    }
    for (const Digest& digest : to_local) {
      if (absl::StatusOr<cas::BlobPin> pin = local_->Pin(digest); pin.ok()) {
        ++report->local_hits;
        preloaded.input_pins.push_back(*std::move(pin));
      } else {
        ++report->fetched;
        remote.push_back(digest);
      }
    }
    if (remote.empty()) return absl::OkStatus();
    std::vector<Digest> not_found;
    RETURN_IF_ERROR(BatchRead(instance, remote, &not_found, &preloaded.input_pins, out));
    if (!not_found.empty()) return exec::MissingBlobsError(not_found);
    return absl::OkStatus();
  };
  absl::flat_hash_map<Digest, std::string> blobs;
  if (!have_action) {
    RETURN_IF_ERROR(read({action_digest}, {}, &blobs));
    if (!preloaded.action.ParseFromString(blobs[action_digest])) {
      return absl::InvalidArgumentError(absl::StrCat("blob ", action_digest.ToString(), " is not an Action"));
    }
  }
  absl::StatusOr<Digest> command = ParseDigest(preloaded.action.command_digest());
  absl::StatusOr<Digest> root = ParseDigest(preloaded.action.input_root_digest());
  if (!command.ok()) return absl::InvalidArgumentError(absl::StrCat("action.command_digest: ", command.status().message()));
  if (!root.ok()) return absl::InvalidArgumentError(absl::StrCat("action.input_root_digest: ", root.status().message()));
  RETURN_IF_ERROR(read({*command}, {*root}, &blobs));
  if (!preloaded.command.ParseFromString(blobs[*command])) {
    return absl::InvalidArgumentError(absl::StrCat("blob ", command->ToString(), " is not a Command"));
  }

  // Breadth-first, one round of fetches per level: a level's directories
  // name the next level's directories and this level's files.
  absl::flat_hash_set<Digest> seen = {*root};
  std::vector<Digest> level = {*root};
  while (!level.empty()) {
    std::vector<Digest> wanted, next;
    for (const Digest& digest : level) {
      ASSIGN_OR_RETURN(rev2::Directory directory, cas::ReadDirectory(*local_, digest));
      for (const auto& file : directory.files()) {
        ASSIGN_OR_RETURN(Digest file_digest, ParseDigest(file.digest()));
        wanted.push_back(file_digest);
      }
      for (const auto& child : directory.directories()) {
        ASSIGN_OR_RETURN(Digest child_digest, ParseDigest(child.digest()));
        if (seen.insert(child_digest).second) {
          next.push_back(child_digest);
          wanted.push_back(child_digest);
        }
      }
    }
    RETURN_IF_ERROR(FetchBlobs(instance, wanted, report, &preloaded.input_pins));
    level = std::move(next);
  }
  if (metrics_ != nullptr) metrics_->AddInputBlobs(report->local_hits, report->fetched);
  return preloaded;
}

absl::StatusOr<std::vector<Digest>> RemoteCas::FindMissingRemote(const std::string& instance,
                                                                 const std::vector<Digest>& digests) {
  std::vector<Digest> missing;
  constexpr int kPerCall = 10000;
  for (size_t begin = 0; begin < digests.size(); begin += kPerCall) {
    const absl::Time start = absl::Now();
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(start + options_.call_timeout));
    rev2::FindMissingBlobsRequest request;
    request.set_instance_name(instance);
    for (size_t i = begin; i < std::min(digests.size(), begin + kPerCall); ++i) {
      *request.add_blob_digests() = digests[i].ToProto();
    }
    rev2::FindMissingBlobsResponse response;
    absl::Status status = FromGrpcStatus(cas_->FindMissingBlobs(&context, request, &response));
    Record("find_missing", status, start);
    RETURN_IF_ERROR(status);
    for (const auto& digest : response.missing_blob_digests()) {
      ASSIGN_OR_RETURN(Digest parsed, ParseDigest(digest));
      missing.push_back(parsed);
    }
  }
  return missing;
}

absl::Status RemoteCas::BatchUpdate(const std::string& instance, const std::vector<Digest>& digests) {
  rev2::BatchUpdateBlobsRequest request;
  request.set_instance_name(instance);
  int64_t bytes = 0;
  for (const Digest& digest : digests) {
    ASSIGN_OR_RETURN(std::string data, local_->ReadBlob(digest));
    auto* entry = request.add_requests();
    *entry->mutable_digest() = digest.ToProto();
    entry->set_data(std::move(data));
    bytes += digest.size;
  }
  const absl::Time start = absl::Now();
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(start + options_.call_timeout));
  rev2::BatchUpdateBlobsResponse response;
  absl::Status status = FromGrpcStatus(cas_->BatchUpdateBlobs(&context, request, &response));
  Record("batch_update", status, start);
  RETURN_IF_ERROR(status);
  for (const auto& result : response.responses()) {
    if (result.status().code() != 0) {
      return absl::Status(static_cast<absl::StatusCode>(result.status().code()),
                          absl::StrCat("remote CAS refused blob ", result.digest().hash(), ": ",
                                       result.status().message()));
    }
  }
  if (metrics_ != nullptr) metrics_->AddRemoteCasBytes("upload", bytes);
  return absl::OkStatus();
}

absl::Status RemoteCas::ByteStreamWrite(const std::string& instance, const Digest& digest) {
  const absl::Time start = absl::Now();
  absl::Status status = [&]() -> absl::Status {
    ASSIGN_OR_RETURN(cas::BlobReader blob, local_->OpenBlob(digest));
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(start + options_.call_timeout));
    google::bytestream::WriteResponse response;
    auto writer = bytestream_->Write(&context, &response);
    google::bytestream::WriteRequest request;
    request.set_resource_name(UploadResource(instance, digest));
    int64_t offset = 0;
    do {
      ASSIGN_OR_RETURN(std::string chunk, blob.Read(offset, options_.bytestream_chunk_bytes));
      request.set_write_offset(offset);
      offset += static_cast<int64_t>(chunk.size());
      request.set_data(std::move(chunk));
      request.set_finish_write(offset >= digest.size);
      // A false Write means the server ended the stream (perhaps because the
      // blob already exists); Finish says which.
      if (!writer->Write(request)) break;
      request.clear_resource_name();
    } while (offset < digest.size);
    writer->WritesDone();
    return FromGrpcStatus(writer->Finish());
  }();
  Record("bytestream_write", status, start);
  if (status.ok() && metrics_ != nullptr) metrics_->AddRemoteCasBytes("upload", digest.size);
  return status;
}

absl::Status RemoteCas::UploadResultBlobs(const std::string& instance, const rev2::ActionResult& result) {
  std::vector<Digest> digests;
  auto add = [&](const rev2::Digest& proto) -> absl::Status {
    ASSIGN_OR_RETURN(Digest digest, ParseDigest(proto));
    // "Servers MUST behave as though empty blobs are always available"
    // (REAPI): an empty stdout, stderr or output costs no call.
    if (digest.size > 0) digests.push_back(digest);
    return absl::OkStatus();
  };
  if (result.has_stdout_digest()) RETURN_IF_ERROR(add(result.stdout_digest()));
  if (result.has_stderr_digest()) RETURN_IF_ERROR(add(result.stderr_digest()));
  for (const auto& file : result.output_files()) RETURN_IF_ERROR(add(file.digest()));
  for (const auto& directory : result.output_directories()) {
    RETURN_IF_ERROR(add(directory.tree_digest()));
    ASSIGN_OR_RETURN(Digest tree_digest, ParseDigest(directory.tree_digest()));
    ASSIGN_OR_RETURN(std::string tree_bytes, cas::ReadMessageBlob(*local_, tree_digest, "Tree"));
    rev2::Tree tree;
    if (!tree.ParseFromString(tree_bytes)) return absl::InternalError("an output Tree does not parse");
    auto add_files = [&](const rev2::Directory& d) -> absl::Status {
      for (const auto& file : d.files()) RETURN_IF_ERROR(add(file.digest()));
      return absl::OkStatus();
    };
    RETURN_IF_ERROR(add_files(tree.root()));
    for (const auto& child : tree.children()) RETURN_IF_ERROR(add_files(child));
  }
  if (digests.empty()) return absl::OkStatus();
  ASSIGN_OR_RETURN(std::vector<Digest> missing, FindMissingRemote(instance, Unique(digests)));
  std::vector<std::function<absl::Status()>> calls;
  std::vector<Digest> batch;
  int64_t batch_bytes = 0;
  auto flush = [&] {
    if (batch.empty()) return;
    calls.push_back([this, &instance, batch = std::move(batch)] { return BatchUpdate(instance, batch); });
    batch.clear();
    batch_bytes = 0;
  };
  for (const Digest& digest : missing) {
    if (digest.size > options_.max_batch_bytes / 2) {
      calls.push_back([this, &instance, digest] { return ByteStreamWrite(instance, digest); });
      continue;
    }
    if (batch_bytes + digest.size > options_.max_batch_bytes) flush();
    batch.push_back(digest);
    batch_bytes += digest.size;
  }
  flush();
  return RunBounded(std::move(calls));
}

absl::Status RemoteCas::UpdateActionResult(const std::string& instance, const Digest& action_digest,
                                           const rev2::ActionResult& result) {
  const absl::Time start = absl::Now();
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(start + options_.call_timeout));
  rev2::UpdateActionResultRequest request;
  request.set_instance_name(instance);
  *request.mutable_action_digest() = action_digest.ToProto();
  *request.mutable_action_result() = result;
  request.mutable_action_result()->clear_stdout_raw();
  request.mutable_action_result()->clear_stderr_raw();
  rev2::ActionResult stored;
  absl::Status status = FromGrpcStatus(action_cache_->UpdateActionResult(&context, request, &stored));
  Record("update_action_result", status, start);
  return status;
}

}  // namespace kiln::cluster
