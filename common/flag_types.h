// Flag value types with parsers, so that a bad value stops kiln-worker at
// start with a message that names the flag's expected form.
#ifndef KILN_COMMON_FLAG_TYPES_H_
#define KILN_COMMON_FLAG_TYPES_H_

#include <cstdint>
#include <string>
#include "absl/strings/string_view.h"

#include "absl/status/statusor.h"

namespace kiln {

// A byte count written as "1073741824", "512MiB", "10GiB", "64KiB" or "1TiB".
struct ByteSize {
  int64_t bytes = 0;
};
bool AbslParseFlag(absl::string_view text, ByteSize* out, std::string* error);
std::string AbslUnparseFlag(ByteSize value);

// "HOST:PORT" with a numeric port; IPv6 hosts in brackets ("[::1]:8980").
struct HostPort {
  std::string host;
  int port = 0;
  std::string ToString() const;
};
absl::StatusOr<HostPort> ParseHostPort(absl::string_view text);
bool AbslParseFlag(absl::string_view text, HostPort* out, std::string* error);
std::string AbslUnparseFlag(const HostPort& value);

}  // namespace kiln

#endif  // KILN_COMMON_FLAG_TYPES_H_
