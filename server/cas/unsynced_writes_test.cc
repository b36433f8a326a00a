#include "server/cas/unsynced_writes.h"

#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>

#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "server/cas/action_cache.h"
#include "server/cas/blob_store.h"
#include "server/cas/test_util.h"

namespace kiln::cas {
namespace {

namespace fs = std::filesystem;

class UnsyncedWritesTest : public ::testing::Test {
 protected:
  std::unique_ptr<BlobStore> OpenStore(bool fsync) {
    BlobStoreOptions options{dir_.path() + "/cas", 1 << 20, 1 << 20, fsync};
    auto store = BlobStore::Open(options);
    EXPECT_TRUE(store.ok()) << store.status();
    return store.ok() ? *std::move(store) : nullptr;
  }
  std::string Marker() { return dir_.path() + "/UNSYNCED"; }
  std::string BlobPath(const Digest& d) {
    return absl::StrCat(dir_.path(), "/cas/blobs/", d.hash.substr(0, 2), "/", d.hash);
  }
  // What a machine crash can leave of a blob written without fsync: its
  // name and mode, but only part of its bytes.
  void Tear(const Digest& d) {
    ASSERT_EQ(chmod(BlobPath(d).c_str(), 0644), 0);
    ASSERT_EQ(truncate(BlobPath(d).c_str(), d.size / 2), 0);
    ASSERT_EQ(chmod(BlobPath(d).c_str(), 0444), 0);
  }
  // A worker run with --fsync=never in boot "boot-a": a blob that survives
  // intact, one that a crash tears, and an action-cache entry.
  void WriteUnsynced() {
    ASSERT_TRUE(PrepareStateDirForWrites(dir_.path(), /*fsync=*/false, "boot-a").ok());
    auto store = OpenStore(/*fsync=*/false);
    auto cache = ActionCache::Open(dir_.path() + "/ac", store.get(), /*fsync=*/false);
    ASSERT_TRUE(cache.ok());
    ASSERT_TRUE(store->Put(intact_, "an intact blob").ok());
    ASSERT_TRUE(store->Put(torn_, "a blob the crash tears").ok());
    rev2::ActionResult result;
    *result.mutable_stdout_digest() = intact_.ToProto();
    ASSERT_TRUE((*cache)->Put("", action_, result).ok());
    ASSERT_TRUE((*cache)->Get("", action_).ok());
  }

  ScratchDir dir_;
  const Digest intact_ = Digest::Of("an intact blob");
  const Digest torn_ = Digest::Of("a blob the crash tears");
  const Digest action_ = Digest::Of("an action");
};

TEST_F(UnsyncedWritesTest, NeverRecordsTheBootBeforeAnyUnsyncedWrite) {
  auto report = PrepareStateDirForWrites(dir_.path(), /*fsync=*/false, "boot-a");
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_FALSE(report->verified);
  EXPECT_EQ(*ReadFileToString(Marker()), "boot-a\n");
}

TEST_F(UnsyncedWritesTest, AlwaysWithoutEarlierUnsyncedWritesLeavesNoMarker) {
  auto report = PrepareStateDirForWrites(dir_.path(), /*fsync=*/true, "boot-a");
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_FALSE(report->verified);
  EXPECT_FALSE(fs::exists(Marker()));
}

TEST_F(UnsyncedWritesTest, AMachineRestartQuarantinesTornBlobsAndDropsTheActionCache) {
  WriteUnsynced();
  Tear(torn_);
  auto report = PrepareStateDirForWrites(dir_.path(), /*fsync=*/false, "boot-b");
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_TRUE(report->verified);
  EXPECT_EQ(report->unsynced_boot_id, "boot-a");
  ASSERT_EQ(report->verify.problems.size(), 1u);
  EXPECT_NE(report->verify.problems[0].find(torn_.hash), std::string::npos) << report->verify.problems[0];
  EXPECT_EQ(report->verify.entries_dropped, 1);
  EXPECT_EQ(*ReadFileToString(Marker()), "boot-b\n");

  auto store = OpenStore(/*fsync=*/false);
  EXPECT_TRUE(store->Contains(intact_));
  EXPECT_FALSE(store->Contains(torn_));
  EXPECT_EQ(*store->ReadBlob(intact_), "an intact blob");
  auto cache = ActionCache::Open(dir_.path() + "/ac", store.get(), /*fsync=*/false);
  ASSERT_TRUE(cache.ok());
  // The entry itself might have been cut short: it is gone, a cache miss.
  EXPECT_TRUE(absl::IsNotFound((*cache)->Get("", action_).status()));
}

TEST_F(UnsyncedWritesTest, AlwaysAfterAMachineRestartVerifiesThenRemovesTheMarker) {
  WriteUnsynced();
  Tear(torn_);
  auto report = PrepareStateDirForWrites(dir_.path(), /*fsync=*/true, "boot-b");
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_TRUE(report->verified);
  EXPECT_EQ(report->verify.problems.size(), 1u);
  EXPECT_FALSE(fs::exists(Marker()));
  EXPECT_FALSE(OpenStore(/*fsync=*/true)->Contains(torn_));
}

// A worker crash or restart in the same boot loses nothing the page cache
// holds, so nothing is hashed again; a worker that fsyncs syncs the whole
// filesystem once, then needs no marker.
TEST_F(UnsyncedWritesTest, ARestartInTheSameBootTrustsTheStateDir) {
  WriteUnsynced();
  auto again = PrepareStateDirForWrites(dir_.path(), /*fsync=*/false, "boot-a");
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_FALSE(again->verified);
  EXPECT_EQ(*ReadFileToString(Marker()), "boot-a\n");
  auto synced = PrepareStateDirForWrites(dir_.path(), /*fsync=*/true, "boot-a");
  ASSERT_TRUE(synced.ok()) << synced.status();
  EXPECT_FALSE(synced->verified);
  EXPECT_FALSE(fs::exists(Marker()));
  auto store = OpenStore(/*fsync=*/true);
  EXPECT_TRUE(store->Contains(torn_));
  auto cache = ActionCache::Open(dir_.path() + "/ac", store.get());
  ASSERT_TRUE(cache.ok());
  EXPECT_TRUE((*cache)->Get("", action_).ok());
}

// A marker the worker cannot read stops the start: it cannot tell whether
// the state dir needs verifying, so it serves nothing from it.
TEST_F(UnsyncedWritesTest, AnUnreadableMarkerIsAnErrorNotAGuess) {
  ASSERT_TRUE(MakeDirectories(Marker(), 0700).ok());
  for (bool fsync : {false, true}) {
    auto report = PrepareStateDirForWrites(dir_.path(), fsync, "boot-a");
    EXPECT_FALSE(report.ok()) << fsync;
    EXPECT_NE(report.status().message().find("UNSYNCED"), absl::string_view::npos) << report.status();
  }
}

TEST_F(UnsyncedWritesTest, TheBootIdIsTheKernels) {
  auto id = CurrentBootId();
  ASSERT_TRUE(id.ok()) << id.status();
  EXPECT_EQ(id->size(), 36u) << *id;
  EXPECT_EQ(*CurrentBootId(), *id);
}

}  // namespace
}  // namespace kiln::cas
