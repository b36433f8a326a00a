// Finished operations are kept for WaitExecution and GetOperation, but not
// without bound: each holds its ExecuteResponse, and at a steady 70 actions
// a second ten minutes' worth grew the worker by ~170 MiB. Against the real
// kiln-worker with --max_kept_operations=3.
#include <stdlib.h>

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include <grpcpp/create_channel.h>

#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "build/bazel/remote/execution/v2/remote_execution.grpc.pb.h"
#include "common/posix.h"
#include "google/longrunning/operations.grpc.pb.h"
#include "tests/test_actions.h"
#include "tests/worker_process.h"

namespace kiln {
namespace {

namespace rev2 = ::build::bazel::remote::execution::v2;
namespace lro = ::google::longrunning;
using testing::WorkerProcess;

class OperationRetentionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string pattern = ::testing::TempDir() + "/kiln-retention-XXXXXX";
    dir_ = mkdtemp(pattern.data());
    worker_ = std::make_unique<WorkerProcess>(std::vector<std::string>{
        "--listen=127.0.0.1:0", "--metrics_listen=", "--state_dir=" + dir_ + "/state", "--concurrency=1",
        "--max_kept_operations=3"});
    ASSERT_TRUE(worker_->started());
    channel_ = grpc::CreateChannel(worker_->address(), grpc::InsecureChannelCredentials());
  }
  void TearDown() override {
    worker_.reset();
    (void)RemoveTree(dir_);
  }

  // Executes `script` to the end; returns its operation's name.
  std::string Run(const std::string& script) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
    rev2::ExecuteRequest request;
    *request.mutable_action_digest() = testing::UploadShellAction(channel_, script).ToProto();
    auto reader = rev2::Execution::NewStub(channel_)->Execute(&context, request);
    lro::Operation operation;
    while (reader->Read(&operation)) {
    }
    EXPECT_TRUE(reader->Finish().ok());
    EXPECT_TRUE(operation.done());
    return operation.name();
  }
  grpc::StatusCode Get(const std::string& name) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    lro::GetOperationRequest request;
    request.set_name(name);
    lro::Operation operation;
    grpc::Status status = lro::Operations::NewStub(channel_)->GetOperation(&context, request, &operation);
    if (status.ok()) EXPECT_TRUE(operation.done());
    return status.error_code();
  }

  std::string dir_;
  std::unique_ptr<WorkerProcess> worker_;
  std::shared_ptr<grpc::Channel> channel_;
};

TEST_F(OperationRetentionTest, OnlyTheNewestFinishedOperationsAreKept) {
  std::vector<std::string> names;
  for (int i = 0; i < 5; ++i) names.push_back(Run(absl::StrCat("echo ", i)));
  EXPECT_EQ(Get(names[0]), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(Get(names[1]), grpc::StatusCode::NOT_FOUND);
  for (int i = 2; i < 5; ++i) EXPECT_EQ(Get(names[i]), grpc::StatusCode::OK) << i;

  // A deleted one leaves its place to no other: the next three are kept.
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
  lro::DeleteOperationRequest request;
  request.set_name(names[4]);
  google::protobuf::Empty empty;
  ASSERT_TRUE(lro::Operations::NewStub(channel_)->DeleteOperation(&context, request, &empty).ok());
  for (int i = 5; i < 8; ++i) names.push_back(Run(absl::StrCat("echo ", i)));
  for (int i = 0; i < 5; ++i) EXPECT_EQ(Get(names[i]), grpc::StatusCode::NOT_FOUND) << i;
  for (int i = 5; i < 8; ++i) EXPECT_EQ(Get(names[i]), grpc::StatusCode::OK) << i;
}

}  // namespace
}  // namespace kiln
