#include "server/api/resource_name.h"

#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"

namespace kiln::api {
namespace {

constexpr char kReadForm[] =
    "expected \"{instance}/blobs/{hash}/{size}\" or "
    "\"{instance}/compressed-blobs/zstd/{hash}/{size}\"";
constexpr char kWriteForm[] =
    "expected \"{instance}/uploads/{uuid}/blobs/{hash}/{size}\" or "
    "\"{instance}/uploads/{uuid}/compressed-blobs/zstd/{hash}/{size}\"";

// Parses segments[i..] as "blobs/{hash}/{size}" or
// "compressed-blobs/{compressor}/{hash}/{size}", followed by `trailing_ok`
// optional metadata segments.
absl::Status ParseBlobPart(const std::vector<absl::string_view>& segments, size_t i,
                           bool trailing_ok, absl::string_view name, const char* form,
                           BlobResource* out) {
  auto bad = [&](absl::string_view why) {
    return absl::InvalidArgumentError(
        absl::StrCat("resource name \"", name.substr(0, 300), "\": ", why, "; ", form));
  };
  if (segments[i] == "compressed-blobs") {
    if (i + 1 >= segments.size()) return bad("missing compressor");
    if (segments[i + 1] != "zstd") {
      return bad(absl::StrCat("compressor \"", segments[i + 1],
                              "\" is not supported (only zstd)"));
    }
    out->zstd = true;
    i += 2;
  } else {
    i += 1;
  }
  if (i + 2 > segments.size()) return bad("missing hash or size");
  int64_t size = 0;
  if (!absl::SimpleAtoi(segments[i + 1], &size)) {
    return bad(absl::StrCat("size \"", segments[i + 1], "\" is not a number"));
  }
  absl::StatusOr<Digest> digest = ParseDigest(segments[i], size);
  if (!digest.ok()) return bad(digest.status().message());
  if (!trailing_ok && i + 2 != segments.size()) return bad("unexpected trailing segments");
  out->digest = *std::move(digest);
  return absl::OkStatus();
}

std::string JoinInstance(const std::vector<absl::string_view>& segments, size_t end) {
  return absl::StrJoin(segments.begin(), segments.begin() + end, "/");
}

}  // namespace

absl::StatusOr<BlobResource> ParseReadResource(absl::string_view name) {
  std::vector<absl::string_view> segments = absl::StrSplit(name, '/');
  for (size_t i = 0; i < segments.size(); ++i) {
    if (segments[i] == "blobs" || segments[i] == "compressed-blobs") {
      BlobResource out;
      out.instance = JoinInstance(segments, i);
      absl::Status parsed = ParseBlobPart(segments, i, false, name, kReadForm, &out);
      if (!parsed.ok()) return parsed;
      return out;
    }
  }
  return absl::InvalidArgumentError(absl::StrCat("resource name \"", name.substr(0, 300),
                                                 "\" names no blob; ", kReadForm));
}

absl::StatusOr<BlobResource> ParseWriteResource(absl::string_view name) {
  std::vector<absl::string_view> segments = absl::StrSplit(name, '/');
  for (size_t i = 0; i + 2 < segments.size(); ++i) {
    if (segments[i] == "uploads" &&
        (segments[i + 2] == "blobs" || segments[i + 2] == "compressed-blobs")) {
      BlobResource out;
      out.instance = JoinInstance(segments, i);
      out.upload_id = std::string(segments[i + 1]);
      if (out.upload_id.empty()) {
        return absl::InvalidArgumentError(absl::StrCat(
            "resource name \"", name.substr(0, 300), "\": empty upload id; ", kWriteForm));
      }
      absl::Status parsed = ParseBlobPart(segments, i + 2, true, name, kWriteForm, &out);
      if (!parsed.ok()) return parsed;
      return out;
    }
  }
  return absl::InvalidArgumentError(absl::StrCat("resource name \"", name.substr(0, 300),
                                                 "\" is not an upload; ", kWriteForm));
}

}  // namespace kiln::api
