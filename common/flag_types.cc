#include "common/flag_types.h"

#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"

namespace kiln {

bool AbslParseFlag(absl::string_view text, ByteSize* out, std::string* error) {
  static constexpr std::pair<absl::string_view, int64_t> kUnits[] = {
      {"TiB", int64_t{1} << 40}, {"GiB", int64_t{1} << 30}, {"MiB", int64_t{1} << 20},
      {"KiB", int64_t{1} << 10}, {"B", 1},
  };
  int64_t multiplier = 1;
  absl::string_view number = text;
  for (const auto& [suffix, factor] : kUnits) {
    if (absl::ConsumeSuffix(&number, suffix)) {
      multiplier = factor;
      break;
    }
  }
  int64_t value = 0;
  if (!absl::SimpleAtoi(number, &value) || value < 0 || value > INT64_MAX / multiplier) {
    *error = absl::StrCat("\"", text,
                          "\" is not a byte size; write a non-negative integer, optionally "
                          "followed by KiB, MiB, GiB or TiB (e.g. 10GiB)");
    return false;
  }
  out->bytes = value * multiplier;
  return true;
}

std::string AbslUnparseFlag(ByteSize value) { return absl::StrCat(value.bytes); }

std::string HostPort::ToString() const {
  if (host.find(':') != std::string::npos) return absl::StrCat("[", host, "]:", port);
  return absl::StrCat(host, ":", port);
}

absl::StatusOr<HostPort> ParseHostPort(absl::string_view text) {
  auto bad = [&](absl::string_view why) {
    return absl::InvalidArgumentError(absl::StrCat(
        "\"", text, "\" is not HOST:PORT (", why, "); e.g. 127.0.0.1:8980 or [::1]:8980"));
  };
  size_t colon = text.rfind(':');
  if (colon == absl::string_view::npos) return bad("no port");
  absl::string_view host = text.substr(0, colon);
  absl::string_view port_text = text.substr(colon + 1);
  if (absl::ConsumePrefix(&host, "[") && !absl::ConsumeSuffix(&host, "]")) {
    return bad("unclosed [");
  }
  if (host.empty()) return bad("empty host");
  int port = 0;
  if (!absl::SimpleAtoi(port_text, &port) || port < 0 || port > 65535) {
    return bad("port must be a number from 0 to 65535");
  }
  return HostPort{std::string(host), port};
}

bool AbslParseFlag(absl::string_view text, HostPort* out, std::string* error) {
  absl::StatusOr<HostPort> parsed = ParseHostPort(text);
  if (!parsed.ok()) {
    *error = std::string(parsed.status().message());
    return false;
  }
  *out = *std::move(parsed);
  return true;
}

std::string AbslUnparseFlag(const HostPort& value) { return value.ToString(); }

}  // namespace kiln
