// The digest of a blob: its SHA-256 and its size. Every digest that enters
// Kiln from the network goes through ParseDigest, so code behind it may rely
// on a well-formed, lowercase, 64-hex-digit hash and a non-negative size.
#ifndef KILN_COMMON_DIGEST_H_
#define KILN_COMMON_DIGEST_H_

#include <cstdint>
#include <string>
#include "absl/strings/string_view.h"

#include "absl/status/statusor.h"
#include "build/bazel/remote/execution/v2/remote_execution.pb.h"

namespace kiln {

namespace rev2 = ::build::bazel::remote::execution::v2;

struct Digest {
  std::string hash;  // 64 lowercase hex digits
  int64_t size = 0;

  bool operator==(const Digest& o) const { return size == o.size && hash == o.hash; }
  bool operator!=(const Digest& o) const { return !(*this == o); }
  template <typename H>
  friend H AbslHashValue(H h, const Digest& d) {
    return H::combine(std::move(h), d.hash, d.size);
  }

  // "hash/size", the form used in ByteStream names and error messages.
  std::string ToString() const;
  rev2::Digest ToProto() const;
  static Digest Of(absl::string_view data);
};

// Validates a digest received from a client. INVALID_ARGUMENT names the flaw.
absl::StatusOr<Digest> ParseDigest(const rev2::Digest& proto);
absl::StatusOr<Digest> ParseDigest(absl::string_view hash, int64_t size);
// What ParseDigest checks, without copying the hash.
absl::Status ValidateDigest(absl::string_view hash, int64_t size);

// Checks a request's digest_function: unset (inferred from the hash length)
// and SHA256 are accepted, anything else is INVALID_ARGUMENT.
absl::Status CheckDigestFunction(rev2::DigestFunction::Value function);

}  // namespace kiln

#endif  // KILN_COMMON_DIGEST_H_
