#include "common/posix.h"

#include <sys/stat.h>

#include <filesystem>

#include <gtest/gtest.h>

namespace kiln {
namespace {

TEST(PosixTest, WriteFileAtomicallyReplacesContentAndLeavesNoTemp) {
  std::string dir = ::testing::TempDir() + "/posix_test_atomic";
  ASSERT_TRUE(RemoveTree(dir).ok());
  ASSERT_TRUE(MakeDirectories(dir + "/tmp").ok());
  ASSERT_TRUE(WriteFileAtomically(dir + "/f", "one", dir + "/tmp", 0644).ok());
  ASSERT_TRUE(WriteFileAtomically(dir + "/f", "two", dir + "/tmp", 0644).ok());
  EXPECT_EQ(*ReadFileToString(dir + "/f"), "two");
  EXPECT_TRUE(std::filesystem::is_empty(dir + "/tmp"));
  ASSERT_TRUE(RemoveTree(dir).ok());
}

TEST(PosixTest, ErrorsNameTheCallAndPath) {
  auto missing = ReadFileToString("/nonexistent/kiln");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(missing.status().message().find("open /nonexistent/kiln"), absl::string_view::npos);
}

}  // namespace
}  // namespace kiln
