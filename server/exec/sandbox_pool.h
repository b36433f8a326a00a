// Warm sandboxes: each execution slot keeps one kiln-sandbox ready (its
// namespaces cloned, root built, loopback up) before its next action
// arrives, and finished sandboxes are reaped off the action's critical path.
// A warm sandbox serves exactly one action; the next one for the slot is
// started as soon as it is taken, so it prepares while the action runs (as
// root it leases a second build uid meanwhile, when the pool has two uids
// per slot; otherwise it starts once the action is answered).
//
// What a warm sandbox is prepared with is the worker's default action (its
// binds, tmpfs sizes, default memory limit, no network). An action that
// needs something else (host network, other limits) gets a cold sandbox,
// prepared for it alone, and the slot's warm one waits for the next action.
// Thread-safe.
#ifndef KILN_SERVER_EXEC_SANDBOX_POOL_H_
#define KILN_SERVER_EXEC_SANDBOX_POOL_H_

#include <sys/types.h>

#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "kiln/sandbox/v1/sandbox.pb.h"
#include "sandbox/uid_pool.h"
#include "server/exec/sandbox_process.h"

namespace kiln::exec {

struct SandboxPoolOptions {
  std::string sandbox_binary;
  bool warm = true;  // false: every action gets a cold sandbox (kiln-worker --warm_sandboxes=false)
  // What warm sandboxes are prepared with; the uid is filled in per slot.
  kiln::sandbox::v1::SandboxRequest warm_template;
  // Build users, as in ExecOptions: as root a leased uid of the pool,
  // unprivileged build_uid_base + slot in the sandbox's own user namespace.
  bool privileged = false;
  uid_t build_uid_base = 61000;
  int build_uid_pool_size = 64;
  std::string uid_lock_dir;
  absl::Duration wait_for_uid = absl::Seconds(10);  // ExecOptions::wait_for_build_uid
};

// A started sandbox with the build user it was prepared for.
struct ReadySandbox {
  std::unique_ptr<SandboxProcess> process;
  uid_t uid = 0;
  std::optional<sandbox::UidLease> lease;  // as root: held until the action's processes are gone
  bool warm = false;
};

class SandboxPool {
 public:
  explicit SandboxPool(SandboxPoolOptions options);
  ~SandboxPool();  // stops the warm sandboxes and reaps everything

  // The slot's warm sandbox when it was prepared for `request` (whose uid is
  // ignored: the warm one's is used), else a cold one started and sent
  // `request` to prepare for, with the warm one's build uid (which is then
  // stopped) or a newly leased one. Either way the caller then sends the
  // action's request with the returned uid.
  absl::StatusOr<ReadySandbox> Acquire(int slot, kiln::sandbox::v1::SandboxRequest request);
  // After its result: the sandbox is reaped in the background, and the
  // slot's next warm sandbox started. `tree_gone`: the sandbox answered, so
  // no process of its build user is left and the uid is free at once;
  // otherwise only once kiln-sandbox is reaped.
  void Release(int slot, ReadySandbox used, bool tree_gone);

  // Starts a warm sandbox for each slot in [0, slots) that has none.
  void Prewarm(int slots);

 private:
  // `lease`: a build uid to use (as root) instead of leasing one; else one
  // is leased, waiting up to `wait_for_uid` while every uid is in use.
  absl::StatusOr<ReadySandbox> StartSandbox(int slot, kiln::sandbox::v1::SandboxRequest prepare,
                                            std::optional<sandbox::UidLease> lease, absl::Duration wait_for_uid);
  void Background();

  const SandboxPoolOptions options_;
  SandboxSpawner spawner_;  // outlives every sandbox it started
  absl::Mutex mu_;
  std::map<int, ReadySandbox> warm_ ABSL_GUARDED_BY(mu_);
  std::deque<int> to_warm_ ABSL_GUARDED_BY(mu_);
  std::deque<ReadySandbox> to_reap_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  int slots_ ABSL_GUARDED_BY(mu_) = 1;  // from Prewarm
  std::thread background_;
};

// OK when a sandbox prepared with `prepared` can run `action` (the same
// binds, network, tmpfs sizes, limits; the build user is the prepared one).
bool PreparedFor(const kiln::sandbox::v1::SandboxRequest& prepared,
                 const kiln::sandbox::v1::SandboxRequest& action);

}  // namespace kiln::exec

#endif  // KILN_SERVER_EXEC_SANDBOX_POOL_H_
