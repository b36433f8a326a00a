#include "common/flag_types.h"

#include <gtest/gtest.h>

namespace kiln {
namespace {

TEST(ByteSizeTest, ParsesUnits) {
  ByteSize size;
  std::string error;
  ASSERT_TRUE(AbslParseFlag("10GiB", &size, &error));
  EXPECT_EQ(size.bytes, int64_t{10} << 30);
  ASSERT_TRUE(AbslParseFlag("4096", &size, &error));
  EXPECT_EQ(size.bytes, 4096);
  ASSERT_TRUE(AbslParseFlag("64KiB", &size, &error));
  EXPECT_EQ(size.bytes, 65536);
}

TEST(ByteSizeTest, RejectsGarbageNegativeAndOverflow) {
  ByteSize size;
  std::string error;
  EXPECT_FALSE(AbslParseFlag("ten", &size, &error));
  EXPECT_NE(error.find("byte size"), std::string::npos);
  EXPECT_FALSE(AbslParseFlag("-1", &size, &error));
  EXPECT_FALSE(AbslParseFlag("99999999999TiB", &size, &error));
}

TEST(HostPortTest, ParsesIpv4AndBracketedIpv6) {
  auto v4 = ParseHostPort("127.0.0.1:8980");
  ASSERT_TRUE(v4.ok());
  EXPECT_EQ(v4->host, "127.0.0.1");
  EXPECT_EQ(v4->port, 8980);
  auto v6 = ParseHostPort("[::1]:0");
  ASSERT_TRUE(v6.ok());
  EXPECT_EQ(v6->host, "::1");
  EXPECT_EQ(v6->ToString(), "[::1]:0");
}

TEST(HostPortTest, RejectsMissingOrBadPort) {
  EXPECT_FALSE(ParseHostPort("localhost").ok());
  EXPECT_FALSE(ParseHostPort("localhost:http").ok());
  EXPECT_FALSE(ParseHostPort("localhost:70000").ok());
  EXPECT_FALSE(ParseHostPort(":8980").ok());
}

}  // namespace
}  // namespace kiln
