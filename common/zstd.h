// Streaming zstd (libzstd) for the "compressed-blobs/zstd" resources and the
// ZSTD compressor of batch calls.
#ifndef KILN_COMMON_ZSTD_H_
#define KILN_COMMON_ZSTD_H_

#include <cstdint>
#include <memory>
#include <string>
#include "absl/strings/string_view.h"

#include "absl/status/statusor.h"

struct ZSTD_DCtx_s;
struct ZSTD_CCtx_s;

namespace kiln {

// Decompresses a stream fed in arbitrary chunks. Not thread-safe.
class ZstdDecompressor {
 public:
  ZstdDecompressor();
  ~ZstdDecompressor();
  ZstdDecompressor(const ZstdDecompressor&) = delete;
  ZstdDecompressor& operator=(const ZstdDecompressor&) = delete;

  // Appends the output for `input` to `out`. INVALID_ARGUMENT on corrupt data
  // or if more than `max_output` bytes would be produced in total.
  absl::Status Decompress(absl::string_view input, std::string* out);
  void set_max_output(int64_t max_output) { max_output_ = max_output; }
  int64_t total_output() const { return total_output_; }

 private:
  ZSTD_DCtx_s* ctx_;
  // Where each step's output lands: allocated once per stream, since a
  // 128 KiB buffer per call meant an mmap, zero-fill and munmap for every
  // chunk of an upload (seen by fuzz/zstd_blob_writer_fuzzer).
  std::unique_ptr<char[]> chunk_;
  int64_t max_output_ = INT64_MAX;
  int64_t total_output_ = 0;
};

// Compresses a stream fed in chunks. Not thread-safe.
class ZstdCompressor {
 public:
  explicit ZstdCompressor(int level = 1);
  ~ZstdCompressor();
  ZstdCompressor(const ZstdCompressor&) = delete;
  ZstdCompressor& operator=(const ZstdCompressor&) = delete;

  // Appends compressed bytes for `input` to `out`; `last` ends the frame.
  void Compress(absl::string_view input, bool last, std::string* out);

 private:
  ZSTD_CCtx_s* ctx_;
};

absl::StatusOr<std::string> ZstdDecompressAll(absl::string_view input, int64_t max_output);
std::string ZstdCompressAll(absl::string_view input, int level = 1);

}  // namespace kiln

#endif  // KILN_COMMON_ZSTD_H_
