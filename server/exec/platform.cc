#include "server/exec/platform.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/flag_types.h"

namespace kiln::exec {

std::vector<std::string> SupportedPlatformProperties() {
  return {"OSFamily", "ISA", "network", "dockerNetwork", "block-network",
          "memory", "pids", "cpus", "personality"};
}

absl::Status DeclarePlatform(const std::vector<std::string>& entries, PlatformPolicy* policy) {
  const std::vector<std::string> implemented = SupportedPlatformProperties();
  for (const std::string& entry : entries) {
    size_t eq = entry.find('=');
    if (eq == std::string::npos || eq == 0) {
      return absl::InvalidArgumentError(absl::StrCat("--platform=", entry, ": expected NAME=VALUE"));
    }
    std::string name = entry.substr(0, eq);
    if (std::find(implemented.begin(), implemented.end(), name) != implemented.end()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--platform=", entry, ": ", name, " is a property Kiln implements itself, not a declaration"));
    }
    policy->declared[name].insert(entry.substr(eq + 1));
  }
  return absl::OkStatus();
}

rev2::Platform AdvertisedPlatform(const PlatformPolicy& policy) {
  rev2::Platform platform;
  for (const auto& [name, values] : policy.declared) {  // std::map and std::set: sorted
    for (const std::string& value : values) {
      auto* property = platform.add_properties();
      property->set_name(name);
      property->set_value(value);
    }
  }
  return platform;
}

namespace {

std::string DescribeDeclared(const PlatformPolicy& policy) {
  std::vector<std::string> offered;
  const rev2::Platform advertised = AdvertisedPlatform(policy);
  for (const auto& property : advertised.properties()) {
    offered.push_back(absl::StrCat(property.name(), "=", property.value()));
  }
  return offered.empty() ? "nothing (kiln-worker --platform declares it)" : absl::StrJoin(offered, ", ");
}

}  // namespace

absl::StatusOr<ActionLimits> ParsePlatform(const rev2::Action& action, const rev2::Command& command,
                                           const PlatformPolicy& policy) {
  const rev2::Platform& platform = action.has_platform() ? action.platform() : command.platform();
  ActionLimits limits;
  auto bad = [](const rev2::Platform::Property& p, absl::string_view expected) {
    return absl::InvalidArgumentError(absl::StrCat("platform property ", p.name(), "=\"",
                                                   p.value(), "\": expected ", expected));
  };
  for (const auto& p : platform.properties()) {
    const std::string& name = p.name();
    const std::string& value = p.value();
    bool network_request = false, network_value = false;
    if (name == "OSFamily") {
      if (value != "linux" && value != "Linux") return bad(p, "linux (this worker runs Linux)");
    } else if (name == "ISA") {
      if (value != "x86-64" && value != "x86_64") return bad(p, "x86-64");
    } else if (name == "network") {
      if (value != "on" && value != "off") return bad(p, "on or off");
      network_request = true;
      network_value = value == "on";
    } else if (name == "dockerNetwork") {
      if (value != "standard" && value != "off") return bad(p, "standard or off");
      network_request = true;
      network_value = value == "standard";
    } else if (name == "block-network") {
      if (value != "true" && value != "false") return bad(p, "true or false");
      network_request = true;
      network_value = value == "false";
    } else if (name == "memory") {
      ByteSize size;
      std::string error;
      if (!AbslParseFlag(value, &size, &error) || size.bytes < (1 << 20)) {
        return bad(p, "a size of at least 1MiB, e.g. 2GiB");
      }
      limits.memory_bytes = size.bytes;
    } else if (name == "pids") {
      if (!absl::SimpleAtoi(value, &limits.pids) || limits.pids < 2) return bad(p, "a number >= 2");
    } else if (name == "cpus") {
      if (!absl::SimpleAtod(value, &limits.cpus) || !std::isfinite(limits.cpus) || limits.cpus < 0.01 ||
          limits.cpus > 4096) {
        return bad(p, "a finite number of cores between 0.01 and 4096");
      }
    } else if (name == "personality") {
      if (value != "linux" && value != "linux32") return bad(p, "linux or linux32");
      limits.linux32 = value == "linux32";
    } else if (auto declared = policy.declared.find(name); declared != policy.declared.end()) {
      if (!declared->second.count(value)) {
        return absl::InvalidArgumentError(absl::StrCat(
            "platform property ", name, "=\"", value, "\" does not match this worker, which offers ",
            DescribeDeclared(policy)));
      }
    } else if (!policy.ignored.count(name)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "platform property \"", name, "\" is not supported by this worker; supported: ",
          absl::StrJoin(SupportedPlatformProperties(), ", "), "; this worker offers ", DescribeDeclared(policy),
          policy.ignored.empty() ? "" : absl::StrCat("; ignored: ", absl::StrJoin(policy.ignored, ", "))));
    }
    if (network_request && network_value) {
      if (!policy.allow_network) {
        return absl::InvalidArgumentError(absl::StrCat(
            "platform property ", name, "=", value,
            " asks for network access, which this worker's operator does not allow "
            "(kiln-worker --allow_network)"));
      }
      limits.network = true;
    }
  }
  return limits;
}

}  // namespace kiln::exec
