// ByteStream resource names (server/api/resource_name.h), read and write
// forms, plain and compressed. A name that parses must carry a well-formed
// digest and must parse to the same fields when written back canonically.
#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/strings/str_cat.h"
#include "server/api/resource_name.h"

namespace {

bool WellFormed(const kiln::Digest& digest) {
  if (digest.hash.size() != 64 || digest.size < 0) return false;
  for (char c : digest.hash) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

std::string BlobPart(const kiln::api::BlobResource& r) {
  return absl::StrCat(r.zstd ? "compressed-blobs/zstd/" : "blobs/", r.digest.hash, "/", r.digest.size);
}

bool Same(const kiln::api::BlobResource& a, const kiln::api::BlobResource& b) {
  return a.instance == b.instance && a.upload_id == b.upload_id && a.digest == b.digest && a.zstd == b.zstd;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using kiln::api::BlobResource;
  const std::string name(reinterpret_cast<const char*>(data), size);

  absl::StatusOr<BlobResource> read = kiln::api::ParseReadResource(name);
  if (read.ok()) {
    if (!WellFormed(read->digest) || !read->upload_id.empty()) __builtin_trap();
    std::string canonical = read->instance.empty() ? BlobPart(*read)
                                                   : absl::StrCat(read->instance, "/", BlobPart(*read));
    absl::StatusOr<BlobResource> again = kiln::api::ParseReadResource(canonical);
    if (!again.ok() || !Same(*read, *again)) __builtin_trap();
  } else if (read.status().code() != absl::StatusCode::kInvalidArgument) {
    __builtin_trap();
  }

  absl::StatusOr<BlobResource> write = kiln::api::ParseWriteResource(name);
  if (write.ok()) {
    if (!WellFormed(write->digest)) __builtin_trap();
    std::string tail = absl::StrCat("uploads/", write->upload_id, "/", BlobPart(*write));
    std::string canonical = write->instance.empty() ? tail : absl::StrCat(write->instance, "/", tail);
    absl::StatusOr<BlobResource> again = kiln::api::ParseWriteResource(canonical);
    if (!again.ok() || !Same(*write, *again)) __builtin_trap();
  } else if (write.status().code() != absl::StatusCode::kInvalidArgument) {
    __builtin_trap();
  }
  return 0;
}
