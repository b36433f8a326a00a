// The worker's memory stays flat under bursts of large requests (issue 13):
// eight clients send FindMissingBlobs of 1,000 digests and now and then a
// 3 MB batch upload and read, in rounds, each on new connections; after the
// first round warmed everything up, later rounds may not keep raising the
// resident set, and it stays under a bound. Without the MemoryTrimmer,
// glibc's arenas kept ~40 MiB of freed memory resident here (94 MiB against
// 51 MiB with it).
#include <chrono>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include <grpcpp/create_channel.h>
#include <gtest/gtest.h>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "build/bazel/remote/execution/v2/remote_execution.grpc.pb.h"
#include "common/digest.h"
#include "common/posix.h"
#include "tests/worker_process.h"

namespace kiln {
namespace {

namespace rev2 = ::build::bazel::remote::execution::v2;

int64_t RssKiB(pid_t pid) {
  std::ifstream status(absl::StrCat("/proc/", pid, "/status"));
  for (std::string line; std::getline(status, line);) {
    if (line.rfind("VmRSS:", 0) == 0) {
      int64_t kib = 0;
      std::string digits;
      for (char c : line) if (c >= '0' && c <= '9') digits += c;
      (void)absl::SimpleAtoi(digits, &kib);
      return kib;
    }
  }
  return -1;
}

TEST(MemoryBoundTest, RssStaysBoundedUnderRepeatedLargeRequests) {
  std::string pattern = ::testing::TempDir() + "/kiln-memory-XXXXXX";
  const std::string dir = mkdtemp(pattern.data());
  {
    testing::WorkerProcess worker({"--listen=127.0.0.1:0", "--metrics_listen=", "--state_dir=" + dir + "/state",
                                   "--concurrency=0", "--io_threads=4"});
    ASSERT_TRUE(worker.started());
    int connection = 0;
    auto round = [&] {
      std::vector<std::thread> clients;
      for (int c = 0; c < 8; ++c) {
        // A connection of its own per client and round, as separate client
        // processes (Bazel invocations) make.
        grpc::ChannelArguments args;
        args.SetInt("kiln.test.connection", ++connection);
        auto channel = grpc::CreateCustomChannel(worker.address(), grpc::InsecureChannelCredentials(), args);
        clients.emplace_back([&, c, channel] {
          auto cas = rev2::ContentAddressableStorage::NewStub(channel);
          for (int call = 0; call < 250; ++call) {
            rev2::FindMissingBlobsRequest request;
            for (int i = 0; i < 1000; ++i) {
              *request.add_blob_digests() = Digest::Of(absl::StrCat(c, "/", call, "/", i)).ToProto();
            }
            rev2::FindMissingBlobsResponse response;
            grpc::ClientContext context;
            context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
            ASSERT_TRUE(cas->FindMissingBlobs(&context, request, &response).ok());
            ASSERT_EQ(response.missing_blob_digests_size(), 1000);
            if (call % 25 != 0) continue;
            // Now and then a 3 MB batch upload and read back.
            std::string blob(3'000'000, static_cast<char>('a' + c));
            blob.replace(0, 32, absl::StrCat(connection, "/", c, "/", call));
            rev2::BatchUpdateBlobsRequest update;
            auto* entry = update.add_requests();
            *entry->mutable_digest() = Digest::Of(blob).ToProto();
            entry->set_data(blob);
            rev2::BatchUpdateBlobsResponse updated;
            grpc::ClientContext update_context;
            ASSERT_TRUE(cas->BatchUpdateBlobs(&update_context, update, &updated).ok());
            rev2::BatchReadBlobsRequest read;
            *read.add_digests() = Digest::Of(blob).ToProto();
            rev2::BatchReadBlobsResponse read_back;
            grpc::ClientContext read_context;
            ASSERT_TRUE(cas->BatchReadBlobs(&read_context, read, &read_back).ok());
            ASSERT_EQ(read_back.responses(0).data().size(), blob.size());
          }
        });
      }
      for (auto& client : clients) client.join();
      // The trimmer runs every 5 s.
      std::this_thread::sleep_for(std::chrono::seconds(6));
      return RssKiB(worker.pid());
    };
    const int64_t warm = round();
    int64_t last = warm;
    for (int i = 0; i < 3; ++i) last = round();
    std::printf("warm %ld KiB, last %ld KiB\n", static_cast<long>(warm), static_cast<long>(last));
    EXPECT_LT(last - warm, 16 * 1024) << "RSS grew from " << warm << " KiB to " << last << " KiB";
    // 94 MiB here without the trimmer, 51 MiB with it, 24 MiB once malloc
    // arenas were capped at one per core (LimitMallocArenas); the margin is
    // for a machine busy with other tests.
    EXPECT_LT(last, 48 * 1024) << "RSS " << last << " KiB";
  }
  (void)RemoveTree(dir);
}

// Issue 14: an idle worker on its defaults (execution on, one slot per
// core, metrics served, the I/O pool) holds at most 30 MiB resident: ~21 MiB
// here, most of it the shared libraries' pages.
TEST(MemoryBoundTest, IdleWorkerOnItsDefaultsStaysUnder30MiB) {
  std::string pattern = ::testing::TempDir() + "/kiln-idle-XXXXXX";
  const std::string dir = mkdtemp(pattern.data());
  {
    testing::WorkerProcess worker({"--listen=127.0.0.1:0", "--metrics_listen=127.0.0.1:0",
                                   "--state_dir=" + dir + "/state"});
    ASSERT_TRUE(worker.started());
    std::this_thread::sleep_for(std::chrono::seconds(2));
    const int64_t idle = RssKiB(worker.pid());
    std::printf("idle %ld KiB\n", static_cast<long>(idle));
    EXPECT_GT(idle, 0);
    EXPECT_LE(idle, 30 * 1024) << "RSS " << idle << " KiB";
  }
  (void)RemoveTree(dir);
}

}  // namespace
}  // namespace kiln
