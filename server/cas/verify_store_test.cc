#include "server/cas/verify_store.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include "absl/strings/match.h"
#include "absl/strings/str_join.h"
#include "server/cas/action_cache.h"
#include "server/cas/test_util.h"

namespace kiln::cas {
namespace {

class VerifyStoreTest : public ::testing::Test {
 protected:
  void SetUp() override { Reopen(); }
  // What a worker leaves: a store, then closed.
  void Reopen() {
    cache_.reset();
    store_ = *BlobStore::Open({dir_.path() + "/cas", 1 << 20, 1 << 20});
    cache_ = *ActionCache::Open(dir_.path() + "/ac", store_.get());
  }
  std::string BlobFile(const Digest& d) { return store_->BlobPath(d.hash); }
  // Replaces a stored blob's bytes, as a disk fault or an editor would.
  void Overwrite(const Digest& d, const std::string& bytes) {
    std::string path = BlobFile(d);
    ASSERT_EQ(chmod(path.c_str(), 0644), 0);
    ASSERT_TRUE(WriteFileAtomically(path, bytes, dir_.path(), 0444).ok());
  }
  VerifyReport Verify() {
    absl::StatusOr<VerifyReport> report = VerifyStateDir(dir_.path());
    EXPECT_TRUE(report.ok()) << report.status();
    return report.ok() ? *report : VerifyReport{};
  }
  std::string Problems(const VerifyReport& r) { return absl::StrJoin(r.problems, "\n"); }
  std::string Quarantined(const std::string& relative) {
    // The quarantine has one timestamped directory per run.
    std::string found;
    std::string root = dir_.path() + "/quarantine";
    std::unique_ptr<DIR, int (*)(DIR*)> runs(opendir(root.c_str()), closedir);
    if (runs == nullptr) return "";
    while (dirent* run = readdir(runs.get())) {
      std::string candidate = root + "/" + run->d_name + "/" + relative;
      if (access(candidate.c_str(), F_OK) == 0) found = candidate;
    }
    return found;
  }

  ScratchDir dir_;
  std::unique_ptr<BlobStore> store_;
  std::unique_ptr<ActionCache> cache_;
};

TEST_F(VerifyStoreTest, CleanStoreIsClean) {
  Digest a = Digest::Of("alpha"), out = Digest::Of("output");
  ASSERT_TRUE(store_->Put(a, "alpha").ok());
  ASSERT_TRUE(store_->Put(out, "output").ok());
  rev2::ActionResult result;
  *result.add_output_files()->mutable_digest() = out.ToProto();
  result.mutable_output_files(0)->set_path("o");
  *result.mutable_stdout_digest() = Digest::Of("").ToProto();
  ASSERT_TRUE(cache_->Put("", Digest::Of("action"), result).ok());
  VerifyReport report = Verify();
  EXPECT_TRUE(report.clean()) << Problems(report);
  EXPECT_EQ(report.blobs_checked, 3);  // with the empty blob
  EXPECT_EQ(report.entries_checked, 1);
}

TEST_F(VerifyStoreTest, CorruptBlobIsFoundAndQuarantined) {
  Digest a = Digest::Of("alpha"), b = Digest::Of("bravo");
  ASSERT_TRUE(store_->Put(a, "alpha").ok());
  ASSERT_TRUE(store_->Put(b, "bravo").ok());
  Overwrite(a, "alphA");
  VerifyReport report = Verify();
  ASSERT_EQ(report.problems.size(), 1u) << Problems(report);
  EXPECT_TRUE(absl::StrContains(report.problems[0], a.hash)) << Problems(report);
  EXPECT_TRUE(absl::StrContains(report.problems[0], "corrupt")) << Problems(report);
  EXPECT_NE(access(BlobFile(a).c_str(), F_OK), 0);  // out of the CAS
  EXPECT_EQ(access(BlobFile(b).c_str(), F_OK), 0);  // the good one stays
  EXPECT_NE(Quarantined("cas_blobs_" + a.hash.substr(0, 2) + "_" + a.hash), "");
  // Quarantined means done: the next run is clean, and a restarted store
  // does not serve the blob.
  EXPECT_TRUE(Verify().clean());
  Reopen();
  EXPECT_FALSE(store_->Contains(a));
}

TEST_F(VerifyStoreTest, TruncatedBlobIsFound) {
  Digest a = Digest::Of("a longer blob that loses its tail");
  ASSERT_TRUE(store_->Put(a, "a longer blob that loses its tail").ok());
  ASSERT_EQ(truncate(BlobFile(a).c_str(), 5), 0);
  VerifyReport report = Verify();
  ASSERT_EQ(report.problems.size(), 1u) << Problems(report);
  EXPECT_TRUE(absl::StrContains(report.problems[0], "5 bytes")) << Problems(report);
  EXPECT_NE(access(BlobFile(a).c_str(), F_OK), 0);
}

TEST_F(VerifyStoreTest, StrayFilesInTheCasAreFound) {
  store_.reset();
  cache_.reset();
  const std::string shard = dir_.path() + "/cas/blobs/ab";
  const std::string hash = Digest::Of("x").hash;
  ASSERT_TRUE(WriteFileAtomically(shard + "/" + hash + ".tmp", "x", dir_.path(), 0444).ok());
  ASSERT_TRUE(WriteFileAtomically(shard + "/notes.txt", "x", dir_.path(), 0444).ok());
  ASSERT_EQ(mkdir((dir_.path() + "/cas/blobs/zz").c_str(), 0755), 0);
  VerifyReport report = Verify();
  EXPECT_EQ(report.problems.size(), 3u) << Problems(report);
  EXPECT_NE(Quarantined("cas_blobs_ab_" + hash + ".tmp"), "");
  EXPECT_NE(Quarantined("cas_blobs_ab_notes.txt"), "");
  EXPECT_NE(Quarantined("cas_blobs_zz"), "");
  EXPECT_TRUE(Verify().clean());
}

// What a kill -9 leaves: half-written temp files, never visible. They are
// removed and counted, as a worker's start removes them, and are no damage.
TEST_F(VerifyStoreTest, UnfinishedWritesAreRemovedNotReported) {
  store_.reset();
  cache_.reset();
  ASSERT_TRUE(WriteFileAtomically(dir_.path() + "/cas/tmp/123-0-5", "half an upload", dir_.path(), 0600).ok());
  ASSERT_TRUE(WriteFileAtomically(dir_.path() + "/ac/tmp/entry", "x", dir_.path(), 0600).ok());
  VerifyReport report = Verify();
  EXPECT_TRUE(report.clean()) << Problems(report);
  EXPECT_EQ(report.unfinished_writes_removed, 2);
  EXPECT_NE(access((dir_.path() + "/cas/tmp").c_str(), F_OK), -1);
  EXPECT_EQ(access((dir_.path() + "/cas/tmp/123-0-5").c_str(), F_OK), -1);
}

TEST_F(VerifyStoreTest, ActionCacheEntryWithMissingBlobIsFound) {
  Digest out = Digest::Of("output"), never = Digest::Of("never uploaded");
  ASSERT_TRUE(store_->Put(out, "output").ok());
  rev2::ActionResult good, bad;
  *good.add_output_files()->mutable_digest() = out.ToProto();
  *bad.add_output_files()->mutable_digest() = out.ToProto();
  auto* missing = bad.add_output_files();
  missing->set_path("lost.o");
  *missing->mutable_digest() = never.ToProto();
  ASSERT_TRUE(cache_->Put("", Digest::Of("good"), good).ok());
  ASSERT_TRUE(cache_->Put("", Digest::Of("bad"), bad).ok());
  VerifyReport report = Verify();
  ASSERT_EQ(report.problems.size(), 1u) << Problems(report);
  EXPECT_TRUE(absl::StrContains(report.problems[0], "lost.o")) << Problems(report);
  EXPECT_TRUE(absl::StrContains(report.problems[0], never.ToString())) << Problems(report);
  Reopen();
  EXPECT_TRUE(cache_->Get("", Digest::Of("good")).ok());
  EXPECT_TRUE(absl::IsNotFound(cache_->Get("", Digest::Of("bad")).status()));
}

TEST_F(VerifyStoreTest, EntryReferencingACorruptBlobIsFoundToo) {
  Digest out = Digest::Of("output");
  ASSERT_TRUE(store_->Put(out, "output").ok());
  rev2::ActionResult result;
  *result.mutable_stdout_digest() = out.ToProto();
  ASSERT_TRUE(cache_->Put("", Digest::Of("action"), result).ok());
  Overwrite(out, "0utput");
  VerifyReport report = Verify();
  EXPECT_EQ(report.problems.size(), 2u) << Problems(report);  // the blob, then the entry
}

TEST_F(VerifyStoreTest, RefusesWhileAWorkerHoldsTheStateDir) {
  UniqueFd lock = *OpenFile(dir_.path() + "/LOCK", O_RDWR | O_CREAT, 0644);
  ASSERT_EQ(flock(lock.get(), LOCK_EX | LOCK_NB), 0);
  absl::StatusOr<VerifyReport> report = VerifyStateDir(dir_.path());
  EXPECT_EQ(report.status().code(), absl::StatusCode::kFailedPrecondition);
}

}  // namespace
}  // namespace kiln::cas
