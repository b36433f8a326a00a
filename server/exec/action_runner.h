// Runs one REAPI action from start to finish on the calling thread: reads the
// Action and Command, checks them, stages the input root, runs the command
// in kiln-sandbox, collects the outputs into the CAS, and writes the action
// cache. Every failure becomes ExecuteResponse.status (never a crash or a
// gRPC error), and the action's directory is removed afterwards.
#ifndef KILN_SERVER_EXEC_ACTION_RUNNER_H_
#define KILN_SERVER_EXEC_ACTION_RUNNER_H_

#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/digest.h"
#include "server/cas/action_cache.h"
#include "server/cas/blob_store.h"
#include "server/exec/directory_trash.h"
#include "server/exec/spare_action_dirs.h"
#include "server/exec/input_stager.h"
#include "server/exec/output_collector.h"
#include "server/exec/platform.h"
#include "server/exec/sandbox_pool.h"
#include "server/exec/sandbox_process.h"

namespace kiln::exec {

struct ExecOptions {
  std::string exec_root;          // per-action directories go here (emptied at start)
  std::string sandbox_binary;     // kiln-sandbox
  std::string worker_name;
  absl::Duration default_timeout = absl::Minutes(15);
  absl::Duration max_timeout = absl::Hours(1);
  absl::Duration kill_grace = absl::Seconds(5);
  // Build users: as root, each action holds one uid of
  // [build_uid_base, build_uid_base + build_uid_pool_size) under an flock in
  // uid_lock_dir, shared with kiln-sandbox and other workers on the host, so
  // no two actions on one machine ever run as the same uid at once.
  // Unprivileged, slot i is uid build_uid_base + i inside its own user
  // namespace (the host sees the worker's uid).
  uid_t build_uid_base = 61000;
  int build_uid_pool_size = 64;
  std::string uid_lock_dir = "/run/kiln-sandbox";
  // How long an action waits for a build uid while all are in use: this
  // worker's finished sandboxes free theirs within milliseconds; longer
  // means other workers or kiln-sandbox runs on the host hold them
  // (UNAVAILABLE, which clients retry).
  absl::Duration wait_for_build_uid = absl::Seconds(10);
  StagingLimits staging_limits;
  OutputLimits output_limits;
  int64_t max_log_bytes = int64_t{1} << 30;  // stdout and stderr each; the rest is dropped
  // Disk an action may fill while it runs (its /work and its stdout/stderr),
  // watched by a DiskWatchdog; 0: unwatched.
  int64_t max_disk_bytes = int64_t{64} << 30;
  absl::Duration disk_check_interval = absl::Seconds(1);
  bool allow_nested_sandbox = false;          // kiln-sandbox --allow_nested_sandbox
  // Memory limit of actions whose platform sets none (0: none). Off by
  // default: a memory cgroup per action costs ~6 ms on cgroup v1.
  int64_t default_memory_bytes = 0;
  // Passed to kiln-sandbox; -1 keeps kiln-sandbox's own default.
  int64_t tmp_size_bytes = -1;   // --tmp_size
  int64_t shm_size_bytes = -1;   // --shm_size
  int64_t max_processes = -1;    // --max_processes
  PlatformPolicy platform;
  std::vector<std::string> sandbox_binds;  // host dirs bound read-only (empty: kiln-sandbox's default)
  // The cgroup v2 directory action cgroups go in (kiln-sandbox
  // --cgroup_parent); empty: kiln-sandbox's own cgroup. See
  // sandbox/cgroup_delegation.h.
  std::string cgroup_parent;
  // Keep one sandbox per slot prepared before its action arrives
  // (sandbox_pool.h); false: each action's sandbox is prepared when it comes.
  bool warm_sandboxes = true;
};

// Lets the scheduler stop one running action. Thread-safe.
class CancelToken {
 public:
  void Cancel();
  bool cancelled() const { return cancelled_; }
  // The runner registers the sandbox while it runs; Cancel terminates it.
  void SetProcess(SandboxProcess* process);

 private:
  std::atomic<bool> cancelled_{false};
  absl::Mutex mu_;
  SandboxProcess* process_ ABSL_GUARDED_BY(mu_) = nullptr;
};

// Told when an action's output files exist (just before its sandbox starts)
// and when the sandbox is gone, so that live readers can follow the files.
class SandboxObserver {
 public:
  virtual ~SandboxObserver() = default;
  virtual void OnSandboxStarting(const std::string& stdout_path, const std::string& stderr_path) = 0;
  virtual void OnSandboxExited() = 0;
};

// What the runner learned besides the response, for logs and metrics.
struct RunReport {
  enum class Outcome { kSuccess, kNonZeroExit, kTimeout, kOom, kCancelled, kError };
  Outcome outcome = Outcome::kError;
  bool sandbox_ran = false;        // kiln-sandbox got as far as running the action
  bool teardown_failed = false;    // kiln-sandbox failed without a result
  int orphans_reaped = 0;
  int killed_at_teardown = 0;
  double sandbox_setup_seconds = 0;  // the sandbox's request to the exec of the action
  double sandbox_ready_wait_seconds = 0;  // of which waiting for its preparation to finish
  double sandbox_completion_seconds = 0;  // the action's exit to every process gone
  bool warm_sandbox = false;       // the action ran in a sandbox prepared before it came
};

// "success", "nonzero_exit", "timeout", "oom", "cancelled" or "error".
const char* OutcomeName(RunReport::Outcome outcome);

// One log line per action that ran: what it was, how it ended, where the
// time went (ms), from the response's metadata. Both front doors (the
// Execution service's scheduler and the cluster's slots) log it.
void LogActionLine(const Digest& action_digest, const rev2::ExecuteResponse& response,
                   const RunReport& report);

class ActionRunner {
 public:
  ActionRunner(cas::BlobStore* cas, cas::ActionCache* action_cache, InputStager* stager,
               ExecOptions options);
  ~ActionRunner();  // stops the warm sandboxes

  // Starts a warm sandbox for each of the slots [0, slots) now, rather than
  // after each slot's first action.
  void Prewarm(int slots);

  // The Action and Command when the caller already holds them (a cluster
  // worker gets the Action from its scheduler and fetches the Command into
  // memory): they are not read from the local CAS. The caller vouches that
  // they are the blobs the action digest names.
  struct Preloaded {
    rev2::Action action;
    rev2::Command command;
    // The input blobs a remote fetch put into the local CAS, held there
    // until the action is staged: a local cache under pressure from other
    // slots' fetches must not evict them in between.
    std::vector<cas::BlobPin> input_pins;
  };

  // `metadata` arrives with queued/worker-start timestamps and is completed.
  // `preloaded` may be null (read both from the local CAS).
  rev2::ExecuteResponse Run(const rev2::ExecuteRequest& request, const Digest& action_digest,
                            int slot, CancelToken* cancel, rev2::ExecutedActionMetadata metadata,
                            SandboxObserver* observer, RunReport* report,
                            const Preloaded* preloaded = nullptr);

  const ExecOptions& options() const { return options_; }

 private:
  struct Loaded {
    rev2::Action action;
    rev2::Command command;
    ActionLimits limits;
    absl::Duration timeout;
  };
  absl::StatusOr<Loaded> Load(const Digest& action_digest, const Preloaded* preloaded);
  // The Action and Command read from the local CAS (parsed, not yet checked).
  absl::StatusOr<Loaded> LoadFromCas(const Digest& action_digest);
  // The logs and outputs `response` names go into `batch`, which the
  // caller commits (again: Execute commits it before writing the action
  // cache) before the response goes out.
  absl::Status Execute(const rev2::ExecuteRequest& request, const Digest& action_digest,
                       const Loaded& loaded, const std::string& dir, int slot, CancelToken* cancel,
                       SandboxObserver* observer, cas::BlobBatch* batch,
                       rev2::ExecuteResponse* response, RunReport* report);

  cas::BlobStore* const cas_;
  cas::ActionCache* const action_cache_;
  InputStager* const stager_;
  const ExecOptions options_;
  const std::unique_ptr<SandboxPool> sandboxes_;
  // Removes action directories after the answer (null: at once, no exec root).
  const std::unique_ptr<SpareActionDirs> dirs_;
  const std::unique_ptr<DirectoryTrash> trash_;
};

}  // namespace kiln::exec

#endif  // KILN_SERVER_EXEC_ACTION_RUNNER_H_
