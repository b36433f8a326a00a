// gRPC server reflection (v1 and v1alpha) and Health against the real
// kiln-worker binary, as generic clients (grpcurl, grpc_cli, load balancers)
// use them: every served service is listed and resolvable with its
// dependencies, Health answers for each service by name, both stay open when
// authorization is on, and --noreflection turns reflection off.
#include <stdlib.h>

#include <chrono>
#include <fstream>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include <google/protobuf/descriptor.h>
#include <google/protobuf/descriptor.pb.h>
#include <google/protobuf/descriptor_database.h>
#include <grpcpp/create_channel.h>
#include <gtest/gtest.h>

#include "build/bazel/remote/execution/v2/remote_execution.grpc.pb.h"
#include "common/posix.h"
#include "common/sha256.h"
#include "google/bytestream/bytestream.grpc.pb.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpc/reflection/v1/reflection.grpc.pb.h"
#include "grpc/reflection/v1alpha/reflection.grpc.pb.h"
#include "tests/worker_process.h"

namespace kiln {
namespace {

using testing::WorkerProcess;
namespace rev2 = build::bazel::remote::execution::v2;
namespace health = grpc::health::v1;

const std::set<std::string> kServed = {
    "build.bazel.remote.execution.v2.Capabilities",
    "build.bazel.remote.execution.v2.ContentAddressableStorage",
    "build.bazel.remote.execution.v2.ActionCache",
    "build.bazel.remote.execution.v2.Execution",
    "google.bytestream.ByteStream",
    "google.longrunning.Operations",
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
};

std::chrono::system_clock::time_point Soon() {
  return std::chrono::system_clock::now() + std::chrono::seconds(20);
}

// One reflection stream of version V (v1 or v1alpha): sends `requests` in
// order and returns the answers.
template <class V>
grpc::Status Reflect(const std::shared_ptr<grpc::Channel>& channel,
                     const std::vector<typename V::Request>& requests,
                     std::vector<typename V::Response>* responses) {
  auto stub = V::Service::NewStub(channel);
  grpc::ClientContext context;
  context.set_deadline(Soon());
  auto stream = stub->ServerReflectionInfo(&context);
  for (const auto& request : requests) {
    if (!stream->Write(request)) break;
    typename V::Response response;
    if (!stream->Read(&response)) break;
    responses->push_back(response);
  }
  stream->WritesDone();
  return stream->Finish();
}

struct V1 {
  using Service = grpc::reflection::v1::ServerReflection;
  using Request = grpc::reflection::v1::ServerReflectionRequest;
  using Response = grpc::reflection::v1::ServerReflectionResponse;
};
struct V1Alpha {
  using Service = grpc::reflection::v1alpha::ServerReflection;
  using Request = grpc::reflection::v1alpha::ServerReflectionRequest;
  using Response = grpc::reflection::v1alpha::ServerReflectionResponse;
};

template <class V>
std::set<std::string> ListServices(const std::shared_ptr<grpc::Channel>& channel, grpc::Status* status) {
  typename V::Request request;
  request.set_list_services("*");
  std::vector<typename V::Response> responses;
  *status = Reflect<V>(channel, {request}, &responses);
  std::set<std::string> names;
  for (const auto& response : responses) {
    for (const auto& service : response.list_services_response().service()) names.insert(service.name());
  }
  return names;
}

// Asks for the file of each symbol on one stream, builds a fresh descriptor
// pool from only what came back (as grpcurl does), and checks that every
// service resolves there with the methods Kiln's own descriptors have.
template <class V>
void CheckEverySymbolResolves(const std::shared_ptr<grpc::Channel>& channel) {
  std::vector<typename V::Request> requests;
  for (const std::string& name : kServed) {
    typename V::Request request;
    request.set_host("localhost");
    request.set_file_containing_symbol(name);
    requests.push_back(request);
  }
  typename V::Request unknown;
  unknown.set_file_containing_symbol("no.such.Service");
  requests.push_back(unknown);
  typename V::Request by_name;
  by_name.set_file_by_filename("build/bazel/remote/execution/v2/remote_execution.proto");
  requests.push_back(by_name);

  std::vector<typename V::Response> responses;
  grpc::Status status = Reflect<V>(channel, requests, &responses);
  ASSERT_TRUE(status.ok()) << status.error_message();
  ASSERT_EQ(responses.size(), requests.size());

  google::protobuf::SimpleDescriptorDatabase database;
  std::set<std::string> added;
  for (size_t i = 0; i < kServed.size(); ++i) {
    const auto& response = responses[i];
    EXPECT_EQ(response.valid_host(), "localhost");
    EXPECT_EQ(response.original_request().file_containing_symbol(),
              requests[i].file_containing_symbol());
    ASSERT_TRUE(response.has_file_descriptor_response()) << requests[i].file_containing_symbol();
    for (const std::string& bytes : response.file_descriptor_response().file_descriptor_proto()) {
      google::protobuf::FileDescriptorProto file;
      ASSERT_TRUE(file.ParseFromString(bytes));
      if (added.insert(file.name()).second) database.Add(file);  // each stream sends a file once
    }
  }
  const auto& missing = responses[kServed.size()];
  ASSERT_TRUE(missing.has_error_response());
  EXPECT_EQ(missing.error_response().error_code(), 5);  // NOT_FOUND
  EXPECT_TRUE(responses[kServed.size() + 1].has_file_descriptor_response());

  google::protobuf::DescriptorPool pool(&database);
  // Kiln's own descriptors to compare with; these link them into the test.
  google::bytestream::ReadRequest::descriptor();
  google::longrunning::Operation::descriptor();
  for (const std::string& name : kServed) {
    const google::protobuf::ServiceDescriptor* remote = pool.FindServiceByName(name);
    ASSERT_NE(remote, nullptr) << name << " does not resolve from the reflected files alone";
    const google::protobuf::ServiceDescriptor* local =
        google::protobuf::DescriptorPool::generated_pool()->FindServiceByName(name);
    ASSERT_NE(local, nullptr) << name;
    ASSERT_EQ(remote->method_count(), local->method_count()) << name;
    for (int m = 0; m < local->method_count(); ++m) {
      EXPECT_EQ(remote->method(m)->name(), local->method(m)->name());
      EXPECT_EQ(remote->method(m)->input_type()->full_name(), local->method(m)->input_type()->full_name());
    }
  }
}

health::HealthCheckResponse::ServingStatus Check(const std::shared_ptr<grpc::Channel>& channel,
                                                 const std::string& service, grpc::Status* status) {
  grpc::ClientContext context;
  context.set_deadline(Soon());
  health::HealthCheckRequest request;
  request.set_service(service);
  health::HealthCheckResponse response;
  *status = health::Health::NewStub(channel)->Check(&context, request, &response);
  return response.status();
}

class ReflectionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string pattern = ::testing::TempDir() + "/kiln-reflection-XXXXXX";
    dir_ = mkdtemp(pattern.data());
  }
  void TearDown() override { (void)RemoveTree(dir_); }

  std::vector<std::string> Flags() {
    return {"--listen=127.0.0.1:0", "--metrics_listen=", "--state_dir=" + dir_ + "/state",
            "--concurrency=1"};
  }
  static std::shared_ptr<grpc::Channel> Channel(const WorkerProcess& worker) {
    return grpc::CreateChannel(worker.address(), grpc::InsecureChannelCredentials());
  }

  std::string dir_;
};

TEST_F(ReflectionTest, BothVersionsListEveryServedServiceHealthIncluded) {
  WorkerProcess worker(Flags());
  ASSERT_TRUE(worker.started());
  auto channel = Channel(worker);
  grpc::Status status;
  EXPECT_EQ(ListServices<V1>(channel, &status), kServed);
  EXPECT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(ListServices<V1Alpha>(channel, &status), kServed);
  EXPECT_TRUE(status.ok()) << status.error_message();
}

TEST_F(ReflectionTest, EveryServiceResolvesWithItsDependenciesInBothVersions) {
  WorkerProcess worker(Flags());
  ASSERT_TRUE(worker.started());
  auto channel = Channel(worker);
  {
    SCOPED_TRACE("v1");
    CheckEverySymbolResolves<V1>(channel);
  }
  {
    SCOPED_TRACE("v1alpha");
    CheckEverySymbolResolves<V1Alpha>(channel);
  }
}

TEST_F(ReflectionTest, HealthAnswersServingForEachServedServiceByName) {
  WorkerProcess worker(Flags());
  ASSERT_TRUE(worker.started());
  auto channel = Channel(worker);
  grpc::Status status;
  EXPECT_EQ(Check(channel, "", &status), health::HealthCheckResponse::SERVING);
  for (const std::string& name : kServed) {
    if (name.rfind("grpc.", 0) == 0) continue;  // Health and reflection are not REAPI services
    EXPECT_EQ(Check(channel, name, &status), health::HealthCheckResponse::SERVING) << name;
    EXPECT_TRUE(status.ok()) << name << ": " << status.error_message();
  }
  Check(channel, "no.such.Service", &status);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::NOT_FOUND);
}

TEST_F(ReflectionTest, StorageOnlyWorkerNeitherListsNorReportsExecution) {
  std::vector<std::string> flags = Flags();
  flags.back() = "--concurrency=0";
  WorkerProcess worker(flags);
  ASSERT_TRUE(worker.started());
  auto channel = Channel(worker);
  grpc::Status status;
  std::set<std::string> listed = ListServices<V1>(channel, &status);
  EXPECT_EQ(listed.count("build.bazel.remote.execution.v2.Execution"), 0u);
  EXPECT_EQ(listed.count("build.bazel.remote.execution.v2.ContentAddressableStorage"), 1u);
  Check(channel, "build.bazel.remote.execution.v2.Execution", &status);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::NOT_FOUND);
}

TEST_F(ReflectionTest, ReflectionAndHealthNeedNoCredentialsWhenAuthorizationIsOn) {
  const std::string principals = dir_ + "/principals.json";
  {
    std::ofstream out(principals);
    out << R"({"principals": [{"name": "ci", "token_sha256": ")" << Sha256::HexOf("secret")
        << R"(", "grants": [{"instance_prefix": "", "permissions": ["cas-read"]}]}]})";
  }
  std::vector<std::string> flags = Flags();
  flags.push_back("--token_file=" + principals);
  WorkerProcess worker(flags);
  ASSERT_TRUE(worker.started());
  auto channel = Channel(worker);
  grpc::Status status;
  EXPECT_EQ(ListServices<V1>(channel, &status), kServed);
  EXPECT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(ListServices<V1Alpha>(channel, &status), kServed);
  EXPECT_EQ(Check(channel, "build.bazel.remote.execution.v2.Execution", &status),
            health::HealthCheckResponse::SERVING);
  // ... while the REAPI itself still wants credentials.
  grpc::ClientContext context;
  context.set_deadline(Soon());
  rev2::ServerCapabilities capabilities;
  status = rev2::Capabilities::NewStub(channel)->GetCapabilities(&context, {}, &capabilities);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAUTHENTICATED);
}

TEST_F(ReflectionTest, NoReflectionFlagTurnsBothVersionsOffButNotHealth) {
  for (const char* off : {"--noreflection", "--reflection=false"}) {
    SCOPED_TRACE(off);
    std::vector<std::string> flags = Flags();
    flags.push_back(off);
    WorkerProcess worker(flags);
    ASSERT_TRUE(worker.started());
    auto channel = Channel(worker);
    grpc::Status status;
    EXPECT_TRUE(ListServices<V1>(channel, &status).empty());
    EXPECT_EQ(status.error_code(), grpc::StatusCode::UNIMPLEMENTED);
    EXPECT_TRUE(ListServices<V1Alpha>(channel, &status).empty());
    EXPECT_EQ(status.error_code(), grpc::StatusCode::UNIMPLEMENTED);
    EXPECT_EQ(Check(channel, "build.bazel.remote.execution.v2.Execution", &status),
              health::HealthCheckResponse::SERVING);
    worker.Stop(SIGKILL);
    (void)RemoveTree(dir_ + "/state");
  }
}

}  // namespace
}  // namespace kiln
