// FindMissingBlobs read from and answered in wire bytes, without protobuf
// messages. A Bazel build asks about tens of thousands of digests per call;
// parsed into messages, every hash would be its own heap string (protobuf
// 3.21 keeps strings off the arena), allocated on gRPC's thread, touched
// again on the pool's, then copied into the answer. Here the request is
// walked with protobuf's own CodedInputStream, each hash stays a view into
// the request's bytes, and the answer is written once at its exact size.
//
// The parse accepts exactly what FindMissingBlobsRequest's generated parser
// accepts for the fields it reads (unknown fields skipped, the last value of
// a scalar wins), except that it fails on the first invalid digest: the
// handler would reject that request anyway.
#ifndef KILN_SERVER_API_FIND_MISSING_WIRE_H_
#define KILN_SERVER_API_FIND_MISSING_WIRE_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "build/bazel/remote/execution/v2/remote_execution.pb.h"
#include "server/cas/blob_store.h"

namespace kiln::api {

struct FindMissingBlobsCall {
  std::string instance_name;
  int digest_function = 0;  // a build.bazel.remote.execution.v2.DigestFunction.Value
  // Valid digests (ValidateDigest) in request order; hashes view `bytes`.
  std::vector<cas::BlobStore::DigestRef> digests;
  // The same digests with their hashes decoded, for the lookup.
  std::vector<cas::BlobStore::KeyedDigest> keys;
};

// INVALID_ARGUMENT if `bytes` is not a FindMissingBlobsRequest or one of
// its digests is invalid (the message names blob_digests[i]).
absl::StatusOr<FindMissingBlobsCall> ParseFindMissingBlobsRequest(absl::string_view bytes);

// A serialized FindMissingBlobsResponse listing `missing`, in order.
std::string SerializeFindMissingBlobsResponse(absl::Span<const cas::BlobStore::DigestRef> missing);

}  // namespace kiln::api

#endif  // KILN_SERVER_API_FIND_MISSING_WIRE_H_
