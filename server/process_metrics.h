// Prometheus process metrics (the standard process_* families) read from
// /proc/self, because prometheus-cpp does not ship a process collector.
#ifndef KILN_SERVER_PROCESS_METRICS_H_
#define KILN_SERVER_PROCESS_METRICS_H_

#include <vector>

#include <prometheus/collectable.h>
#include <prometheus/metric_family.h>

namespace kiln {

class ProcessMetrics : public prometheus::Collectable {
 public:
  std::vector<prometheus::MetricFamily> Collect() const override;
};

}  // namespace kiln

#endif  // KILN_SERVER_PROCESS_METRICS_H_
