#include "server/exec/sandbox_stats.h"

#include <cstdint>

#include <google/protobuf/util/time_util.h>

#include "absl/strings/str_cat.h"

namespace kiln::exec {
namespace {

absl::Status Bad(absl::string_view field) {
  return absl::InternalError(absl::StrCat("kiln-sandbox's result: \"", field, "\" is out of range"));
}

// The longest duration a run can report: far beyond any timeout.
constexpr int64_t kMaxNanos = int64_t{1000000000} * 1000000000;

google::protobuf::Duration ToProtoDuration(int64_t nanos) {
  return google::protobuf::util::TimeUtil::NanosecondsToDuration(nanos);
}

// Nanoseconds from `from` to `to`, both CLOCK_MONOTONIC instants; 0 unless
// both were reached in that order. Kept in integers: a span near INT64_MAX
// rounds up as a double, and converting that back would overflow.
int64_t NanosBetween(int64_t from, int64_t to) { return from > 0 && to >= from ? to - from : 0; }

double Seconds(int64_t nanos) { return nanos / 1e9; }

}  // namespace

absl::StatusOr<SandboxStats> ReadSandboxResult(const kiln::sandbox::v1::SandboxResult& r) {
  if (r.error_code() != 0) {
    const int code = r.error_code();
    return absl::Status(code > 0 && code <= 16 ? static_cast<absl::StatusCode>(code) : absl::StatusCode::kInternal,
                        r.error_message());
  }
  if (r.orphans_reaped() < 0) return Bad("orphans_reaped");
  if (r.killed_at_teardown() < 0) return Bad("killed_at_teardown");
  if (r.peak_memory_bytes() < 0) return Bad("peak_memory_bytes");
  const auto& u = r.rusage();
  for (auto [name, value] : {std::pair<const char*, int64_t>{"user_cpu_nanos", u.user_cpu_nanos()},
                             {"system_cpu_nanos", u.system_cpu_nanos()}}) {
    if (value < 0 || value > kMaxNanos) return Bad(name);
  }
  for (auto [name, value] : {std::pair<const char*, int64_t>{"max_rss_bytes", u.max_rss_bytes()},
                             {"minor_page_faults", u.minor_page_faults()},
                             {"major_page_faults", u.major_page_faults()},
                             {"input_blocks", u.input_blocks()},
                             {"output_blocks", u.output_blocks()},
                             {"voluntary_context_switches", u.voluntary_context_switches()},
                             {"involuntary_context_switches", u.involuntary_context_switches()}}) {
    if (value < 0) return Bad(name);
  }
  SandboxStats out;
  out.exit_code = r.exit_code();
  out.timed_out = r.timed_out();
  out.oom_killed = r.oom_killed();
  out.tmp_full = r.tmp_full();
  out.shm_full = r.shm_full();
  out.orphans_reaped = r.orphans_reaped();
  out.killed_at_teardown = r.killed_at_teardown();
  out.exec_error = r.exec_error();
  const auto& stages = r.stages();
  const int64_t setup_nanos = NanosBetween(stages.request(), stages.exec());
  out.setup_seconds = Seconds(setup_nanos);
  out.completion_seconds = Seconds(NanosBetween(stages.action_exited(), stages.tree_gone()));
  out.ready_wait_seconds = Seconds(NanosBetween(stages.request(), stages.network()));

  kiln::v1::SandboxResourceUsage& usage = out.usage;
  *usage.mutable_user_time() = ToProtoDuration(u.user_cpu_nanos());
  *usage.mutable_system_time() = ToProtoDuration(u.system_cpu_nanos());
  usage.set_maximum_resident_set_size(u.max_rss_bytes());
  usage.set_peak_memory_bytes(r.peak_memory_bytes());
  usage.set_minor_page_faults(u.minor_page_faults());
  usage.set_major_page_faults(u.major_page_faults());
  usage.set_block_input_operations(u.input_blocks());
  usage.set_block_output_operations(u.output_blocks());
  usage.set_voluntary_context_switches(u.voluntary_context_switches());
  usage.set_involuntary_context_switches(u.involuntary_context_switches());
  usage.set_orphans_reaped(out.orphans_reaped);
  usage.set_killed_at_teardown(out.killed_at_teardown);
  usage.set_oom_killed(out.oom_killed);
  usage.set_timed_out(out.timed_out);
  *usage.mutable_sandbox_setup() = ToProtoDuration(setup_nanos);
  return out;
}

}  // namespace kiln::exec
