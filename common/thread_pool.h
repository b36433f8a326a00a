// A fixed set of threads running queued closures. gRPC reactors hand disk work
// to it so that no gRPC thread waits on the disk.
#ifndef KILN_COMMON_THREAD_POOL_H_
#define KILN_COMMON_THREAD_POOL_H_

#include <deque>
#include <functional>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace kiln {

class ThreadPool {
 public:
  explicit ThreadPool(int threads);
  // Runs every closure already scheduled, then joins the threads.
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  // Thread-safe. The closure runs on a pool thread, in FIFO order of start.
  void Schedule(std::function<void()> work);

 private:
  void RunWorker();

  absl::Mutex mu_;
  std::deque<std::function<void()>> queue_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::thread> threads_;
};

}  // namespace kiln

#endif  // KILN_COMMON_THREAD_POOL_H_
