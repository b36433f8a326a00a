#include "server/exec/sandbox_stats.h"

#include <cmath>
#include <cstdint>
#include <limits>

#include <google/protobuf/util/time_util.h>
#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace kiln::exec {
namespace {

using Json = nlohmann::json;

absl::Status Bad(absl::string_view field, absl::string_view why) {
  return absl::InternalError(absl::StrCat("kiln-sandbox's stats file: \"", field, "\" ", why));
}

// The longest duration a run can report: far beyond any timeout, and small
// enough that its nanoseconds fit an int64.
constexpr double kMaxSeconds = 1e9;

absl::Status ReadBool(const Json& object, const char* field, bool* out) {
  auto it = object.find(field);
  if (it == object.end()) return absl::OkStatus();
  if (!it->is_boolean()) return Bad(field, "is not a boolean");
  *out = it->get<bool>();
  return absl::OkStatus();
}

absl::Status ReadInt(const Json& object, const char* field, int64_t min, int64_t max, int64_t* out) {
  auto it = object.find(field);
  if (it == object.end()) return absl::OkStatus();
  if (!it->is_number_integer()) return Bad(field, "is not an integer");
  if (it->is_number_unsigned() && it->get<uint64_t>() > static_cast<uint64_t>(max)) {
    return Bad(field, "is out of range");
  }
  int64_t value = it->get<int64_t>();
  if (value < min || value > max) return Bad(field, "is out of range");
  *out = value;
  return absl::OkStatus();
}

absl::Status ReadSeconds(const Json& object, const char* field, double* out) {
  auto it = object.find(field);
  if (it == object.end()) return absl::OkStatus();
  if (!it->is_number()) return Bad(field, "is not a number");
  double value = it->get<double>();
  if (!std::isfinite(value) || value < 0 || value > kMaxSeconds) return Bad(field, "is out of range");
  *out = value;
  return absl::OkStatus();
}

// An optional nested object, or an empty one.
absl::StatusOr<Json> ReadObject(const Json& object, const char* field) {
  auto it = object.find(field);
  if (it == object.end()) return Json::object();
  if (!it->is_object()) return Bad(field, "is not an object");
  return *it;
}

google::protobuf::Duration ToProtoDuration(double seconds) {
  return google::protobuf::util::TimeUtil::NanosecondsToDuration(static_cast<int64_t>(seconds * 1e9));
}

}  // namespace

absl::StatusOr<SandboxStats> ParseSandboxStats(absl::string_view text, int default_exit_code) {
  Json stats = Json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
  if (stats.is_discarded() || !stats.is_object()) {
    return absl::InternalError("kiln-sandbox's stats file is not a JSON object");
  }
  constexpr int64_t kIntMax = std::numeric_limits<int>::max();
  constexpr int64_t kInt64Max = std::numeric_limits<int64_t>::max();
  SandboxStats out;
  int64_t exit_code = default_exit_code;
  int64_t orphans = 0;
  int64_t killed = 0;
  RETURN_IF_ERROR(ReadInt(stats, "exit_code", std::numeric_limits<int>::min(), kIntMax, &exit_code));
  RETURN_IF_ERROR(ReadInt(stats, "orphans_reaped", 0, kIntMax, &orphans));
  RETURN_IF_ERROR(ReadInt(stats, "killed_at_teardown", 0, kIntMax, &killed));
  out.exit_code = static_cast<int>(exit_code);
  out.orphans_reaped = static_cast<int>(orphans);
  out.killed_at_teardown = static_cast<int>(killed);
  RETURN_IF_ERROR(ReadBool(stats, "timed_out", &out.timed_out));
  RETURN_IF_ERROR(ReadBool(stats, "oom_killed", &out.oom_killed));
  RETURN_IF_ERROR(ReadBool(stats, "tmp_full", &out.tmp_full));
  RETURN_IF_ERROR(ReadBool(stats, "shm_full", &out.shm_full));

  ASSIGN_OR_RETURN(Json rusage, ReadObject(stats, "rusage"));
  ASSIGN_OR_RETURN(Json stages, ReadObject(stats, "stages_seconds"));
  double user = 0, system = 0;
  RETURN_IF_ERROR(ReadSeconds(rusage, "user_cpu_seconds", &user));
  RETURN_IF_ERROR(ReadSeconds(rusage, "system_cpu_seconds", &system));
  RETURN_IF_ERROR(ReadSeconds(stages, "exec", &out.setup_seconds));
  int64_t peak = 0, max_rss = 0, minor = 0, major = 0, in_blocks = 0, out_blocks = 0;
  int64_t voluntary = 0, involuntary = 0;
  RETURN_IF_ERROR(ReadInt(stats, "peak_memory_bytes", 0, kInt64Max, &peak));
  RETURN_IF_ERROR(ReadInt(rusage, "max_rss_bytes", 0, kInt64Max, &max_rss));
  RETURN_IF_ERROR(ReadInt(rusage, "minor_page_faults", 0, kInt64Max, &minor));
  RETURN_IF_ERROR(ReadInt(rusage, "major_page_faults", 0, kInt64Max, &major));
  RETURN_IF_ERROR(ReadInt(rusage, "input_blocks", 0, kInt64Max, &in_blocks));
  RETURN_IF_ERROR(ReadInt(rusage, "output_blocks", 0, kInt64Max, &out_blocks));
  RETURN_IF_ERROR(ReadInt(rusage, "voluntary_context_switches", 0, kInt64Max, &voluntary));
  RETURN_IF_ERROR(ReadInt(rusage, "involuntary_context_switches", 0, kInt64Max, &involuntary));

  kiln::v1::SandboxResourceUsage& usage = out.usage;
  *usage.mutable_user_time() = ToProtoDuration(user);
  *usage.mutable_system_time() = ToProtoDuration(system);
  usage.set_maximum_resident_set_size(max_rss);
  usage.set_peak_memory_bytes(peak);
  usage.set_minor_page_faults(minor);
  usage.set_major_page_faults(major);
  usage.set_block_input_operations(in_blocks);
  usage.set_block_output_operations(out_blocks);
  usage.set_voluntary_context_switches(voluntary);
  usage.set_involuntary_context_switches(involuntary);
  usage.set_orphans_reaped(out.orphans_reaped);
  usage.set_killed_at_teardown(out.killed_at_teardown);
  usage.set_oom_killed(out.oom_killed);
  usage.set_timed_out(out.timed_out);
  *usage.mutable_sandbox_setup() = ToProtoDuration(out.setup_seconds);
  return out;
}

}  // namespace kiln::exec
