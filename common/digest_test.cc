#include "common/digest.h"

#include <gtest/gtest.h>

namespace kiln {
namespace {

constexpr char kEmptySha256[] = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

TEST(DigestTest, OfComputesSha256AndSize) {
  EXPECT_EQ(Digest::Of(""), (Digest{kEmptySha256, 0}));
  EXPECT_EQ(Digest::Of("abc").hash,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(Digest::Of("abc").size, 3);
}

TEST(DigestTest, ParseAcceptsWellFormed) {
  auto parsed = ParseDigest(kEmptySha256, 0);
  ASSERT_TRUE(parsed.ok());
  EXPECT_EQ(parsed->ToString(), std::string(kEmptySha256) + "/0");
}

TEST(DigestTest, ParseRejectsWrongLengthUppercaseAndNegativeSize) {
  EXPECT_EQ(ParseDigest("abc", 3).status().code(), absl::StatusCode::kInvalidArgument);
  std::string upper(kEmptySha256);
  upper[0] = 'E';
  auto bad_case = ParseDigest(upper, 0);
  EXPECT_EQ(bad_case.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad_case.status().message().find("hexadecimal"), absl::string_view::npos);
  auto negative = ParseDigest(kEmptySha256, -1);
  EXPECT_EQ(negative.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(negative.status().message().find("negative"), absl::string_view::npos);
}

TEST(DigestTest, OnlySha256IsAccepted) {
  EXPECT_TRUE(CheckDigestFunction(rev2::DigestFunction::UNKNOWN).ok());
  EXPECT_TRUE(CheckDigestFunction(rev2::DigestFunction::SHA256).ok());
  auto md5 = CheckDigestFunction(rev2::DigestFunction::MD5);
  EXPECT_EQ(md5.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(md5.message().find("MD5"), absl::string_view::npos);
}

}  // namespace
}  // namespace kiln
