#include "server/cas/action_cache.h"

#include <gtest/gtest.h>

#include "server/cas/test_util.h"

namespace kiln::cas {
namespace {

class ActionCacheTest : public ::testing::Test {
 protected:
  void SetUp() override {
    store_ = *BlobStore::Open({dir_.path() + "/cas", 1000, 1000});
    cache_ = *ActionCache::Open(dir_.path() + "/ac", store_.get());
  }
  ScratchDir dir_;
  std::unique_ptr<BlobStore> store_;
  std::unique_ptr<ActionCache> cache_;
};

TEST_F(ActionCacheTest, StoresPerInstanceAndSurvivesReopen) {
  Digest action = Digest::Of("action");
  Digest out = Digest::Of("output");
  ASSERT_TRUE(store_->Put(out, "output").ok());
  rev2::ActionResult result;
  result.set_exit_code(0);
  auto* file = result.add_output_files();
  file->set_path("out.txt");
  *file->mutable_digest() = out.ToProto();
  ASSERT_TRUE(cache_->Put("main", action, result).ok());
  EXPECT_EQ(cache_->Get("other", action).status().code(), absl::StatusCode::kNotFound);

  cache_ = *ActionCache::Open(dir_.path() + "/ac", store_.get());
  auto got = cache_->Get("main", action);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->output_files(0).path(), "out.txt");
}

TEST_F(ActionCacheTest, ResultWithEvictedOutputIsNotFound) {
  Digest action = Digest::Of("action");
  std::string big(600, 'x');
  Digest out = Digest::Of(big);
  ASSERT_TRUE(store_->Put(out, big).ok());
  rev2::ActionResult result;
  *result.mutable_stdout_digest() = out.ToProto();
  ASSERT_TRUE(cache_->Put("", action, result).ok());
  ASSERT_TRUE(cache_->Get("", action).ok());
  // Another 600-byte blob pushes the 1000-byte store to evict `out`.
  std::string other(600, 'y');
  ASSERT_TRUE(store_->Put(Digest::Of(other), other).ok());
  auto got = cache_->Get("", action);
  EXPECT_EQ(got.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(got.status().message().find("stdout"), absl::string_view::npos);
}

TEST_F(ActionCacheTest, ResultWhoseTreeFileIsGoneIsNotFound) {
  rev2::Tree tree;
  auto* file = tree.mutable_root()->add_files();
  file->set_name("f");
  *file->mutable_digest() = Digest::Of("never uploaded").ToProto();
  std::string tree_bytes = tree.SerializeAsString();
  ASSERT_TRUE(store_->Put(Digest::Of(tree_bytes), tree_bytes).ok());
  rev2::ActionResult result;
  auto* dir = result.add_output_directories();
  dir->set_path("out");
  *dir->mutable_tree_digest() = Digest::Of(tree_bytes).ToProto();
  Digest action = Digest::Of("a");
  ASSERT_TRUE(cache_->Put("", action, result).ok());
  EXPECT_EQ(cache_->Get("", action).status().code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace kiln::cas
