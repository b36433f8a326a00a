#include "server/cas/directory_tree.h"

#include <gtest/gtest.h>

#include "server/cas/test_util.h"

namespace kiln::cas {
namespace {

rev2::Directory Dir(std::vector<std::string> files, std::vector<std::pair<std::string, Digest>> dirs = {}) {
  rev2::Directory d;
  for (auto& name : files) {
    auto* f = d.add_files();
    f->set_name(name);
    *f->mutable_digest() = Digest::Of(name).ToProto();
  }
  for (auto& [name, digest] : dirs) {
    auto* c = d.add_directories();
    c->set_name(name);
    *c->mutable_digest() = digest.ToProto();
  }
  return d;
}

TEST(ValidateDirectoryTest, AcceptsCanonicalForm) {
  EXPECT_TRUE(ValidateDirectory(Dir({"a", "b"}), "d").ok());
}

// Found by fuzz/directory_tree_fuzzer (corpus file
// regression-nul-in-symlink-target): a target with a NUL byte was accepted,
// and symlinkat(2) would have created a shorter link than the one checked.
TEST(ValidateDirectoryTest, RejectsANulByteInASymlinkTarget) {
  rev2::Directory d;
  auto* link = d.add_symlinks();
  link->set_name("l");
  link->set_target(std::string("..\0/x", 5));
  absl::Status status = ValidateDirectory(d, "d");
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(status.message().find("NUL"), absl::string_view::npos) << status;
}

TEST(ValidateDirectoryTest, RejectsUnsortedDuplicateAndBadNames) {
  auto unsorted = ValidateDirectory(Dir({"b", "a"}), "d");
  EXPECT_EQ(unsorted.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(unsorted.message().find("not sorted"), absl::string_view::npos);
  auto duplicate = ValidateDirectory(Dir({"a", "a"}), "d");
  EXPECT_NE(duplicate.message().find("duplicates"), absl::string_view::npos);
  auto across = ValidateDirectory(Dir({"a"}, {{"a", Digest::Of("x")}}), "d");
  EXPECT_NE(across.message().find("more than once"), absl::string_view::npos);
  for (const char* bad : {"", ".", "..", "a/b"}) {
    EXPECT_EQ(ValidateDirectory(Dir({bad}), "d").code(), absl::StatusCode::kInvalidArgument) << bad;
  }
}

class TreeTest : public ::testing::Test {
 protected:
  Digest PutDir(const rev2::Directory& d) {
    std::string bytes = d.SerializeAsString();
    Digest digest = Digest::Of(bytes);
    EXPECT_TRUE(store_->Put(digest, bytes).ok());
    return digest;
  }
  ScratchDir dir_;
  std::unique_ptr<BlobStore> store_ = *BlobStore::Open({dir_.path() + "/cas", 1 << 20, 1 << 20});
};

TEST_F(TreeTest, PagesWalkBreadthFirstAndDeduplicate) {
  Digest leaf = PutDir(Dir({"leaf"}));
  Digest mid = PutDir(Dir({"mid"}, {{"x", leaf}}));
  Digest root = PutDir(Dir({"root"}, {{"a", mid}, {"b", leaf}, {"c", mid}}));
  auto first = ReadTreePage(*store_, root, 0, 2, 1 << 20);
  ASSERT_TRUE(first.ok()) << first.status();
  ASSERT_EQ(first->directories.size(), 2u);
  EXPECT_EQ(first->directories[0].files(0).name(), "root");
  EXPECT_EQ(first->directories[1].files(0).name(), "mid");
  EXPECT_EQ(first->next_index, 2);
  auto second = ReadTreePage(*store_, root, first->next_index, 2, 1 << 20);
  ASSERT_TRUE(second.ok());
  ASSERT_EQ(second->directories.size(), 1u);
  EXPECT_EQ(second->directories[0].files(0).name(), "leaf");
  EXPECT_EQ(second->next_index, 0);
}

TEST_F(TreeTest, MissingRootIsNotFoundAndBadChildIsInvalid) {
  EXPECT_EQ(ReadTreePage(*store_, Digest::Of("nope"), 0, 10, 1 << 20).status().code(),
            absl::StatusCode::kNotFound);
  rev2::Directory bad = Dir({"z", "a"});
  Digest bad_digest = PutDir(bad);
  Digest root = PutDir(Dir({}, {{"child", bad_digest}}));
  auto page = ReadTreePage(*store_, root, 0, 10, 1 << 20);
  EXPECT_EQ(page.status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace kiln::cas
