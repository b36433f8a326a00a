#include "server/api/find_missing_wire.h"

#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/io/zero_copy_stream_impl_lite.h>
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

constexpr int kHashDigits = 64;

absl::Status Undecodable() {
  return absl::InvalidArgumentError("the FindMissingBlobsRequest does not parse");
}

// One Digest as read: its key if its hash has the one valid length (the
// hash itself only otherwise, for the error message).
struct ReadDigestResult {
  bool hash_valid = false;  // 64 lowercase hex digits, decoded into `key`
  std::string other_hash;   // the hash when it is not
  cas::BlobStore::KeyedDigest digest{};
};

bool ReadHash(CodedInputStream& in, ReadDigestResult* result) {
  int length;
  if (!in.ReadVarintSizeAsInt(&length)) return false;
  if (length == kHashDigits) {
    char copy[kHashDigits];
    const void* data;
    int available;
    in.GetDirectBufferPointerInline(&data, &available);
    const char* digits = static_cast<const char*>(data);
    if (available >= kHashDigits) {
      in.Skip(kHashDigits);
    } else {  // split between two of gRPC's slices
      if (!in.ReadRaw(copy, kHashDigits)) return false;
      digits = copy;
    }
    result->hash_valid = cas::BlobKey::FromHex(absl::string_view(digits, kHashDigits), &result->digest.key);
    if (!result->hash_valid) result->other_hash.assign(digits, kHashDigits);
    return true;
  }
  result->hash_valid = false;
  return in.ReadString(&result->other_hash, length);
}

// Reads one Digest, whose length prefix is next in `in`.
bool ReadDigest(CodedInputStream& in, ReadDigestResult* result) {
  int length;
  if (!in.ReadVarintSizeAsInt(&length)) return false;
  const auto limit = in.PushLimit(length);
  if (in.BytesUntilLimit() != length) return false;  // the message runs past its parent
  result->hash_valid = false;
  result->other_hash.clear();  // an absent hash is the empty string
  result->digest.size = 0;
  while (in.BytesUntilLimit() > 0) {
    const uint32_t tag = in.ReadTag();
    if (tag == kHashTag) {
      if (!ReadHash(in, result)) return false;
    } else if (tag == kSizeBytesTag) {
      uint64_t size;
      if (!in.ReadVarint64(&size)) return false;
      result->digest.size = static_cast<int64_t>(size);
    } else if (WireFormatLite::GetTagFieldNumber(tag) == 0 || !WireFormatLite::SkipField(&in, tag)) {
      return false;
    }
  }
  in.PopLimit(limit);
  return true;
}

// The bytes of one Digest message, without its own tag and length.
int DigestBytes(int64_t size) {
  return 2 + kHashDigits + (size != 0 ? 1 + CodedOutputStream::VarintSize64(size) : 0);
}
constexpr size_t kMaxEntryBytes = 2 + 2 + kHashDigits + 1 + 10;

}  // namespace

absl::StatusOr<FindMissingBlobsCall> ParseFindMissingBlobsRequest(
    google::protobuf::io::ZeroCopyInputStream* bytes) {
  CodedInputStream in(bytes);
  FindMissingBlobsCall call;
  int64_t index = 0;
  ReadDigestResult digest;
  while (true) {
    const uint32_t tag = in.ReadTag();
    if (tag == 0) {
      // The end, unless the stream stopped on a bad tag.
      if (in.ConsumedEntireMessage()) break;
      return Undecodable();
    }
    if (tag == kBlobDigestsTag) {
      if (!ReadDigest(in, &digest)) return Undecodable();
      if (!call.invalid_digest.ok()) continue;  // the rest is read only to check its form
      if (!digest.hash_valid || digest.digest.size < 0) {
        const std::string hash =
            digest.hash_valid ? digest.digest.key.ToHex() : std::move(digest.other_hash);
        absl::Status valid = ValidateDigest(hash, digest.digest.size);
        call.invalid_digest =
            absl::InvalidArgumentError(absl::StrCat("blob_digests[", index, "]: ", valid.message()));
        continue;
      }
      if (call.blocks.empty() || call.blocks.back().size() == FindMissingBlobsCall::kBlockDigests) {
        call.blocks.emplace_back().reserve(FindMissingBlobsCall::kBlockDigests);
      }
      call.blocks.back().push_back(digest.digest);
      ++index;
    } else if (tag == kInstanceNameTag) {
      std::string name;
      if (!WireFormatLite::ReadString(&in, &name)) return Undecodable();
      // proto3 strings are UTF-8; the generated parser rejects others.
      if (!google::protobuf::internal::IsStructurallyValidUTF8(name.data(), static_cast<int>(name.size()))) {
        return Undecodable();
      }
      call.instance_name = std::move(name);
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

absl::StatusOr<FindMissingBlobsCall> ParseFindMissingBlobsRequest(absl::string_view bytes) {
  google::protobuf::io::ArrayInputStream stream(bytes.data(), static_cast<int>(bytes.size()));
  return ParseFindMissingBlobsRequest(&stream);
}

void FindMissingBlobsResponseWriter::Add(const cas::BlobStore::KeyedDigest& missing) {
  if (pieces_.empty() || pieces_.back().size() + kMaxEntryBytes > kPieceBytes) {
    pieces_.emplace_back().reserve(kPieceBytes);
  }
  std::string& piece = pieces_.back();
  uint8_t entry[kMaxEntryBytes];
  uint8_t* p = entry;
  p = CodedOutputStream::WriteTagToArray(kMissingBlobDigestsTag, p);
  p = CodedOutputStream::WriteVarint32ToArray(DigestBytes(missing.size), p);
  p = CodedOutputStream::WriteTagToArray(kHashTag, p);
  p = CodedOutputStream::WriteVarint32ToArray(kHashDigits, p);
  missing.key.WriteHex(reinterpret_cast<char*>(p));
  p += kHashDigits;
  if (missing.size != 0) {
    p = CodedOutputStream::WriteTagToArray(kSizeBytesTag, p);
    p = CodedOutputStream::WriteVarint64ToArray(static_cast<uint64_t>(missing.size), p);
  }
  piece.append(reinterpret_cast<const char*>(entry), p - entry);
}

std::vector<std::string> FindMissingBlobsResponseWriter::Finish() { return std::move(pieces_); }

}  // namespace kiln::api
