// The ActionResult paths `kiln` accepts before writing outputs
// (client/result_paths.h). The input is a serialized ActionResult from a
// server. Every accepted path is checked here independently (relative, no
// empty, "." or ".." component, no NUL), and its parent directories are
// then made beneath a scratch root the way `kiln run` makes them, which must
// land inside that root.
#include <fcntl.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include <google/protobuf/stubs/logging.h>

#include "absl/strings/match.h"
#include "absl/strings/str_split.h"
#include "client/result_paths.h"
#include "common/path_beneath.h"
#include "common/posix.h"

namespace {

bool Safe(const std::string& path) {
  if (path.empty() || path[0] == '/' || path.find('\0') != std::string::npos) return false;
  for (absl::string_view part : absl::StrSplit(path, '/')) {
    if (part.empty() || part == "." || part == "..") return false;
  }
  return true;
}

const std::string& Scratch() {
  static const std::string* root = [] {
    std::string base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
    std::string templ = base + "/kiln-paths-fuzz-XXXXXX";
    if (mkdtemp(templ.data()) == nullptr) abort();
    std::atexit([] { (void)kiln::RemoveTree(Scratch()); });
    return new std::string(templ);
  }();
  return *root;
}

// Makes the parent directories of `path` beneath a fresh output root, as
// `kiln run` does, and checks where the kernel put them.
void MakeParents(const std::string& path) {
  size_t slash = path.rfind('/');
  if (slash == std::string::npos) return;
  const std::string out = Scratch() + "/out";
  if (mkdir(out.c_str(), 0755) != 0) abort();
  int root_fd = open(out.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  absl::StatusOr<kiln::UniqueFd> parent =
      kiln::MakeDirectoriesBeneath(root_fd, path.substr(0, slash), 0755, -1, -1);
  if (parent.ok()) {
    char where[4096];
    std::string link = "/proc/self/fd/" + std::to_string(parent->get());
    ssize_t n = readlink(link.c_str(), where, sizeof(where));
    if (n <= 0 || !absl::StartsWith(absl::string_view(where, n), out + "/")) __builtin_trap();
  }
  close(root_fd);
  if (!kiln::RemoveTree(out).ok()) abort();
}

}  // namespace

// Protobuf logs every string field that is not UTF-8; fuzzing makes many.
extern "C" int LLVMFuzzerInitialize(int*, char***) {
  google::protobuf::SetLogHandler([](google::protobuf::LogLevel, const char*, int, const std::string&) {});
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  build::bazel::remote::execution::v2::ActionResult result;
  if (!result.ParseFromArray(data, static_cast<int>(size))) return 0;
  absl::Status status = kiln::client::CheckResultPaths(result);
  if (!status.ok()) {
    if (!absl::IsInvalidArgument(status)) __builtin_trap();
    return 0;
  }
  std::vector<std::string> paths;
  for (const auto& f : result.output_files()) paths.push_back(f.path());
  for (const auto& d : result.output_directories()) paths.push_back(d.path());
  for (const auto& l : result.output_symlinks()) paths.push_back(l.path());
  for (const std::string& path : paths) {
    if (!Safe(path)) __builtin_trap();
  }
  for (size_t i = 0; i < paths.size() && i < 8; ++i) MakeParents(paths[i]);
  return 0;
}
