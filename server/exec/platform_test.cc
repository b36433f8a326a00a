#include "server/exec/platform.h"

#include <gtest/gtest.h>

namespace kiln::exec {
namespace {

rev2::Action WithProperties(std::vector<std::pair<std::string, std::string>> properties) {
  rev2::Action action;
  for (const auto& [name, value] : properties) {
    auto* p = action.mutable_platform()->add_properties();
    p->set_name(name);
    p->set_value(value);
  }
  return action;
}

TEST(PlatformTest, ParsesLimitsAndStandardProperties) {
  auto limits = ParsePlatform(WithProperties({{"ISA", "x86-64"}, {"OSFamily", "linux"}, {"cpus", "1.5"},
                                              {"memory", "2GiB"}, {"personality", "linux32"}, {"pids", "64"}}),
                              rev2::Command(), {});
  ASSERT_TRUE(limits.ok()) << limits.status();
  EXPECT_EQ(limits->memory_bytes, int64_t{2} << 30);
  EXPECT_EQ(limits->pids, 64);
  EXPECT_DOUBLE_EQ(limits->cpus, 1.5);
  EXPECT_TRUE(limits->linux32);
  EXPECT_FALSE(limits->network);
}

TEST(PlatformTest, NetworkSpellingsNeedTheOperatorsPermission) {
  for (auto [name, value] : std::vector<std::pair<std::string, std::string>>{
           {"network", "on"}, {"dockerNetwork", "standard"}, {"block-network", "false"}}) {
    auto refused = ParsePlatform(WithProperties({{name, value}}), rev2::Command(), {});
    EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument) << name;
    PlatformPolicy allow;
    allow.allow_network = true;
    auto allowed = ParsePlatform(WithProperties({{name, value}}), rev2::Command(), allow);
    ASSERT_TRUE(allowed.ok()) << name;
    EXPECT_TRUE(allowed->network) << name;
  }
  auto off = ParsePlatform(WithProperties({{"network", "off"}}), rev2::Command(), {});
  ASSERT_TRUE(off.ok());
  EXPECT_FALSE(off->network);
}

TEST(PlatformTest, UnknownPropertiesAreRejectedUnlessIgnored) {
  auto unknown = ParsePlatform(WithProperties({{"container-image", "docker://x"}}), rev2::Command(), {});
  EXPECT_EQ(unknown.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(unknown.status().message().find("supported: OSFamily, ISA"), absl::string_view::npos);
  PlatformPolicy policy;
  policy.ignored = {"container-image"};
  EXPECT_TRUE(ParsePlatform(WithProperties({{"container-image", "docker://x"}}), rev2::Command(), policy).ok());
}

TEST(PlatformTest, DeclaredPropertiesMustMatchWhatTheWorkerOffers) {
  PlatformPolicy policy;
  ASSERT_TRUE(DeclarePlatform({"container-image=docker://gcr.io/a@sha256:1", "Pool=default",
                               "Pool=large"}, &policy).ok());
  // RBE-style configurations that match the declaration run.
  EXPECT_TRUE(ParsePlatform(WithProperties({{"container-image", "docker://gcr.io/a@sha256:1"},
                                            {"Pool", "large"}, {"OSFamily", "Linux"}}),
                            rev2::Command(), policy).ok());
  // Another image is refused, and the error says what this worker offers.
  auto other = ParsePlatform(WithProperties({{"container-image", "docker://other"}}), rev2::Command(), policy);
  ASSERT_EQ(other.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(other.status().message().find("offers Pool=default, Pool=large, container-image=docker://gcr.io/a@sha256:1"),
            absl::string_view::npos) << other.status();
  // The advertisement is sorted by name, then value, as schedulers expect.
  rev2::Platform advertised = AdvertisedPlatform(policy);
  ASSERT_EQ(advertised.properties_size(), 3);
  EXPECT_EQ(advertised.properties(0).name(), "Pool");
  EXPECT_EQ(advertised.properties(1).value(), "large");
  EXPECT_EQ(advertised.properties(2).name(), "container-image");
  // Declarations are NAME=VALUE, and never redefine what Kiln implements.
  EXPECT_FALSE(DeclarePlatform({"novalue"}, &policy).ok());
  EXPECT_FALSE(DeclarePlatform({"memory=1GiB"}, &policy).ok());
}

TEST(PlatformTest, BadValuesAreRejected) {
  for (auto [name, value] : std::vector<std::pair<std::string, std::string>>{
           {"OSFamily", "windows"}, {"ISA", "arm64"}, {"memory", "lots"}, {"memory", "1KiB"},
           {"pids", "1"}, {"cpus", "0"}, {"cpus", "nan"}, {"cpus", "inf"}, {"cpus", "-1"},
           {"personality", "linux16"}, {"network", "maybe"}}) {
    EXPECT_EQ(ParsePlatform(WithProperties({{name, value}}), rev2::Command(), {}).status().code(),
              absl::StatusCode::kInvalidArgument)
        << name << "=" << value;
  }
}

TEST(PlatformTest, ActionPlatformWinsOverCommandPlatform) {
  rev2::Command command;
  auto* p = command.mutable_platform()->add_properties();
  p->set_name("pids");
  p->set_value("10");
  auto from_command = ParsePlatform(rev2::Action(), command, {});
  ASSERT_TRUE(from_command.ok());
  EXPECT_EQ(from_command->pids, 10);
  auto from_action = ParsePlatform(WithProperties({{"pids", "20"}}), command, {});
  ASSERT_TRUE(from_action.ok());
  EXPECT_EQ(from_action->pids, 20);
}

}  // namespace
}  // namespace kiln::exec
