// Cancel storm against the real kiln-worker binary: 16 client threads start
// Execute (a valid action and garbage digests), ByteStream Read and Write,
// GetTree and FindMissingBlobs calls and cancel each right away (a 1-3 ms
// deadline, or TryCancel just after the start), for
// $KILN_CANCEL_STORM_SECONDS (default 10). With --io_threads=1 the I/O pool
// queue is long, so most calls are cancelled while their task still waits:
// the worker used to free the call under the task and crash within seconds.
// Then the worker must still be alive, still run an action correctly, and
// (in the sanitizer builds) have logged no sanitizer report.
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <condition_variable>
#include <mutex>
#include <optional>
#include <random>
#include <sstream>
#include <thread>

#include <grpcpp/create_channel.h>
#include <gtest/gtest.h>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "build/bazel/remote/execution/v2/remote_execution.grpc.pb.h"
#include "common/digest.h"
#include "common/posix.h"
#include "google/bytestream/bytestream.grpc.pb.h"
#include "tests/test_actions.h"
#include "tests/worker_process.h"

namespace kiln {
namespace {

using testing::WorkerProcess;
namespace bs = google::bytestream;
namespace lro = google::longrunning;

constexpr int kClientThreads = 16;

int StormSeconds() {
  int seconds = 10;
  const char* text = getenv("KILN_CANCEL_STORM_SECONDS");
  if (text != nullptr && (!absl::SimpleAtoi(text, &seconds) || seconds < 1)) seconds = 10;
  return seconds;
}

// Whether `pid` (our child) has exited, without reaping it: WorkerProcess
// still owns the reaping. Says how in `how`.
bool Exited(pid_t pid, std::string* how = nullptr) {
  siginfo_t info = {};
  if (waitid(P_PID, pid, &info, WEXITED | WNOHANG | WNOWAIT) != 0 || info.si_pid != pid) return false;
  if (how != nullptr) {
    *how = info.si_code == CLD_EXITED ? absl::StrCat("exit code ", info.si_status)
                                      : absl::StrCat("signal ", strsignal(info.si_status));
  }
  return true;
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// The markers ASan, UBSan, LSan and TSan start their reports with.
bool HasSanitizerReport(const std::string& log) {
  for (const char* marker : {"ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
                             "WARNING: ThreadSanitizer", "UndefinedBehaviorSanitizer"}) {
    if (log.find(marker) != std::string::npos) return true;
  }
  return false;
}

class CancelStormTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string pattern = ::testing::TempDir() + "/kiln-storm-XXXXXX";
    dir_ = mkdtemp(pattern.data());
    worker_ = std::make_unique<WorkerProcess>(std::vector<std::string>{
        "--listen=127.0.0.1:0", "--metrics_listen=", "--state_dir=" + dir_ + "/state",
        "--io_threads=1", "--concurrency=2"});
    ASSERT_TRUE(worker_->started());
    for (int i = 0; i < 4; ++i) {
      // Distinct args: separate connections, so the storm is not one socket.
      grpc::ChannelArguments args;
      args.SetInt("kiln.storm.channel", i);
      channels_.push_back(grpc::CreateCustomChannel(worker_->address(),
                                                    grpc::InsecureChannelCredentials(), args));
    }
  }
  void TearDown() override {
    worker_.reset();
    (void)RemoveTree(dir_);
  }

  Digest Put(const std::string& data) { return testing::UploadBlob(channels_[0], data); }

  // Uploads an action running `script` (cacheable) and returns its digest.
  Digest PutAction(const std::string& script, const std::string& salt) {
    return testing::UploadShellAction(channels_[0], script, {.salt = salt, .do_not_cache = false});
  }

  std::string dir_;
  std::unique_ptr<WorkerProcess> worker_;
  std::vector<std::shared_ptr<grpc::Channel>> channels_;
};

// What the storm threads share: the prepared digests and what they counted.
struct Storm {
  Digest action;     // a valid, uploaded action
  Digest big_blob;   // 3 MiB: Read streams several chunks
  Digest tree_root;  // a Directory with a subdirectory
  std::atomic<bool> stop{false};
  std::atomic<int64_t> calls{0};
  std::atomic<int64_t> ok{0};
  std::atomic<int64_t> cancelled{0};
};

// Either a 1-3 ms deadline, or (cancel_now) a safety deadline and a TryCancel
// right after the call starts.
void ArmContext(grpc::ClientContext* context, std::mt19937& random, bool* cancel_now) {
  *cancel_now = random() % 2 == 0;
  auto timeout = *cancel_now ? std::chrono::microseconds(10'000'000)
                             : std::chrono::microseconds(1000 + random() % 2001);
  context->set_deadline(std::chrono::system_clock::now() + timeout);
}

void Count(Storm* storm, const grpc::Status& status) {
  ++storm->calls;
  if (status.ok()) ++storm->ok;
  if (status.error_code() == grpc::StatusCode::CANCELLED ||
      status.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED) {
    ++storm->cancelled;
  }
}

rev2::Digest Garbage(std::mt19937& random) {
  rev2::Digest digest;
  switch (random() % 3) {
    case 0: digest.set_hash("not-a-hash"); break;
    case 1: digest.set_hash(std::string(64, 'f')); break;  // valid form, absent
    default: break;                                          // empty
  }
  digest.set_size_bytes(static_cast<int64_t>(random() % 100) - 10);
  return digest;
}

void ExecuteOnce(Storm* storm, grpc::Channel* channel, std::mt19937& random, bool garbage) {
  auto stub = rev2::Execution::NewStub(std::shared_ptr<grpc::Channel>(channel, [](auto*) {}));
  grpc::ClientContext context;
  bool cancel_now;
  ArmContext(&context, random, &cancel_now);
  rev2::ExecuteRequest request;
  *request.mutable_action_digest() = garbage ? Garbage(random) : storm->action.ToProto();
  request.set_skip_cache_lookup(random() % 2 == 0);
  auto reader = stub->Execute(&context, request);
  if (cancel_now) context.TryCancel();
  lro::Operation operation;
  while (reader->Read(&operation)) {
  }
  Count(storm, reader->Finish());
}

void ReadOnce(Storm* storm, grpc::Channel* channel, std::mt19937& random) {
  auto stub = bs::ByteStream::NewStub(std::shared_ptr<grpc::Channel>(channel, [](auto*) {}));
  grpc::ClientContext context;
  bool cancel_now;
  ArmContext(&context, random, &cancel_now);
  bs::ReadRequest request;
  request.set_resource_name(absl::StrCat("blobs/", storm->big_blob.hash, "/", storm->big_blob.size));
  if (random() % 4 == 0) request.set_resource_name("blobs/garbage/12");
  auto reader = stub->Read(&context, request);
  if (cancel_now) context.TryCancel();
  bs::ReadResponse response;
  while (reader->Read(&response)) {
  }
  Count(storm, reader->Finish());
}

void WriteOnce(Storm* storm, grpc::Channel* channel, std::mt19937& random) {
  auto stub = bs::ByteStream::NewStub(std::shared_ptr<grpc::Channel>(channel, [](auto*) {}));
  grpc::ClientContext context;
  bool cancel_now;
  ArmContext(&context, random, &cancel_now);
  std::string data(64 * 1024, 'x');
  for (int i = 0; i < 8; ++i) data[random() % data.size()] = static_cast<char>('a' + random() % 26);
  Digest digest = Digest::Of(data);
  bs::WriteResponse response;
  auto writer = stub->Write(&context, &response);
  const size_t half = data.size() / 2;
  bs::WriteRequest first;
  first.set_resource_name(absl::StrCat("uploads/", random(), "/blobs/", digest.hash, "/", digest.size));
  first.set_data(data.substr(0, half));
  writer->Write(first);
  if (cancel_now) context.TryCancel();
  bs::WriteRequest second;
  second.set_write_offset(static_cast<int64_t>(half));
  second.set_data(data.substr(half));
  second.set_finish_write(true);
  writer->Write(second);
  writer->WritesDone();
  Count(storm, writer->Finish());
}

void GetTreeOnce(Storm* storm, grpc::Channel* channel, std::mt19937& random) {
  auto stub = rev2::ContentAddressableStorage::NewStub(
      std::shared_ptr<grpc::Channel>(channel, [](auto*) {}));
  grpc::ClientContext context;
  bool cancel_now;
  ArmContext(&context, random, &cancel_now);
  rev2::GetTreeRequest request;
  *request.mutable_root_digest() = random() % 4 == 0 ? Garbage(random) : storm->tree_root.ToProto();
  request.set_page_size(1);
  auto reader = stub->GetTree(&context, request);
  if (cancel_now) context.TryCancel();
  rev2::GetTreeResponse response;
  while (reader->Read(&response)) {
  }
  Count(storm, reader->Finish());
}

void FindMissingOnce(Storm* storm, grpc::Channel* channel, std::mt19937& random) {
  auto stub = rev2::ContentAddressableStorage::NewStub(
      std::shared_ptr<grpc::Channel>(channel, [](auto*) {}));
  grpc::ClientContext context;
  bool cancel_now;
  ArmContext(&context, random, &cancel_now);
  rev2::FindMissingBlobsRequest request;
  *request.add_blob_digests() = storm->big_blob.ToProto();
  *request.add_blob_digests() = random() % 4 == 0 ? Garbage(random) : storm->action.ToProto();
  rev2::FindMissingBlobsResponse response;
  // The callback API, so the call can be cancelled after it started. A
  // plain mutex and condition variable: TSan sees them (not std::future's
  // futex inside libstdc++).
  std::mutex mu;
  std::condition_variable cv;
  std::optional<grpc::Status> result;
  // Publishes `result`'s (reused) stack memory to the callback's thread
  // through `mu`; gRPC's own ordering is invisible to TSan.
  { std::lock_guard<std::mutex> lock(mu); }
  stub->async()->FindMissingBlobs(&context, &request, &response, [&](grpc::Status status) {
    std::lock_guard<std::mutex> lock(mu);
    result = std::move(status);
    cv.notify_one();
  });
  if (cancel_now) context.TryCancel();
  std::unique_lock<std::mutex> lock(mu);
  cv.wait(lock, [&] { return result.has_value(); });
  Count(storm, *result);
}

void StormThread(Storm* storm, grpc::Channel* channel, int seed) {
  std::mt19937 random(seed);
  for (int i = 0; !storm->stop.load(); ++i) {
    switch (random() % 8) {
      case 0:
      case 1: ExecuteOnce(storm, channel, random, /*garbage=*/false); break;
      case 2: ExecuteOnce(storm, channel, random, /*garbage=*/true); break;
      case 3: ReadOnce(storm, channel, random); break;
      case 4: WriteOnce(storm, channel, random); break;
      case 5: GetTreeOnce(storm, channel, random); break;
      default: FindMissingOnce(storm, channel, random); break;
    }
  }
}

TEST_F(CancelStormTest, WorkerSurvivesCallsCancelledRightAfterTheyStart) {
  Storm storm;
  storm.action = PutAction("true", "storm");
  storm.big_blob = Put(std::string(3 << 20, 'b'));
  rev2::Directory child;
  rev2::Directory root;
  auto* node = root.add_directories();
  node->set_name("sub");
  *node->mutable_digest() = Put(child.SerializeAsString()).ToProto();
  storm.tree_root = Put(root.SerializeAsString());
  ASSERT_FALSE(HasFailure());

  const int seconds = StormSeconds();
  std::vector<std::thread> threads;
  for (int i = 0; i < kClientThreads; ++i) {
    threads.emplace_back(StormThread, &storm, channels_[i % channels_.size()].get(), 1000 + i);
  }
  auto start = std::chrono::steady_clock::now();
  auto end = start + std::chrono::seconds(seconds);
  bool died = false;
  while (std::chrono::steady_clock::now() < end && !(died = Exited(worker_->pid()))) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  storm.stop = true;
  for (auto& thread : threads) thread.join();
  std::string how;
  died = Exited(worker_->pid(), &how);
  std::printf("cancel storm: %.1f s, %lld calls (%lld ok, %lld cancelled or past deadline), "
              "worker %s\n",
              elapsed, static_cast<long long>(storm.calls), static_cast<long long>(storm.ok),
              static_cast<long long>(storm.cancelled), died ? "DIED" : "alive");
  std::string log = ReadFile(worker_->log_path());
  auto tail = [&] { return log.size() > 6000 ? log.substr(log.size() - 6000) : log; };
  ASSERT_FALSE(died) << "the worker died (" << how << ") after " << elapsed
                     << " s; its log ends:\n" << tail();
  EXPECT_FALSE(HasSanitizerReport(log)) << tail();

  // Still serves: a fresh action runs and reports its exit code.
  auto stub = rev2::Execution::NewStub(channels_[0]);
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
  rev2::ExecuteRequest request;
  *request.mutable_action_digest() = PutAction("exit 7", absl::StrCat("after-", getpid())).ToProto();
  auto reader = stub->Execute(&context, request);
  lro::Operation operation, last;
  while (reader->Read(&operation)) last = operation;
  grpc::Status status = reader->Finish();
  ASSERT_TRUE(status.ok()) << status.error_message();
  ASSERT_TRUE(last.done());
  rev2::ExecuteResponse response;
  ASSERT_TRUE(last.response().UnpackTo(&response));
  EXPECT_EQ(response.status().code(), 0) << response.status().message();
  EXPECT_EQ(response.result().exit_code(), 7);

  log = ReadFile(worker_->log_path());
  EXPECT_FALSE(HasSanitizerReport(log)) << tail();
}

}  // namespace
}  // namespace kiln
