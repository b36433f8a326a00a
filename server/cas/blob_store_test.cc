#include "server/cas/blob_store.h"

#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "absl/strings/escaping.h"

#include "absl/strings/str_cat.h"
#include "server/cas/test_util.h"

namespace kiln::cas {
namespace {

namespace fs = std::filesystem;

class BlobStoreTest : public ::testing::Test {
 protected:
  std::unique_ptr<BlobStore> OpenStore(int64_t max_bytes = 1 << 20) {
    BlobStoreOptions options{dir_.path() + "/cas", max_bytes, max_bytes};
    auto store = BlobStore::Open(options);
    EXPECT_TRUE(store.ok()) << store.status();
    return store.ok() ? *std::move(store) : nullptr;
  }
  std::string BlobPath(const Digest& d) {
    return absl::StrCat(dir_.path(), "/cas/blobs/", d.hash.substr(0, 2), "/", d.hash);
  }
  int TempFiles() {
    int n = 0;
    for (auto& e : fs::directory_iterator(dir_.path() + "/cas/tmp")) (void)e, ++n;
    return n;
  }
  ScratchDir dir_;
};

TEST_F(BlobStoreTest, PutThenReadReturnsTheSameBytesFromAReadOnlyFile) {
  auto store = OpenStore();
  Digest d = Digest::Of("hello");
  ASSERT_TRUE(store->Put(d, "hello").ok());
  EXPECT_TRUE(store->Contains(d));
  EXPECT_EQ(*store->ReadBlob(d), "hello");
  struct stat st;
  ASSERT_EQ(stat(BlobPath(d).c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0444);
}

TEST_F(BlobStoreTest, HashMismatchStoresNothing) {
  auto store = OpenStore();
  Digest claimed = Digest::Of("expected");
  claimed.size = 5;
  auto status = store->Put(claimed, "wrong");
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(status.message().find("does not match"), absl::string_view::npos);
  EXPECT_FALSE(store->Contains(claimed));
  EXPECT_FALSE(fs::exists(BlobPath(claimed)));
  EXPECT_EQ(TempFiles(), 0);
}

TEST_F(BlobStoreTest, SizeMismatchAndOverrunStoreNothing) {
  auto store = OpenStore();
  Digest d = Digest::Of("abcdef");
  auto writer = *store->StartWrite(d);
  ASSERT_TRUE(writer->Append("abc").ok());
  EXPECT_EQ(writer->Commit().code(), absl::StatusCode::kInvalidArgument);
  auto overrun = *store->StartWrite(d);
  auto status = overrun->Append("abcdefgh");
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(status.message().find("declared size"), absl::string_view::npos);
  overrun.reset();
  EXPECT_FALSE(store->Contains(d));
  EXPECT_EQ(TempFiles(), 0);
}

TEST_F(BlobStoreTest, BlobIsInvisibleUntilCommitted) {
  auto store = OpenStore();
  Digest d = Digest::Of("partial-data");
  auto writer = *store->StartWrite(d);
  ASSERT_TRUE(writer->Append("partial").ok());
  EXPECT_FALSE(store->Contains(d));
  EXPECT_FALSE(fs::exists(BlobPath(d)));
  ASSERT_TRUE(writer->Append("-data").ok());
  ASSERT_TRUE(writer->Commit().ok());
  EXPECT_TRUE(store->Contains(d));
}

TEST_F(BlobStoreTest, RejectsBlobsOverTheMaximum) {
  auto store = OpenStore(100);
  Digest big = Digest::Of(std::string(101, 'x'));
  auto writer = store->StartWrite(big);
  EXPECT_EQ(writer.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(writer.status().message().find("maximum blob size"), absl::string_view::npos);
}

TEST_F(BlobStoreTest, EvictsLeastRecentlyUsedWhenOverCap) {
  auto store = OpenStore(3 * BlobStore::kBlockBytes);
  Digest a = Digest::Of(std::string(100, 'a'));
  Digest b = Digest::Of(std::string(100, 'b'));
  Digest c = Digest::Of(std::string(100, 'c'));
  Digest d = Digest::Of(std::string(100, 'd'));
  ASSERT_TRUE(store->Put(a, std::string(100, 'a')).ok());
  ASSERT_TRUE(store->Put(b, std::string(100, 'b')).ok());
  ASSERT_TRUE(store->Put(c, std::string(100, 'c')).ok());
  EXPECT_TRUE(store->Contains(a));  // a is now more recent than b
  ASSERT_TRUE(store->Put(d, std::string(100, 'd')).ok());
  EXPECT_FALSE(store->Contains(b));
  EXPECT_FALSE(fs::exists(BlobPath(b)));
  EXPECT_TRUE(store->Contains(a));
  EXPECT_TRUE(store->Contains(c));
  EXPECT_TRUE(store->Contains(d));
  EXPECT_EQ(store->GetStats().bytes, 3 * BlobStore::kBlockBytes);
  EXPECT_EQ(store->GetStats().evictions, 1);
}

TEST_F(BlobStoreTest, TheCapCountsDiskBlocksNotBytes) {
  // Tiny blobs each take a whole block on disk: 10 one-byte blobs under a
  // cap of 5 blocks cannot all stay.
  auto store = OpenStore(5 * BlobStore::kBlockBytes);
  for (char c : std::string("0123456789")) ASSERT_TRUE(store->Put(Digest::Of(std::string(1, c)), std::string(1, c)).ok());
  EXPECT_EQ(store->GetStats().bytes, 5 * BlobStore::kBlockBytes);
  EXPECT_EQ(store->GetStats().evictions, 5);
}

TEST_F(BlobStoreTest, PinnedBlobsAreNeverEvicted) {
  auto store = OpenStore(2 * BlobStore::kBlockBytes);
  Digest a = Digest::Of(std::string(100, 'a'));
  Digest b = Digest::Of(std::string(100, 'b'));
  Digest c = Digest::Of(std::string(100, 'c'));
  ASSERT_TRUE(store->Put(a, std::string(100, 'a')).ok());
  ASSERT_TRUE(store->Put(b, std::string(100, 'b')).ok());
  {
    auto reader = store->OpenBlob(a);  // a request in flight reads a
    ASSERT_TRUE(reader.ok());
    auto pin_b = store->Pin(b);
    ASSERT_TRUE(pin_b.ok());
    ASSERT_TRUE(store->Put(c, std::string(100, 'c')).ok());
    // Both old blobs are in use, so the store stays over its cap for now.
    EXPECT_TRUE(store->Contains(a));
    EXPECT_TRUE(store->Contains(b));
    EXPECT_EQ(*reader->Read(0, 100), std::string(100, 'a'));
  }
  // Released: the cap is enforced again.
  EXPECT_LE(store->GetStats().bytes, 2 * BlobStore::kBlockBytes);
}

TEST_F(BlobStoreTest, RecoveryRemovesHalfWrittenFilesAndKeepsCommittedBlobs) {
  Digest kept = Digest::Of("committed before the crash");
  {
    auto store = OpenStore();
    ASSERT_TRUE(store->Put(kept, "committed before the crash").ok());
    // Simulate a crash mid-upload: the writer's temp file is left behind.
    auto writer = *store->StartWrite(Digest::Of("never finished"));
    ASSERT_TRUE(writer->Append("never").ok());
    std::string temp = dir_.path() + "/cas/tmp/leftover";
    fs::copy_file(fs::directory_iterator(dir_.path() + "/cas/tmp")->path(), temp);
    store.reset();
    writer.release();  // the process "died": nothing ran its destructor
  }
  // A stray writable file in the blob tree (e.g. a copy from a crashed tool)
  // is not something the store published, so it must not be served.
  Digest stray = Digest::Of("stray");
  { std::ofstream(BlobPath(stray)) << "stray"; }
  auto store = OpenStore();
  EXPECT_EQ(TempFiles(), 0);
  EXPECT_TRUE(store->Contains(kept));
  EXPECT_EQ(Digest::Of(*store->ReadBlob(kept)), kept);
  EXPECT_FALSE(store->Contains(stray));
  EXPECT_FALSE(fs::exists(BlobPath(stray)));
}

TEST_F(BlobStoreTest, RecoveryKeepsRecencyOrderAndEnforcesALowerCap) {
  std::vector<Digest> blobs;
  {
    auto store = OpenStore(10 * BlobStore::kBlockBytes);
    for (char c : std::string("abcde")) {
      std::string data(100, c);
      blobs.push_back(Digest::Of(data));
      ASSERT_TRUE(store->Put(blobs.back(), data).ok());
    }
  }
  auto store = OpenStore(3 * BlobStore::kBlockBytes);
  EXPECT_FALSE(store->Contains(blobs[0]));
  EXPECT_FALSE(store->Contains(blobs[1]));
  EXPECT_TRUE(store->Contains(blobs[4]));
  EXPECT_EQ(store->GetStats().bytes, 3 * BlobStore::kBlockBytes);
}

TEST_F(BlobStoreTest, ConcurrentWritersOfTheSameBlobAllSucceed) {
  auto store = OpenStore(int64_t{64} << 20);
  std::string data(1 << 20, 'z');
  Digest d = Digest::Of(data);
  std::vector<std::thread> threads;
  std::atomic<int> ok{0};
  for (int i = 0; i < 8; ++i) {
    threads.emplace_back([&] {
      auto writer = *store->StartWrite(d);
      for (size_t off = 0; off < data.size(); off += 65536) {
        if (!writer->Append(absl::string_view(data).substr(off, 65536)).ok()) return;
      }
      if (writer->Commit().ok()) ++ok;
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(ok.load(), 8);
  EXPECT_EQ(*store->ReadBlob(d), data);
  EXPECT_EQ(store->GetStats().blobs, 2);  // d and the always-present empty blob
  EXPECT_EQ(TempFiles(), 0);
}

TEST_F(BlobStoreTest, EmptyBlobIsAlwaysPresent) {
  auto store = OpenStore();
  EXPECT_TRUE(store->Contains(Digest::Of("")));
  EXPECT_EQ(*store->ReadBlob(Digest::Of("")), "");
}

TEST_F(BlobStoreTest, AWriteOfUnknownHashIsStoredUnderTheHashOfItsBytes) {
  auto store = OpenStore();
  auto writer = store->StartWriteOfUnknownHash(11);
  ASSERT_TRUE(writer.ok()) << writer.status();
  ASSERT_TRUE((*writer)->Append("hello ").ok());
  ASSERT_TRUE((*writer)->Append("world").ok());
  ASSERT_TRUE((*writer)->Commit().ok());
  EXPECT_EQ((*writer)->expected(), Digest::Of("hello world"));
  EXPECT_EQ(*store->ReadBlob(Digest::Of("hello world")), "hello world");

  // The same bytes again: the stored blob stays, the temp file goes.
  auto again = store->StartWriteOfUnknownHash(11);
  ASSERT_TRUE(again.ok());
  ASSERT_TRUE((*again)->Append("hello world").ok());
  ASSERT_TRUE((*again)->Commit().ok());
  EXPECT_EQ((*again)->expected(), Digest::Of("hello world"));
  EXPECT_EQ(TempFiles(), 0);

  // Fewer bytes than declared store nothing.
  auto short_write = store->StartWriteOfUnknownHash(5);
  ASSERT_TRUE(short_write.ok());
  ASSERT_TRUE((*short_write)->Append("abc").ok());
  EXPECT_EQ((*short_write)->Commit().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE(store->Contains(Digest::Of("abc")));
  EXPECT_EQ(TempFiles(), 0);
}

TEST_F(BlobStoreTest, ContainsEachMatchesContainsForEveryDigest) {
  auto store = OpenStore();
  ASSERT_TRUE(store->Put(Digest::Of("a"), "a").ok());
  ASSERT_TRUE(store->Put(Digest::Of("bb"), "bb").ok());
  Digest wrong_size = Digest::Of("bb");
  wrong_size.size = 3;
  const Digest a = Digest::Of("a"), bb = Digest::Of("bb"), missing = Digest::Of("c");
  std::vector<BlobStore::DigestRef> refs = {
      {a.hash, a.size}, {missing.hash, missing.size}, {wrong_size.hash, wrong_size.size},
      {"not a hash", 1}, {bb.hash, bb.size}};
  std::vector<bool> present;
  store->ContainsEach(refs, &present);
  EXPECT_EQ(present, (std::vector<bool>{true, false, false, false, true}));
}

TEST(BlobKeyTest, TakesExactlyLowercaseHexAndGivesItBack) {
  const Digest digest = Digest::Of("key");
  BlobKey key;
  ASSERT_TRUE(BlobKey::FromHex(digest.hash, &key));
  EXPECT_EQ(key.ToHex(), digest.hash);
  BlobKey other;
  ASSERT_TRUE(BlobKey::FromHex(Digest::Of("other").hash, &other));
  EXPECT_FALSE(key == other);
  std::string upper = digest.hash;
  upper[10] = 'A';
  for (const std::string& bad : {upper, digest.hash.substr(1), digest.hash + "0",
                                 std::string(63, '0') + "g", std::string(63, '0') + '\0'}) {
    EXPECT_FALSE(BlobKey::FromHex(bad, &key)) << bad;
  }
}

TEST(BlobKeyTest, AnyByteAtAnyPositionIsDecodedOrRejectedAsHexDigitsAre) {
  const std::string hash = Digest::Of("positions").hash;
  for (size_t position = 0; position < 64; ++position) {
    for (int byte = 0; byte < 256; ++byte) {
      std::string hex = hash;
      hex[position] = static_cast<char>(byte);
      const bool lowercase_hex = (byte >= '0' && byte <= '9') || (byte >= 'a' && byte <= 'f');
      BlobKey key;
      ASSERT_EQ(BlobKey::FromHex(hex, &key), lowercase_hex) << position << " " << byte;
      if (lowercase_hex) {
        ASSERT_EQ(std::string(reinterpret_cast<const char*>(key.bytes.data()), 32),
                  absl::HexStringToBytes(hex));
      }
    }
  }
}

// A blob just written is more recent than blobs used before it. A CLOCK of
// use flags evicted it first (its flag was clear, theirs set): a client's
// fresh upload went before the action that needed it ran (found by
// stress_crash_point_loop_test: an acknowledged blob was gone at restart).
TEST_F(BlobStoreTest, AFreshWriteOutlivesOlderBlobsUsedBeforeIt) {
  auto store = OpenStore(3 * BlobStore::kBlockBytes);
  std::vector<Digest> blobs;
  for (char c : std::string("abcd")) blobs.push_back(Digest::Of(std::string(100, c)));
  ASSERT_TRUE(store->Put(blobs[0], std::string(100, 'a')).ok());
  ASSERT_TRUE(store->Put(blobs[1], std::string(100, 'b')).ok());
  EXPECT_TRUE(store->Contains(blobs[0]));
  EXPECT_TRUE(store->Contains(blobs[1]));
  ASSERT_TRUE(store->Put(blobs[2], std::string(100, 'c')).ok());
  ASSERT_TRUE(store->Put(blobs[3], std::string(100, 'd')).ok());  // over the cap: a goes
  EXPECT_FALSE(store->Contains(blobs[0]));
  for (int i = 1; i <= 3; ++i) EXPECT_TRUE(store->Contains(blobs[i])) << i;
  EXPECT_EQ(store->GetStats().evictions, 1);
}

TEST_F(BlobStoreTest, ABlobUsedAgainOutlivesOlderAndNewerUnusedOnes) {
  // A blob used again is kept over every blob not used since.
  auto store = OpenStore(4 * BlobStore::kBlockBytes);
  std::vector<Digest> blobs;
  for (char c : std::string("abcd")) {
    blobs.push_back(Digest::Of(std::string(100, c)));
    ASSERT_TRUE(store->Put(blobs.back(), std::string(100, c)).ok());
  }
  for (char c : std::string("efgh")) {
    EXPECT_TRUE(store->Contains(blobs[0]));  // a is used before every new write
    blobs.push_back(Digest::Of(std::string(100, c)));
    ASSERT_TRUE(store->Put(blobs.back(), std::string(100, c)).ok());
  }
  EXPECT_TRUE(store->Contains(blobs[0]));
  for (int i = 1; i <= 4; ++i) EXPECT_FALSE(store->Contains(blobs[i])) << i;
  for (int i = 5; i <= 7; ++i) EXPECT_TRUE(store->Contains(blobs[i])) << i;
  EXPECT_EQ(store->GetStats().evictions, 4);
  EXPECT_EQ(store->GetStats().bytes, 4 * BlobStore::kBlockBytes);
}

// ---- BlobBatch: an action's logs and outputs, synced and published together ----

std::unique_ptr<BlobWriter> WriterOf(BlobStore& store, absl::string_view data, bool known_hash = true) {
  auto writer = known_hash ? store.StartWrite(Digest::Of(data))
                           : store.StartWriteOfUnknownHash(static_cast<int64_t>(data.size()));
  EXPECT_TRUE(writer.ok()) << writer.status();
  EXPECT_TRUE((*writer)->Append(data).ok());
  return *std::move(writer);
}

TEST_F(BlobStoreTest, ABatchPublishesItsBlobsOnlyWhenCommitted) {
  auto store = OpenStore();
  DirectorySyncs syncs;
  BlobBatch batch(&syncs);
  auto first = batch.Add(WriterOf(*store, "first output"));
  auto second = batch.Add(WriterOf(*store, "second output", /*known_hash=*/false));
  ASSERT_TRUE(first.ok()) << first.status();
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_EQ(*second, Digest::Of("second output"));
  EXPECT_FALSE(store->Contains(*first));
  EXPECT_FALSE(store->Contains(*second));
  EXPECT_FALSE(fs::exists(BlobPath(*first)));
  ASSERT_TRUE(batch.CommitAll().ok());
  ASSERT_TRUE(syncs.SyncAll().ok());
  EXPECT_EQ(*store->ReadBlob(*first), "first output");
  EXPECT_EQ(*store->ReadBlob(*second), "second output");
  struct stat st;
  ASSERT_EQ(stat(BlobPath(*second).c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0444);
  EXPECT_EQ(TempFiles(), 0);
}

TEST_F(BlobStoreTest, ABatchNeverCommittedLeavesNothingBehind) {
  auto store = OpenStore();
  Digest digest = Digest::Of("an output of a failed action");
  {
    DirectorySyncs syncs;
    BlobBatch batch(&syncs);
    ASSERT_TRUE(batch.Add(WriterOf(*store, "an output of a failed action")).ok());
    EXPECT_EQ(TempFiles(), 1);
  }
  EXPECT_EQ(TempFiles(), 0);
  EXPECT_FALSE(store->Contains(digest));
  EXPECT_FALSE(fs::exists(BlobPath(digest)));
}

TEST_F(BlobStoreTest, ABatchRejectsABlobThatDoesNotMatchItsDigestWhenAdded) {
  auto store = OpenStore();
  DirectorySyncs syncs;
  BlobBatch batch(&syncs);
  auto writer = store->StartWrite(Digest::Of("what was promised"));
  ASSERT_TRUE(writer.ok());
  ASSERT_TRUE((*writer)->Append("what was sent!!!!").ok());
  auto added = batch.Add(*std::move(writer));
  EXPECT_EQ(added.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(TempFiles(), 0);
  EXPECT_TRUE(batch.CommitAll().ok());
  EXPECT_FALSE(store->Contains(Digest::Of("what was promised")));
}

TEST_F(BlobStoreTest, ABlobStoredAlreadyIsNotWrittenAgainByABatch) {
  auto store = OpenStore();
  ASSERT_TRUE(store->Put(Digest::Of("same bytes"), "same bytes").ok());
  DirectorySyncs syncs;
  BlobBatch batch(&syncs);
  auto added = batch.Add(WriterOf(*store, "same bytes", /*known_hash=*/false));
  ASSERT_TRUE(added.ok());
  EXPECT_EQ(*added, Digest::Of("same bytes"));
  EXPECT_EQ(TempFiles(), 0);  // dropped at once, nothing left to sync
  EXPECT_TRUE(batch.CommitAll().ok());
  EXPECT_TRUE(store->Contains(*added));
}

// Sets or clears the immutable flag of `path` (as root, on ext4 or xfs): a
// rename into an immutable directory fails with EPERM even for root.
void SetImmutable(const std::string& path, bool immutable) {
  int fd = open(path.c_str(), O_RDONLY | O_DIRECTORY);
  ASSERT_GE(fd, 0) << path;
  int flags = 0;
  ASSERT_EQ(ioctl(fd, FS_IOC_GETFLAGS, &flags), 0) << strerror(errno);
  flags = immutable ? (flags | FS_IMMUTABLE_FL) : (flags & ~FS_IMMUTABLE_FL);
  ASSERT_EQ(ioctl(fd, FS_IOC_SETFLAGS, &flags), 0) << "chattr " << path << ": " << strerror(errno);
  close(fd);
}

// A blob the batch cannot publish (here its rename fails) is reported with
// its own error, leaves no temp file and is not served; the others of the
// batch are published; and the blob can be stored once the cause is gone.
TEST_F(BlobStoreTest, ABlobABatchCannotPublishIsReportedAndTheOthersAreKept) {
  auto store = OpenStore();
  const std::string blocked_data = "an output whose shard refuses the rename";
  const Digest blocked = Digest::Of(blocked_data);
  std::string other_data;
  for (int i = 0; other_data.empty() || Digest::Of(other_data).hash.substr(0, 2) == blocked.hash.substr(0, 2); ++i) {
    other_data = absl::StrCat("another output ", i);
  }
  const Digest other = Digest::Of(other_data);
  const std::string shard = fs::path(BlobPath(blocked)).parent_path();
  SetImmutable(shard, true);
  DirectorySyncs syncs;
  BlobBatch batch(&syncs);
  ASSERT_TRUE(batch.Add(WriterOf(*store, blocked_data)).ok());
  ASSERT_TRUE(batch.Add(WriterOf(*store, other_data)).ok());
  absl::flat_hash_map<Digest, absl::Status> failed;
  absl::Status committed = batch.CommitAll(&failed);
  SetImmutable(shard, false);
  EXPECT_FALSE(committed.ok());
  EXPECT_NE(committed.message().find(blocked.hash.substr(0, 2)), std::string::npos) << committed;
  ASSERT_EQ(failed.size(), 1u);
  ASSERT_TRUE(failed.contains(blocked));
  EXPECT_EQ(failed[blocked].code(), absl::StatusCode::kPermissionDenied) << failed[blocked];
  EXPECT_FALSE(store->Contains(blocked));
  EXPECT_FALSE(fs::exists(BlobPath(blocked)));
  EXPECT_EQ(store->ReadBlob(other).value_or("(not stored)"), other_data);
  EXPECT_EQ(TempFiles(), 0);
  ASSERT_TRUE(syncs.SyncAll().ok());
  ASSERT_TRUE(store->Put(blocked, blocked_data).ok());
  EXPECT_EQ(*store->ReadBlob(blocked), blocked_data);
}

// Each pending blob keeps its temp file open: a batch of a large output
// tree commits as it goes instead of holding a descriptor per file.
TEST_F(BlobStoreTest, ABatchCommitsAsItGoesBeyondItsPendingLimit) {
  auto store = OpenStore();
  DirectorySyncs syncs;
  BlobBatch batch(&syncs);
  std::vector<Digest> digests;
  for (size_t i = 0; i <= BlobBatch::kMaxPending; ++i) {
    auto added = batch.Add(WriterOf(*store, absl::StrCat("file ", i)));
    ASSERT_TRUE(added.ok());
    digests.push_back(*added);
  }
  EXPECT_EQ(TempFiles(), 1);
  for (size_t i = 0; i < BlobBatch::kMaxPending; ++i) EXPECT_TRUE(store->Contains(digests[i])) << i;
  EXPECT_FALSE(store->Contains(digests.back()));
  ASSERT_TRUE(batch.CommitAll().ok());
  EXPECT_TRUE(store->Contains(digests.back()));
}

}  // namespace
}  // namespace kiln::cas
