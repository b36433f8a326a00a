#include "server/exec/sandbox_stats.h"

#include <gtest/gtest.h>

#include "sandbox/sandbox_proto.h"

namespace kiln::exec {
namespace {

// What kiln-sandbox sends (sandbox/sandbox_proto.h) is what the worker reads.
TEST(SandboxStatsTest, ReadsWhatKilnSandboxSends) {
  sandbox::SandboxResult result;
  result.exit_code = 3;
  result.timed_out = true;
  result.orphans_reaped = 2;
  result.killed_at_teardown = 1;
  result.peak_memory_bytes = 1 << 20;
  result.tmp_full = true;
  result.exec_error = "x: nope";
  result.rusage.ru_utime = {1, 500000};
  result.rusage.ru_maxrss = 100;
  result.stages.request = 1000000;
  result.stages.exec = 5000000;
  result.stages.action_exited = 9000000;
  result.stages.tree_gone = 10000000;
  absl::StatusOr<SandboxStats> stats = ReadSandboxResult(sandbox::ToResultMessage(result));
  ASSERT_TRUE(stats.ok()) << stats.status();
  EXPECT_EQ(stats->exit_code, 3);
  EXPECT_TRUE(stats->timed_out);
  EXPECT_FALSE(stats->oom_killed);
  EXPECT_TRUE(stats->tmp_full);
  EXPECT_EQ(stats->orphans_reaped, 2);
  EXPECT_EQ(stats->exec_error, "x: nope");
  EXPECT_EQ(stats->usage.killed_at_teardown(), 1);
  EXPECT_EQ(stats->usage.peak_memory_bytes(), 1 << 20);
  EXPECT_EQ(stats->usage.maximum_resident_set_size(), 100 * 1024);
  EXPECT_EQ(stats->usage.user_time().seconds(), 1);
  EXPECT_EQ(stats->usage.user_time().nanos(), 500000000);
  EXPECT_NEAR(stats->setup_seconds, 0.004, 1e-9);
  EXPECT_NEAR(stats->completion_seconds, 0.001, 1e-9);
}

TEST(SandboxStatsTest, AnErrorResultIsItsStatus) {
  absl::StatusOr<SandboxStats> stats =
      ReadSandboxResult(sandbox::ErrorResultMessage(absl::NotFoundError("bind source \"/x\" does not exist")));
  EXPECT_EQ(stats.status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(stats.status().message(), "bind source \"/x\" does not exist");
}

// The message comes from another process: values no sandbox reports are
// errors, never out-of-range conversions.
TEST(SandboxStatsTest, OutOfRangeValuesAreErrorsNotCrashes) {
  std::vector<kiln::sandbox::v1::SandboxResult> bad(5);
  bad[0].set_orphans_reaped(-1);
  bad[1].mutable_rusage()->set_user_cpu_nanos(INT64_MAX);
  bad[2].mutable_rusage()->set_max_rss_bytes(-5);
  bad[3].set_peak_memory_bytes(-1);
  bad[4].mutable_rusage()->set_system_cpu_nanos(-1);
  for (const auto& result : bad) {
    EXPECT_EQ(ReadSandboxResult(result).status().code(), absl::StatusCode::kInternal) << result.DebugString();
  }
}

// Stage instants are the sandbox's CLOCK_MONOTONIC readings: a span of
// nearly INT64_MAX nanoseconds is reported exactly, not rounded up through a
// double into an overflow (found by sandbox_stats_fuzzer).
TEST(SandboxStatsTest, AStageSpanNearTheLargestInstantIsReportedExactly) {
  kiln::sandbox::v1::SandboxResult result;
  result.mutable_stages()->set_request(56);
  result.mutable_stages()->set_exec(INT64_MAX);
  absl::StatusOr<SandboxStats> stats = ReadSandboxResult(result);
  ASSERT_TRUE(stats.ok()) << stats.status();
  const google::protobuf::Duration& setup = stats->usage.sandbox_setup();
  EXPECT_EQ(setup.seconds(), (INT64_MAX - 56) / 1000000000);
  EXPECT_EQ(setup.nanos(), (INT64_MAX - 56) % 1000000000);
  EXPECT_GT(stats->setup_seconds, 9.2e9);
}

// The framing both sides use: a message survives the trip, a torn one is an
// error and a closed stream is NOT_FOUND.
TEST(SandboxStatsTest, FramingRoundTripsAndRejectsTornMessages) {
  int pair[2];
  ASSERT_EQ(pipe(pair), 0);
  kiln::sandbox::v1::SandboxRequest request;
  request.add_argv("/bin/true");
  auto* env = request.add_env();
  env->set_name("A");
  env->set_value("b");
  ASSERT_TRUE(sandbox::WriteMessage(pair[1], request).ok());
  ASSERT_EQ(write(pair[1], "\x10\x00\x00\x00\x01", 5), 5);  // says 16 bytes, has 1
  close(pair[1]);
  kiln::sandbox::v1::SandboxRequest read;
  ASSERT_TRUE(sandbox::ReadMessage(pair[0], &read).ok());
  EXPECT_EQ(read.argv(0), "/bin/true");
  EXPECT_EQ(read.env(0).value(), "b");
  EXPECT_EQ(sandbox::ReadMessage(pair[0], &read).code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(sandbox::ReadMessage(pair[0], &read).code(), absl::StatusCode::kNotFound);
  close(pair[0]);
}

}  // namespace
}  // namespace kiln::exec
