// Operations belong to the principal that submitted them (issue 10): against
// the real kiln-worker binary, one principal cannot see, follow, read the
// live output of, cancel or delete another's operation; an operations admin
// can; identical actions of two principals are never merged into one
// operation; ListOperations pages; DeleteOperation forgets finished ones.
#include <stdlib.h>

#include <chrono>
#include <fstream>
#include <set>
#include <string>
#include <thread>

#include <grpcpp/create_channel.h>

#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "build/bazel/remote/execution/v2/remote_execution.grpc.pb.h"
#include "common/digest.h"
#include "common/posix.h"
#include "common/sha256.h"
#include "google/bytestream/bytestream.grpc.pb.h"
#include "google/longrunning/operations.grpc.pb.h"
#include "tests/test_actions.h"
#include "tests/worker_process.h"

namespace kiln {
namespace {

namespace rev2 = ::build::bazel::remote::execution::v2;
namespace bs = ::google::bytestream;
namespace lro = ::google::longrunning;
using grpc::StatusCode;
using testing::WorkerProcess;

const char kAllGrants[] =
    R"(["cas-read", "cas-write", "ac-read", "ac-write", "execute", "operations")";

class OperationOwnershipTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string pattern = ::testing::TempDir() + "/kiln-owner-XXXXXX";
    dir_ = mkdtemp(pattern.data());
    auto entry = [](const std::string& name, const std::string& permissions) {
      return absl::StrCat(R"({"name": ")", name, R"(", "token_sha256": ")", Sha256::HexOf("token-" + name),
                          R"(", "grants": [{"permissions": )", permissions, "]}]}");
    };
    std::ofstream(dir_ + "/principals.json")
        << R"({"principals": [)" << entry("alice", kAllGrants) << ","
        << entry("mallory", kAllGrants) << "," << entry("admin", std::string(kAllGrants) + R"(, "operations-admin")")
        << "]}";
    worker_ = std::make_unique<WorkerProcess>(std::vector<std::string>{
        "--listen=127.0.0.1:0", "--metrics_listen=", "--state_dir=" + dir_ + "/state",
        "--concurrency=2", "--io_threads=2", "--token_file=" + dir_ + "/principals.json"});
    ASSERT_TRUE(worker_->started());
    channel_ = grpc::CreateChannel(worker_->address(), grpc::InsecureChannelCredentials());
  }
  void TearDown() override {
    worker_.reset();
    (void)RemoveTree(dir_);
  }

  static void As(grpc::ClientContext* context, const std::string& principal) {
    context->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    context->AddMetadata("authorization", "Bearer token-" + principal);
  }

  static void AsAlice(grpc::ClientContext& context) { As(&context, "alice"); }
  Digest Put(const std::string& data) { return testing::UploadBlob(channel_, data, AsAlice); }
  Digest PutAction(const std::string& script, const std::string& salt = "") {
    return testing::UploadShellAction(channel_, script, {.salt = salt}, AsAlice);
  }

  // An Execute stream of `principal`, read until the operation is EXECUTING
  // with its live streams named.
  struct Started {
    std::unique_ptr<grpc::ClientContext> context = std::make_unique<grpc::ClientContext>();
    std::unique_ptr<grpc::ClientReader<lro::Operation>> reader;
    std::string name;
    std::string stdout_stream;
  };
  Started Start(const Digest& action, const std::string& principal) {
    Started started;
    As(started.context.get(), principal);
    rev2::ExecuteRequest request;
    *request.mutable_action_digest() = action.ToProto();
    request.set_skip_cache_lookup(true);
    started.reader = rev2::Execution::NewStub(channel_)->Execute(started.context.get(), request);
    lro::Operation operation;
    while (started.reader->Read(&operation)) {
      rev2::ExecuteOperationMetadata metadata;
      operation.metadata().UnpackTo(&metadata);
      started.name = operation.name();
      if (!metadata.stdout_stream_name().empty()) {
        started.stdout_stream = metadata.stdout_stream_name();
        break;
      }
    }
    EXPECT_FALSE(started.stdout_stream.empty()) << "the operation never ran";
    return started;
  }

  grpc::Status Get(const std::string& name, const std::string& principal, lro::Operation* out) {
    grpc::ClientContext context;
    As(&context, principal);
    lro::GetOperationRequest request;
    request.set_name(name);
    return lro::Operations::NewStub(channel_)->GetOperation(&context, request, out);
  }
  grpc::Status Wait(const std::string& name, const std::string& principal) {
    grpc::ClientContext context;
    As(&context, principal);
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(2));
    rev2::WaitExecutionRequest request;
    request.set_name(name);
    auto reader = rev2::Execution::NewStub(channel_)->WaitExecution(&context, request);
    lro::Operation operation;
    while (reader->Read(&operation)) {
    }
    return reader->Finish();
  }
  grpc::Status Cancel(const std::string& name, const std::string& principal) {
    grpc::ClientContext context;
    As(&context, principal);
    lro::CancelOperationRequest request;
    request.set_name(name);
    google::protobuf::Empty empty;
    return lro::Operations::NewStub(channel_)->CancelOperation(&context, request, &empty);
  }
  grpc::Status Delete(const std::string& name, const std::string& principal) {
    grpc::ClientContext context;
    As(&context, principal);
    lro::DeleteOperationRequest request;
    request.set_name(name);
    google::protobuf::Empty empty;
    return lro::Operations::NewStub(channel_)->DeleteOperation(&context, request, &empty);
  }
  // Every operation `principal` can list, following the pages.
  std::set<std::string> List(const std::string& principal, int page_size, int* pages) {
    std::set<std::string> names;
    std::string token;
    *pages = 0;
    do {
      grpc::ClientContext context;
      As(&context, principal);
      lro::ListOperationsRequest request;
      request.set_page_size(page_size);
      request.set_page_token(token);
      lro::ListOperationsResponse response;
      grpc::Status status = lro::Operations::NewStub(channel_)->ListOperations(&context, request, &response);
      EXPECT_TRUE(status.ok()) << status.error_message();
      if (!status.ok()) break;
      EXPECT_LE(response.operations_size(), page_size);
      for (const auto& operation : response.operations()) {
        EXPECT_TRUE(names.insert(operation.name()).second) << operation.name() << " listed twice";
      }
      token = response.next_page_token();
      ++*pages;
    } while (!token.empty() && *pages < 100);
    return names;
  }
  // The first bytes of a live stream, as `principal` reads it.
  grpc::Status ReadLive(const std::string& stream, const std::string& principal, std::string* data) {
    grpc::ClientContext context;
    As(&context, principal);
    bs::ReadRequest request;
    request.set_resource_name(stream);
    auto reader = bs::ByteStream::NewStub(channel_)->Read(&context, request);
    bs::ReadResponse response;
    while (reader->Read(&response)) {
      *data += response.data();
      if (data->find('\n') != std::string::npos) {
        context.TryCancel();
        break;
      }
    }
    grpc::Status status = reader->Finish();
    return data->empty() ? status : grpc::Status::OK;
  }

  std::string dir_;
  std::unique_ptr<WorkerProcess> worker_;
  std::shared_ptr<grpc::Channel> channel_;
};

TEST_F(OperationOwnershipTest, AnotherPrincipalCannotSeeReadCancelOrDeleteAnOperation) {
  const Digest action = PutAction("echo the-secret-token-42; sleep 60");
  Started victim = Start(action, "alice");
  ASSERT_FALSE(victim.name.empty());

  lro::Operation operation;
  grpc::Status get = Get(victim.name, "mallory", &operation);
  EXPECT_EQ(get.error_code(), StatusCode::NOT_FOUND) << get.error_message();
  EXPECT_EQ(Wait(victim.name, "mallory").error_code(), StatusCode::NOT_FOUND);
  EXPECT_EQ(Cancel(victim.name, "mallory").error_code(), StatusCode::NOT_FOUND);
  EXPECT_EQ(Delete(victim.name, "mallory").error_code(), StatusCode::NOT_FOUND);
  std::string stolen;
  grpc::Status read = ReadLive(victim.stdout_stream, "mallory", &stolen);
  EXPECT_EQ(read.error_code(), StatusCode::NOT_FOUND) << read.error_message();
  EXPECT_EQ(stolen, "");
  int pages = 0;
  EXPECT_EQ(List("mallory", 100, &pages).count(victim.name), 0u);

  // The same action from another principal is its own operation, not a
  // window onto the victim's.
  Started own = Start(action, "mallory");
  EXPECT_NE(own.name, victim.name);
  EXPECT_EQ(List("mallory", 100, &pages), std::set<std::string>({own.name}));

  // The owner and an operations admin see it and its output.
  EXPECT_TRUE(Get(victim.name, "alice", &operation).ok());
  EXPECT_FALSE(operation.done());
  std::string output;
  EXPECT_TRUE(ReadLive(victim.stdout_stream, "admin", &output).ok());
  EXPECT_EQ(output, "the-secret-token-42\n");
  EXPECT_EQ(List("alice", 100, &pages), std::set<std::string>({victim.name}));
  EXPECT_EQ(List("admin", 100, &pages), std::set<std::string>({victim.name, own.name}));

  // A running operation is cancelled, not deleted; then its owner deletes it.
  grpc::Status early = Delete(victim.name, "alice");
  EXPECT_EQ(early.error_code(), StatusCode::FAILED_PRECONDITION) << early.error_message();
  EXPECT_TRUE(Cancel(victim.name, "alice").ok());
  EXPECT_TRUE(Cancel(own.name, "admin").ok());
  lro::Operation last;
  while (victim.reader->Read(&last)) {
  }
  EXPECT_TRUE(victim.reader->Finish().ok());
  EXPECT_TRUE(last.done());
  rev2::ExecuteResponse response;
  ASSERT_TRUE(last.response().UnpackTo(&response));
  EXPECT_EQ(response.status().code(), static_cast<int>(StatusCode::CANCELLED));
  EXPECT_TRUE(Delete(victim.name, "alice").ok());
  EXPECT_EQ(Get(victim.name, "alice", &operation).error_code(), StatusCode::NOT_FOUND);
  EXPECT_EQ(List("admin", 100, &pages), std::set<std::string>({own.name}));
}

TEST_F(OperationOwnershipTest, ListOperationsPagesThroughEveryOperation) {
  std::set<std::string> submitted;
  for (int i = 0; i < 7; ++i) {
    grpc::ClientContext context;
    As(&context, "alice");
    rev2::ExecuteRequest request;
    *request.mutable_action_digest() = PutAction("true", absl::StrCat("salt-", i)).ToProto();
    auto reader = rev2::Execution::NewStub(channel_)->Execute(&context, request);
    lro::Operation operation;
    while (reader->Read(&operation)) submitted.insert(operation.name());
    ASSERT_TRUE(reader->Finish().ok());
  }
  ASSERT_EQ(submitted.size(), 7u);
  int pages = 0;
  EXPECT_EQ(List("alice", 3, &pages), submitted);
  EXPECT_EQ(pages, 3);
  EXPECT_EQ(List("alice", 7, &pages), submitted);
  EXPECT_EQ(pages, 1);
  EXPECT_EQ(List("mallory", 3, &pages), std::set<std::string>());

  grpc::ClientContext context;
  As(&context, "alice");
  lro::ListOperationsRequest filtered;
  filtered.set_filter("done = true");
  lro::ListOperationsResponse response;
  grpc::Status status = lro::Operations::NewStub(channel_)->ListOperations(&context, filtered, &response);
  EXPECT_EQ(status.error_code(), StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(status.error_message().find("filter"), std::string::npos) << status.error_message();
}

}  // namespace
}  // namespace kiln
