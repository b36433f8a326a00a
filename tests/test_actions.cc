#include "tests/test_actions.h"

#include <chrono>

#include <gtest/gtest.h>

#include "build/bazel/remote/execution/v2/remote_execution.grpc.pb.h"

namespace kiln::testing {

namespace rev2 = ::build::bazel::remote::execution::v2;

Digest UploadBlob(const std::shared_ptr<grpc::Channel>& channel, const std::string& data,
                  const CallSetup& setup) {
  rev2::BatchUpdateBlobsRequest request;
  auto* entry = request.add_requests();
  *entry->mutable_digest() = Digest::Of(data).ToProto();
  entry->set_data(data);
  rev2::BatchUpdateBlobsResponse response;
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
  if (setup) setup(context);
  grpc::Status status = rev2::ContentAddressableStorage::NewStub(channel)->BatchUpdateBlobs(&context, request, &response);
  EXPECT_TRUE(status.ok()) << status.error_message();
  for (const auto& answer : response.responses()) {
    EXPECT_EQ(answer.status().code(), 0) << answer.status().message();
  }
  return Digest::Of(data);
}

Digest UploadShellAction(const std::shared_ptr<grpc::Channel>& channel, const std::string& script,
                         const ShellActionOptions& options, const CallSetup& setup) {
  rev2::Command command;
  for (const char* arg : {"/bin/sh", "-c"}) command.add_arguments(arg);
  command.add_arguments(script);
  auto* path = command.add_environment_variables();
  path->set_name("PATH");
  path->set_value("/usr/bin:/bin");
  rev2::Action action;
  *action.mutable_command_digest() = UploadBlob(channel, command.SerializeAsString(), setup).ToProto();
  *action.mutable_input_root_digest() = UploadBlob(channel, rev2::Directory().SerializeAsString(), setup).ToProto();
  action.set_salt(options.salt);
  action.set_do_not_cache(options.do_not_cache);
  for (const auto& [name, value] : options.platform) {
    auto* property = action.mutable_platform()->add_properties();
    property->set_name(name);
    property->set_value(value);
  }
  return UploadBlob(channel, action.SerializeAsString(), setup);
}

}  // namespace kiln::testing
