#include "server/process_metrics.h"

#include <sys/resource.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

namespace kiln {
namespace {

prometheus::MetricFamily Gauge(const std::string& name, const std::string& help, double value) {
  prometheus::MetricFamily family{name, help, prometheus::MetricType::Gauge, {}};
  prometheus::ClientMetric metric;
  metric.gauge.value = value;
  family.metric.push_back(metric);
  return family;
}

}  // namespace

std::vector<prometheus::MetricFamily> ProcessMetrics::Collect() const {
  std::vector<prometheus::MetricFamily> families;
  // /proc/self/stat fields (after the parenthesised command name): 14 utime,
  // 15 stime, 20 num_threads, 22 starttime, 23 vsize, 24 rss, counted from 1.
  std::ifstream stat_file("/proc/self/stat");
  std::string stat((std::istreambuf_iterator<char>(stat_file)), std::istreambuf_iterator<char>());
  size_t close_paren = stat.rfind(')');
  if (close_paren != std::string::npos) {
    std::istringstream fields(stat.substr(close_paren + 2));
    std::vector<std::string> f;
    for (std::string field; fields >> field;) f.push_back(field);
    // f[0] is field 3 (state), so field N is f[N - 3].
    if (f.size() > 21) {
      const double ticks = static_cast<double>(sysconf(_SC_CLK_TCK));
      const double page = static_cast<double>(sysconf(_SC_PAGESIZE));
      double cpu = (std::stod(f[14 - 3]) + std::stod(f[15 - 3])) / ticks;
      prometheus::MetricFamily cpu_family{"process_cpu_seconds_total",
                                          "User and system CPU time spent, in seconds.",
                                          prometheus::MetricType::Counter, {}};
      prometheus::ClientMetric cpu_metric;
      cpu_metric.counter.value = cpu;
      cpu_family.metric.push_back(cpu_metric);
      families.push_back(cpu_family);
      families.push_back(Gauge("process_threads", "Number of OS threads in the process.",
                               std::stod(f[20 - 3])));
      families.push_back(Gauge("process_virtual_memory_bytes", "Virtual memory size in bytes.",
                               std::stod(f[23 - 3])));
      families.push_back(Gauge("process_resident_memory_bytes", "Resident memory size in bytes.",
                               std::stod(f[24 - 3]) * page));
      std::ifstream uptime_file("/proc/uptime");
      double uptime = 0;
      uptime_file >> uptime;
      double boot = static_cast<double>(time(nullptr)) - uptime;
      families.push_back(Gauge("process_start_time_seconds",
                               "Start time of the process since the Unix epoch, in seconds.",
                               boot + std::stod(f[22 - 3]) / ticks));
    }
  }
  std::error_code error;
  double fds = 0;
  for (auto it = std::filesystem::directory_iterator("/proc/self/fd", error);
       !error && it != std::filesystem::directory_iterator(); it.increment(error)) {
    ++fds;
  }
  families.push_back(Gauge("process_open_fds", "Number of open file descriptors.", fds));
  struct rlimit limit;
  if (getrlimit(RLIMIT_NOFILE, &limit) == 0) {
    families.push_back(Gauge("process_max_fds", "Maximum number of open file descriptors.",
                             static_cast<double>(limit.rlim_cur)));
  }
  return families;
}

}  // namespace kiln
