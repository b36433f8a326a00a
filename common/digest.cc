#include "common/digest.h"

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "common/sha256.h"
#include "common/status_macros.h"

namespace kiln {

std::string Digest::ToString() const { return absl::StrCat(hash, "/", size); }

rev2::Digest Digest::ToProto() const {
  rev2::Digest proto;
  proto.set_hash(hash);
  proto.set_size_bytes(size);
  return proto;
}

Digest Digest::Of(absl::string_view data) {
  return Digest{Sha256::HexOf(data), static_cast<int64_t>(data.size())};
}

absl::StatusOr<Digest> ParseDigest(absl::string_view hash, int64_t size) {
  RETURN_IF_ERROR(ValidateDigest(hash, size));
  return Digest{std::string(hash), size};
}

absl::Status ValidateDigest(absl::string_view hash, int64_t size) {
  if (hash.size() != 64) {
    return absl::InvalidArgumentError(absl::StrCat(
        "digest hash \"", hash.substr(0, 80), "\" has ", hash.size(),
        " characters; this server only supports SHA256 (64 lowercase hex digits)"));
  }
  // Without a branch per character, so that the compiler can vectorize it:
  // FindMissingBlobs checks tens of thousands of digests per call.
  bool hex = true;
  for (unsigned char c : hash) {
    hex &= (static_cast<unsigned char>(c - '0') < 10) | (static_cast<unsigned char>(c - 'a') < 6);
  }
  if (!hex) {
    return absl::InvalidArgumentError(
        absl::StrCat("digest hash \"", hash, "\" is not lowercase hexadecimal"));
  }
  if (size < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("digest ", hash, " has a negative size_bytes (", size, ")"));
  }
  return absl::OkStatus();
}

absl::StatusOr<Digest> ParseDigest(const rev2::Digest& proto) {
  return ParseDigest(proto.hash(), proto.size_bytes());
}

absl::Status CheckDigestFunction(rev2::DigestFunction::Value function) {
  if (function == rev2::DigestFunction::UNKNOWN || function == rev2::DigestFunction::SHA256) {
    return absl::OkStatus();
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "digest_function ", rev2::DigestFunction::Value_Name(function),
      " is not supported; this server supports SHA256 only"));
}

}  // namespace kiln
