#include "server/exec/sandbox_stats.h"

#include <gtest/gtest.h>

#include "sandbox/stats_json.h"

namespace kiln::exec {
namespace {

TEST(SandboxStatsTest, ReadsWhatKilnSandboxWrites) {
  sandbox::SandboxResult result;
  result.exit_code = 3;
  result.timed_out = true;
  result.orphans_reaped = 2;
  result.killed_at_teardown = 1;
  result.peak_memory_bytes = 1 << 20;
  result.tmp_full = true;
  result.rusage.ru_utime = {1, 500000};
  result.rusage.ru_maxrss = 100;
  result.stages.exec = absl::Milliseconds(4);
  absl::StatusOr<SandboxStats> stats = ParseSandboxStats(sandbox::ResultToJson(result), 99);
  ASSERT_TRUE(stats.ok()) << stats.status();
  EXPECT_EQ(stats->exit_code, 3);
  EXPECT_TRUE(stats->timed_out);
  EXPECT_FALSE(stats->oom_killed);
  EXPECT_TRUE(stats->tmp_full);
  EXPECT_EQ(stats->orphans_reaped, 2);
  EXPECT_EQ(stats->usage.killed_at_teardown(), 1);
  EXPECT_EQ(stats->usage.peak_memory_bytes(), 1 << 20);
  EXPECT_EQ(stats->usage.maximum_resident_set_size(), 100 * 1024);
  EXPECT_EQ(stats->usage.user_time().seconds(), 1);
  EXPECT_EQ(stats->usage.user_time().nanos(), 500000000);
  EXPECT_NEAR(stats->setup_seconds, 0.004, 1e-9);
}

TEST(SandboxStatsTest, AbsentFieldsTakeDefaults) {
  absl::StatusOr<SandboxStats> stats = ParseSandboxStats("{}", 7);
  ASSERT_TRUE(stats.ok()) << stats.status();
  EXPECT_EQ(stats->exit_code, 7);
  EXPECT_FALSE(stats->timed_out);
}

// The worker used to read the file with nlohmann::json::value(),
// which throws on a field of the wrong type, and an uncaught exception ends
// the whole worker; a huge number of seconds overflowed the conversion to
// nanoseconds.
TEST(SandboxStatsTest, WrongTypesAndRangesAreErrorsNotCrashes) {
  for (const char* text : {R"({"exit_code": "1"})", R"({"exit_code": 1e300})",
                           R"({"exit_code": 99999999999})", R"({"timed_out": 1})",
                           R"({"orphans_reaped": -1})", R"({"rusage": []})",
                           R"({"rusage": {"user_cpu_seconds": 1e300}})",
                           R"({"rusage": {"max_rss_bytes": 18446744073709551615}})",
                           R"({"stages_seconds": {"exec": -1}})", "[]", "not json", ""}) {
    absl::StatusOr<SandboxStats> stats = ParseSandboxStats(text, 0);
    EXPECT_EQ(stats.status().code(), absl::StatusCode::kInternal) << text;
  }
}

}  // namespace
}  // namespace kiln::exec
