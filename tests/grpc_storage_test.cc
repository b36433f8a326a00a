// The storage services end to end over real gRPC on loopback: every method,
// and every bad input the foundation issue lists, answered with a precise
// status while the server keeps serving.
#include <stdlib.h>

#include <grpcpp/create_channel.h>
#include <grpcpp/health_check_service_interface.h>

#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "common/posix.h"
#include "common/zstd.h"
#include "google/bytestream/bytestream.grpc.pb.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "server/worker_server.h"

namespace kiln {
namespace {

namespace bs = ::google::bytestream;
using grpc::ClientContext;
using grpc::StatusCode;

class StorageTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string pattern = ::testing::TempDir() + "/kiln-grpc-XXXXXX";
    state_dir_ = mkdtemp(pattern.data());
    StartWorker(int64_t{64} << 20);
  }
  void TearDown() override {
    worker_.reset();
    (void)RemoveTree(state_dir_);
  }
  void StartWorker(int64_t cas_max_bytes) {
    worker_.reset();
    WorkerOptions options;
    options.listen = "127.0.0.1:0";
    options.metrics_listen = "";
    options.state_dir = state_dir_;
    options.cas_max_bytes = cas_max_bytes;
    options.cas_max_blob_bytes = int64_t{8} << 20;
    options.io_threads = 4;
    auto worker = WorkerServer::Start(options);
    ASSERT_TRUE(worker.ok()) << worker.status();
    worker_ = *std::move(worker);
    grpc::ChannelArguments args;
    args.SetMaxReceiveMessageSize(64 << 20);
    args.SetMaxSendMessageSize(64 << 20);
    channel_ = grpc::CreateCustomChannel(absl::StrCat("127.0.0.1:", worker_->grpc_port()),
                                         grpc::InsecureChannelCredentials(), args);
    cas_ = rev2::ContentAddressableStorage::NewStub(channel_);
    bytestream_ = bs::ByteStream::NewStub(channel_);
    action_cache_ = rev2::ActionCache::NewStub(channel_);
    capabilities_ = rev2::Capabilities::NewStub(channel_);
  }

  // Uploads via BatchUpdateBlobs; returns the per-blob status code.
  int Upload(const std::string& data) {
    rev2::BatchUpdateBlobsRequest request;
    auto* entry = request.add_requests();
    *entry->mutable_digest() = Digest::Of(data).ToProto();
    entry->set_data(data);
    rev2::BatchUpdateBlobsResponse response;
    ClientContext context;
    EXPECT_TRUE(cas_->BatchUpdateBlobs(&context, request, &response).ok());
    return response.responses(0).status().code();
  }
  bool IsMissing(const Digest& digest) {
    rev2::FindMissingBlobsRequest request;
    *request.add_blob_digests() = digest.ToProto();
    rev2::FindMissingBlobsResponse response;
    ClientContext context;
    EXPECT_TRUE(cas_->FindMissingBlobs(&context, request, &response).ok());
    return response.missing_blob_digests_size() == 1;
  }
  // Reads a ByteStream resource; returns the status and fills `out`.
  grpc::Status Read(const std::string& name, std::string* out, int64_t offset = 0,
                    int64_t limit = 0) {
    bs::ReadRequest request;
    request.set_resource_name(name);
    request.set_read_offset(offset);
    request.set_read_limit(limit);
    ClientContext context;
    auto reader = bytestream_->Read(&context, request);
    bs::ReadResponse response;
    out->clear();
    while (reader->Read(&response)) out->append(response.data());
    return reader->Finish();
  }
  // Writes `chunks` as one stream, finish_write on the last one.
  grpc::Status Write(const std::string& name, const std::vector<std::string>& chunks,
                     int64_t* committed = nullptr, int64_t first_offset = 0,
                     bool finish = true) {
    ClientContext context;
    bs::WriteResponse response;
    auto writer = bytestream_->Write(&context, &response);
    int64_t offset = first_offset;
    for (size_t i = 0; i < chunks.size(); ++i) {
      bs::WriteRequest request;
      if (i == 0) request.set_resource_name(name);
      request.set_write_offset(offset);
      request.set_data(chunks[i]);
      request.set_finish_write(finish && i + 1 == chunks.size());
      offset += chunks[i].size();
      if (!writer->Write(request)) break;
    }
    writer->WritesDone();
    grpc::Status status = writer->Finish();
    if (committed != nullptr) *committed = response.committed_size();
    return status;
  }
  std::string UploadName(const Digest& d, const std::string& uuid = "u1") {
    return absl::StrCat("uploads/", uuid, "/blobs/", d.hash, "/", d.size);
  }

  std::string state_dir_;
  std::unique_ptr<WorkerServer> worker_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<rev2::ContentAddressableStorage::Stub> cas_;
  std::unique_ptr<bs::ByteStream::Stub> bytestream_;
  std::unique_ptr<rev2::ActionCache::Stub> action_cache_;
  std::unique_ptr<rev2::Capabilities::Stub> capabilities_;
};

const rev2::Digest kMalformed = [] {
  rev2::Digest d;
  d.set_hash("not-a-hash");
  d.set_size_bytes(1);
  return d;
}();

TEST_F(StorageTest, CapabilitiesAnnounceSha256ZstdBatchLimitAndNoExecution) {
  rev2::GetCapabilitiesRequest request;
  rev2::ServerCapabilities caps;
  ClientContext context;
  ASSERT_TRUE(capabilities_->GetCapabilities(&context, request, &caps).ok());
  const auto& cache = caps.cache_capabilities();
  ASSERT_EQ(cache.digest_functions_size(), 1);
  EXPECT_EQ(cache.digest_functions(0), rev2::DigestFunction::SHA256);
  EXPECT_EQ(cache.max_batch_total_size_bytes(), kMaxBatchTotalBytes);
  EXPECT_EQ(cache.supported_compressors(0), rev2::Compressor::ZSTD);
  EXPECT_TRUE(cache.action_cache_update_capabilities().update_enabled());
  EXPECT_FALSE(caps.execution_capabilities().exec_enabled());
  EXPECT_EQ(caps.high_api_version().major(), 2);
  // The versions whose additions Kiln serves (capabilities_service.cc): 2.0
  // to 2.11; 2.12's SplitBlob/SpliceBlob are not served.
  EXPECT_EQ(caps.low_api_version().minor(), 0);
  EXPECT_EQ(caps.high_api_version().minor(), 11);
  EXPECT_EQ(cache.max_cas_blob_size_bytes(), int64_t{8} << 20);  // --cas_max_blob_bytes
}

TEST_F(StorageTest, HealthServiceReportsServing) {
  grpc::health::v1::HealthCheckRequest request;
  auto stub = grpc::health::v1::Health::NewStub(channel_);
  grpc::health::v1::HealthCheckResponse response;
  ClientContext context;
  ASSERT_TRUE(stub->Check(&context, request, &response).ok());
  EXPECT_EQ(response.status(), grpc::health::v1::HealthCheckResponse::SERVING);
}

TEST_F(StorageTest, FindMissingReportsOnlyAbsentBlobs) {
  ASSERT_EQ(Upload("present"), 0);
  rev2::FindMissingBlobsRequest request;
  *request.add_blob_digests() = Digest::Of("present").ToProto();
  *request.add_blob_digests() = Digest::Of("absent").ToProto();
  *request.add_blob_digests() = Digest::Of("").ToProto();
  rev2::FindMissingBlobsResponse response;
  ClientContext context;
  ASSERT_TRUE(cas_->FindMissingBlobs(&context, request, &response).ok());
  ASSERT_EQ(response.missing_blob_digests_size(), 1);
  EXPECT_EQ(response.missing_blob_digests(0).hash(), Digest::Of("absent").hash);
}

TEST_F(StorageTest, FindMissingRejectsMalformedNegativeAndUnknownFunction) {
  rev2::FindMissingBlobsRequest request;
  *request.add_blob_digests() = Digest::Of("x").ToProto();
  *request.add_blob_digests() = kMalformed;
  rev2::FindMissingBlobsResponse response;
  {
    ClientContext context;
    auto status = cas_->FindMissingBlobs(&context, request, &response);
    EXPECT_EQ(status.error_code(), StatusCode::INVALID_ARGUMENT);
    EXPECT_NE(status.error_message().find("blob_digests[1]"), std::string::npos)
        << status.error_message();
  }
  request.mutable_blob_digests(1)->set_hash(Digest::Of("x").hash);
  request.mutable_blob_digests(1)->set_size_bytes(-5);
  {
    ClientContext context;
    auto status = cas_->FindMissingBlobs(&context, request, &response);
    EXPECT_EQ(status.error_code(), StatusCode::INVALID_ARGUMENT);
    EXPECT_NE(status.error_message().find("negative"), std::string::npos);
  }
  request.mutable_blob_digests(1)->set_size_bytes(1);
  request.set_digest_function(rev2::DigestFunction::BLAKE3);
  ClientContext context;
  auto status = cas_->FindMissingBlobs(&context, request, &response);
  EXPECT_EQ(status.error_code(), StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(status.error_message().find("BLAKE3"), std::string::npos);
}

TEST_F(StorageTest, BatchUpdateGivesEachBlobItsOwnStatusAndStoresOnlyGoodOnes) {
  rev2::BatchUpdateBlobsRequest request;
  auto add = [&](rev2::Digest digest, std::string data) {
    auto* entry = request.add_requests();
    *entry->mutable_digest() = digest;
    entry->set_data(std::move(data));
    return entry;
  };
  add(Digest::Of("good").ToProto(), "good");
  add(Digest::Of("expected").ToProto(), "tampered");  // size and hash mismatch
  rev2::Digest wrong_hash = Digest::Of("abcd").ToProto();
  add(wrong_hash, "wxyz");  // same size, wrong hash
  add(kMalformed, "m");
  auto* zstd = add(Digest::Of(std::string(5000, 'q')).ToProto(),
                   ZstdCompressAll(std::string(5000, 'q')));
  zstd->set_compressor(rev2::Compressor::ZSTD);
  auto* brotli = add(Digest::Of("b").ToProto(), "b");
  brotli->set_compressor(rev2::Compressor::BROTLI);
  rev2::BatchUpdateBlobsResponse response;
  ClientContext context;
  ASSERT_TRUE(cas_->BatchUpdateBlobs(&context, request, &response).ok());
  ASSERT_EQ(response.responses_size(), 6);
  EXPECT_EQ(response.responses(0).status().code(), 0);
  EXPECT_EQ(response.responses(1).status().code(), StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(response.responses(2).status().code(), StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(response.responses(2).status().message().find("does not match"), std::string::npos);
  EXPECT_EQ(response.responses(3).status().code(), StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(response.responses(4).status().code(), 0);
  EXPECT_EQ(response.responses(5).status().code(), StatusCode::INVALID_ARGUMENT);
  EXPECT_FALSE(IsMissing(Digest::Of("good")));
  EXPECT_TRUE(IsMissing(Digest::Of("expected")));
  EXPECT_TRUE(IsMissing(*ParseDigest(wrong_hash)));
  EXPECT_FALSE(IsMissing(Digest::Of(std::string(5000, 'q'))));
}

TEST_F(StorageTest, BatchUpdateOverTheBatchLimitIsRejectedWhole) {
  rev2::BatchUpdateBlobsRequest request;
  for (int i = 0; i < 5; ++i) {
    std::string data(1 << 20, static_cast<char>('a' + i));
    auto* entry = request.add_requests();
    *entry->mutable_digest() = Digest::Of(data).ToProto();
    entry->set_data(data);
  }
  rev2::BatchUpdateBlobsResponse response;
  ClientContext context;
  auto status = cas_->BatchUpdateBlobs(&context, request, &response);
  EXPECT_EQ(status.error_code(), StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(status.error_message().find("ByteStream"), std::string::npos);
  EXPECT_TRUE(IsMissing(Digest::Of(std::string(1 << 20, 'a'))));
}

TEST_F(StorageTest, OversizedMessageIsRefusedAndTheServerKeepsServing) {
  rev2::BatchUpdateBlobsRequest request;
  std::string data(kMaxGrpcMessageBytes + 1, 'x');
  auto* entry = request.add_requests();
  *entry->mutable_digest() = Digest::Of(data).ToProto();
  entry->set_data(data);
  rev2::BatchUpdateBlobsResponse response;
  ClientContext context;
  auto status = cas_->BatchUpdateBlobs(&context, request, &response);
  EXPECT_EQ(status.error_code(), StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_EQ(Upload("still serving"), 0);
}

TEST_F(StorageTest, BatchReadReturnsDataAndPerBlobNotFound) {
  ASSERT_EQ(Upload("readable"), 0);
  rev2::BatchReadBlobsRequest request;
  *request.add_digests() = Digest::Of("readable").ToProto();
  *request.add_digests() = Digest::Of("missing").ToProto();
  rev2::BatchReadBlobsResponse response;
  ClientContext context;
  ASSERT_TRUE(cas_->BatchReadBlobs(&context, request, &response).ok());
  EXPECT_EQ(response.responses(0).data(), "readable");
  EXPECT_EQ(response.responses(0).status().code(), 0);
  EXPECT_EQ(response.responses(1).status().code(), StatusCode::NOT_FOUND);
}

TEST_F(StorageTest, GetTreeStreamsPagesWithTokensAndResumes) {
  // root -> {a, b}, a -> {c}: four distinct directories.
  auto put_dir = [&](rev2::Directory d) {
    std::string bytes = d.SerializeAsString();
    EXPECT_EQ(Upload(bytes), 0);
    return Digest::Of(bytes);
  };
  rev2::Directory c;
  c.add_files()->set_name("c.txt");
  *c.mutable_files(0)->mutable_digest() = Digest::Of("c").ToProto();
  Digest c_digest = put_dir(c);
  rev2::Directory a;
  a.add_directories()->set_name("c");
  *a.mutable_directories(0)->mutable_digest() = c_digest.ToProto();
  Digest a_digest = put_dir(a);
  rev2::Directory b;
  b.add_symlinks()->set_name("link");
  b.mutable_symlinks(0)->set_target("../a");
  Digest b_digest = put_dir(b);
  rev2::Directory root;
  root.add_directories()->set_name("a");
  *root.mutable_directories(0)->mutable_digest() = a_digest.ToProto();
  root.add_directories()->set_name("b");
  *root.mutable_directories(1)->mutable_digest() = b_digest.ToProto();
  Digest root_digest = put_dir(root);

  rev2::GetTreeRequest request;
  *request.mutable_root_digest() = root_digest.ToProto();
  request.set_page_size(3);
  std::vector<rev2::GetTreeResponse> pages;
  {
    ClientContext context;
    auto reader = cas_->GetTree(&context, request);
    rev2::GetTreeResponse page;
    while (reader->Read(&page)) pages.push_back(page);
    ASSERT_TRUE(reader->Finish().ok());
  }
  ASSERT_EQ(pages.size(), 2u);
  EXPECT_EQ(pages[0].directories_size(), 3);
  EXPECT_EQ(pages[1].directories_size(), 1);
  EXPECT_EQ(pages[1].directories(0).files(0).name(), "c.txt");
  EXPECT_EQ(pages[1].next_page_token(), "");
  // Resuming from the first page's token yields the rest.
  request.set_page_token(pages[0].next_page_token());
  ClientContext context;
  auto reader = cas_->GetTree(&context, request);
  rev2::GetTreeResponse page;
  ASSERT_TRUE(reader->Read(&page));
  EXPECT_EQ(page.directories(0).files(0).name(), "c.txt");
  EXPECT_FALSE(reader->Read(&page));
  EXPECT_TRUE(reader->Finish().ok());
}

TEST_F(StorageTest, GetTreeRejectsMissingRootUnsortedEntriesAndBadToken) {
  auto get_tree = [&](const rev2::GetTreeRequest& request) {
    ClientContext context;
    auto reader = cas_->GetTree(&context, request);
    rev2::GetTreeResponse page;
    while (reader->Read(&page)) {
    }
    return reader->Finish();
  };
  rev2::GetTreeRequest request;
  *request.mutable_root_digest() = Digest::Of("no such directory").ToProto();
  auto missing = get_tree(request);
  EXPECT_EQ(missing.error_code(), StatusCode::NOT_FOUND);
  EXPECT_NE(missing.error_message().find("root directory"), std::string::npos);

  rev2::Directory unsorted;
  unsorted.add_files()->set_name("z");
  *unsorted.mutable_files(0)->mutable_digest() = Digest::Of("z").ToProto();
  unsorted.add_files()->set_name("a");
  *unsorted.mutable_files(1)->mutable_digest() = Digest::Of("a").ToProto();
  std::string bytes = unsorted.SerializeAsString();
  ASSERT_EQ(Upload(bytes), 0);
  *request.mutable_root_digest() = Digest::Of(bytes).ToProto();
  auto bad = get_tree(request);
  EXPECT_EQ(bad.error_code(), StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(bad.error_message().find("not sorted"), std::string::npos);

  rev2::Directory duplicate;
  duplicate.add_files()->set_name("a");
  duplicate.add_files()->set_name("a");
  *duplicate.mutable_files(0)->mutable_digest() = Digest::Of("a").ToProto();
  *duplicate.mutable_files(1)->mutable_digest() = Digest::Of("a").ToProto();
  bytes = duplicate.SerializeAsString();
  ASSERT_EQ(Upload(bytes), 0);
  *request.mutable_root_digest() = Digest::Of(bytes).ToProto();
  EXPECT_EQ(get_tree(request).error_code(), StatusCode::INVALID_ARGUMENT);

  request.set_page_token("garbage");
  EXPECT_EQ(get_tree(request).error_code(), StatusCode::INVALID_ARGUMENT);
}

TEST_F(StorageTest, ByteStreamChunkedWriteThenRangedReads) {
  std::string data;
  for (int i = 0; i < 3 << 20; ++i) data.push_back(static_cast<char>(i * 7 % 251));
  Digest d = Digest::Of(data);
  int64_t committed = 0;
  std::vector<std::string> chunks;
  for (size_t off = 0; off < data.size(); off += 700000) chunks.push_back(data.substr(off, 700000));
  ASSERT_TRUE(Write(UploadName(d), chunks, &committed).ok());
  EXPECT_EQ(committed, d.size);
  std::string name = absl::StrCat("blobs/", d.hash, "/", d.size);
  std::string out;
  ASSERT_TRUE(Read(name, &out).ok());
  EXPECT_EQ(out, data);
  ASSERT_TRUE(Read(name, &out, 1000, 2500000).ok());
  EXPECT_EQ(out, data.substr(1000, 2500000));
  ASSERT_TRUE(Read(name, &out, d.size).ok());
  EXPECT_EQ(out, "");
}

TEST_F(StorageTest, ByteStreamZstdWriteAndReadRoundTrip) {
  std::string data;
  for (int i = 0; i < 2 << 20; ++i) data.push_back("kiln"[i % 4] + (i / 100000));
  Digest d = Digest::Of(data);
  std::string compressed = ZstdCompressAll(data);
  std::vector<std::string> chunks;
  for (size_t off = 0; off < compressed.size(); off += 1000) {
    chunks.push_back(compressed.substr(off, 1000));
  }
  int64_t committed = 0;
  ASSERT_TRUE(Write(absl::StrCat("main/uploads/z1/compressed-blobs/zstd/", d.hash, "/", d.size),
                    chunks, &committed)
                  .ok());
  EXPECT_EQ(committed, static_cast<int64_t>(compressed.size()));
  std::string out;
  ASSERT_TRUE(Read(absl::StrCat("main/compressed-blobs/zstd/", d.hash, "/", d.size), &out).ok());
  EXPECT_EQ(*ZstdDecompressAll(out, d.size), data);
  // Offsets of compressed reads count uncompressed bytes.
  ASSERT_TRUE(
      Read(absl::StrCat("compressed-blobs/zstd/", d.hash, "/", d.size), &out, 12345, 1000).ok());
  EXPECT_EQ(*ZstdDecompressAll(out, d.size), data.substr(12345, 1000));
  // Writing an existing blob compressed answers committed_size -1 at once.
  ASSERT_TRUE(Write(absl::StrCat("uploads/z2/compressed-blobs/zstd/", d.hash, "/", d.size),
                    chunks, &committed)
                  .ok());
  EXPECT_EQ(committed, -1);
}

TEST_F(StorageTest, ByteStreamRejectsBadWritesAndStoresNothing) {
  Digest d = Digest::Of("exact content");
  auto past = Write(UploadName(d), {"exact content", " and more"});
  EXPECT_EQ(past.error_code(), StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(past.error_message().find("declared size"), std::string::npos);
  auto mismatch = Write(UploadName(d), {"EXACT CONTENT"});
  EXPECT_EQ(mismatch.error_code(), StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(mismatch.error_message().find("does not match"), std::string::npos);
  auto garbage = Write("this/is/not/a/resource", {"x"});
  EXPECT_EQ(garbage.error_code(), StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(garbage.error_message().find("expected"), std::string::npos);
  std::string big(9 << 20, 'b');
  auto too_big = Write(UploadName(Digest::Of(big)), {"b"});
  EXPECT_EQ(too_big.error_code(), StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(too_big.error_message().find("maximum blob size"), std::string::npos);
  auto negative = Write(UploadName(d), {"exact content"}, nullptr, -3);
  EXPECT_EQ(negative.error_code(), StatusCode::INVALID_ARGUMENT);
  EXPECT_TRUE(IsMissing(d));
  EXPECT_TRUE(IsMissing(Digest::Of(big)));
}

TEST_F(StorageTest, ByteStreamWriteResumesAfterAnInterruptedStream) {
  std::string data(300000, 'r');
  data += std::string(300000, 's');
  Digest d = Digest::Of(data);
  std::string name = UploadName(d, "resume-me");
  // The first stream stops halfway without finish_write.
  auto first = Write(name, {data.substr(0, 300000)}, nullptr, 0, /*finish=*/false);
  EXPECT_FALSE(first.ok());
  bs::QueryWriteStatusRequest query;
  query.set_resource_name(name);
  bs::QueryWriteStatusResponse status;
  {
    ClientContext context;
    ASSERT_TRUE(bytestream_->QueryWriteStatus(&context, query, &status).ok());
  }
  EXPECT_EQ(status.committed_size(), 300000);
  EXPECT_FALSE(status.complete());
  EXPECT_TRUE(IsMissing(d));
  // A wrong offset is refused; the right one completes the blob.
  auto wrong = Write(name, {data.substr(200000)}, nullptr, 200000);
  EXPECT_EQ(wrong.error_code(), StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(wrong.error_message().find("QueryWriteStatus"), std::string::npos);
}

TEST_F(StorageTest, AbandonedUploadsAreBoundedOldestFirst) {
  // A client that starts and abandons uploads without end: only the newest
  // 256 stay resumable; older ones are dropped with their temp files.
  // The committed size of a parked upload, or -1 when there is none.
  auto committed_of = [&](const std::string& name) -> int64_t {
    bs::QueryWriteStatusRequest query;
    query.set_resource_name(name);
    bs::QueryWriteStatusResponse status;
    ClientContext context;
    grpc::Status answer = bytestream_->QueryWriteStatus(&context, query, &status);
    if (answer.error_code() == StatusCode::NOT_FOUND) return -1;
    EXPECT_TRUE(answer.ok()) << answer.error_message();
    return status.committed_size();
  };
  std::vector<std::string> names;
  for (int i = 0; i < 300; ++i) {
    std::string data = absl::StrCat("abandoned upload ", i, std::string(100, 'x'));
    names.push_back(UploadName(Digest::Of(data), absl::StrCat("abandoned-", i)));
    EXPECT_FALSE(Write(names.back(), {data.substr(0, 10)}, nullptr, 0, /*finish=*/false).ok());
  }
  EXPECT_EQ(committed_of(names.front()), -1);  // dropped
  EXPECT_EQ(committed_of(names.back()), 10);  // still resumable
  EXPECT_EQ(committed_of(names[300 - 256]), 10);
  EXPECT_EQ(committed_of(names[300 - 257]), -1);
}

TEST_F(StorageTest, ByteStreamResumeContinuesFromTheCommittedOffset) {
  std::string data(600000, 't');
  Digest d = Digest::Of(data);
  std::string name = UploadName(d, "resume-2");
  EXPECT_FALSE(Write(name, {data.substr(0, 250000)}, nullptr, 0, false).ok());
  int64_t committed = 0;
  ASSERT_TRUE(Write(name, {data.substr(250000)}, &committed, 250000).ok());
  EXPECT_EQ(committed, d.size);
  bs::QueryWriteStatusRequest query;
  query.set_resource_name(name);
  bs::QueryWriteStatusResponse status;
  ClientContext context;
  ASSERT_TRUE(bytestream_->QueryWriteStatus(&context, query, &status).ok());
  EXPECT_TRUE(status.complete());
  std::string out;
  ASSERT_TRUE(Read(absl::StrCat("blobs/", d.hash, "/", d.size), &out).ok());
  EXPECT_EQ(out, data);
}

TEST_F(StorageTest, ByteStreamReadErrorsAreSpecific) {
  ASSERT_EQ(Upload("twelve bytes"), 0);
  Digest d = Digest::Of("twelve bytes");
  std::string name = absl::StrCat("blobs/", d.hash, "/", d.size);
  std::string out;
  EXPECT_EQ(Read(name, &out, -1).error_code(), StatusCode::OUT_OF_RANGE);
  EXPECT_EQ(Read(name, &out, 13).error_code(), StatusCode::OUT_OF_RANGE);
  EXPECT_EQ(Read(name, &out, 0, -1).error_code(), StatusCode::INVALID_ARGUMENT);
  Digest absent = Digest::Of("absent");
  EXPECT_EQ(Read(absl::StrCat("blobs/", absent.hash, "/", absent.size), &out).error_code(),
            StatusCode::NOT_FOUND);
  EXPECT_EQ(Read("blobs/zzz/1", &out).error_code(), StatusCode::INVALID_ARGUMENT);
  bs::QueryWriteStatusRequest query;
  query.set_resource_name(UploadName(absent, "never-started"));
  bs::QueryWriteStatusResponse status;
  ClientContext context;
  EXPECT_EQ(bytestream_->QueryWriteStatus(&context, query, &status).error_code(),
            StatusCode::NOT_FOUND);
}

TEST_F(StorageTest, ActionCacheRoundTripInliningAndMissingOutputs) {
  ASSERT_EQ(Upload("hello stdout"), 0);
  Digest action = Digest::Of("some action");
  rev2::UpdateActionResultRequest update;
  *update.mutable_action_digest() = action.ToProto();
  update.mutable_action_result()->set_exit_code(0);
  *update.mutable_action_result()->mutable_stdout_digest() = Digest::Of("hello stdout").ToProto();
  rev2::ActionResult stored;
  {
    ClientContext context;
    ASSERT_TRUE(action_cache_->UpdateActionResult(&context, update, &stored).ok());
  }
  rev2::GetActionResultRequest get;
  *get.mutable_action_digest() = action.ToProto();
  get.set_inline_stdout(true);
  rev2::ActionResult result;
  {
    ClientContext context;
    ASSERT_TRUE(action_cache_->GetActionResult(&context, get, &result).ok());
  }
  EXPECT_EQ(result.stdout_raw(), "hello stdout");
  // A result whose output is not in the CAS is as good as absent.
  *update.mutable_action_result()->mutable_stdout_digest() = Digest::Of("never uploaded").ToProto();
  {
    ClientContext context;
    ASSERT_TRUE(action_cache_->UpdateActionResult(&context, update, &stored).ok());
  }
  ClientContext context;
  EXPECT_EQ(action_cache_->GetActionResult(&context, get, &result).error_code(),
            StatusCode::NOT_FOUND);
}

TEST_F(StorageTest, ActionCacheRejectsMalformedDigests) {
  rev2::UpdateActionResultRequest update;
  *update.mutable_action_digest() = kMalformed;
  rev2::ActionResult stored;
  {
    ClientContext context;
    auto status = action_cache_->UpdateActionResult(&context, update, &stored);
    EXPECT_EQ(status.error_code(), StatusCode::INVALID_ARGUMENT);
    EXPECT_NE(status.error_message().find("action_digest"), std::string::npos);
  }
  *update.mutable_action_digest() = Digest::Of("a").ToProto();
  auto* file = update.mutable_action_result()->add_output_files();
  file->set_path("out");
  *file->mutable_digest() = kMalformed;
  ClientContext context;
  auto status = action_cache_->UpdateActionResult(&context, update, &stored);
  EXPECT_EQ(status.error_code(), StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(status.error_message().find("output_files[0]"), std::string::npos);
}

TEST_F(StorageTest, BlobsAndActionResultsSurviveARestart) {
  ASSERT_EQ(Upload("durable"), 0);
  rev2::UpdateActionResultRequest update;
  *update.mutable_action_digest() = Digest::Of("durable action").ToProto();
  *update.mutable_action_result()->mutable_stdout_digest() = Digest::Of("durable").ToProto();
  rev2::ActionResult stored;
  {
    ClientContext context;
    ASSERT_TRUE(action_cache_->UpdateActionResult(&context, update, &stored).ok());
  }
  StartWorker(int64_t{64} << 20);
  EXPECT_FALSE(IsMissing(Digest::Of("durable")));
  rev2::GetActionResultRequest get;
  *get.mutable_action_digest() = Digest::Of("durable action").ToProto();
  rev2::ActionResult result;
  ClientContext context;
  EXPECT_TRUE(action_cache_->GetActionResult(&context, get, &result).ok());
}

}  // namespace
}  // namespace kiln
