// Digests from clients (common/digest.h): whatever ParseDigest accepts is a
// 64-digit lowercase hex hash with a non-negative size, the string and proto
// forms agree, and a digest computed by Kiln always parses.
#include <fuzzer/FuzzedDataProvider.h>

#include <cstddef>
#include <cstdint>
#include <string>

#include "common/digest.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzedDataProvider input(data, size);
  const int64_t blob_size = input.ConsumeIntegral<int64_t>();
  const std::string hash = input.ConsumeRandomLengthString(80);
  const std::string rest = input.ConsumeRemainingBytesAsString();

  absl::StatusOr<kiln::Digest> parsed = kiln::ParseDigest(hash, blob_size);
  kiln::rev2::Digest proto;
  proto.set_hash(hash);
  proto.set_size_bytes(blob_size);
  absl::StatusOr<kiln::Digest> from_proto = kiln::ParseDigest(proto);
  if (parsed.ok() != from_proto.ok()) __builtin_trap();
  if (parsed.ok()) {
    if (parsed->size < 0 || parsed->hash.size() != 64 || *parsed != *from_proto) __builtin_trap();
    for (char c : parsed->hash) {
      if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) __builtin_trap();
    }
    // The "hash/size" form round-trips through the proto form.
    absl::StatusOr<kiln::Digest> again = kiln::ParseDigest(parsed->ToProto());
    if (!again.ok() || *again != *parsed) __builtin_trap();
  } else if (parsed.status().code() != absl::StatusCode::kInvalidArgument) {
    __builtin_trap();
  }

  const kiln::Digest of = kiln::Digest::Of(rest);
  absl::StatusOr<kiln::Digest> own = kiln::ParseDigest(of.ToProto());
  if (!own.ok() || *own != of || of.size != static_cast<int64_t>(rest.size())) __builtin_trap();
  return 0;
}
