#include "common/zstd.h"

#include <gtest/gtest.h>

namespace kiln {
namespace {

TEST(ZstdTest, RoundTripsInChunks) {
  std::string data;
  for (int i = 0; i < 200000; ++i) data += static_cast<char>('a' + i % 7);
  ZstdCompressor compressor;
  std::string compressed;
  compressor.Compress(absl::string_view(data).substr(0, 1000), false, &compressed);
  compressor.Compress(absl::string_view(data).substr(1000), true, &compressed);
  ZstdDecompressor decompressor;
  std::string out;
  for (size_t i = 0; i < compressed.size(); i += 100) {
    ASSERT_TRUE(decompressor.Decompress(absl::string_view(compressed).substr(i, 100), &out).ok());
  }
  EXPECT_EQ(out, data);
}

TEST(ZstdTest, RejectsCorruptDataAndOversizedOutput) {
  EXPECT_EQ(ZstdDecompressAll("not zstd at all", 100).status().code(),
            absl::StatusCode::kInvalidArgument);
  std::string compressed = ZstdCompressAll(std::string(1000, 'x'));
  auto capped = ZstdDecompressAll(compressed, 999);
  EXPECT_EQ(capped.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(*ZstdDecompressAll(compressed, 1000), std::string(1000, 'x'));
}

}  // namespace
}  // namespace kiln
