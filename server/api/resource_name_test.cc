#include "server/api/resource_name.h"

#include <gtest/gtest.h>

namespace kiln::api {
namespace {

const std::string kHash(64, 'a');

TEST(ResourceNameTest, ParsesReadNamesWithAndWithoutInstance) {
  auto plain = ParseReadResource("blobs/" + kHash + "/12");
  ASSERT_TRUE(plain.ok()) << plain.status();
  EXPECT_EQ(plain->instance, "");
  EXPECT_EQ(plain->digest.size, 12);
  EXPECT_FALSE(plain->zstd);
  auto nested = ParseReadResource("a/b/compressed-blobs/zstd/" + kHash + "/5");
  ASSERT_TRUE(nested.ok()) << nested.status();
  EXPECT_EQ(nested->instance, "a/b");
  EXPECT_TRUE(nested->zstd);
}

TEST(ResourceNameTest, ParsesWriteNamesWithMetadata) {
  auto name = ParseWriteResource("main/uploads/u-1/blobs/" + kHash + "/7/extra/meta");
  ASSERT_TRUE(name.ok()) << name.status();
  EXPECT_EQ(name->instance, "main");
  EXPECT_EQ(name->upload_id, "u-1");
  EXPECT_EQ(name->digest.size, 7);
}

TEST(ResourceNameTest, RejectsGarbage) {
  for (const std::string& bad : std::vector<std::string>
       {std::string("garbage"), "blobs/" + kHash, "blobs/" + kHash + "/x",
        std::string("blobs/xyz/1"), "compressed-blobs/gzip/" + kHash + "/1", "blobs/" + kHash + "/-1",
        "blobs/" + kHash + "/1/trailing"}) {
    auto parsed = ParseReadResource(bad);
    EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument) << bad;
  }
  EXPECT_FALSE(ParseWriteResource("blobs/" + kHash + "/1").ok());
  EXPECT_FALSE(ParseWriteResource("uploads//blobs/" + kHash + "/1").ok());
}

}  // namespace
}  // namespace kiln::api
