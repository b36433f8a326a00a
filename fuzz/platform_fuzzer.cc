// Platform properties (server/exec/platform.h): an operator's --platform
// declaration and --platform_ignore list, then an action's and a command's
// properties, names and values from the spellings Kiln knows plus random
// text. Whatever is accepted gives sane limits: network only where the
// operator allows it, no negative or non-finite limit.
#include <fuzzer/FuzzedDataProvider.h>

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "server/exec/platform.h"

namespace {

std::string Pick(FuzzedDataProvider& in, const std::vector<std::string>& known) {
  if (in.ConsumeIntegralInRange(0, 3) == 0) return in.ConsumeRandomLengthString(24);
  return known[in.ConsumeIntegralInRange<size_t>(0, known.size() - 1)];
}

const std::vector<std::string> kNames = {
    "OSFamily", "ISA", "network", "dockerNetwork", "block-network", "memory", "pids", "cpus",
    "personality", "container-image", "Pool", "min-mem", "max-cores", ""};
const std::vector<std::string> kValues = {
    "linux", "x86-64", "on", "off", "standard", "true", "false", "2GiB", "0", "-1", "1.5", "nan",
    "inf", "1e308", "9223372036854775807", "9223372036854775808", "18446744073709551616TiB",
    "linux32", "docker://img", "", " 1", "0x10", "1KiB", "-0"};

void AddProperties(FuzzedDataProvider& in, kiln::rev2::Platform* platform) {
  const int count = in.ConsumeIntegralInRange(0, 5);
  for (int i = 0; i < count; ++i) {
    auto* p = platform->add_properties();
    p->set_name(Pick(in, kNames));
    p->set_value(Pick(in, kValues));
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzedDataProvider in(data, size);
  kiln::exec::PlatformPolicy policy;
  policy.allow_network = in.ConsumeBool();
  std::vector<std::string> declared;
  for (int i = in.ConsumeIntegralInRange(0, 3); i > 0; --i) {
    declared.push_back(in.ConsumeBool() ? Pick(in, kNames) + "=" + Pick(in, kValues)
                                        : in.ConsumeRandomLengthString(24));
  }
  if (!kiln::exec::DeclarePlatform(declared, &policy).ok()) return 0;
  if (in.ConsumeBool()) policy.ignored.insert(Pick(in, kNames));

  // The advertised platform is sorted by name, then value.
  kiln::rev2::Platform advertised = kiln::exec::AdvertisedPlatform(policy);
  for (int i = 1; i < advertised.properties_size(); ++i) {
    const auto& a = advertised.properties(i - 1);
    const auto& b = advertised.properties(i);
    if (a.name() > b.name() || (a.name() == b.name() && a.value() > b.value())) __builtin_trap();
  }

  kiln::rev2::Action action;
  kiln::rev2::Command command;
  if (in.ConsumeBool()) AddProperties(in, action.mutable_platform());
  if (in.ConsumeBool()) AddProperties(in, command.mutable_platform());
  absl::StatusOr<kiln::exec::ActionLimits> limits = kiln::exec::ParsePlatform(action, command, policy);
  if (limits.ok()) {
    if (limits->network && !policy.allow_network) __builtin_trap();
    if (limits->memory_bytes < 0 || limits->pids < 0) __builtin_trap();
    if (!std::isfinite(limits->cpus) || limits->cpus < 0) __builtin_trap();
  } else if (limits.status().code() != absl::StatusCode::kInvalidArgument) {
    __builtin_trap();
  }
  return 0;
}
