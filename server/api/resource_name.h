// ByteStream resource names of the REAPI CAS:
//   read:  {instance}/blobs/{hash}/{size}
//          {instance}/compressed-blobs/zstd/{hash}/{size}
//   write: {instance}/uploads/{uuid}/blobs/{hash}/{size}[/{metadata...}]
//          {instance}/uploads/{uuid}/compressed-blobs/zstd/{hash}/{size}[/...]
// The instance name may be empty or have several segments.
#ifndef KILN_SERVER_API_RESOURCE_NAME_H_
#define KILN_SERVER_API_RESOURCE_NAME_H_

#include <string>
#include "absl/strings/string_view.h"

#include "absl/status/statusor.h"
#include "common/digest.h"

namespace kiln::api {

struct BlobResource {
  std::string instance;
  std::string upload_id;  // empty for reads
  Digest digest;
  bool zstd = false;
};

// INVALID_ARGUMENT with the expected form for anything else.
absl::StatusOr<BlobResource> ParseReadResource(absl::string_view name);
absl::StatusOr<BlobResource> ParseWriteResource(absl::string_view name);

}  // namespace kiln::api

#endif  // KILN_SERVER_API_RESOURCE_NAME_H_
