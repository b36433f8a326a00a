#include "server/exec/sandbox_pool.h"

#include <spdlog/spdlog.h>

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "sandbox/sandbox_proto.h"
#include "sandbox/sandbox_runner.h"

namespace kiln::exec {

namespace pb = kiln::sandbox::v1;

bool PreparedFor(const pb::SandboxRequest& prepared, const pb::SandboxRequest& action) {
  // The launcher's own rule (sandbox_runner.h), on the specs both requests
  // make: one definition for both sides.
  sandbox::SandboxSpec prepared_spec, action_spec;
  sandbox::SandboxPolicy policy;
  if (!sandbox::FromRequest(prepared, &prepared_spec, &policy).ok() ||
      !sandbox::FromRequest(action, &action_spec, &policy).ok()) {
    return false;
  }
  action_spec.uid = prepared_spec.uid;
  action_spec.gid = prepared_spec.gid;
  return sandbox::CheckPreparedFor(prepared_spec, action_spec).ok();
}

SandboxPool::SandboxPool(SandboxPoolOptions options)
    : options_(std::move(options)), spawner_(options_.sandbox_binary) {
  background_ = std::thread([this] { Background(); });
}

SandboxPool::~SandboxPool() {
  std::map<int, ReadySandbox> warm;
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
    warm.swap(warm_);
  }
  // A waiting kiln-sandbox stops on SIGTERM and tears its namespaces and
  // cgroup down itself. Before the background thread ends: a process it
  // spawned gets SIGKILL when it does (PR_SET_PDEATHSIG follows the thread),
  // which would leave a cgroup behind until the next start.
  for (auto& [slot, ready] : warm) ready.process->Terminate();
  for (auto& [slot, ready] : warm) ready.process->Wait();
  background_.join();  // after reaping what is still tearing down
}

absl::StatusOr<ReadySandbox> SandboxPool::StartSandbox(int slot, pb::SandboxRequest prepare,
                                                       std::optional<sandbox::UidLease> lease,
                                                       absl::Duration wait_for_uid) {
  ReadySandbox ready;
  if (lease.has_value()) {
    ready.uid = lease->uid();
    ready.lease = std::move(lease);
  } else if (options_.privileged) {
    absl::StatusOr<sandbox::UidLease> lease = sandbox::AcquireBuildUid(
        options_.uid_lock_dir, options_.build_uid_base, options_.build_uid_pool_size);
    // Uids held by this worker's finished sandboxes come free as they are
    // reaped, within milliseconds: an action waits for one rather than
    // failing on a pool that is only full for a moment.
    const absl::Time deadline = absl::Now() + wait_for_uid;
    for (absl::Duration pause = absl::Milliseconds(2);
         absl::IsResourceExhausted(lease.status()) && absl::Now() + pause < deadline;
         pause = std::min(2 * pause, absl::Milliseconds(100))) {
      absl::SleepFor(pause);
      lease = sandbox::AcquireBuildUid(options_.uid_lock_dir, options_.build_uid_base,
                                       options_.build_uid_pool_size);
    }
    if (!lease.ok()) {
      return absl::UnavailableError(absl::StrCat(
          "no free build uid in [", options_.build_uid_base, ", ",
          options_.build_uid_base + options_.build_uid_pool_size, "): ", lease.status().message(),
          " (other workers or kiln-sandbox runs on this host hold them; see --build_uid_pool_size)"));
    }
    ready.uid = lease->uid();
    ready.lease = *std::move(lease);
  } else {
    ready.uid = options_.build_uid_base + slot;
  }
  prepare.set_uid(ready.uid);
  prepare.set_gid(ready.uid);
  prepare.clear_argv();
  ASSIGN_OR_RETURN(ready.process, SandboxProcess::Start(spawner_));
  RETURN_IF_ERROR(ready.process->Send(prepare));
  return ready;
}

absl::StatusOr<ReadySandbox> SandboxPool::Acquire(int slot, pb::SandboxRequest request) {
  std::optional<sandbox::UidLease> lease;
  if (options_.warm) {
    absl::MutexLock lock(&mu_);
    auto it = warm_.find(slot);
    if (it != warm_.end()) {
      ReadySandbox ready = std::move(it->second);
      warm_.erase(it);
      // One that died while it waited (its spawner killed, the OOM killer)
      // cannot serve: a cold one does, with its build uid (no process of
      // that uid ran in it yet).
      const bool alive = !ready.process->Exited();
      if (alive && PreparedFor(options_.warm_template, request)) {
        // The slot's next sandbox prepares while this action runs, so that
        // actions that follow each other closely find it ready. As root that
        // holds a second build uid: only when the pool has two per slot.
        const bool uids_to_spare = !options_.privileged || 2 * slots_ <= options_.build_uid_pool_size;
        if (!stopping_ && uids_to_spare) to_warm_.push_back(slot);
        return ready;
      }
      // Not prepared for this action: it gives its build uid to the sandbox
      // prepared for it (a full pool must not refuse the action), and the
      // slot gets a new one after the action.
      if (alive) ready.process->Terminate();
      lease = std::move(ready.lease);
      ready.lease.reset();
      to_reap_.push_back(std::move(ready));
    }
  }
  return StartSandbox(slot, std::move(request), std::move(lease), options_.wait_for_uid);
}

void SandboxPool::Release(int slot, ReadySandbox used, bool tree_gone) {
  if (tree_gone) used.lease.reset();
  absl::MutexLock lock(&mu_);
  to_reap_.push_back(std::move(used));
  if (options_.warm && !stopping_) to_warm_.push_back(slot);
}

void SandboxPool::Prewarm(int slots) {
  absl::MutexLock lock(&mu_);
  slots_ = std::max(slots_, slots);
  if (!options_.warm) return;
  for (int slot = 0; slot < slots; ++slot) to_warm_.push_back(slot);
}

// Starting the next warm sandbox comes first: an action may be waiting for
// it; reaping (kiln-sandbox tearing down namespaces and cgroups) can wait.
void SandboxPool::Background() {
  while (true) {
    std::optional<int> slot;
    std::optional<ReadySandbox> retired;
    {
      absl::MutexLock lock(&mu_);
      auto work = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return stopping_ || !to_warm_.empty() || !to_reap_.empty();
      };
      mu_.Await(absl::Condition(&work));
      if (!to_warm_.empty() && !stopping_) {
        slot = to_warm_.front();
        to_warm_.pop_front();
        if (warm_.count(*slot)) slot.reset();
      } else if (!to_reap_.empty()) {
        retired = std::move(to_reap_.front());
        to_reap_.pop_front();
      } else if (stopping_) {
        return;
      }
    }
    if (retired.has_value()) retired->process->Wait();  // then its lease goes
    if (!slot.has_value()) continue;
    absl::StatusOr<ReadySandbox> ready = StartSandbox(*slot, options_.warm_template, std::nullopt, absl::ZeroDuration());
    if (!ready.ok()) {
      // The action then gets a cold sandbox, which reports the same problem
      // (e.g. every build uid in use); the slot tries again after it.
      spdlog::debug("could not start a warm sandbox for slot {}: {}", *slot, ready.status().ToString());
      continue;
    }
    ready->warm = true;
    absl::MutexLock lock(&mu_);
    if (stopping_) {
      ready->process->Terminate();
      to_reap_.push_back(*std::move(ready));
    } else {
      warm_[*slot] = *std::move(ready);
    }
  }
}

}  // namespace kiln::exec
