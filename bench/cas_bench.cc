// CAS throughput and latency against a running kiln-worker, next to the
// loopback's own TCP throughput measured in the same run.
//
//   cas_bench --server=127.0.0.1:8980 [--blob_mib=1024] [--digests=10000]
//
// Reports ByteStream upload and download MiB/s of one blob, a plain TCP copy
// of the same number of bytes over 127.0.0.1, and FindMissingBlobs latency
// for `--digests` digests (half present). bench/run_cas_bench.sh starts a
// worker on a scratch state dir and runs this.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <chrono>
#include <cstdio>
#include <thread>
#include <vector>

#include <grpcpp/create_channel.h>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "build/bazel/remote/execution/v2/remote_execution.grpc.pb.h"
#include "common/digest.h"
#include "common/sha256.h"
#include "google/bytestream/bytestream.grpc.pb.h"

ABSL_FLAG(std::string, server, "127.0.0.1:8980", "kiln-worker gRPC address");
ABSL_FLAG(int, blob_mib, 1024, "size of the ByteStream blob, in MiB");
ABSL_FLAG(int, digests, 10000, "digests per FindMissingBlobs call");
ABSL_FLAG(int, repetitions, 20, "FindMissingBlobs calls to time");
ABSL_FLAG(int, transfer_repetitions, 3,
          "downloads and TCP copies, interleaved; the best of each is reported (the machine "
          "is shared, so the best run is the one least disturbed)");

namespace {

namespace bs = google::bytestream;
namespace rev2 = build::bazel::remote::execution::v2;
using Clock = std::chrono::steady_clock;

double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

constexpr int64_t kChunk = 1 << 20;

// The blob is 16 distinct pseudo-random chunks repeated, generated once, so
// that the client's own work stays out of the measured time.
std::string MakeChunk(int64_t index) {
  std::string chunk(kChunk, '\0');
  uint64_t x = 0x9e3779b97f4a7c15ULL * (index + 1);
  for (size_t i = 0; i < chunk.size(); i += 8) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    std::memcpy(&chunk[i], &x, 8);
  }
  return chunk;
}

const std::string& Chunk(int64_t index) {
  static const std::vector<std::string> chunks = [] {
    std::vector<std::string> out;
    for (int i = 0; i < 16; ++i) out.push_back(MakeChunk(i));
    return out;
  }();
  return chunks[index % chunks.size()];
}

double TcpLoopbackMiBps(int64_t bytes) {
  int listener = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bind(listener, reinterpret_cast<sockaddr*>(&address), sizeof address);
  socklen_t length = sizeof address;
  getsockname(listener, reinterpret_cast<sockaddr*>(&address), &length);
  listen(listener, 1);
  std::thread receiver([&] {
    int fd = accept(listener, nullptr, nullptr);
    std::vector<char> buffer(kChunk);
    while (read(fd, buffer.data(), buffer.size()) > 0) {
    }
    close(fd);
  });
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof address);
  const std::string& chunk = Chunk(0);
  auto start = Clock::now();
  for (int64_t sent = 0; sent < bytes; sent += kChunk) {
    for (size_t off = 0; off < chunk.size();) {
      ssize_t n = write(fd, chunk.data() + off, chunk.size() - off);
      if (n <= 0) break;
      off += n;
    }
  }
  close(fd);
  receiver.join();
  double seconds = Seconds(Clock::now() - start);
  close(listener);
  return bytes / 1048576.0 / seconds;
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(64 << 20);
  auto channel = grpc::CreateCustomChannel(absl::GetFlag(FLAGS_server),
                                           grpc::InsecureChannelCredentials(), args);
  auto bytestream = bs::ByteStream::NewStub(channel);
  auto cas = rev2::ContentAddressableStorage::NewStub(channel);
  const int64_t chunks = absl::GetFlag(FLAGS_blob_mib);
  const int64_t size = chunks * kChunk;

  kiln::Sha256 hash;
  for (int64_t i = 0; i < chunks; ++i) hash.Update(Chunk(i));
  kiln::Digest digest{hash.FinishHex(), size};

  auto upload_start = Clock::now();
  {
    grpc::ClientContext context;
    bs::WriteResponse response;
    auto writer = bytestream->Write(&context, &response);
    bs::WriteRequest request;
    for (int64_t i = 0; i < chunks; ++i) {
      request.set_resource_name(i == 0 ? absl::StrCat("uploads/bench/blobs/", digest.ToString())
                                       : "");
      request.set_write_offset(i * kChunk);
      request.set_data(Chunk(i));
      request.set_finish_write(i + 1 == chunks);
      if (!writer->Write(request)) break;
    }
    writer->WritesDone();
    grpc::Status status = writer->Finish();
    if (!status.ok() || response.committed_size() != size) {
      std::fprintf(stderr, "upload failed: %s\n", status.error_message().c_str());
      return 1;
    }
  }
  double upload = size / 1048576.0 / Seconds(Clock::now() - upload_start);

  double download = 0, tcp = 0;
  for (int r = 0; r < absl::GetFlag(FLAGS_transfer_repetitions); ++r) {
    auto download_start = Clock::now();
    int64_t received = 0;
    grpc::ClientContext context;
    bs::ReadRequest request;
    request.set_resource_name(absl::StrCat("blobs/", digest.ToString()));
    auto reader = bytestream->Read(&context, request);
    bs::ReadResponse response;
    while (reader->Read(&response)) received += response.data().size();
    if (!reader->Finish().ok() || received != size) {
      std::fprintf(stderr, "download failed\n");
      return 1;
    }
    download = std::max(download, size / 1048576.0 / Seconds(Clock::now() - download_start));
    tcp = std::max(tcp, TcpLoopbackMiBps(size));
  }

  // FindMissingBlobs: half the digests exist (uploaded once, in batches).
  const int count = absl::GetFlag(FLAGS_digests);
  rev2::FindMissingBlobsRequest find;
  for (int i = 0; i < count; ++i) {
    std::string data = absl::StrCat("bench blob ", i);
    *find.add_blob_digests() = kiln::Digest::Of(data).ToProto();
    if (i % 2 == 0) continue;
    static rev2::BatchUpdateBlobsRequest batch;
    auto* entry = batch.add_requests();
    *entry->mutable_digest() = kiln::Digest::Of(data).ToProto();
    entry->set_data(data);
    if (batch.requests_size() == 1000 || i + 1 >= count - 1) {
      rev2::BatchUpdateBlobsResponse response;
      grpc::ClientContext context;
      cas->BatchUpdateBlobs(&context, batch, &response);
      batch.Clear();
    }
  }
  std::vector<double> latencies;
  std::string last_response;
  for (int r = 0; r < absl::GetFlag(FLAGS_repetitions); ++r) {
    rev2::FindMissingBlobsResponse response;
    grpc::ClientContext context;
    auto start = Clock::now();
    grpc::Status status = cas->FindMissingBlobs(&context, find, &response);
    latencies.push_back(Seconds(Clock::now() - start) * 1000);
    if (!status.ok() || response.missing_blob_digests_size() != count / 2) {
      std::fprintf(stderr, "FindMissingBlobs: %s, %d missing\n", status.error_message().c_str(),
                   response.missing_blob_digests_size());
      return 1;
    }
    if (last_response.empty()) last_response = response.SerializeAsString();
  }
  std::sort(latencies.begin(), latencies.end());
  // The client's own share of each call: serializing the request and
  // parsing the answer, as the stub does, without the network or server.
  std::vector<double> client_costs;
  for (int r = 0; r < absl::GetFlag(FLAGS_repetitions); ++r) {
    auto start = Clock::now();
    std::string request_bytes = find.SerializeAsString();
    rev2::FindMissingBlobsResponse response;
    response.ParseFromString(last_response);
    client_costs.push_back(Seconds(Clock::now() - start) * 1000);
  }
  std::sort(client_costs.begin(), client_costs.end());

  std::printf("blob size                      %lld MiB\n", static_cast<long long>(chunks));
  std::printf("ByteStream upload              %8.1f MiB/s  (%.2f x loopback TCP)\n", upload, upload / tcp);
  std::printf("ByteStream download            %8.1f MiB/s  (%.2f x loopback TCP)\n", download, download / tcp);
  std::printf("plain TCP copy over 127.0.0.1  %8.1f MiB/s  (downloads and TCP: best of %d)\n", tcp,
              absl::GetFlag(FLAGS_transfer_repetitions));
  std::printf("FindMissingBlobs, %d digests: p50 %.2f ms, p90 %.2f ms, max %.2f ms (%zu calls)\n",
              count, latencies[latencies.size() / 2], latencies[latencies.size() * 9 / 10],
              latencies.back(), latencies.size());
  std::printf("  of which the client's own serialize + parse: p50 %.2f ms\n",
              client_costs[client_costs.size() / 2]);
  return 0;
}
