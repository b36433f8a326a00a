// ThreadSanitizer builds only (KILN_SANITIZE=thread). Debian's
// libabsl_synchronization is not instrumented, so TSan cannot see an
// absl::Mutex hand data from one thread to the next: it reports every
// access made under a Mutex (the I/O pool's queue, every reactor's state)
// as a race. Abseil's own TSan annotations exist only when Abseil itself is
// built with TSan. The top-level CMakeLists.txt links Kiln's executables
// with -Wl,--wrap=<symbol> for the Mutex entry points Kiln calls, so calls
// to <symbol> reach __wrap_<symbol> here, which calls the real one
// (__real_<symbol>) and tells TSan what it did: returning from Lock or
// Await acquires the mutex, entering Unlock or Await releases it. gRPC's
// own use of Abseil, inside its shared libraries, is not wrapped.
#include <sanitizer/tsan_interface.h>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace {

// Await evaluates the condition with the mutex held, inside the library
// (between our release and acquire), and other threads' Unlock may evaluate
// it too: each evaluation is a critical section of its own for TSan.
struct AnnotatedCondition {
  absl::Mutex* mu;
  const absl::Condition* condition;
  static bool Eval(AnnotatedCondition* self) {
    __tsan_acquire(self->mu);
    bool met = self->condition->Eval();
    __tsan_release(self->mu);
    return met;
  }
};

}  // namespace

extern "C" {

// absl::Mutex::Lock()
void __real__ZN4absl7debian35Mutex4LockEv(absl::Mutex* mu);
void __wrap__ZN4absl7debian35Mutex4LockEv(absl::Mutex* mu) {
  __real__ZN4absl7debian35Mutex4LockEv(mu);
  __tsan_acquire(mu);
}

// absl::Mutex::Unlock()
void __real__ZN4absl7debian35Mutex6UnlockEv(absl::Mutex* mu);
void __wrap__ZN4absl7debian35Mutex6UnlockEv(absl::Mutex* mu) {
  __tsan_release(mu);
  __real__ZN4absl7debian35Mutex6UnlockEv(mu);
}

// absl::Mutex::Await(const Condition&): unlocks while it waits; another
// thread's Unlock may evaluate `cond` meanwhile.
void __real__ZN4absl7debian35Mutex5AwaitERKNS0_9ConditionE(absl::Mutex* mu,
                                                            const absl::Condition& cond);
void __wrap__ZN4absl7debian35Mutex5AwaitERKNS0_9ConditionE(absl::Mutex* mu,
                                                            const absl::Condition& cond) {
  AnnotatedCondition annotated{mu, &cond};
  __tsan_release(mu);
  __real__ZN4absl7debian35Mutex5AwaitERKNS0_9ConditionE(
      mu, absl::Condition(&AnnotatedCondition::Eval, &annotated));
  __tsan_acquire(mu);
}

// absl::Mutex::AwaitWithTimeout(const Condition&, Duration)
bool __real__ZN4absl7debian35Mutex16AwaitWithTimeoutERKNS0_9ConditionENS0_8DurationE(
    absl::Mutex* mu, const absl::Condition& cond, absl::Duration timeout);
bool __wrap__ZN4absl7debian35Mutex16AwaitWithTimeoutERKNS0_9ConditionENS0_8DurationE(
    absl::Mutex* mu, const absl::Condition& cond, absl::Duration timeout) {
  AnnotatedCondition annotated{mu, &cond};
  __tsan_release(mu);
  bool met = __real__ZN4absl7debian35Mutex16AwaitWithTimeoutERKNS0_9ConditionENS0_8DurationE(
      mu, absl::Condition(&AnnotatedCondition::Eval, &annotated), timeout);
  __tsan_acquire(mu);
  return met;
}

}  // extern "C"
