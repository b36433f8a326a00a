// Gives memory the allocator keeps but no longer uses back to the kernel.
//
// glibc's malloc keeps freed memory in its arenas (one per busy thread, up
// to 8 per core), and only the top of each can shrink on its own. After a
// burst of large requests (FindMissingBlobs of thousands of digests, batch
// reads) that memory is free yet resident, and RSS climbs with each new
// pattern of fragmentation. malloc_trim(0) releases the free pages of every
// arena (madvise); once every few seconds it costs well under a
// millisecond, and keeps RSS near what is live.
#ifndef KILN_SERVER_MEMORY_TRIMMER_H_
#define KILN_SERVER_MEMORY_TRIMMER_H_

#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace kiln {

// Caps glibc's malloc arenas at one per core (at least 2) instead of its
// default of 8 per core. Each arena a thread ever used keeps its own free
// memory and fragments on its own: with the gRPC, I/O pool and slot threads
// of an idle worker that was busy once, 16 arenas on 2 cores held ~11 MiB
// more than 2 do. Call at the start of main, before any thread exists; a
// MALLOC_ARENA_MAX in the environment wins.
void LimitMallocArenas();

class MemoryTrimmer {
 public:
  explicit MemoryTrimmer(absl::Duration interval);
  ~MemoryTrimmer();  // stops the thread

 private:
  void Run(absl::Duration interval);

  absl::Mutex mu_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;  // last: starts once the members above exist
};

}  // namespace kiln

#endif  // KILN_SERVER_MEMORY_TRIMMER_H_
