// kiln-sandbox's option values and spec checks (sandbox/sandbox_spec.h,
// common/flag_types.h): byte sizes, durations and host:port as the CLI
// parses them, then ValidateSpec on a spec built from them. And the stats
// it returns: any SandboxResult, sent as kiln-sandbox sends it
// (sandbox/sandbox_proto.h), reads back in the worker (server/exec/
// sandbox_stats.h) with the same values; and the spec survives its trip as
// a SandboxRequest.
#include <fuzzer/FuzzedDataProvider.h>

#include <cstdint>
#include <string>

#include "absl/time/time.h"
#include "common/flag_types.h"
#include "sandbox/sandbox_spec.h"
#include "sandbox/sandbox_proto.h"
#include "sandbox/stats_json.h"
#include "server/exec/sandbox_stats.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzedDataProvider in(data, size);
  namespace sb = kiln::sandbox;

  sb::SandboxSpec spec;
  sb::SandboxPolicy policy;
  std::string error;
  kiln::ByteSize bytes;
  if (kiln::AbslParseFlag(in.ConsumeRandomLengthString(32), &bytes, &error)) {
    if (bytes.bytes < 0) __builtin_trap();
    // What is printed parses back to the same size.
    kiln::ByteSize again;
    if (!kiln::AbslParseFlag(kiln::AbslUnparseFlag(bytes), &again, &error) || again.bytes != bytes.bytes) {
      __builtin_trap();
    }
    spec.memory_bytes = bytes.bytes;
  }
  absl::Duration timeout;
  if (absl::ParseDuration(in.ConsumeRandomLengthString(24), &timeout)) spec.timeout = timeout;
  absl::StatusOr<kiln::HostPort> host_port = kiln::ParseHostPort(in.ConsumeRandomLengthString(40));
  if (host_port.ok() && (host_port->port < 0 || host_port->port > 65535)) __builtin_trap();

  spec.argv.push_back(in.ConsumeRandomLengthString(16));
  spec.cwd = in.ConsumeRandomLengthString(16);
  spec.hostname = in.ConsumeRandomLengthString(70);
  spec.domainname = in.ConsumeRandomLengthString(70);
  spec.share_network = in.ConsumeBool();
  policy.allow_host_network = in.ConsumeBool();
  spec.pids = in.ConsumeIntegral<int64_t>();
  spec.cpus = in.ConsumeFloatingPoint<double>();
  spec.tmp_size_bytes = in.ConsumeIntegral<int64_t>();
  spec.max_processes = in.ConsumeIntegral<int64_t>();
  spec.kill_grace = absl::Milliseconds(in.ConsumeIntegral<int32_t>());
  policy.uid_pool_size = in.ConsumeIntegral<int>();
  if (in.ConsumeBool()) spec.binds.push_back({in.ConsumeRandomLengthString(20), in.ConsumeRandomLengthString(20)});
  absl::Status valid = sb::ValidateSpec(spec, policy);
  if (valid.ok()) {
    if (spec.share_network && !policy.allow_host_network) __builtin_trap();
    if (spec.pids < 0 || !(spec.cpus >= 0) || spec.tmp_size_bytes < 0) __builtin_trap();
  }

  sb::SandboxResult result;
  result.exit_code = in.ConsumeIntegral<int>();
  result.timed_out = in.ConsumeBool();
  result.oom_killed = in.ConsumeBool();
  result.orphans_reaped = in.ConsumeIntegralInRange(0, 1 << 20);
  result.killed_at_teardown = in.ConsumeIntegralInRange(0, 1 << 20);
  result.peak_memory_bytes = in.ConsumeIntegralInRange<int64_t>(0, int64_t{1} << 50);
  result.tmp_full = in.ConsumeBool();
  result.rusage.ru_utime.tv_sec = in.ConsumeIntegralInRange(0, 1 << 24);
  result.rusage.ru_utime.tv_usec = in.ConsumeIntegralInRange(0, 999999);
  result.rusage.ru_maxrss = in.ConsumeIntegralInRange<long>(0, long{1} << 40);
  result.rusage.ru_minflt = in.ConsumeIntegralInRange<long>(0, long{1} << 40);
  result.stages.request = in.ConsumeIntegralInRange<int64_t>(0, int64_t{1} << 50);
  result.stages.exec = in.ConsumeIntegralInRange<int64_t>(0, int64_t{1} << 50);
  result.exec_error = in.ConsumeRandomLengthString(40);  // not necessarily UTF-8
  (void)sb::ResultToJson(result);  // kiln-sandbox --stats_file: never throws
  absl::StatusOr<kiln::exec::SandboxStats> stats = kiln::exec::ReadSandboxResult(sb::ToResultMessage(result));
  if (!stats.ok() || stats->exit_code != result.exit_code || stats->timed_out != result.timed_out ||
      stats->oom_killed != result.oom_killed || stats->orphans_reaped != result.orphans_reaped ||
      stats->killed_at_teardown != result.killed_at_teardown || stats->tmp_full != result.tmp_full ||
      stats->usage.peak_memory_bytes() != result.peak_memory_bytes ||
      stats->usage.maximum_resident_set_size() != int64_t{result.rusage.ru_maxrss} * 1024 ||
      stats->usage.minor_page_faults() != result.rusage.ru_minflt ||
      stats->usage.user_time().seconds() != result.rusage.ru_utime.tv_sec) {
    __builtin_trap();
  }
  return 0;
}
