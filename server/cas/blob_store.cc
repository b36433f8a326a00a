#include "server/cas/blob_store.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "common/status_macros.h"

namespace kiln::cas {
namespace fs = std::filesystem;

namespace {

bool IsHexHash(absl::string_view name) {
  return name.size() == 64 &&
         std::all_of(name.begin(), name.end(),
                     [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}

std::string UniqueTempName() {
  static std::atomic<uint64_t> counter{0};
  return absl::StrCat(getpid(), "-", counter.fetch_add(1), "-", absl::ToUnixNanos(absl::Now()));
}

// Eight lowercase hex digits at once (SWAR: each byte of a uint64 is one
// digit): false if any is not [0-9a-f], else their four bytes to `out`.
// FindMissingBlobs decodes 640,000 digits per call of 10,000 digests; a
// table lookup per digit cost it a fifth of a millisecond.
bool DecodeEightHexDigits(const char* in, uint8_t* out) {
  constexpr uint64_t kOnes = 0x0101010101010101ULL;
  constexpr uint64_t kHigh = 0x8080808080808080ULL;
  uint64_t x;
  std::memcpy(&x, in, 8);
  if (x & kHigh) return false;  // not ASCII
  // With every byte below 0x80, adding (0x80 - lo) sets a byte's high bit
  // iff it is >= lo, and adding (0x7f - hi) iff it is > hi; no carry
  // crosses into the next byte.
  const auto in_range = [&](uint8_t lo, uint8_t hi) {
    return (x + kOnes * (0x80 - lo)) & ~(x + kOnes * (0x7f - hi)) & kHigh;
  };
  const uint64_t digit = in_range('0', '9');
  const uint64_t letter = in_range('a', 'f');
  if ((digit | letter) != kHigh) return false;
  // '0'-'9' are 0x30-0x39 and 'a'-'f' 0x61-0x66: the low nibble, plus 9
  // for a letter.
  const uint64_t letter_ones = letter >> 7;
  const uint64_t values = (x & (kOnes * 0x0f)) + letter_ones * 9;
  // Little-endian: the first digit of each pair is the low byte of its
  // 16-bit lane and becomes the high nibble of the output byte.
  uint64_t packed = ((values & 0x000f000f000f000fULL) << 4) | ((values >> 8) & 0x000f000f000f000fULL);
  packed = (packed | (packed >> 8)) & 0x0000ffff0000ffffULL;
  packed = (packed | (packed >> 16)) & 0x00000000ffffffffULL;
  const uint32_t bytes = static_cast<uint32_t>(packed);
  std::memcpy(out, &bytes, 4);
  return true;
}

}  // namespace

// ---- BlobKey ----

bool BlobKey::FromHex(absl::string_view hex, BlobKey* key) {
  static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "DecodeEightHexDigits");
  if (hex.size() != 64) return false;
  bool valid = true;
  for (int i = 0; i < 8; ++i) valid &= DecodeEightHexDigits(hex.data() + 8 * i, key->bytes.data() + 4 * i);
  return valid;
}

std::string BlobKey::ToHex() const {
  return absl::BytesToHexString(absl::string_view(reinterpret_cast<const char*>(bytes.data()), bytes.size()));
}

void BlobKey::WriteHex(char* out) const {
  static constexpr char kDigits[] = "0123456789abcdef";
  for (size_t i = 0; i < bytes.size(); ++i) {
    out[2 * i] = kDigits[bytes[i] >> 4];
    out[2 * i + 1] = kDigits[bytes[i] & 0x0f];
  }
}

// ---- DirectorySyncs ----

absl::Status DirectorySyncs::SyncAll() {
  for (const std::string& directory : directories_) RETURN_IF_ERROR(FsyncDirectory(directory));
  directories_.clear();
  return absl::OkStatus();
}

// ---- BlobPin ----

BlobPin::BlobPin(BlobPin&& other) noexcept
    : store_(std::exchange(other.store_, nullptr)), key_(other.key_) {}

BlobPin& BlobPin::operator=(BlobPin&& other) noexcept {
  if (this != &other) {
    Release();
    store_ = std::exchange(other.store_, nullptr);
    key_ = other.key_;
  }
  return *this;
}

BlobPin::~BlobPin() { Release(); }

void BlobPin::Release() {
  if (store_ != nullptr) store_->Unpin(key_);
  store_ = nullptr;
}

// ---- BlobReader ----

absl::StatusOr<std::string> BlobReader::Read(int64_t offset, int64_t length) const {
  int64_t available = std::max<int64_t>(0, digest_.size - offset);
  absl::StatusOr<std::string> data = ReadAt(fd_.get(), offset, std::min(length, available), path_);
  if (data.ok() && store_ != nullptr) store_->bytes_read_ += static_cast<int64_t>(data->size());
  return data;
}

absl::StatusOr<int64_t> BlobReader::ReadInto(int64_t offset, char* buffer, int64_t length) const {
  length = std::min(length, std::max<int64_t>(0, digest_.size - offset));
  int64_t done = 0;
  while (done < length) {
    ssize_t n = pread(fd_.get(), buffer + done, length - done, offset + done);
    if (n < 0) {
      if (errno == EINTR) continue;
      return PosixError("read " + path_, errno);
    }
    if (n == 0) break;
    done += n;
  }
  if (store_ != nullptr) store_->bytes_read_ += done;
  return done;
}

// ---- BlobWriter ----

BlobWriter::BlobWriter(BlobStore* store, Digest expected, std::string temp_path, UniqueFd fd)
    : store_(store), expected_(std::move(expected)), temp_path_(std::move(temp_path)),
      fd_(std::move(fd)) {}

BlobWriter::~BlobWriter() { DropTemp(); }

void BlobWriter::DropTemp() {
  if (temp_gone_) return;
  temp_gone_ = true;
  fd_.Reset();
  unlink(temp_path_.c_str());
}

absl::Status BlobWriter::Append(absl::string_view data) {
  if (sealed_) return absl::FailedPreconditionError("write to a blob that is already finished");
  if (written_ + static_cast<int64_t>(data.size()) > expected_.size) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "blob %s: received %d bytes, more than its declared size of %d bytes",
        expected_.ToString(), written_ + static_cast<int64_t>(data.size()), expected_.size));
  }
  RETURN_IF_ERROR(WriteAll(fd_.get(), data, temp_path_));
  hash_.Update(data);
  written_ += static_cast<int64_t>(data.size());
  if (written_ - writeback_started_ >= kWritebackBytes) {
    // Start writing back what we have now, so the fsync in Commit does not
    // have to flush a large blob all at once (errors surface at fsync).
    sync_file_range(fd_.get(), writeback_started_, written_ - writeback_started_,
                    SYNC_FILE_RANGE_WRITE);
    writeback_started_ = written_;
  }
  return absl::OkStatus();
}

absl::Status BlobWriter::Commit() {
  RETURN_IF_ERROR(Seal());
  return SyncAndPublish();
}

absl::Status BlobWriter::Seal() {
  if (sealed_) return absl::FailedPreconditionError("blob is already committed");
  sealed_ = true;
  auto fail = [&](absl::Status status) {
    DropTemp();
    return status;
  };
  if (written_ != expected_.size) {
    return fail(absl::InvalidArgumentError(
        absl::StrFormat("blob %s: received %d bytes, but the digest declares %d bytes",
                        expected_.ToString(), written_, expected_.size)));
  }
  std::string actual = hash_.FinishHex();
  if (expected_.hash.empty()) {
    expected_.hash = actual;  // StartWriteOfUnknownHash
    if (store_->Contains(expected_)) {
      DropTemp();  // stored already: nothing to sync
      return absl::OkStatus();
    }
  }
  if (actual != expected_.hash) {
    return fail(absl::InvalidArgumentError(absl::StrFormat(
        "blob %s: the data hashes to %s; the digest does not match the content",
        expected_.ToString(), actual)));
  }
  // Read-only before it becomes visible: hardlinks of it must not be writable.
  if (fchmod(fd_.get(), 0444) != 0) return fail(PosixError("fchmod " + temp_path_, errno));
  return absl::OkStatus();
}

void BlobWriter::StartWriteback() {
  if (!store_->options_.fsync || temp_gone_) return;
  sync_file_range(fd_.get(), writeback_started_, 0, SYNC_FILE_RANGE_WRITE);
}

absl::Status BlobWriter::SyncAndPublish() {
  if (temp_gone_) return absl::OkStatus();  // stored already
  if (store_->options_.fsync) {
    absl::Status synced = Fsync(fd_.get(), temp_path_);
    if (!synced.ok()) {
      DropTemp();
      return synced;
    }
  }
  fd_.Reset();
  absl::Status published = store_->Publish(expected_, temp_path_, deferred_syncs_);
  if (!published.ok()) {
    DropTemp();
    return published;
  }
  temp_gone_ = true;  // renamed into the store, or dropped by Publish
  return absl::OkStatus();
}

// ---- BlobBatch ----

absl::StatusOr<Digest> BlobBatch::Add(std::unique_ptr<BlobWriter> writer) {
  if (pending_.size() >= kMaxPending) RETURN_IF_ERROR(CommitAll());
  RETURN_IF_ERROR(writer->Seal());
  Digest digest = writer->expected();
  if (writer->temp_gone_) return digest;  // stored already
  writer->deferred_syncs_ = syncs_;
  // The journal commit is then what the batch's fsyncs share.
  writer->StartWriteback();
  pending_.push_back(std::move(writer));
  return digest;
}

absl::Status BlobBatch::CommitAll(absl::flat_hash_map<Digest, absl::Status>* failed) {
  absl::Status first_error;
  for (std::unique_ptr<BlobWriter>& writer : pending_) {
    absl::Status status = writer->SyncAndPublish();
    if (!status.ok() && failed != nullptr) failed->emplace(writer->expected(), status);
    if (first_error.ok()) first_error = status;
  }
  pending_.clear();
  return first_error;
}

// ---- BlobStore ----

absl::StatusOr<std::unique_ptr<BlobStore>> BlobStore::Open(const BlobStoreOptions& options) {
  if (options.max_blob_bytes > options.max_bytes) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "the largest blob (%d bytes) cannot exceed the store's size cap (%d bytes)",
        options.max_blob_bytes, options.max_bytes));
  }
  std::unique_ptr<BlobStore> store(new BlobStore(options));
  RETURN_IF_ERROR(store->Recover());
  return store;
}

std::string BlobStore::BlobPath(absl::string_view hash) const {
  return absl::StrCat(options_.root, "/blobs/", hash.substr(0, 2), "/", hash);
}

absl::Status BlobStore::Recover() {
  const std::string tmp = options_.root + "/tmp";
  // Anything in tmp/ was half-written when the previous process stopped.
  RETURN_IF_ERROR(RemoveTree(tmp));
  RETURN_IF_ERROR(MakeDirectories(tmp, 0700));
  struct Found {
    BlobKey key;
    int64_t size;
    struct timespec mtime;
  };
  std::vector<Found> found;
  for (int shard = 0; shard < 256; ++shard) {
    std::string dir = absl::StrFormat("%s/blobs/%02x", options_.root, shard);
    RETURN_IF_ERROR(MakeDirectories(dir, 0755));
    std::error_code error;
    for (const auto& entry : fs::directory_iterator(dir, error)) {
      std::string name = entry.path().filename();
      struct stat st;
      bool valid = lstat(entry.path().c_str(), &st) == 0 && S_ISREG(st.st_mode) &&
                   IsHexHash(name) && name.compare(0, 2, dir.substr(dir.size() - 2)) == 0 &&
                   (st.st_mode & 0222) == 0;
      if (!valid) {
        // Not something this store wrote: do not serve it as a blob.
        RETURN_IF_ERROR(RemoveTree(entry.path()));
        continue;
      }
      Found blob{BlobKey(), st.st_size, st.st_mtim};
      BlobKey::FromHex(name, &blob.key);  // IsHexHash: cannot fail
      found.push_back(blob);
    }
    if (error) return PosixError("list " + dir, error.value());
  }
  std::sort(found.begin(), found.end(), [](const Found& a, const Found& b) {
    return std::tie(a.mtime.tv_sec, a.mtime.tv_nsec) < std::tie(b.mtime.tv_sec, b.mtime.tv_nsec);
  });
  {
    absl::MutexLock lock(&mu_);
    for (const Found& blob : found) IndexLocked(blob.key, blob.size);
    EvictLocked();  // the cap may have been lowered since the last run
  }
  // REAPI treats the empty blob as always present; keep it pinned for good.
  const Digest empty = Digest::Of("");
  RETURN_IF_ERROR(Put(empty, ""));
  BlobKey empty_key;
  BlobKey::FromHex(empty.hash, &empty_key);
  absl::MutexLock lock(&mu_);
  ++FindLocked(empty_key, 0)->pins;
  return absl::OkStatus();
}

BlobStore::Entry* BlobStore::FindLocked(const BlobKey& key, int64_t size) {
  auto it = entries_.find(key);
  if (it == entries_.end() || it->second.size != size) return nullptr;
  return &it->second;
}

void BlobStore::IndexLocked(const BlobKey& key, int64_t size) {
  const uint64_t now = ++use_counter_;
  entries_[key] = Entry{size, 0, now};
  eviction_queue_.push({now, key});
  total_bytes_ += DiskBytes(size);
}

void BlobStore::EvictLocked(const BlobKey* keep) {
  std::vector<Queued> kept;  // pinned (or `keep`): queued again afterwards
  while (total_bytes_ > options_.max_bytes && !eviction_queue_.empty()) {
    const Queued top = eviction_queue_.top();
    eviction_queue_.pop();
    auto entry = entries_.find(top.second);
    if (entry->second.last_use != top.first) {
      // Used since it was queued: its place is further back.
      eviction_queue_.push({entry->second.last_use, top.second});
      continue;
    }
    if (entry->second.pins > 0 || (keep != nullptr && top.second == *keep)) {
      kept.push_back(top);
      continue;
    }
    const BlobKey& key = top.second;
    // unlink under the lock: a concurrent Publish of the same hash must not
    // rename a fresh copy in between our index update and the unlink.
    unlink(BlobPath(key.ToHex()).c_str());
    total_bytes_ -= DiskBytes(entry->second.size);
    ++evictions_;
    entries_.erase(entry);
  }
  for (const Queued& queued : kept) eviction_queue_.push(queued);
}

bool BlobStore::Contains(const Digest& digest) {
  BlobKey key;
  const bool valid = BlobKey::FromHex(digest.hash, &key);
  absl::MutexLock lock(&mu_);
  Entry* entry = valid ? FindLocked(key, digest.size) : nullptr;
  if (entry == nullptr) {
    ++misses_;
    return false;
  }
  ++hits_;
  entry->last_use = ++use_counter_;
  return true;
}

void BlobStore::ContainsEach(absl::Span<const DigestRef> digests, std::vector<bool>* present) {
  // Decoded before the lock is taken; an invalid hash stays absent.
  std::vector<KeyedDigest> keyed(digests.size());
  std::vector<bool> valid(digests.size());
  for (size_t i = 0; i < digests.size(); ++i) {
    valid[i] = BlobKey::FromHex(digests[i].hash, &keyed[i].key);
    keyed[i].size = valid[i] ? digests[i].size : -1;  // no blob has size -1
  }
  ContainsEach(keyed, present);
}

void BlobStore::ContainsEach(absl::Span<const KeyedDigest> digests, std::vector<bool>* present) {
  present->assign(digests.size(), false);
  int64_t hits = 0;
  absl::MutexLock lock(&mu_);
  for (size_t i = 0; i < digests.size(); ++i) {
    Entry* entry = FindLocked(digests[i].key, digests[i].size);
    if (entry == nullptr) continue;
    (*present)[i] = true;
    ++hits;
    entry->last_use = ++use_counter_;
  }
  hits_ += hits;
  misses_ += static_cast<int64_t>(digests.size()) - hits;
}

absl::StatusOr<BlobPin> BlobStore::Pin(const Digest& digest) {
  BlobKey key;
  const bool valid = BlobKey::FromHex(digest.hash, &key);
  absl::MutexLock lock(&mu_);
  Entry* entry = valid ? FindLocked(key, digest.size) : nullptr;
  if (entry == nullptr) {
    ++misses_;
    return absl::NotFoundError(absl::StrCat("blob ", digest.ToString(), " is not in the CAS"));
  }
  ++hits_;
  ++entry->pins;
  entry->last_use = ++use_counter_;
  return BlobPin(this, key);
}

void BlobStore::Unpin(const BlobKey& key) {
  absl::MutexLock lock(&mu_);
  auto it = entries_.find(key);
  if (it == entries_.end()) return;
  --it->second.pins;
  if (it->second.pins == 0 && total_bytes_ > options_.max_bytes) EvictLocked();
}

absl::StatusOr<BlobReader> BlobStore::OpenBlob(const Digest& digest) {
  ASSIGN_OR_RETURN(BlobPin pin, Pin(digest));
  BlobReader reader;
  reader.path_ = BlobPath(digest.hash);
  ASSIGN_OR_RETURN(reader.fd_, OpenFile(reader.path_, O_RDONLY));
  reader.digest_ = digest;
  reader.pin_ = std::move(pin);
  reader.store_ = this;
  return reader;
}

absl::StatusOr<std::string> BlobStore::ReadBlob(const Digest& digest) {
  ASSIGN_OR_RETURN(BlobReader reader, OpenBlob(digest));
  ASSIGN_OR_RETURN(std::string data, reader.Read(0, digest.size));
  if (static_cast<int64_t>(data.size()) != digest.size) {
    return absl::DataLossError(absl::StrCat("blob ", digest.ToString(), " is truncated on disk"));
  }
  return data;
}

absl::StatusOr<std::unique_ptr<BlobWriter>> BlobStore::StartWrite(const Digest& digest) {
  if (digest.size > options_.max_blob_bytes) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "blob %s is %d bytes, larger than this server's maximum blob size of %d bytes "
        "(--cas_max_blob_bytes)",
        digest.ToString(), digest.size, options_.max_blob_bytes));
  }
  std::string temp_path = absl::StrCat(options_.root, "/tmp/", UniqueTempName());
  ASSIGN_OR_RETURN(UniqueFd fd, OpenFile(temp_path, O_WRONLY | O_CREAT | O_EXCL, 0600));
  return std::unique_ptr<BlobWriter>(new BlobWriter(this, digest, temp_path, std::move(fd)));
}

absl::StatusOr<std::unique_ptr<BlobWriter>> BlobStore::StartWriteOfUnknownHash(int64_t size) {
  return StartWrite(Digest{std::string(), size});
}

namespace {

// A blob stored already costs no temp file and no fsync, once its bytes
// are known to match the digest.
bool StoredAlready(BlobStore& store, const Digest& digest, absl::string_view data) {
  if (static_cast<int64_t>(data.size()) != digest.size || !store.Contains(digest)) return false;
  Sha256 hash;
  hash.Update(data);
  return hash.FinishHex() == digest.hash;
}

}  // namespace

absl::Status BlobStore::Put(const Digest& digest, absl::string_view data) {
  if (StoredAlready(*this, digest, data)) return absl::OkStatus();
  ASSIGN_OR_RETURN(std::unique_ptr<BlobWriter> writer, StartWrite(digest));
  RETURN_IF_ERROR(writer->Append(data));
  return writer->Commit();
}

absl::Status BlobStore::PutInBatch(const Digest& digest, absl::string_view data, BlobBatch* batch) {
  if (StoredAlready(*this, digest, data)) return absl::OkStatus();
  ASSIGN_OR_RETURN(std::unique_ptr<BlobWriter> writer, StartWrite(digest));
  RETURN_IF_ERROR(writer->Append(data));
  return batch->Add(std::move(writer)).status();
}

absl::Status BlobStore::Publish(const Digest& digest, const std::string& temp_path,
                               DirectorySyncs* syncs) {
  const std::string path = BlobPath(digest.hash);
  BlobKey key;
  if (!BlobKey::FromHex(digest.hash, &key)) {
    return absl::InternalError(absl::StrCat("publishing a blob of invalid hash ", digest.hash));
  }
  {
    absl::MutexLock lock(&mu_);
    auto it = entries_.find(key);
    if (it != entries_.end()) {
      // A concurrent writer of the same blob won; its copy is identical.
      it->second.last_use = ++use_counter_;
      unlink(temp_path.c_str());
      return absl::OkStatus();
    }
    // mtime records write order, which becomes the LRU order after a
    // restart; the coarse kernel clock would give concurrent writes ties.
    absl::Time stamp = std::max(absl::Now(), last_publish_time_ + absl::Nanoseconds(1));
    last_publish_time_ = stamp;
    struct timespec times[2] = {absl::ToTimespec(stamp), absl::ToTimespec(stamp)};
    utimensat(AT_FDCWD, temp_path.c_str(), times, 0);  // best effort: only ordering is lost
    if (rename(temp_path.c_str(), path.c_str()) != 0) {
      return PosixError(absl::StrCat("rename ", temp_path, " to ", path), errno);
    }
    IndexLocked(key, digest.size);
    bytes_written_ += digest.size;
    // The new blob is kept even if pins hold the store over its cap: the
    // client is about to be told it is stored.
    EvictLocked(&key);
  }
  if (!options_.fsync) return absl::OkStatus();
  // Make the rename durable before the client is told the blob is stored.
  std::string directory = path.substr(0, path.rfind('/'));
  if (syncs != nullptr) {
    syncs->Add(std::move(directory));
    return absl::OkStatus();
  }
  return FsyncDirectory(directory);
}

BlobStoreStats BlobStore::GetStats() {
  absl::MutexLock lock(&mu_);
  BlobStoreStats stats;
  stats.bytes = total_bytes_;
  stats.blobs = static_cast<int64_t>(entries_.size());
  stats.max_bytes = options_.max_bytes;
  stats.evictions = evictions_;
  stats.hits = hits_;
  stats.misses = misses_;
  stats.bytes_read = bytes_read_;
  stats.bytes_written = bytes_written_;
  return stats;
}

}  // namespace kiln::cas
