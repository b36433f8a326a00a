// The worker's action counters add up to what clients saw (found by the soak,
// tests/stress/soak.py): against the real kiln-worker binary with one slot,
//   - an action cancelled while it waits for the slot is counted in
//     kiln_actions_total{outcome="cancelled",code="CANCELLED"}, like one
//     cancelled while it runs (it used to be counted nowhere);
//   - Execute calls that join an identical action in flight are counted in
//     kiln_actions_merged_total, and the action itself once.
#include <stdlib.h>

#include <chrono>
#include <map>
#include <memory>
#include <regex>
#include <string>
#include <thread>

#include <grpcpp/create_channel.h>

#include <gtest/gtest.h>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "build/bazel/remote/execution/v2/remote_execution.grpc.pb.h"
#include "common/digest.h"
#include "common/posix.h"
#include "google/longrunning/operations.grpc.pb.h"
#include "tests/test_actions.h"
#include "tests/worker_process.h"

namespace kiln {
namespace {

namespace rev2 = ::build::bazel::remote::execution::v2;
namespace lro = ::google::longrunning;
using testing::WorkerProcess;

// The sum of every sample of `name` whose labels contain `labels` (e.g.
// `outcome="cancelled"`; "" for any).
double Scraped(const std::string& body, const std::string& name, const std::string& labels = "") {
  const std::regex line("^" + name + R"((\{[^}]*\})? ([0-9.e+]+)$)");
  double total = 0;
  size_t start = 0;
  while (start < body.size()) {
    size_t end = body.find('\n', start);
    if (end == std::string::npos) end = body.size();
    const std::string text = body.substr(start, end - start);
    start = end + 1;
    std::smatch match;
    double value = 0;
    if (std::regex_match(text, match, line) && std::string(match[1]).find(labels) != std::string::npos &&
        absl::SimpleAtod(std::string(match[2]), &value)) {
      total += value;
    }
  }
  return total;
}

class ActionMetricsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string pattern = ::testing::TempDir() + "/kiln-action-metrics-XXXXXX";
    dir_ = mkdtemp(pattern.data());
    worker_ = std::make_unique<WorkerProcess>(std::vector<std::string>{
        "--listen=127.0.0.1:0", "--metrics_listen=127.0.0.1:0", "--state_dir=" + dir_ + "/state",
        "--concurrency=1", "--kill_grace=0.5s"});
    ASSERT_TRUE(worker_->started());
    channel_ = grpc::CreateChannel(worker_->address(), grpc::InsecureChannelCredentials());
  }
  void TearDown() override {
    worker_.reset();
    (void)RemoveTree(dir_);
  }

  Digest Put(const std::string& data) { return testing::UploadBlob(channel_, data); }
  Digest PutAction(const std::string& script, const std::map<std::string, std::string>& platform = {}) {
    return testing::UploadShellAction(channel_, script, {.platform = platform});
  }

  // An Execute call, read until its operation reaches `stage` (or ends).
  struct Call {
    std::unique_ptr<grpc::ClientContext> context = std::make_unique<grpc::ClientContext>();
    std::unique_ptr<grpc::ClientReader<lro::Operation>> reader;
    lro::Operation last;
  };
  std::unique_ptr<Call> Start(const Digest& action, rev2::ExecutionStage::Value stage) {
    auto call = std::make_unique<Call>();
    call->context->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
    rev2::ExecuteRequest request;
    *request.mutable_action_digest() = action.ToProto();
    request.set_skip_cache_lookup(true);
    call->reader = rev2::Execution::NewStub(channel_)->Execute(call->context.get(), request);
    while (call->reader->Read(&call->last)) {
      rev2::ExecuteOperationMetadata metadata;
      call->last.metadata().UnpackTo(&metadata);
      if (metadata.stage() == stage || call->last.done()) break;
    }
    return call;
  }
  // Reads the call to its end: the status code of its ExecuteResponse.
  static int Finish(Call& call) {
    while (!call.last.done() && call.reader->Read(&call.last)) {
    }
    EXPECT_TRUE(call.reader->Finish().ok());
    rev2::ExecuteResponse response;
    call.last.response().UnpackTo(&response);
    return response.status().code();
  }
  void Cancel(const std::string& name) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    lro::CancelOperationRequest request;
    request.set_name(name);
    google::protobuf::Empty empty;
    grpc::Status status = lro::Operations::NewStub(channel_)->CancelOperation(&context, request, &empty);
    EXPECT_TRUE(status.ok()) << status.error_message();
  }
  std::string Metrics() { return testing::HttpGet(worker_->metrics_port(), "/metrics"); }

  std::string dir_;
  std::unique_ptr<WorkerProcess> worker_;
  std::shared_ptr<grpc::Channel> channel_;
};

TEST_F(ActionMetricsTest, CancelledWhileQueuedAndMergedCallsAreCounted) {
  // The only slot is busy, so what follows waits in the queue.
  auto blocker = Start(PutAction("sleep 60"), rev2::ExecutionStage::EXECUTING);
  ASSERT_FALSE(blocker->last.name().empty());

  auto queued = Start(PutAction("echo never"), rev2::ExecutionStage::QUEUED);
  ASSERT_FALSE(queued->last.done());
  Cancel(queued->last.name());
  EXPECT_EQ(Finish(*queued), grpc::StatusCode::CANCELLED);
  std::string metrics = Metrics();
  EXPECT_EQ(Scraped(metrics, "kiln_actions_total", R"(outcome="cancelled")"), 1) << metrics;
  EXPECT_EQ(Scraped(metrics, "kiln_actions_total", R"(code="CANCELLED")"), 1) << metrics;

  // Three identical calls while the slot is busy: one operation.
  const Digest twin = PutAction("echo twin");
  auto first = Start(twin, rev2::ExecutionStage::QUEUED);
  auto second = Start(twin, rev2::ExecutionStage::QUEUED);
  auto third = Start(twin, rev2::ExecutionStage::QUEUED);
  EXPECT_EQ(second->last.name(), first->last.name());
  EXPECT_EQ(third->last.name(), first->last.name());
  EXPECT_EQ(Scraped(Metrics(), "kiln_actions_merged_total"), 2);

  Cancel(blocker->last.name());  // running: counted when its sandbox stops
  EXPECT_EQ(Finish(*blocker), grpc::StatusCode::CANCELLED);
  for (auto* call : {first.get(), second.get(), third.get()}) EXPECT_EQ(Finish(*call), grpc::StatusCode::OK);

  metrics = Metrics();
  EXPECT_EQ(Scraped(metrics, "kiln_actions_total", R"(outcome="cancelled")"), 2) << metrics;
  EXPECT_EQ(Scraped(metrics, "kiln_actions_total", R"(outcome="success")"), 1) << metrics;
  EXPECT_EQ(Scraped(metrics, "kiln_actions_total"), 3) << metrics;
  EXPECT_EQ(Scraped(metrics, "kiln_actions_merged_total"), 2) << metrics;
}

// Cancelled while its 20,000 input files are staged (EXECUTING is sent
// before staging): CANCELLED for the client, and counted as cancelled, not
// as an error (it used to be: the staging path returned CANCELLED without
// saying the outcome).
TEST_F(ActionMetricsTest, CancelledWhileStagingCountsAsCancelled) {
  rev2::Directory root;
  const Digest content = Put("x");
  for (int i = 0; i < 20000; ++i) {
    auto* file = root.add_files();
    file->set_name(absl::StrCat("f", 100000 + i));
    *file->mutable_digest() = content.ToProto();
  }
  const Digest root_digest = Put(root.SerializeAsString());
  rev2::Command command;
  command.add_arguments("/bin/true");
  rev2::Action action;
  *action.mutable_command_digest() = Put(command.SerializeAsString()).ToProto();
  *action.mutable_input_root_digest() = root_digest.ToProto();
  action.set_do_not_cache(true);
  auto call = Start(Put(action.SerializeAsString()), rev2::ExecutionStage::EXECUTING);
  ASSERT_FALSE(call->last.done());
  Cancel(call->last.name());
  EXPECT_EQ(Finish(*call), grpc::StatusCode::CANCELLED);
  const std::string metrics = Metrics();
  EXPECT_EQ(Scraped(metrics, "kiln_actions_total", R"(outcome="cancelled")"), 1) << metrics;
  EXPECT_EQ(Scraped(metrics, "kiln_actions_total", R"(outcome="error")"), 0) << metrics;
}

// Which actions found their slot's sandbox ready: an action of the default
// kind, once the slot's warm sandbox is prepared, counts as warm; one with a
// limit of its own gets a sandbox started for it and counts as cold.
TEST_F(ActionMetricsTest, WarmAndColdSandboxesAreCounted) {
  double warm = 0;
  int runs = 0;
  for (; runs < 20 && warm == 0; ++runs) {
    // The slot's next warm sandbox prepares while this one is answered.
    if (runs > 0) std::this_thread::sleep_for(std::chrono::milliseconds(200));
    EXPECT_EQ(Finish(*Start(PutAction(absl::StrCat("echo ", runs)), rev2::ExecutionStage::COMPLETED)), 0);
    warm = Scraped(Metrics(), "kiln_sandboxes_total", R"(kind="warm")");
  }
  EXPECT_EQ(warm, 1) << "no action found a warm sandbox in " << runs << " runs";
  const double cold = Scraped(Metrics(), "kiln_sandboxes_total", R"(kind="cold")");
  EXPECT_EQ(cold, runs - 1);

  EXPECT_EQ(Finish(*Start(PutAction("echo limited", {{"pids", "64"}}), rev2::ExecutionStage::COMPLETED)), 0);
  const std::string metrics = Metrics();
  EXPECT_EQ(Scraped(metrics, "kiln_sandboxes_total", R"(kind="warm")"), 1) << metrics;
  EXPECT_EQ(Scraped(metrics, "kiln_sandboxes_total", R"(kind="cold")"), cold + 1) << metrics;
  EXPECT_EQ(Scraped(metrics, "kiln_sandboxes_total"), Scraped(metrics, "kiln_actions_total")) << metrics;
}

}  // namespace
}  // namespace kiln
