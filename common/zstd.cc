#include "common/zstd.h"

#include <zstd.h>

#include <cstdlib>

#include "absl/strings/str_cat.h"

namespace kiln {

ZstdDecompressor::ZstdDecompressor()
    : ctx_(ZSTD_createDCtx()), chunk_(new char[ZSTD_DStreamOutSize()]) {
  if (ctx_ == nullptr) std::abort();
}

ZstdDecompressor::~ZstdDecompressor() { ZSTD_freeDCtx(ctx_); }

absl::Status ZstdDecompressor::Decompress(absl::string_view input, std::string* out) {
  ZSTD_inBuffer in{input.data(), input.size(), 0};
  while (true) {
    ZSTD_outBuffer buffer{chunk_.get(), ZSTD_DStreamOutSize(), 0};
    size_t result = ZSTD_decompressStream(ctx_, &buffer, &in);
    if (ZSTD_isError(result)) {
      return absl::InvalidArgumentError(
          absl::StrCat("the zstd data is corrupt: ", ZSTD_getErrorName(result)));
    }
    total_output_ += static_cast<int64_t>(buffer.pos);
    if (total_output_ > max_output_) {
      return absl::InvalidArgumentError(absl::StrCat(
          "the zstd data decompresses to more than the declared size of ", max_output_, " bytes"));
    }
    out->append(chunk_.get(), buffer.pos);
    // Done when all input is consumed and the output buffer was not filled
    // (a full buffer may mean more output is pending).
    if (in.pos == in.size && buffer.pos < buffer.size) return absl::OkStatus();
  }
}

ZstdCompressor::ZstdCompressor(int level) : ctx_(ZSTD_createCCtx()) {
  if (ctx_ == nullptr) std::abort();
  ZSTD_CCtx_setParameter(ctx_, ZSTD_c_compressionLevel, level);
}

ZstdCompressor::~ZstdCompressor() { ZSTD_freeCCtx(ctx_); }

void ZstdCompressor::Compress(absl::string_view input, bool last, std::string* out) {
  ZSTD_inBuffer in{input.data(), input.size(), 0};
  std::string chunk(ZSTD_CStreamOutSize(), '\0');
  ZSTD_EndDirective mode = last ? ZSTD_e_end : ZSTD_e_continue;
  while (true) {
    ZSTD_outBuffer buffer{chunk.data(), chunk.size(), 0};
    size_t remaining = ZSTD_compressStream2(ctx_, &buffer, &in, mode);
    if (ZSTD_isError(remaining)) std::abort();  // only on misuse or allocation failure
    out->append(chunk.data(), buffer.pos);
    bool finished = last ? remaining == 0 : in.pos == in.size;
    if (finished) return;
  }
}

absl::StatusOr<std::string> ZstdDecompressAll(absl::string_view input, int64_t max_output) {
  ZstdDecompressor decompressor;
  decompressor.set_max_output(max_output);
  std::string out;
  absl::Status status = decompressor.Decompress(input, &out);
  if (!status.ok()) return status;
  return out;
}

std::string ZstdCompressAll(absl::string_view input, int level) {
  ZstdCompressor compressor(level);
  std::string out;
  compressor.Compress(input, /*last=*/true, &out);
  return out;
}

}  // namespace kiln
