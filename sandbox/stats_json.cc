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
  // Each stage's end, in seconds after clone() returned (cgroup_setup is
  // from the start of the run); absent when the stage was not reached.
  const StageTimes& t = r.stages;
  auto since_clone = [&](int64_t at) { return at == 0 ? 0.0 : (at - t.clone) / 1e9; };
  out["stages_seconds"] = {
      {"cgroup_setup", t.cgroup_setup == 0 ? 0.0 : (t.cgroup_setup - t.start) / 1e9},
      {"clone", t.clone == 0 ? 0.0 : (t.clone - t.start) / 1e9},
      {"namespaces", since_clone(t.namespaces)},
      {"root", since_clone(t.root)},
      {"network", since_clone(t.network)},
      {"request", since_clone(t.request)},
      {"exec", since_clone(t.exec)},
      {"action_exited", since_clone(t.action_exited)},
      {"tree_gone", since_clone(t.tree_gone)},
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
