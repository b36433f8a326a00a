// Directory and Tree messages from clients (server/cas/directory_tree.h).
// The input is a serialized Directory, or a Tree whose root and children are
// each validated. Whatever ValidateDirectory accepts must be in REAPI's
// canonical form, checked here independently: single-component names,
// each list sorted, no name twice, every digest well formed, every symlink
// target non-empty text.
#include <cstddef>
#include <cstdint>
#include <set>
#include <string>

#include <google/protobuf/stubs/logging.h>

#include "server/cas/directory_tree.h"

namespace {

using kiln::rev2::Directory;

bool ValidName(const std::string& name) {
  return !name.empty() && name != "." && name != ".." && name.find('/') == std::string::npos &&
         name.find('\0') == std::string::npos;
}

template <typename List>
bool SortedValid(const List& list, std::set<std::string>* names) {
  for (int i = 0; i < list.size(); ++i) {
    if (!ValidName(list[i].name())) return false;
    if (i > 0 && !(list[i - 1].name() < list[i].name())) return false;
    if (!names->insert(list[i].name()).second) return false;
  }
  return true;
}

bool Canonical(const Directory& directory) {
  std::set<std::string> names;
  if (!SortedValid(directory.files(), &names) || !SortedValid(directory.directories(), &names) ||
      !SortedValid(directory.symlinks(), &names)) {
    return false;
  }
  for (const auto& file : directory.files()) {
    if (!kiln::ParseDigest(file.digest()).ok()) return false;
  }
  for (const auto& child : directory.directories()) {
    if (!kiln::ParseDigest(child.digest()).ok()) return false;
  }
  // A target is created with symlinkat(2), which stops at a NUL: what is
  // staged must be what was checked.
  for (const auto& link : directory.symlinks()) {
    if (link.target().empty() || link.target().find('\0') != std::string::npos) return false;
  }
  return true;
}

void Check(const Directory& directory) {
  absl::Status status = kiln::cas::ValidateDirectory(directory, "fuzz");
  if (status.ok() && !Canonical(directory)) __builtin_trap();
  if (!status.ok() && status.code() != absl::StatusCode::kInvalidArgument) __builtin_trap();
}

}  // namespace

// Protobuf logs every string field that is not UTF-8; fuzzing makes many.
extern "C" int LLVMFuzzerInitialize(int*, char***) {
  google::protobuf::SetLogHandler([](google::protobuf::LogLevel, const char*, int, const std::string&) {});
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const std::string bytes(reinterpret_cast<const char*>(data) + 1, size - 1);
  if (data[0] & 1) {
    kiln::rev2::Tree tree;
    if (!tree.ParseFromString(bytes)) return 0;
    Check(tree.root());
    for (const Directory& child : tree.children()) Check(child);
  } else {
    Directory directory;
    if (!directory.ParseFromString(bytes)) return 0;
    Check(directory);
  }
  return 0;
}
