// SandboxResult as JSON, the format of `kiln-sandbox --stats_file`.
#ifndef KILN_SANDBOX_STATS_JSON_H_
#define KILN_SANDBOX_STATS_JSON_H_

#include <string>

#include "sandbox/sandbox_spec.h"

namespace kiln::sandbox {

std::string ResultToJson(const SandboxResult& result);

}  // namespace kiln::sandbox

#endif  // KILN_SANDBOX_STATS_JSON_H_
