#include "common/rpc_status.h"

#include <gtest/gtest.h>

#include "absl/strings/cord.h"

namespace kiln {
namespace {

TEST(RpcStatusTest, CodeMessageAndDetailsSurviveTheRoundTrip) {
  absl::Status status = absl::FailedPreconditionError("missing blobs");
  status.SetPayload("type.googleapis.com/google.rpc.PreconditionFailure", absl::Cord("bytes"));
  google::rpc::Status rpc = ToRpcStatus(status);
  EXPECT_EQ(rpc.code(), 9);
  EXPECT_EQ(rpc.message(), "missing blobs");
  ASSERT_EQ(rpc.details_size(), 1);
  EXPECT_EQ(rpc.details(0).type_url(), "type.googleapis.com/google.rpc.PreconditionFailure");

  absl::Status back = FromRpcStatus(rpc);
  EXPECT_EQ(back.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(back.message(), "missing blobs");
  EXPECT_EQ(back.GetPayload("type.googleapis.com/google.rpc.PreconditionFailure"), absl::Cord("bytes"));
}

TEST(RpcStatusTest, OkAndUnknownCodes) {
  EXPECT_TRUE(FromRpcStatus(ToRpcStatus(absl::OkStatus())).ok());
  google::rpc::Status odd;
  odd.set_code(99);
  odd.set_message("from the future");
  EXPECT_EQ(FromRpcStatus(odd).code(), absl::StatusCode::kUnknown);
}

}  // namespace
}  // namespace kiln
