// zstd streams into the CAS blob writer, as a compressed ByteStream upload
// feeds it (server/api/bytestream_service.cc): a declared digest, a stream
// cut into chunks, decompression capped at the declared size. The stream is
// either the fuzz bytes themselves or a valid compression of fuzz bytes with
// some bytes flipped. Whatever the store accepts reads back as bytes that
// hash to the declared digest; whatever it refuses leaves nothing behind.
#include <dirent.h>
#include <fuzzer/FuzzedDataProvider.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>

#include "common/posix.h"
#include "common/zstd.h"
#include "server/cas/blob_store.h"

namespace {

struct World {
  std::string root;
  std::unique_ptr<kiln::cas::BlobStore> cas;
};

World* TheWorld() {
  static World* world = [] {
    auto* w = new World;
    std::string base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
    std::string templ = base + "/kiln-zstd-fuzz-XXXXXX";
    if (mkdtemp(templ.data()) == nullptr) abort();
    w->root = templ;
    // A small cap, so that eviction runs too.
    auto cas = kiln::cas::BlobStore::Open({w->root, 64 << 10, 16 << 10});
    if (!cas.ok()) abort();
    w->cas = *std::move(cas);
    std::atexit([] { (void)kiln::RemoveTree(TheWorld()->root); });
    return w;
  }();
  return world;
}

// Uploads in progress live in tmp/; none may outlive its writer.
bool TempEmpty(const World& world) {
  DIR* dir = opendir((world.root + "/tmp").c_str());
  if (dir == nullptr) return false;
  int entries = 0;
  while (readdir(dir) != nullptr) ++entries;
  closedir(dir);
  return entries == 2;
}

// Feeds `stream` in random chunks through a decompressor into `writer`.
void Upload(World& world, FuzzedDataProvider& in, const std::string& stream,
            const kiln::Digest& declared, kiln::cas::BlobWriter* writer) {
  kiln::ZstdDecompressor decompressor;
  decompressor.set_max_output(declared.size);
  size_t offset = 0;
  bool refused = false;
  while (offset < stream.size() && !refused) {
    size_t chunk = in.ConsumeIntegralInRange<size_t>(1, 4096);
    std::string plain;
    absl::Status s = decompressor.Decompress(absl::string_view(stream).substr(offset, chunk), &plain);
    offset += chunk;
    if (s.ok()) s = writer->Append(plain);
    if (!s.ok()) {
      if (!absl::IsInvalidArgument(s)) __builtin_trap();
      refused = true;
    }
  }
  if (refused) return;  // the writer is dropped: its temp file goes with it
  absl::Status committed = writer->Commit();
  if (committed.ok()) {
    absl::StatusOr<std::string> stored = world.cas->ReadBlob(declared);
    if (!stored.ok() || kiln::Digest::Of(*stored) != declared) __builtin_trap();
  } else if (!absl::IsInvalidArgument(committed)) {
    __builtin_trap();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  World& world = *TheWorld();
  FuzzedDataProvider in(data, size);
  const bool valid_frame = in.ConsumeBool();
  const bool declare_content = in.ConsumeBool();  // the digest of the content, or of other bytes
  std::string content = in.ConsumeRandomLengthString(20000);
  std::string stream;
  if (valid_frame) {
    // One compressor per level, reused (a context is ready for the next
    // frame once a frame ends): making a new one each time costs the
    // fuzzer more than the code under test.
    static kiln::ZstdCompressor* compressors[] = {new kiln::ZstdCompressor(1), new kiln::ZstdCompressor(2),
                                                  new kiln::ZstdCompressor(3)};
    compressors[in.ConsumeIntegralInRange(0, 2)]->Compress(content, /*last=*/true, &stream);
    for (int flips = in.ConsumeIntegralInRange(0, 2); flips > 0 && !stream.empty(); --flips) {
      stream[in.ConsumeIntegralInRange<size_t>(0, stream.size() - 1)] ^= in.ConsumeIntegralInRange(1, 255);
    }
  } else {
    stream = in.ConsumeRandomLengthString(4000);
  }
  kiln::Digest declared = declare_content ? kiln::Digest::Of(content)
                                          : kiln::Digest::Of(in.ConsumeRandomLengthString(64));
  if (in.ConsumeBool()) declared.size = in.ConsumeIntegralInRange<int64_t>(0, 30000);

  {
    auto writer = world.cas->StartWrite(declared);
    if (!writer.ok()) return 0;  // over the maximum blob size
    Upload(world, in, stream, declared, writer->get());
  }
  if (!TempEmpty(world)) __builtin_trap();
  return 0;
}
