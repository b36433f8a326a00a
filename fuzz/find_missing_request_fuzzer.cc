// FindMissingBlobsRequest bytes as a client sends them, read by the raw
// FindMissingBlobs handler's parser (server/api/find_missing_wire.h), whole
// and split into pieces as gRPC's slices split them. The generated parser is
// the oracle: what it accepts with only valid digests, ours accepts with the
// same fields, and our answer for those digests parses back to them; what
// ours accepts, it accepts too, except over-long varints (CodedInputStream
// reads tags and lengths of up to 10 bytes, the generated parser 5).
#include <fuzzer/FuzzedDataProvider.h>

#include <google/protobuf/io/zero_copy_stream_impl_lite.h>

#include <cstddef>
#include <cstdint>
#include <string>

#include "common/digest.h"
#include "server/api/find_missing_wire.h"

namespace rev2 = ::build::bazel::remote::execution::v2;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzedDataProvider input(data, size);
  const int piece = input.ConsumeIntegralInRange<int>(1, 200);
  const std::string bytes = input.ConsumeRemainingBytesAsString();

  absl::StatusOr<kiln::api::FindMissingBlobsCall> whole = kiln::api::ParseFindMissingBlobsRequest(bytes);
  google::protobuf::io::ArrayInputStream stream(bytes.data(), static_cast<int>(bytes.size()), piece);
  absl::StatusOr<kiln::api::FindMissingBlobsCall> pieces = kiln::api::ParseFindMissingBlobsRequest(&stream);
  if (whole.ok() != pieces.ok()) __builtin_trap();
  if (whole.ok() && whole->invalid_digest.ok() != pieces->invalid_digest.ok()) __builtin_trap();
  if (whole.ok() && !whole->invalid_digest.ok() &&
      whole->invalid_digest.code() != absl::StatusCode::kInvalidArgument) {
    __builtin_trap();
  }
  if (!whole.ok() && whole.status().code() != absl::StatusCode::kInvalidArgument) __builtin_trap();

  rev2::FindMissingBlobsRequest generated;
  const bool generated_ok = generated.ParseFromString(bytes);
  bool all_valid = generated_ok;
  for (const auto& digest : generated.blob_digests()) {
    all_valid &= kiln::ValidateDigest(digest.hash(), digest.size_bytes()).ok();
  }
  if (generated_ok && !whole.ok()) __builtin_trap();
  if (all_valid && !whole->invalid_digest.ok()) __builtin_trap();
  if (whole.ok() && generated_ok && !all_valid && whole->invalid_digest.ok()) __builtin_trap();
  if (!whole.ok() || !generated_ok || !all_valid) return 0;

  if (whole->instance_name != generated.instance_name() ||
      whole->digest_function != generated.digest_function() ||
      pieces->instance_name != whole->instance_name) {
    __builtin_trap();
  }
  kiln::api::FindMissingBlobsResponseWriter writer;
  int index = 0;
  for (size_t b = 0; b < whole->blocks.size(); ++b) {
    if (whole->blocks[b].size() != pieces->blocks[b].size()) __builtin_trap();
    for (size_t i = 0; i < whole->blocks[b].size(); ++i, ++index) {
      const auto& digest = whole->blocks[b][i];
      if (index >= generated.blob_digests_size() ||
          digest.key.ToHex() != generated.blob_digests(index).hash() ||
          digest.size != generated.blob_digests(index).size_bytes() ||
          !(pieces->blocks[b][i].key == digest.key) || pieces->blocks[b][i].size != digest.size) {
        __builtin_trap();
      }
      writer.Add(digest);
    }
  }
  if (index != generated.blob_digests_size()) __builtin_trap();
  std::string answer;
  for (const std::string& part : writer.Finish()) answer += part;
  rev2::FindMissingBlobsResponse response;
  if (!response.ParseFromString(answer) || response.missing_blob_digests_size() != index) __builtin_trap();
  for (int i = 0; i < index; ++i) {
    if (response.missing_blob_digests(i).hash() != generated.blob_digests(i).hash() ||
        response.missing_blob_digests(i).size_bytes() != generated.blob_digests(i).size_bytes()) {
      __builtin_trap();
    }
  }
  return 0;
}
