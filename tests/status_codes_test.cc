// The status codes clients get, and kiln_grpc_requests_total counts, for
// calls that go wrong on the client's side, against the real binary:
//   - undecodable request bytes are INVALID_ARGUMENT with a message (gRPC's
//     own answer is an empty UNIMPLEMENTED, as if the method did not exist);
//   - calls the client cancels count as CANCELLED, calls ended by their
//     deadline (Health.Watch included) as DEADLINE_EXCEEDED, never as
//     UNIMPLEMENTED or UNKNOWN;
// and promtool, fed the counters as they were scraped, finds that the
// shipped alert rules stay quiet (and, as a control, that they would fire on
// the codes the worker used to report).
#include <stdlib.h>

#include <chrono>
#include <condition_variable>
#include <fstream>
#include <map>
#include <mutex>
#include <regex>
#include <string>
#include <thread>
#include <vector>

#include <grpcpp/create_channel.h>
#include <grpcpp/generic/generic_stub.h>
#include <gtest/gtest.h>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "build/bazel/remote/execution/v2/remote_execution.grpc.pb.h"
#include "common/digest.h"
#include "common/posix.h"
#include "google/bytestream/bytestream.grpc.pb.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "tests/test_actions.h"
#include "tests/worker_process.h"

namespace kiln {
namespace {

using testing::WorkerProcess;
namespace rev2 = build::bazel::remote::execution::v2;
namespace bs = google::bytestream;
namespace lro = google::longrunning;
namespace health = grpc::health::v1;

// A length-delimited field 1 that claims 5 bytes and has 2: no protobuf
// message parses it.
const std::string kGarbage("\x0a\x05" "ab", 4);

// Sends `bytes` as the one request message of `method` (unary or
// server-streaming: on the wire both are a stream of one request) and
// returns the status.
grpc::Status CallWithRawBytes(const std::shared_ptr<grpc::Channel>& channel, const std::string& method,
                              const std::string& bytes) {
  grpc::GenericStub stub(channel);
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
  grpc::CompletionQueue cq;
  auto call = stub.PrepareCall(&context, method, &cq);
  void* tag;
  bool ok;
  call->StartCall(reinterpret_cast<void*>(1));
  cq.Next(&tag, &ok);
  grpc::Slice slice(bytes);
  grpc::ByteBuffer request(&slice, 1);
  call->Write(request, reinterpret_cast<void*>(2));
  cq.Next(&tag, &ok);
  call->WritesDone(reinterpret_cast<void*>(3));
  cq.Next(&tag, &ok);
  grpc::ByteBuffer response;
  do {
    call->Read(&response, reinterpret_cast<void*>(4));
    cq.Next(&tag, &ok);
  } while (ok);
  grpc::Status status;
  call->Finish(&status, reinterpret_cast<void*>(5));
  cq.Next(&tag, &ok);
  cq.Shutdown();
  while (cq.Next(&tag, &ok)) {
  }
  return status;
}

// kiln_grpc_requests_total as scraped: {method, code} -> count.
using Counts = std::map<std::pair<std::string, std::string>, int64_t>;

Counts ScrapeGrpcCounts(int metrics_port) {
  Counts counts;
  std::string body = testing::HttpGet(metrics_port, "/metrics");
  static const std::regex kLine(R"(^kiln_grpc_requests_total\{(.*)\} ([0-9.e+]+)$)");
  static const std::regex kMethod(R"re(method="([^"]*)")re");
  static const std::regex kCode(R"re(code="([^"]*)")re");
  size_t start = 0;
  while (start < body.size()) {
    size_t end = body.find('\n', start);
    if (end == std::string::npos) end = body.size();
    std::string line = body.substr(start, end - start);
    start = end + 1;
    std::smatch match, method, code;
    if (!std::regex_match(line, match, kLine)) continue;
    std::string labels = match[1];
    if (!std::regex_search(labels, method, kMethod) || !std::regex_search(labels, code, kCode)) continue;
    double value = 0;
    if (!absl::SimpleAtod(std::string(match[2]), &value)) continue;
    counts[{method[1], code[1]}] += static_cast<int64_t>(value);
  }
  return counts;
}

int64_t Count(const Counts& counts, const std::string& method, const std::string& code) {
  auto it = counts.find({method, code});
  return it == counts.end() ? 0 : it->second;
}

class StatusCodesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string pattern = ::testing::TempDir() + "/kiln-codes-XXXXXX";
    dir_ = mkdtemp(pattern.data());
    worker_ = std::make_unique<WorkerProcess>(std::vector<std::string>{
        "--listen=127.0.0.1:0", "--metrics_listen=127.0.0.1:0", "--state_dir=" + dir_ + "/state",
        "--concurrency=2", "--kill_grace=0.2s"});
    ASSERT_TRUE(worker_->started());
    channel_ = grpc::CreateChannel(worker_->address(), grpc::InsecureChannelCredentials());
  }
  void TearDown() override {
    worker_.reset();
    (void)RemoveTree(dir_);
  }

  Digest Put(const std::string& data) { return testing::UploadBlob(channel_, data); }
  Digest PutAction(const std::string& script) { return testing::UploadShellAction(channel_, script); }

  // Execute of `action`; cancelled after the first message, or left to
  // `deadline`.
  grpc::Status Execute(const Digest& action, bool cancel, std::chrono::milliseconds deadline) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + deadline);
    rev2::ExecuteRequest request;
    *request.mutable_action_digest() = action.ToProto();
    request.set_skip_cache_lookup(true);
    auto reader = rev2::Execution::NewStub(channel_)->Execute(&context, request);
    lro::Operation operation;
    while (reader->Read(&operation)) {
      if (cancel) context.TryCancel();
    }
    return reader->Finish();
  }

  grpc::Status Watch(bool cancel, std::chrono::milliseconds deadline) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + deadline);
    health::HealthCheckRequest request;
    auto reader = health::Health::NewStub(channel_)->Watch(&context, request);
    health::HealthCheckResponse response;
    while (reader->Read(&response)) {
      EXPECT_EQ(response.status(), health::HealthCheckResponse::SERVING);
      if (cancel) context.TryCancel();
    }
    return reader->Finish();
  }

  // `calls` GetCapabilities and ByteStream.Read calls, each cancelled right
  // after it starts: some never deliver their request to the server.
  void CancelRightAway(int calls) {
    auto capabilities = rev2::Capabilities::NewStub(channel_);
    for (int i = 0; i < calls; ++i) {
      grpc::ClientContext context;
      rev2::GetCapabilitiesRequest request;
      rev2::ServerCapabilities response;
      std::mutex mu;
      std::condition_variable cv;
      bool done;
      {
        // Set under the lock: the callback runs on a gRPC thread, and gRPC's
        // own ordering is invisible to ThreadSanitizer (uninstrumented).
        std::lock_guard<std::mutex> lock(mu);
        done = false;
      }
      capabilities->async()->GetCapabilities(&context, &request, &response, [&](grpc::Status) {
        std::lock_guard<std::mutex> lock(mu);
        done = true;
        cv.notify_one();
      });
      context.TryCancel();
      std::unique_lock<std::mutex> lock(mu);
      cv.wait(lock, [&] { return done; });
    }
  }

  std::string dir_;
  std::unique_ptr<WorkerProcess> worker_;
  std::shared_ptr<grpc::Channel> channel_;
};

TEST_F(StatusCodesTest, UndecodableRequestsAreInvalidArgumentWithAMessage) {
  for (const char* method : {"/build.bazel.remote.execution.v2.ContentAddressableStorage/FindMissingBlobs",
                             "/build.bazel.remote.execution.v2.Execution/Execute",
                             "/google.bytestream.ByteStream/Read", "/grpc.health.v1.Health/Check"}) {
    SCOPED_TRACE(method);
    grpc::Status status = CallWithRawBytes(channel_, method, kGarbage);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << status.error_message();
    EXPECT_FALSE(status.error_message().empty());
  }
  // The same bytes to a method that does not exist stay UNIMPLEMENTED.
  EXPECT_EQ(CallWithRawBytes(channel_, "/build.bazel.remote.execution.v2.Execution/NoSuchMethod", kGarbage)
                .error_code(),
            grpc::StatusCode::UNIMPLEMENTED);
  // A well-formed request still works on the same connection.
  rev2::FindMissingBlobsRequest valid;
  EXPECT_TRUE(CallWithRawBytes(channel_,
                               "/build.bazel.remote.execution.v2.ContentAddressableStorage/FindMissingBlobs",
                               valid.SerializeAsString())
                  .ok());
  // Metrics are recorded when the call is over, just after the client sees it.
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  Counts counts = ScrapeGrpcCounts(worker_->metrics_port());
  EXPECT_EQ(Count(counts, "/build.bazel.remote.execution.v2.ContentAddressableStorage/FindMissingBlobs",
                  "INVALID_ARGUMENT"), 1);
  EXPECT_EQ(Count(counts, "/grpc.health.v1.Health/Check", "INVALID_ARGUMENT"), 1);
}

TEST_F(StatusCodesTest, CancelledAndExpiredCallsCountAsSuchAndNoAlertFires) {
  const Digest sleeper = PutAction("sleep 30");
  grpc::Status cancelled = Execute(sleeper, /*cancel=*/true, std::chrono::seconds(20));
  EXPECT_EQ(cancelled.error_code(), grpc::StatusCode::CANCELLED) << cancelled.error_message();
  grpc::Status expired = Execute(sleeper, /*cancel=*/false, std::chrono::milliseconds(1500));
  EXPECT_EQ(expired.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED) << expired.error_message();
  grpc::Status watch_expired = Watch(/*cancel=*/false, std::chrono::milliseconds(1000));
  EXPECT_EQ(watch_expired.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  grpc::Status watch_cancelled = Watch(/*cancel=*/true, std::chrono::seconds(20));
  EXPECT_EQ(watch_cancelled.error_code(), grpc::StatusCode::CANCELLED);
  CancelRightAway(200);
  EXPECT_EQ(CallWithRawBytes(channel_, "/google.bytestream.ByteStream/Read", kGarbage).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);

  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  Counts counts = ScrapeGrpcCounts(worker_->metrics_port());
  std::string all;
  for (const auto& [key, value] : counts) absl::StrAppend(&all, key.first, " ", key.second, " ", value, "\n");
  SCOPED_TRACE(all);
  const std::string execute = "/build.bazel.remote.execution.v2.Execution/Execute";
  const std::string watch = "/grpc.health.v1.Health/Watch";
  EXPECT_EQ(Count(counts, execute, "CANCELLED"), 1);
  EXPECT_EQ(Count(counts, execute, "DEADLINE_EXCEEDED"), 1);
  EXPECT_EQ(Count(counts, watch, "DEADLINE_EXCEEDED"), 1);
  EXPECT_EQ(Count(counts, watch, "CANCELLED"), 1);
  const std::string capabilities = "/build.bazel.remote.execution.v2.Capabilities/GetCapabilities";
  // Some never reached the server (cancelled before they were sent).
  EXPECT_GE(Count(counts, capabilities, "CANCELLED"), 1);
  EXPECT_LE(Count(counts, capabilities, "CANCELLED") + Count(counts, capabilities, "OK"), 200);
  for (const auto& [key, value] : counts) {
    EXPECT_NE(key.second, "UNIMPLEMENTED") << key.first;
    EXPECT_NE(key.second, "UNKNOWN") << key.first;
  }

  // promtool replays the counters as if this mix went on for 40 minutes at
  // one scrape's worth per second, through the shipped rules.
  auto series = [&](const std::map<std::string, std::string>& relabel) {
    std::string out;
    for (const auto& [key, value] : counts) {
      std::string code = key.second;
      if (auto it = relabel.find(key.first + " " + code); it != relabel.end()) code = it->second;
      absl::StrAppend(&out, "      - series: 'kiln_grpc_requests_total{instance=\"w\",job=\"kiln-worker\",method=\"",
                      key.first, "\",code=\"", code, "\"}'\n        values: '0+", value * 60, "x40'\n");
    }
    return out;
  };
  const std::string rules = std::string(KILN_SOURCE_DIR) + "/deploy/prometheus/kiln-alerts.yml";
  std::string test = absl::StrCat(
      "rule_files:\n  - ", rules, "\nevaluation_interval: 1m\ntests:\n",
      // As the worker reports them now: quiet.
      "  - interval: 1m\n    input_series:\n", series({}),
      "    alert_rule_test:\n      - eval_time: 40m\n        alertname: KilnGrpcErrors\n        exp_alerts: []\n",
      // The control: Health.Watch expiring as UNKNOWN, as it was reported before.
      "  - interval: 1m\n    input_series:\n", series({{watch + " DEADLINE_EXCEEDED", "UNKNOWN"}}),
      "    alert_rule_test:\n      - eval_time: 40m\n        alertname: KilnGrpcErrors\n        exp_alerts:\n",
      "          - exp_labels: {instance: w, severity: ticket}\n",
      "            exp_annotations: {summary: \"w answers gRPC calls with server errors\"}\n");
  const std::string test_file = dir_ + "/alerts_test.yml";
  std::ofstream(test_file) << test;
  testing::ProcessResult promtool = testing::RunToCompletion({"/usr/bin/promtool", "test", "rules", test_file});
  EXPECT_EQ(promtool.exit_code, 0) << promtool.stdout_text << promtool.stderr_text << "\n" << test;
}

}  // namespace
}  // namespace kiln
