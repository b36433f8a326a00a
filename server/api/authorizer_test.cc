#include "server/api/authorizer.h"

#include <gtest/gtest.h>

namespace kiln::api {
namespace {

TEST(AuthorizerTest, PrefixCoversWholeSegmentsOnly) {
  EXPECT_TRUE(PrefixCovers("", "anything/at/all"));
  EXPECT_TRUE(PrefixCovers("team", "team"));
  EXPECT_TRUE(PrefixCovers("team", "team/ci"));
  EXPECT_FALSE(PrefixCovers("team", "teammate"));
  EXPECT_FALSE(PrefixCovers("team/ci", "team"));
}

TEST(AuthorizerTest, ResourceInstanceIsThePartBeforeTheKind) {
  EXPECT_EQ(ResourceInstance("blobs/abc/1"), "");
  EXPECT_EQ(ResourceInstance("a/b/blobs/abc/1"), "a/b");
  EXPECT_EQ(ResourceInstance("x/compressed-blobs/zstd/abc/1"), "x");
  EXPECT_EQ(ResourceInstance("x/uploads/u/blobs/abc/1"), "x");
  EXPECT_EQ(ResourceInstance("x/kiln-logs/op/stdout"), "x");
  EXPECT_EQ(ResourceInstance("garbage/name"), "garbage/name");
}

TEST(AuthorizerTest, ParsesGrantsAndChecksThem) {
  absl::StatusOr<PrincipalTable> table = ParsePrincipalTable(R"({"principals": [
    {"name": "ci", "token_sha256": "2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae",
     "grants": [{"instance_prefix": "main", "permissions": ["cas-read", "ac-read"]}]}]})");
  ASSERT_TRUE(table.ok()) << table.status();
  const Principal& ci = table->principals.at(0);
  EXPECT_TRUE(CheckGrant(ci, Permission::kCasRead, "main/x").ok());
  EXPECT_TRUE(CheckGrant(ci, Permission::kAny, "main").ok());
  EXPECT_TRUE(CheckGrant(ci, Permission::kAcRead, std::nullopt).ok());
  absl::Status denied = CheckGrant(ci, Permission::kAcWrite, "main");
  EXPECT_EQ(denied.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(denied.message(), "principal \"ci\" lacks the ac-write grant on instance \"main\"");
  EXPECT_EQ(CheckGrant(ci, Permission::kCasRead, "other").code(), absl::StatusCode::kPermissionDenied);
}

TEST(AuthorizerTest, RejectsBadFilesNamingTheProblem) {
  EXPECT_FALSE(ParsePrincipalTable("[]").ok());
  EXPECT_FALSE(ParsePrincipalTable(R"({"principals": [{"name": ""}]})").ok());
  absl::Status bad_hash =
      ParsePrincipalTable(R"({"principals": [{"name": "a", "token_sha256": "secret"}]})").status();
  EXPECT_NE(bad_hash.message().find("64 lowercase hex"), absl::string_view::npos);
  absl::Status bad_permission = ParsePrincipalTable(
      R"({"principals": [{"name": "a", "grants": [{"permissions": ["root"]}]}]})").status();
  EXPECT_NE(bad_permission.message().find("unknown permission \"root\""), absl::string_view::npos);
}

}  // namespace
}  // namespace kiln::api
