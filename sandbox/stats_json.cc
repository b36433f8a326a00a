#include "sandbox/stats_json.h"

#include <nlohmann/json.hpp>

namespace kiln::sandbox {
namespace {

double Seconds(const struct timeval& tv) { return tv.tv_sec + tv.tv_usec / 1e6; }

}  // namespace

std::string ResultToJson(const SandboxResult& r) {
  nlohmann::json out;
  out["exit_code"] = r.exit_code;
  out["signal"] = r.signal;
  out["timed_out"] = r.timed_out;
  out["oom_killed"] = r.oom_killed;
  out["orphans_reaped"] = r.orphans_reaped;
  out["killed_at_teardown"] = r.killed_at_teardown;
  out["peak_memory_bytes"] = r.peak_memory_bytes;
  out["cpu_throttled_seconds"] = r.cpu_throttled_seconds;
  out["cgroups"] = r.cgroups;
  out["wall_time_seconds"] = absl::ToDoubleSeconds(r.wall_time);
  out["uid"] = r.uid;
  out["user_namespace"] = r.user_namespace;
  out["tmp_full"] = r.tmp_full;
  out["shm_full"] = r.shm_full;
  out["file_size_exceeded"] = r.file_size_exceeded;
  if (!r.exec_error.empty()) out["exec_error"] = r.exec_error;
  // Each stage's end, in seconds after clone() was called (cgroup_setup is
  // before it, from the start of the run).
  out["stages_seconds"] = {
      {"cgroup_setup", absl::ToDoubleSeconds(r.stages.cgroup_setup)},
      {"clone", absl::ToDoubleSeconds(r.stages.clone)},
      {"namespaces", absl::ToDoubleSeconds(r.stages.namespaces)},
      {"root", absl::ToDoubleSeconds(r.stages.root)},
      {"network", absl::ToDoubleSeconds(r.stages.network)},
      {"exec", absl::ToDoubleSeconds(r.stages.exec)},
  };
  out["rusage"] = {
      {"user_cpu_seconds", Seconds(r.rusage.ru_utime)},
      {"system_cpu_seconds", Seconds(r.rusage.ru_stime)},
      {"max_rss_bytes", int64_t{r.rusage.ru_maxrss} * 1024},
      {"minor_page_faults", r.rusage.ru_minflt},
      {"major_page_faults", r.rusage.ru_majflt},
      {"input_blocks", r.rusage.ru_inblock},
      {"output_blocks", r.rusage.ru_oublock},
      {"voluntary_context_switches", r.rusage.ru_nvcsw},
      {"involuntary_context_switches", r.rusage.ru_nivcsw},
  };
  // exec_error carries argv[0], which may be any bytes: invalid UTF-8 is
  // replaced (U+FFFD) rather than thrown about, which would end kiln-sandbox
  // without a stats file.
  return out.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
}

}  // namespace kiln::sandbox
