#include "server/api/find_missing_wire.h"

#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/stubs/common.h>
#include <google/protobuf/wire_format_lite.h>

#include "absl/strings/str_cat.h"
#include "common/digest.h"

namespace kiln::api {
namespace {

using google::protobuf::io::CodedInputStream;
using google::protobuf::io::CodedOutputStream;
using google::protobuf::internal::WireFormatLite;

constexpr uint32_t Tag(int field, WireFormatLite::WireType type) {
  return static_cast<uint32_t>(field << 3) | type;
}
// FindMissingBlobsRequest
constexpr uint32_t kInstanceNameTag = Tag(1, WireFormatLite::WIRETYPE_LENGTH_DELIMITED);
constexpr uint32_t kBlobDigestsTag = Tag(2, WireFormatLite::WIRETYPE_LENGTH_DELIMITED);
constexpr uint32_t kDigestFunctionTag = Tag(3, WireFormatLite::WIRETYPE_VARINT);
// Digest
constexpr uint32_t kHashTag = Tag(1, WireFormatLite::WIRETYPE_LENGTH_DELIMITED);
constexpr uint32_t kSizeBytesTag = Tag(2, WireFormatLite::WIRETYPE_VARINT);
// FindMissingBlobsResponse
constexpr uint32_t kMissingBlobDigestsTag = Tag(2, WireFormatLite::WIRETYPE_LENGTH_DELIMITED);

absl::Status Undecodable() {
  return absl::InvalidArgumentError("the FindMissingBlobsRequest does not parse");
}

// Reads a length-delimited field's bytes as a view into `bytes`.
bool ReadView(CodedInputStream& in, absl::string_view bytes, absl::string_view* view) {
  uint32_t length;
  if (!in.ReadVarint32(&length)) return false;
  const int position = in.CurrentPosition();
  if (!in.Skip(static_cast<int>(length))) return false;  // fails past the end or a limit
  *view = bytes.substr(position, length);
  return true;
}

// Reads one Digest, whose length prefix is next in `in`.
bool ReadDigest(CodedInputStream& in, absl::string_view bytes, cas::BlobStore::DigestRef* digest) {
  int length;
  if (!in.ReadVarintSizeAsInt(&length)) return false;
  const auto limit = in.PushLimit(length);
  if (in.BytesUntilLimit() != length) return false;  // the message runs past its parent
  *digest = {absl::string_view(), 0};
  while (in.BytesUntilLimit() > 0) {
    const uint32_t tag = in.ReadTag();
    if (tag == kHashTag) {
      if (!ReadView(in, bytes, &digest->hash)) return false;
    } else if (tag == kSizeBytesTag) {
      uint64_t size;
      if (!in.ReadVarint64(&size)) return false;
      digest->size = static_cast<int64_t>(size);
    } else if (WireFormatLite::GetTagFieldNumber(tag) == 0 || !WireFormatLite::SkipField(&in, tag)) {
      return false;
    }
  }
  in.PopLimit(limit);
  return true;
}

int VarintSize(uint64_t value) { return CodedOutputStream::VarintSize64(value); }

// The bytes of one Digest message, without its own tag and length.
int DigestBytes(const cas::BlobStore::DigestRef& digest) {
  int bytes = 0;
  if (!digest.hash.empty()) bytes += 1 + VarintSize(digest.hash.size()) + digest.hash.size();
  if (digest.size != 0) bytes += 1 + VarintSize(static_cast<uint64_t>(digest.size));
  return bytes;
}

}  // namespace

absl::StatusOr<FindMissingBlobsCall> ParseFindMissingBlobsRequest(absl::string_view bytes) {
  if (bytes.size() > static_cast<size_t>(INT32_MAX)) return Undecodable();
  CodedInputStream in(reinterpret_cast<const uint8_t*>(bytes.data()), static_cast<int>(bytes.size()));
  in.PushLimit(static_cast<int>(bytes.size()));
  FindMissingBlobsCall call;
  // A digest takes at least 70 bytes on the wire once valid (hash and tags).
  call.digests.reserve(bytes.size() / 70);
  call.keys.reserve(bytes.size() / 70);
  while (in.BytesUntilLimit() > 0) {
    const uint32_t tag = in.ReadTag();
    if (tag == kBlobDigestsTag) {
      cas::BlobStore::DigestRef digest;
      if (!ReadDigest(in, bytes, &digest)) return Undecodable();
      // Validated by decoding: FromHex takes exactly what ValidateDigest
      // does, which only words the error.
      cas::BlobStore::KeyedDigest& keyed = call.keys.emplace_back();
      keyed.size = digest.size;
      if (!cas::BlobKey::FromHex(digest.hash, &keyed.key) || digest.size < 0) {
        absl::Status valid = ValidateDigest(digest.hash, digest.size);
        return absl::InvalidArgumentError(
            absl::StrCat("blob_digests[", call.digests.size(), "]: ", valid.message()));
      }
      call.digests.push_back(digest);
    } else if (tag == kInstanceNameTag) {
      absl::string_view name;
      if (!ReadView(in, bytes, &name)) return Undecodable();
      // proto3 strings are UTF-8; the generated parser rejects others.
      if (!google::protobuf::internal::IsStructurallyValidUTF8(name.data(), static_cast<int>(name.size()))) {
        return Undecodable();
      }
      call.instance_name = std::string(name);
    } else if (tag == kDigestFunctionTag) {
      uint64_t value;
      if (!in.ReadVarint64(&value)) return Undecodable();
      call.digest_function = static_cast<int>(static_cast<int32_t>(value));
    } else if (WireFormatLite::GetTagFieldNumber(tag) == 0 || !WireFormatLite::SkipField(&in, tag)) {
      return Undecodable();
    }
  }
  return call;
}

std::string SerializeFindMissingBlobsResponse(absl::Span<const cas::BlobStore::DigestRef> missing) {
  size_t total = 0;
  for (const auto& digest : missing) {
    const int bytes = DigestBytes(digest);
    total += 1 + VarintSize(bytes) + bytes;
  }
  std::string out(total, '\0');
  uint8_t* p = reinterpret_cast<uint8_t*>(out.data());
  for (const auto& digest : missing) {
    p = CodedOutputStream::WriteTagToArray(kMissingBlobDigestsTag, p);
    p = CodedOutputStream::WriteVarint32ToArray(DigestBytes(digest), p);
    if (!digest.hash.empty()) {
      p = CodedOutputStream::WriteTagToArray(kHashTag, p);
      p = CodedOutputStream::WriteVarint32ToArray(digest.hash.size(), p);
      p = CodedOutputStream::WriteRawToArray(digest.hash.data(), digest.hash.size(), p);
    }
    if (digest.size != 0) {
      p = CodedOutputStream::WriteTagToArray(kSizeBytesTag, p);
      p = CodedOutputStream::WriteVarint64ToArray(static_cast<uint64_t>(digest.size), p);
    }
  }
  return out;
}

}  // namespace kiln::api
