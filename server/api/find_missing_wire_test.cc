#include "server/api/find_missing_wire.h"

#include <gtest/gtest.h>

#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/io/zero_copy_stream_impl_lite.h>

#include "common/digest.h"

namespace kiln::api {
namespace {

namespace rev2 = ::build::bazel::remote::execution::v2;

rev2::FindMissingBlobsRequest SampleRequest() {
  rev2::FindMissingBlobsRequest request;
  request.set_instance_name("main/ci");
  request.set_digest_function(rev2::DigestFunction::SHA256);
  for (int i = 0; i < 600; ++i) *request.add_blob_digests() = Digest::Of(std::to_string(i)).ToProto();
  *request.add_blob_digests() = Digest::Of("").ToProto();  // size 0: no size field on the wire
  return request;
}

std::vector<cas::BlobStore::KeyedDigest> AllDigests(const FindMissingBlobsCall& call) {
  std::vector<cas::BlobStore::KeyedDigest> all;
  for (const auto& block : call.blocks) {
    EXPECT_LE(block.size(), FindMissingBlobsCall::kBlockDigests);
    all.insert(all.end(), block.begin(), block.end());
  }
  return all;
}

// What the generated parser makes of the same bytes, in our terms, read
// from one buffer and from a stream of `chunk`-byte pieces.
void ExpectSameAsGenerated(const std::string& bytes) {
  rev2::FindMissingBlobsRequest generated;
  const bool generated_ok = generated.ParseFromString(bytes);
  for (int chunk : {0, 1, 7, 100}) {
    SCOPED_TRACE(chunk);
    absl::StatusOr<FindMissingBlobsCall> ours;
    if (chunk == 0) {
      ours = ParseFindMissingBlobsRequest(bytes);
    } else {
      google::protobuf::io::ArrayInputStream stream(bytes.data(), static_cast<int>(bytes.size()), chunk);
      ours = ParseFindMissingBlobsRequest(&stream);
    }
    ASSERT_EQ(ours.ok(), generated_ok) << ours.status();
    if (ours.ok()) EXPECT_TRUE(ours->invalid_digest.ok()) << ours->invalid_digest;
    if (!ours.ok()) {
      EXPECT_EQ(ours.status().code(), absl::StatusCode::kInvalidArgument);
      continue;
    }
    EXPECT_EQ(ours->instance_name, generated.instance_name());
    EXPECT_EQ(ours->digest_function, generated.digest_function());
    const auto digests = AllDigests(*ours);
    ASSERT_EQ(static_cast<int>(digests.size()), generated.blob_digests_size());
    for (int i = 0; i < generated.blob_digests_size(); ++i) {
      EXPECT_EQ(digests[i].key.ToHex(), generated.blob_digests(i).hash());
      EXPECT_EQ(digests[i].size, generated.blob_digests(i).size_bytes());
    }
  }
}

TEST(FindMissingWireTest, ReadsWhatTheGeneratedParserReads) {
  ExpectSameAsGenerated(SampleRequest().SerializeAsString());
  ExpectSameAsGenerated("");
}

TEST(FindMissingWireTest, SkipsUnknownFieldsAndKeepsTheLastScalar) {
  std::string bytes;
  {
    google::protobuf::io::StringOutputStream stream(&bytes);
    google::protobuf::io::CodedOutputStream out(&stream);
    out.WriteTag((1 << 3) | 2);  // instance_name, later replaced
    out.WriteVarint32(3);
    out.WriteRaw("old", 3);
    out.WriteTag((99 << 3) | 0);  // unknown varint
    out.WriteVarint64(12345);
    // A Digest with an unknown fixed64 field, its size given twice and a
    // size_bytes of the wrong wire type (an unknown field to protobuf).
    const Digest digest = Digest::Of("x");
    std::string inner;
    {
      google::protobuf::io::StringOutputStream inner_stream(&inner);
      google::protobuf::io::CodedOutputStream in(&inner_stream);
      in.WriteTag((2 << 3) | 0);
      in.WriteVarint64(7);
      in.WriteTag((5 << 3) | 1);
      in.WriteLittleEndian64(1);
      in.WriteTag((1 << 3) | 2);
      in.WriteVarint32(64);
      in.WriteRaw(digest.hash.data(), 64);
      in.WriteTag((2 << 3) | 2);
      in.WriteVarint32(1);
      in.WriteRaw("z", 1);
      in.WriteTag((2 << 3) | 0);
      in.WriteVarint64(1);
    }
    out.WriteTag((2 << 3) | 2);
    out.WriteVarint32(inner.size());
    out.WriteRaw(inner.data(), inner.size());
    out.WriteTag((1 << 3) | 2);
    out.WriteVarint32(3);
    out.WriteRaw("new", 3);
    out.WriteTag((7 << 3) | 2);  // unknown length-delimited
    out.WriteVarint32(2);
    out.WriteRaw("ab", 2);
  }
  ExpectSameAsGenerated(bytes);
  EXPECT_EQ(ParseFindMissingBlobsRequest(bytes)->instance_name, "new");
}

TEST(FindMissingWireTest, EveryTruncationIsRejectedOrReadAsTheGeneratedParserDoes) {
  rev2::FindMissingBlobsRequest request = SampleRequest();
  request.mutable_blob_digests()->DeleteSubrange(5, request.blob_digests_size() - 6);
  const std::string bytes = request.SerializeAsString();
  for (size_t length = 0; length < bytes.size(); ++length) {
    SCOPED_TRACE(length);
    ExpectSameAsGenerated(bytes.substr(0, length));
  }
}

TEST(FindMissingWireTest, GarbageIsInvalidArgument) {
  for (const std::string& bytes : {std::string("\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff", 11),
                                   std::string("\x12\x05\x0a", 3), std::string("\x0c", 1),
                                   std::string("\x00", 1), std::string("\x0a\x02\xc3\x28", 4)}) {
    absl::StatusOr<FindMissingBlobsCall> ours = ParseFindMissingBlobsRequest(bytes);
    EXPECT_EQ(ours.status().code(), absl::StatusCode::kInvalidArgument);
    rev2::FindMissingBlobsRequest generated;
    EXPECT_FALSE(generated.ParseFromString(bytes));
  }
}

TEST(FindMissingWireTest, AnInvalidDigestIsNamedByItsIndex) {
  rev2::FindMissingBlobsRequest request = SampleRequest();
  request.mutable_blob_digests(7)->set_hash(std::string(64, 'A'));
  request.mutable_blob_digests(9)->set_hash("short");
  // An instance name after the digests is still read (the last one wins).
  std::string bytes = request.SerializeAsString() + "\x0a\x05later";
  absl::StatusOr<FindMissingBlobsCall> ours = ParseFindMissingBlobsRequest(bytes);
  ASSERT_TRUE(ours.ok()) << ours.status();
  EXPECT_EQ(ours->invalid_digest.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(ours->invalid_digest.message().find("blob_digests[7]"), std::string::npos) << ours->invalid_digest;
  EXPECT_EQ(AllDigests(*ours).size(), 7u);
  EXPECT_EQ(ours->instance_name, "later");
  request = SampleRequest();
  request.mutable_blob_digests(3)->set_size_bytes(-1);
  ours = ParseFindMissingBlobsRequest(request.SerializeAsString());
  ASSERT_TRUE(ours.ok()) << ours.status();
  EXPECT_NE(ours->invalid_digest.message().find("blob_digests[3]"), std::string::npos) << ours->invalid_digest;
  EXPECT_NE(ours->invalid_digest.message().find("negative"), std::string::npos) << ours->invalid_digest;
  // A request that does not parse is refused as such, whatever its digests.
  bytes = request.SerializeAsString();
  ours = ParseFindMissingBlobsRequest(bytes.substr(0, bytes.size() - 1));
  EXPECT_EQ(ours.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(FindMissingWireTest, TheAnswerParsesAsTheDigestsGivenInPiecesOfBoundedSize) {
  const rev2::FindMissingBlobsRequest request = SampleRequest();
  absl::StatusOr<FindMissingBlobsCall> call = ParseFindMissingBlobsRequest(request.SerializeAsString());
  ASSERT_TRUE(call.ok()) << call.status();
  EXPECT_EQ(call->blocks.size(), 3u);  // 601 digests
  FindMissingBlobsResponseWriter writer;
  for (const auto& digest : AllDigests(*call)) writer.Add(digest);
  std::string bytes;
  for (const std::string& piece : writer.Finish()) {
    EXPECT_LE(piece.size(), FindMissingBlobsResponseWriter::kPieceBytes);
    bytes += piece;
  }
  rev2::FindMissingBlobsResponse response;
  ASSERT_TRUE(response.ParseFromString(bytes));
  ASSERT_EQ(response.missing_blob_digests_size(), request.blob_digests_size());
  for (int i = 0; i < request.blob_digests_size(); ++i) {
    EXPECT_EQ(response.missing_blob_digests(i).SerializeAsString(),
              request.blob_digests(i).SerializeAsString());
  }
  EXPECT_TRUE(FindMissingBlobsResponseWriter().Finish().empty());
}

TEST(FindMissingWireTest, ManyDigestsMakeManyPieces) {
  FindMissingBlobsResponseWriter writer;
  absl::StatusOr<FindMissingBlobsCall> call = ParseFindMissingBlobsRequest(SampleRequest().SerializeAsString());
  ASSERT_TRUE(call.ok());
  for (int round = 0; round < 5; ++round) {
    for (const auto& digest : AllDigests(*call)) writer.Add(digest);
  }
  std::vector<std::string> pieces = writer.Finish();
  EXPECT_GT(pieces.size(), 2u);
  std::string bytes;
  for (const std::string& piece : pieces) bytes += piece;
  rev2::FindMissingBlobsResponse response;
  ASSERT_TRUE(response.ParseFromString(bytes));
  EXPECT_EQ(response.missing_blob_digests_size(), 5 * 601);
}

}  // namespace
}  // namespace kiln::api
