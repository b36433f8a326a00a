#include "client/result_paths.h"

#include "common/path_beneath.h"
#include "common/status_macros.h"

namespace kiln::client {

absl::Status CheckResultPaths(const build::bazel::remote::execution::v2::ActionResult& result) {
  for (const auto& file : result.output_files()) RETURN_IF_ERROR(CheckRelativePath(file.path(), "output file"));
  for (const auto& dir : result.output_directories()) {
    RETURN_IF_ERROR(CheckRelativePath(dir.path(), "output directory"));
  }
  for (const auto& link : result.output_symlinks()) {
    RETURN_IF_ERROR(CheckRelativePath(link.path(), "output symlink"));
  }
  return absl::OkStatus();
}

}  // namespace kiln::client
