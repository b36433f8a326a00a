// The paths of an ActionResult, checked before `kiln` writes any output: a
// hostile or broken server cannot make the client write outside
// --input_root.
#ifndef KILN_CLIENT_RESULT_PATHS_H_
#define KILN_CLIENT_RESULT_PATHS_H_

#include "absl/status/status.h"
#include "build/bazel/remote/execution/v2/remote_execution.pb.h"

namespace kiln::client {

// INVALID_ARGUMENT naming the output unless every output file, directory
// and symlink path is relative, non-empty and made of valid components
// (common/path_beneath.h: CheckRelativePath).
absl::Status CheckResultPaths(const build::bazel::remote::execution::v2::ActionResult& result);

}  // namespace kiln::client

#endif  // KILN_CLIENT_RESULT_PATHS_H_
