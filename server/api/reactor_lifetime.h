// The one lifetime rule for every Kiln reactor that hands work to another
// thread (the I/O pool, an alarm, an operation's change notifications).
//
// gRPC frees a call's request and response right after the reactor's OnDone,
// and OnDone follows Finish, possibly at once on another thread. A task that
// still holds `request` or `this` when that happens reads freed memory: a
// cancelled Execute used to crash the worker exactly so (OnCancel -> Finish
// -> OnDone -> delete, then the queued task parsed the freed request).
//
// ManagedReactor<R> therefore keeps a count of *holds*: a task queued or
// running, a write or read in flight, an alarm set. While any hold is
// outstanding:
//   - Finish is deferred: FinishOnce (and the CANCELLED finish that OnCancel
//     asks for) only records the status; the last Release sends it. So the
//     request, the response and the reactor outlive every task that uses
//     them, without copying anything.
//   - the reactor is not deleted: it deletes itself when OnDone has run AND
//     no hold is left (whichever comes last), so even a task that overlaps a
//     StartWriteAndFinish never touches a deleted reactor.
// The outcome is decided exactly once: the first FinishOnce / ClaimFinish /
// cancellation wins, later ones are ignored. Once it is decided no new write
// or read is started, and RunOnPool tasks are skipped (kSkip) since nobody
// is listening any more.
//
// Locking: `lifetime_mu_` is a leaf lock. It is never held across a call
// into gRPC (Finish may run OnDone, which deletes this) or into the
// subclass, so subclasses may call Hold/Release/finishing() under their own
// locks.
//
// Contract for subclasses:
//   - Start writes and reads with StartWriteHeld / StartReadHeld, and begin
//     OnWriteDone / OnReadDone with `ScopedRelease release(this);` so the
//     hold ends as the very last thing the callback does.
//   - Never touch `this` after Release(), ClaimFinish()+StartWriteAndFinish
//     or a FinishOnce made without a hold: the reactor may be gone.
//   - Put cleanup that must happen before deletion (e.g. unsubscribing from
//     another thread's notifications) in OnCallDone, not in the destructor.
#ifndef KILN_SERVER_API_REACTOR_LIFETIME_H_
#define KILN_SERVER_API_REACTOR_LIFETIME_H_

#include <cassert>
#include <functional>
#include <optional>
#include <utility>

#include <grpcpp/support/server_callback.h>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "common/thread_pool.h"
#include "server/api/grpc_status.h"

namespace kiln::api {

// Counts a service's live reactors; the destructor waits for the last one to
// be deleted. gRPC already deletes every reactor before Server::Shutdown
// returns, but reactors point into their service and its stores: this makes
// that ordering Kiln's own, and visible to ThreadSanitizer (gRPC's is inside
// libgrpc, which is not instrumented). Declare it as the service's last
// member, so it is destroyed first.
class LiveReactors {
 public:
  LiveReactors() = default;
  LiveReactors(const LiveReactors&) = delete;
  LiveReactors& operator=(const LiveReactors&) = delete;
  ~LiveReactors() {
    absl::MutexLock lock(&mu_);
    mu_.Await(absl::Condition(this, &LiveReactors::NoneLive));
  }
  void Add() ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock lock(&mu_);
    ++count_;
  }
  void Remove() ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock lock(&mu_);
    --count_;
  }

 private:
  bool NoneLive() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return count_ == 0; }

  absl::Mutex mu_;
  int count_ ABSL_GUARDED_BY(mu_) = 0;
};

// What a pool task does when the call's outcome was decided before it ran.
enum class AfterFinish {
  kSkip,  // return without running: nobody waits for the result
  kRun,   // run anyway (e.g. to park a half-written upload for a resume)
};

// R is grpc::ServerWriteReactor<T>, grpc::ServerReadReactor<T> or
// grpc::ServerUnaryReactor. Thread-safe; see the contract above.
template <class R>
class ManagedReactor : public R {
 public:
  ManagedReactor(const ManagedReactor&) = delete;
  ManagedReactor& operator=(const ManagedReactor&) = delete;

  // Runs `task` on `pool` under a hold. False (and nothing scheduled) when
  // the call has already been finished.
  bool RunOnPool(ThreadPool* pool, std::function<void()> task,
                 AfterFinish after_finish = AfterFinish::kSkip) ABSL_LOCKS_EXCLUDED(lifetime_mu_) {
    if (!Hold()) return false;
    pool->Schedule([this, after_finish, task = std::move(task)] {
      if (after_finish == AfterFinish::kRun || !finishing()) task();
      Release();  // last: may send the deferred Finish or delete this
    });
    return true;
  }

  // Decides the outcome unless it is decided already. Sends Finish now if
  // nothing holds the call, else when the last hold is released.
  void FinishOnce(grpc::Status status) ABSL_LOCKS_EXCLUDED(lifetime_mu_) {
    {
      absl::MutexLock lock(&lifetime_mu_);
      if (decided_) return;
      decided_ = true;
      if (holds_ > 0) {
        deferred_finish_ = std::move(status);
        return;
      }
      finish_sent_ = true;
    }
    this->Finish(std::move(status));  // outside the lock: OnDone may follow at once
  }
  void FinishOnce(const absl::Status& status) { FinishOnce(ToGrpcStatus(status)); }

  // True once the outcome is decided (finished, finishing or cancelled).
  bool finishing() const ABSL_LOCKS_EXCLUDED(lifetime_mu_) {
    absl::MutexLock lock(&lifetime_mu_);
    return decided_;
  }

  // Every cancellation (client cancel, deadline, server shutdown) finishes
  // the call as CANCELLED, once every hold is released.
  void OnCancel() final {
    FinishOnce(grpc::Status(grpc::StatusCode::CANCELLED, "the client cancelled the call"));
  }

  void OnDone() final {
    // Finish was sent right after an unlock of lifetime_mu_: locking it here
    // orders this thread after everything done before Finish, in a way
    // ThreadSanitizer can see (gRPC's own ordering is not instrumented).
    { absl::MutexLock lock(&lifetime_mu_); }
    OnCallDone();
    bool last;
    {
      absl::MutexLock lock(&lifetime_mu_);
      done_ = true;
      last = holds_ == 0;
    }
    if (last) delete this;
  }

 protected:
  // `live` (may be null) counts this reactor until it is deleted.
  explicit ManagedReactor(LiveReactors* live) : live_(live) {
    if (live_ != nullptr) live_->Add();
  }
  virtual ~ManagedReactor() {
    if (live_ != nullptr) live_->Remove();  // last: the service may go now
  }

  // Runs in OnDone before the reactor may be deleted; nothing of the call is
  // usable any more. Holds may still be outstanding.
  virtual void OnCallDone() {}

  // Keeps the call (request, response, reactor) alive until Release. False
  // once Finish has been sent: then the call must not be touched.
  [[nodiscard]] bool Hold() ABSL_LOCKS_EXCLUDED(lifetime_mu_) {
    absl::MutexLock lock(&lifetime_mu_);
    if (finish_sent_) return false;
    ++holds_;
    return true;
  }

  // Ends a hold. The last one sends a deferred Finish, or deletes the
  // reactor if OnDone has already run. The caller must not touch `this`
  // afterwards.
  void Release() ABSL_LOCKS_EXCLUDED(lifetime_mu_) {
    std::optional<grpc::Status> finish;
    bool destroy = false;
    {
      absl::MutexLock lock(&lifetime_mu_);
      if (--holds_ > 0) return;
      if (deferred_finish_.has_value()) {
        finish = std::move(deferred_finish_);
        deferred_finish_.reset();
        finish_sent_ = true;
      } else {
        destroy = done_;
      }
    }
    if (finish.has_value()) this->Finish(*std::move(finish));
    if (destroy) delete this;
  }

  // Releases a hold at the end of the enclosing scope: the first line of
  // OnWriteDone / OnReadDone, whose op was started with a hold.
  class ScopedRelease {
   public:
    explicit ScopedRelease(ManagedReactor* reactor) : reactor_(reactor) { reactor_->CheckHeld(); }
    ~ScopedRelease() { reactor_->Release(); }
    ScopedRelease(const ScopedRelease&) = delete;
    ScopedRelease& operator=(const ScopedRelease&) = delete;

   private:
    ManagedReactor* const reactor_;
  };

  // For StartWriteAndFinish, which is the Finish: decides the outcome and
  // reports whether this caller may send it (now, even under holds).
  [[nodiscard]] bool ClaimFinish() ABSL_LOCKS_EXCLUDED(lifetime_mu_) {
    absl::MutexLock lock(&lifetime_mu_);
    if (decided_) return false;
    decided_ = finish_sent_ = true;
    return true;
  }

  // StartWrite / StartRead under a hold that the op's OnWriteDone /
  // OnReadDone releases. False (nothing started) once the outcome is
  // decided: a pending Finish must not wait on a new op.
  template <class Message>
  bool StartWriteHeld(const Message* message) ABSL_LOCKS_EXCLUDED(lifetime_mu_) {
    if (!HoldUnlessDecided()) return false;
    this->StartWrite(message);
    return true;
  }
  template <class Message>
  bool StartReadHeld(Message* message) ABSL_LOCKS_EXCLUDED(lifetime_mu_) {
    if (!HoldUnlessDecided()) return false;
    this->StartRead(message);
    return true;
  }

 private:
  // The op whose completion is running was started under a hold. Taking
  // the lock also orders this callback after the thread that started the
  // op in a way ThreadSanitizer can see (gRPC's own ordering is inside
  // libgrpc, which is not instrumented).
  void CheckHeld() ABSL_LOCKS_EXCLUDED(lifetime_mu_) {
    absl::MutexLock lock(&lifetime_mu_);
    assert(holds_ > 0);
  }

  bool HoldUnlessDecided() ABSL_LOCKS_EXCLUDED(lifetime_mu_) {
    absl::MutexLock lock(&lifetime_mu_);
    if (decided_) return false;
    ++holds_;
    return true;
  }

  LiveReactors* const live_;
  mutable absl::Mutex lifetime_mu_;
  int holds_ ABSL_GUARDED_BY(lifetime_mu_) = 0;
  bool decided_ ABSL_GUARDED_BY(lifetime_mu_) = false;      // the outcome is fixed
  bool finish_sent_ ABSL_GUARDED_BY(lifetime_mu_) = false;  // Finish was called
  bool done_ ABSL_GUARDED_BY(lifetime_mu_) = false;         // OnDone has run
  std::optional<grpc::Status> deferred_finish_ ABSL_GUARDED_BY(lifetime_mu_);
};

// A unary call whose work runs on the I/O pool: `work` may use the request
// and the response until it returns, and is skipped if the client cancelled
// before it started.
inline grpc::ServerUnaryReactor* RunOnPool(ThreadPool* pool, std::function<absl::Status()> work) {
  class PoolUnaryReactor final : public ManagedReactor<grpc::ServerUnaryReactor> {
   public:
    PoolUnaryReactor(ThreadPool* pool, std::function<absl::Status()> work)
        : ManagedReactor(/*live=*/nullptr) {
      ManagedReactor::RunOnPool(pool, [this, work = std::move(work)] { FinishOnce(work()); });
    }
  };
  return new PoolUnaryReactor(pool, std::move(work));
}

}  // namespace kiln::api

#endif  // KILN_SERVER_API_REACTOR_LIFETIME_H_
