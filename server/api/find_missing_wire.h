// FindMissingBlobs read from and answered in wire bytes, without protobuf
// messages. A Bazel build asks about tens of thousands of digests per call;
// parsed into messages, every hash would be its own heap string (protobuf
// 3.21 keeps strings off the arena), allocated on gRPC's thread, touched
// again on the pool's, then copied into the answer. Here the request is
// walked in place with protobuf's own CodedInputStream over gRPC's slices,
// each hash is decoded once into the store's binary key, and the answer is
// written straight into slices.
//
// Everything is held in pieces below glibc's mmap threshold (128 KiB):
// buffers of a whole call's size (750 KB for 10,000 digests) would be
// mapped and page-faulted in afresh on every call.
//
// The parse accepts exactly what FindMissingBlobsRequest's generated parser
// accepts for the fields it reads (unknown fields skipped, the last value of
// a scalar wins), except that it keeps no digest after the first invalid
// one (the handler rejects that request anyway) and that it takes over-long
// varints as CodedInputStream does (up to 10 bytes for a tag or a length,
// where the generated parser stops at 5).
#ifndef KILN_SERVER_API_FIND_MISSING_WIRE_H_
#define KILN_SERVER_API_FIND_MISSING_WIRE_H_

#include <google/protobuf/io/zero_copy_stream.h>

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "server/cas/blob_store.h"

namespace kiln::api {

struct FindMissingBlobsCall {
  // Digests per block: one lookup under one lock of the store each.
  static constexpr size_t kBlockDigests = 256;

  std::string instance_name;
  int digest_function = 0;  // a build.bazel.remote.execution.v2.DigestFunction.Value
  // The valid digests, in request order, kBlockDigests per block, up to
  // the first invalid one.
  std::vector<std::vector<cas::BlobStore::KeyedDigest>> blocks;
  // INVALID_ARGUMENT naming blob_digests[i] if that digest is invalid; the
  // handler reports it only once the caller is authorized, as it did when
  // gRPC parsed the message.
  absl::Status invalid_digest;
};

// INVALID_ARGUMENT if the bytes are not a FindMissingBlobsRequest.
absl::StatusOr<FindMissingBlobsCall> ParseFindMissingBlobsRequest(
    google::protobuf::io::ZeroCopyInputStream* bytes);
absl::StatusOr<FindMissingBlobsCall> ParseFindMissingBlobsRequest(absl::string_view bytes);

// Writes a FindMissingBlobsResponse in pieces of at most kPieceBytes.
class FindMissingBlobsResponseWriter {
 public:
  static constexpr size_t kPieceBytes = 64 << 10;
  void Add(const cas::BlobStore::KeyedDigest& missing);
  // The serialized response, piece by piece (concatenated, it parses).
  std::vector<std::string> Finish();

 private:
  std::vector<std::string> pieces_;
};

}  // namespace kiln::api

#endif  // KILN_SERVER_API_FIND_MISSING_WIRE_H_
