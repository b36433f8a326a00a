// The on-disk content-addressable store under --state_dir/cas.
//
// Layout: blobs/<first two hex digits>/<sha256> holds each blob as a read-only
// (0444) file, so that later stages can hardlink it into action roots; tmp/
// holds uploads in progress. A blob becomes visible only through rename(2),
// after its size and SHA-256 were verified and its bytes fsynced, so a crash
// leaves either the whole verified blob or nothing but a temp file, which the
// next Open removes.
//
// Size cap: the sum of blob sizes is kept at or below max_bytes by evicting
// the least recently used blobs first (exactly LRU). A use only stamps the
// blob's index entry with a counter, not the move of a list node
// (FindMissingBlobs marks thousands of blobs per call): eviction keeps a
// min-heap of the stamps blobs had when queued, and a blob at the top whose
// stamp has moved on since is queued again under its new stamp instead of
// evicted. (A CLOCK of use flags, tried first, evicted a blob just written
// before older ones merely read once: a client's fresh upload went before
// its action ran.) A blob that is pinned (held by a BlobPin or
// BlobReader, i.e. used by a request in flight) is never evicted; if only
// pinned blobs remain, the store stays over the cap until they are released.
// Recency survives a restart only as write order (file mtime).
//
// Thread-safety: all methods are thread-safe. Disk I/O happens outside the
// lock, except unlink of evicted files and the publishing rename, which must
// be atomic with respect to the index.
#ifndef KILN_SERVER_CAS_BLOB_STORE_H_
#define KILN_SERVER_CAS_BLOB_STORE_H_

#include <cstdint>
#include <array>
#include <atomic>
#include <cstring>
#include <deque>
#include <queue>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "absl/types/span.h"

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/digest.h"
#include "common/posix.h"
#include "common/sha256.h"

namespace kiln::cas {

struct BlobStoreOptions {
  std::string root;             // directory owned by the store
  int64_t max_bytes = 0;        // cap on the disk space of stored blobs (see DiskBytes)
  int64_t max_blob_bytes = 0;   // largest single blob accepted (<= max_bytes)
  // false: blobs are published without fsync of their bytes or of their
  // directory. Still atomic for readers and across a worker crash (the page
  // cache survives it); a machine crash may leave a blob torn, so the state
  // dir must then be verified before it is trusted (unsynced_writes.h).
  bool fsync = true;
};

struct BlobStoreStats {
  int64_t bytes = 0;
  int64_t blobs = 0;
  int64_t max_bytes = 0;
  // Counters since start.
  int64_t evictions = 0;
  int64_t hits = 0;           // lookups of a present blob
  int64_t misses = 0;         // lookups of an absent blob
  int64_t bytes_read = 0;     // served from blobs
  int64_t bytes_written = 0;  // of newly stored blobs
};

class BlobStore;

// A blob's SHA-256 in binary: the index key. 32 bytes inside the index's
// own slots, where a hex std::string would be 64 bytes on the heap.
struct BlobKey {
  std::array<uint8_t, 32> bytes{};

  // False unless `hex` is 64 lowercase hex digits.
  static bool FromHex(absl::string_view hex, BlobKey* key);
  std::string ToHex() const;
  // The 64 lowercase hex digits to out[0..63].
  void WriteHex(char* out) const;

  friend bool operator==(const BlobKey& a, const BlobKey& b) {
    return std::memcmp(a.bytes.data(), b.bytes.data(), a.bytes.size()) == 0;
  }
  // absl's per-process seeded hash: the keys come from clients, who can
  // send any bytes as a hash, so a prefix of them is not a safe hash.
  template <typename H>
  friend H AbslHashValue(H state, const BlobKey& key) {
    return H::combine_contiguous(std::move(state), key.bytes.data(), key.bytes.size());
  }
};

// Directories whose fsync is owed before blobs published into them may be
// acknowledged. A batch of blobs acknowledged together (an action's outputs,
// acknowledged by its ActionResult) syncs each directory once, at the end,
// instead of once per blob: on ext4 the first fsync commits the journal
// with every rename of the batch, and the others find nothing left to do.
// Not thread-safe.
class DirectorySyncs {
 public:
  void Add(std::string directory) { directories_.insert(std::move(directory)); }
  // Syncs every directory added; afterwards the batch may be acknowledged.
  absl::Status SyncAll();

 private:
  absl::flat_hash_set<std::string> directories_;
};

// Keeps one blob from being evicted while it is alive. Movable, not copyable.
class BlobPin {
 public:
  BlobPin() = default;
  BlobPin(BlobPin&& other) noexcept;
  BlobPin& operator=(BlobPin&& other) noexcept;
  ~BlobPin();

 private:
  friend class BlobStore;
  BlobPin(BlobStore* store, const BlobKey& key) : store_(store), key_(key) {}
  void Release();
  BlobStore* store_ = nullptr;
  BlobKey key_;
};

// An open, pinned blob.
class BlobReader {
 public:
  const Digest& digest() const { return digest_; }
  // The stored file; stays valid (and unevicted) while this reader lives.
  const std::string& path() const { return path_; }
  int fd() const { return fd_.get(); }
  // Reads up to `length` bytes from `offset` (fewer only at the end).
  absl::StatusOr<std::string> Read(int64_t offset, int64_t length) const;
  // The same into `buffer`, which holds at least `length` bytes; returns
  // how many bytes were read.
  absl::StatusOr<int64_t> ReadInto(int64_t offset, char* buffer, int64_t length) const;

 private:
  friend class BlobStore;
  Digest digest_;
  std::string path_;
  UniqueFd fd_;
  BlobPin pin_;
  BlobStore* store_ = nullptr;
};

// Streams one blob into a temp file. Commit verifies it and publishes it; a
// writer destroyed without a successful Commit leaves nothing behind.
// Not thread-safe: one writer belongs to one upload.
class BlobWriter {
 public:
  ~BlobWriter();
  BlobWriter(const BlobWriter&) = delete;
  BlobWriter& operator=(const BlobWriter&) = delete;

  // The declared digest; for a writer from StartWriteOfUnknownHash, its
  // hash is known only after a successful Commit.
  const Digest& expected() const { return expected_; }
  int64_t bytes_written() const { return written_; }
  // INVALID_ARGUMENT if the data would go past the declared size.
  absl::Status Append(absl::string_view data);
  // INVALID_ARGUMENT on a size or hash mismatch; the temp file is removed.
  // A writer of unknown hash takes the hash of what it received, and
  // drops its temp file without syncing it if that blob is stored already.
  absl::Status Commit();

 private:
  friend class BlobStore;
  friend class BlobBatch;
  BlobWriter(BlobStore* store, Digest expected, std::string temp_path, UniqueFd fd);
  // Commit's first half: checks the size and hash (fixing the digest of a
  // writer of unknown hash) and makes the file read-only.
  absl::Status Seal();
  // Starts writing the sealed file's bytes back (when the store fsyncs), so
  // that SyncAndPublish's fsync mostly waits for the journal commit.
  void StartWriteback();
  // Its second half: fsyncs the file and renames it into the store, leaving
  // the fsync of its directory to `deferred_syncs_` if set.
  absl::Status SyncAndPublish();
  // Removes the temp file once (after a failure, or if stored already).
  void DropTemp();
  BlobStore* store_;
  Digest expected_;
  std::string temp_path_;
  UniqueFd fd_;
  Sha256 hash_;
  int64_t written_ = 0;
  int64_t writeback_started_ = 0;  // bytes already handed to sync_file_range
  bool sealed_ = false;
  bool temp_gone_ = false;  // published, or removed
  DirectorySyncs* deferred_syncs_ = nullptr;
  static constexpr int64_t kWritebackBytes = 8 << 20;
};

// Blobs stored together and acknowledged together (an action's logs and
// outputs). Each blob's bytes start going to disk as soon as it is sealed,
// and CommitAll fsyncs and publishes them all at the end: their fsyncs then
// share journal commits instead of waiting for one each, one after the
// other. A blob is in the store only after CommitAll; one that is never
// committed leaves nothing behind. Not thread-safe.
class BlobBatch {
 public:
  // The directories the blobs are published into are left to `syncs`.
  explicit BlobBatch(DirectorySyncs* syncs) : syncs_(syncs) {}
  // Seals a writer whose bytes are all appended, with Commit's errors, and
  // returns its digest. Commits the batch first when it holds many blobs
  // (each keeps its temp file open).
  absl::StatusOr<Digest> Add(std::unique_ptr<BlobWriter> writer);
  // fsyncs and publishes every blob added since the last call. Returns the
  // first error; with `failed`, also the error of each blob that failed.
  absl::Status CommitAll(absl::flat_hash_map<Digest, absl::Status>* failed = nullptr);

  static constexpr size_t kMaxPending = 64;

 private:
  DirectorySyncs* const syncs_;
  std::vector<std::unique_ptr<BlobWriter>> pending_;
};

class BlobStore {
 public:
  // Creates or recovers a store: removes half-written temp files and stray
  // files, and indexes every blob already there.
  static absl::StatusOr<std::unique_ptr<BlobStore>> Open(const BlobStoreOptions& options);

  // True if the blob is stored; marks it recently used.
  bool Contains(const Digest& digest);
  // Contains for many digests under one lock (FindMissingBlobs): sets
  // present[i] for each stored digests[i], and marks those recently used.
  // The hashes need not be valid; an invalid one is simply absent.
  struct DigestRef {
    absl::string_view hash;
    int64_t size;
  };
  void ContainsEach(absl::Span<const DigestRef> digests, std::vector<bool>* present);
  // The same for hashes decoded already.
  struct KeyedDigest {
    BlobKey key;
    int64_t size;
  };
  void ContainsEach(absl::Span<const KeyedDigest> digests, std::vector<bool>* present);
  // Pins a stored blob; NOT_FOUND if it is absent.
  absl::StatusOr<BlobPin> Pin(const Digest& digest);
  absl::StatusOr<BlobReader> OpenBlob(const Digest& digest);
  // Reads a whole blob; meant for small blobs such as Directory messages.
  absl::StatusOr<std::string> ReadBlob(const Digest& digest);
  // INVALID_ARGUMENT if the digest is larger than max_blob_bytes.
  absl::StatusOr<std::unique_ptr<BlobWriter>> StartWrite(const Digest& digest);
  // For bytes Kiln produced itself (an action's outputs): `size` bytes whose
  // hash is computed while they are written, so they are read only once.
  absl::StatusOr<std::unique_ptr<BlobWriter>> StartWriteOfUnknownHash(int64_t size);
  // Verifies and stores a blob held in memory.
  absl::Status Put(const Digest& digest, absl::string_view data);
  // The same, the blob going into `batch`: stored once the batch commits.
  absl::Status PutInBatch(const Digest& digest, absl::string_view data, BlobBatch* batch);

  int64_t max_blob_bytes() const { return options_.max_blob_bytes; }

  // What one blob of `size` bytes costs on disk, as counted toward the cap:
  // whole 4 KiB blocks, as ext4 and xfs allocate them. 200,000 one-byte
  // blobs are 819 MB, not 200 KB. (The one empty blob takes no block.)
  static constexpr int64_t kBlockBytes = 4096;
  static int64_t DiskBytes(int64_t size) {
    return (size + kBlockBytes - 1) / kBlockBytes * kBlockBytes;
  }
  // Where a blob's file is. Only meaningful while the blob is pinned; the
  // file is read-only and may be hardlinked (it then outlives eviction).
  std::string BlobPath(absl::string_view hash) const;
  BlobStoreStats GetStats();

 private:
  friend class BlobPin;
  friend class BlobReader;
  friend class BlobWriter;
  struct Entry {
    int64_t size = 0;  // the blob's size; DiskBytes(size) counts toward the cap
    int32_t pins = 0;
    uint64_t last_use = 0;  // use_counter_ at the blob's last write or use
  };

  explicit BlobStore(BlobStoreOptions options) : options_(std::move(options)) {}
  absl::Status Recover();
  // Renames a verified temp file into place (or drops it if the blob exists).
  absl::Status Publish(const Digest& digest, const std::string& temp_path, DirectorySyncs* syncs);
  void Unpin(const BlobKey& key);
  // The entry of a stored blob of that hash and size, else null.
  Entry* FindLocked(const BlobKey& key, int64_t size) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void IndexLocked(const BlobKey& key, int64_t size) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Evicts unpinned blobs, oldest unused first, until under the cap; never
  // `keep`.
  void EvictLocked(const BlobKey* keep = nullptr) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const BlobStoreOptions options_;
  absl::Mutex mu_;
  absl::flat_hash_map<BlobKey, Entry> entries_ ABSL_GUARDED_BY(mu_);
  // Every key of entries_ once, under its last_use when it was queued
  // (at most its last_use now); top: the smallest.
  using Queued = std::pair<uint64_t, BlobKey>;
  struct LaterStamp {
    bool operator()(const Queued& a, const Queued& b) const { return a.first > b.first; }
  };
  std::priority_queue<Queued, std::vector<Queued>, LaterStamp> eviction_queue_ ABSL_GUARDED_BY(mu_);
  uint64_t use_counter_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t total_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t evictions_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t hits_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t misses_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t bytes_written_ ABSL_GUARDED_BY(mu_) = 0;
  std::atomic<int64_t> bytes_read_{0};
  absl::Time last_publish_time_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
};

}  // namespace kiln::cas

#endif  // KILN_SERVER_CAS_BLOB_STORE_H_
