#include "server/memory_trimmer.h"

#include <malloc.h>

#include <algorithm>
#include <cstdlib>
#include <thread>

namespace kiln {

void LimitMallocArenas() {
  if (std::getenv("MALLOC_ARENA_MAX") != nullptr) return;
  mallopt(M_ARENA_MAX, static_cast<int>(std::max(2u, std::thread::hardware_concurrency())));
}

MemoryTrimmer::MemoryTrimmer(absl::Duration interval) : thread_([this, interval] { Run(interval); }) {}

MemoryTrimmer::~MemoryTrimmer() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  thread_.join();
}

void MemoryTrimmer::Run(absl::Duration interval) {
  absl::MutexLock lock(&mu_);
  while (!mu_.AwaitWithTimeout(absl::Condition(&stopping_), interval)) {
    mu_.Unlock();
    malloc_trim(0);
    mu_.Lock();
  }
}

}  // namespace kiln
