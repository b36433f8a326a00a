// The cluster worker against a scripted OperationQueue (a fake bb_scheduler
// in this process) and a real remote CAS (a storage-only Kiln server in this
// process), running actions in the real kiln-sandbox: the states it reports,
// the result it uploads and caches remotely, missing inputs, a completion
// that must be sent again, cancellation by a desired idle state, and a
// scheduler that goes away and comes back (health follows it), a local
// cache too small for one action's inputs, and a CAS behind TLS and tokens.
#include <stdlib.h>

#include <cstdlib>
#include <deque>
#include <filesystem>
#include <fstream>
#include <functional>
#include <set>

#include <google/protobuf/util/time_util.h>
#include <grpcpp/create_channel.h>
#include <grpcpp/security/server_credentials.h>
#include <grpcpp/server_builder.h>
#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "buildbarn/remoteworker/remoteworker.grpc.pb.h"
#include "common/posix.h"
#include "google/rpc/error_details.pb.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "server/cluster/channel.h"
#include "server/worker_server.h"
#include "tests/worker_process.h"

namespace kiln {
namespace {

namespace rw = ::buildbarn::remoteworker;
using google::protobuf::util::TimeUtil;

google::protobuf::Timestamp In(absl::Duration d) {
  return TimeUtil::NanosecondsToTimestamp(absl::ToUnixNanos(absl::Now() + d));
}

// A scheduler that hands out queued actions to idle slots, asks executing
// slots to report every 50 ms, and records everything it hears.
class FakeScheduler final : public rw::OperationQueue::Service {
 public:
  grpc::Status Synchronize(grpc::ServerContext* context, const rw::SynchronizeRequest* request,
                           rw::SynchronizeResponse* response) override {
    absl::MutexLock lock(&mu_);
    requests_.push_back(*request);
    const rw::CurrentState& state = request->current_state();
    *response->mutable_next_synchronization_at() = In(absl::Milliseconds(50));
    if (state.has_executing()) {
      const std::string hash = state.executing().action_digest().hash();
      if (state.executing().has_completed()) {
        if (fail_completions_ > 0) {
          --fail_completions_;
          return grpc::Status(grpc::StatusCode::UNAVAILABLE, "scheduler hiccup");
        }
        completed_.push_back(state.executing().completed());
        response->mutable_desired_state()->mutable_idle();
        return grpc::Status::OK;
      }
      if (state.executing().has_running()) running_.insert(hash);
      if (cancel_.count(hash) > 0 && state.executing().has_running()) {
        response->mutable_desired_state()->mutable_idle();
      }
      return grpc::Status::OK;  // no desired state: carry on
    }
    // Like bb_scheduler, hold an idle call for a while until there is work.
    auto has_work = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return !queue_.empty(); };
    if (!request->prefer_being_idle()) mu_.AwaitWithTimeout(absl::Condition(&has_work), absl::Milliseconds(200));
    // A call whose worker went away meanwhile (a test that restarts the
    // worker) must not take the action with it.
    if (!queue_.empty() && !request->prefer_being_idle() && !context->IsCancelled()) {
      *response->mutable_desired_state()->mutable_executing() = queue_.front();
      queue_.pop_front();
      ++handed_out_;
    }
    return grpc::Status::OK;
  }

  void Enqueue(const Digest& action_digest, const rev2::Action& action) {
    rw::DesiredState::Executing executing;
    *executing.mutable_action_digest() = action_digest.ToProto();
    *executing.mutable_action() = action;
    *executing.mutable_queued_timestamp() = In(absl::ZeroDuration());
    absl::MutexLock lock(&mu_);
    queue_.push_back(executing);
  }
  // Answers idle to the slot once it reports the action running.
  void CancelWhenRunning(const Digest& digest) {
    absl::MutexLock lock(&mu_);
    cancel_.insert(digest.hash);
  }
  void FailNextCompletions(int n) {
    absl::MutexLock lock(&mu_);
    fail_completions_ = n;
  }
  // Waits until `n` completions arrived; returns them.
  std::vector<rev2::ExecuteResponse> AwaitCompleted(size_t n, absl::Duration timeout = absl::Seconds(60)) {
    absl::MutexLock lock(&mu_);
    auto enough = [this, n]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return completed_.size() >= n; };
    mu_.AwaitWithTimeout(absl::Condition(&enough), timeout);
    return completed_;
  }
  bool AwaitRunning(const Digest& digest, absl::Duration timeout) {
    absl::MutexLock lock(&mu_);
    auto seen = [this, &digest]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return running_.count(digest.hash) > 0; };
    return mu_.AwaitWithTimeout(absl::Condition(&seen), timeout);
  }
  std::vector<rw::SynchronizeRequest> requests() {
    absl::MutexLock lock(&mu_);
    return requests_;
  }
  int handed_out() {
    absl::MutexLock lock(&mu_);
    return handed_out_;
  }

 private:
  absl::Mutex mu_;
  std::deque<rw::DesiredState::Executing> queue_ ABSL_GUARDED_BY(mu_);
  std::vector<rw::SynchronizeRequest> requests_ ABSL_GUARDED_BY(mu_);
  std::vector<rev2::ExecuteResponse> completed_ ABSL_GUARDED_BY(mu_);
  std::set<std::string> cancel_ ABSL_GUARDED_BY(mu_);
  std::set<std::string> running_ ABSL_GUARDED_BY(mu_);
  int fail_completions_ ABSL_GUARDED_BY(mu_) = 0;
  int handed_out_ ABSL_GUARDED_BY(mu_) = 0;
};

class ClusterWorkerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string pattern = ::testing::TempDir() + "/kiln-cluster-XXXXXX";
    dir_ = mkdtemp(pattern.data());
    StartStorage("");
    StartScheduler(0);
    StartWorker();
  }
  // The cluster's storage: a Kiln server with no execution; with a
  // principals file, every call needs a token; with `tls_dir` (a
  // deploy/make-credentials.sh directory), it speaks TLS only.
  void StartStorage(const std::string& token_file, const std::string& tls_dir = "") {
    WorkerOptions storage;
    storage.token_file = token_file;
    if (!tls_dir.empty()) {
      storage.tls_cert = tls_dir + "/tls.crt";
      storage.tls_key = tls_dir + "/tls.key";
    }
    storage.listen = "127.0.0.1:0";
    storage.metrics_listen = "";
    storage.state_dir = dir_ + "/storage";
    storage.concurrency = 0;
    auto started = WorkerServer::Start(storage);
    ASSERT_TRUE(started.ok()) << started.status();
    storage_ = *std::move(started);
    storage_channel_ = grpc::CreateChannel(absl::StrCat("127.0.0.1:", storage_->grpc_port()),
                                           grpc::InsecureChannelCredentials());
    cas_ = rev2::ContentAddressableStorage::NewStub(storage_channel_);
    action_cache_ = rev2::ActionCache::NewStub(storage_channel_);
  }
  void TearDown() override {
    worker_.reset();
    if (scheduler_server_ != nullptr) scheduler_server_->Shutdown();
    storage_.reset();
    (void)RemoveTree(dir_);
  }

  // With `credentials` (a deploy/make-credentials.sh directory), over TLS.
  void StartScheduler(int port, const std::string& credentials = "") {
    scheduler_ = std::make_unique<FakeScheduler>();
    grpc::ServerBuilder builder;
    std::shared_ptr<grpc::ServerCredentials> server_credentials = grpc::InsecureServerCredentials();
    if (!credentials.empty()) {
      auto read = [](const std::string& path) {
        std::ifstream in(path);
        return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
      };
      grpc::SslServerCredentialsOptions ssl;
      ssl.pem_key_cert_pairs.push_back({read(credentials + "/tls.key"), read(credentials + "/tls.crt")});
      server_credentials = grpc::SslServerCredentials(ssl);
    }
    builder.AddListeningPort(absl::StrCat("127.0.0.1:", port), server_credentials, &scheduler_port_);
    builder.RegisterService(scheduler_.get());
    scheduler_server_ = builder.BuildAndStart();
    ASSERT_NE(scheduler_server_, nullptr);
  }

  void StartWorker(const std::function<void(WorkerOptions&)>& adjust = nullptr) {
    WorkerOptions options;
    options.listen = "127.0.0.1:0";
    options.metrics_listen = "";
    options.state_dir = dir_ + "/worker";
    options.concurrency = 2;
    const char* bin = getenv("KILN_BIN_DIR");
    options.exec.sandbox_binary = std::string(bin ? bin : "build/bin") + "/kiln-sandbox";
    options.exec.worker_name = "kiln-test-7";
    options.exec.kill_grace = absl::Milliseconds(500);
    ASSERT_TRUE(exec::DeclarePlatform({"Zone=z", "Pool=b", "Arch=x"}, &options.exec.platform).ok());
    options.cluster.scheduler = absl::StrCat("127.0.0.1:", scheduler_port_);
    options.cluster.cas = absl::StrCat("127.0.0.1:", storage_->grpc_port());
    options.cluster.instance_name_prefix = "main";
    options.cluster.min_backoff = absl::Milliseconds(20);
    options.cluster.max_backoff = absl::Milliseconds(200);
    options.cluster.idle_call_timeout = absl::Seconds(5);
    if (adjust) adjust(options);
    auto worker = WorkerServer::Start(options);
    ASSERT_TRUE(worker.ok()) << worker.status();
    worker_ = *std::move(worker);
  }

  Digest Put(const std::string& data) {
    rev2::BatchUpdateBlobsRequest request;
    request.set_instance_name("main");
    auto* entry = request.add_requests();
    *entry->mutable_digest() = Digest::Of(data).ToProto();
    entry->set_data(data);
    rev2::BatchUpdateBlobsResponse response;
    grpc::ClientContext context;
    EXPECT_TRUE(cas_->BatchUpdateBlobs(&context, request, &response).ok());
    return Digest::Of(data);
  }
  absl::StatusOr<std::string> Get(const rev2::Digest& digest) {
    rev2::BatchReadBlobsRequest request;
    request.set_instance_name("main");
    *request.add_digests() = digest;
    rev2::BatchReadBlobsResponse response;
    grpc::ClientContext context;
    if (!cas_->BatchReadBlobs(&context, request, &response).ok()) return absl::UnavailableError("read");
    if (response.responses(0).status().code() != 0) return absl::NotFoundError(digest.hash());
    return response.responses(0).data();
  }

  // An action running `script` with sh over an input root holding
  // sub/in.txt; `upload_input` false leaves that file out of the CAS.
  std::pair<Digest, rev2::Action> MakeAction(const std::string& script, bool upload_input = true,
                                             const std::vector<std::string>& outputs = {}) {
    const std::string input = "input from the cluster's CAS\n";
    rev2::Directory sub;
    auto* file = sub.add_files();
    file->set_name("in.txt");
    *file->mutable_digest() = (upload_input ? Put(input) : Digest::Of(input)).ToProto();
    rev2::Directory root;
    auto* child = root.add_directories();
    child->set_name("sub");
    *child->mutable_digest() = Put(sub.SerializeAsString()).ToProto();
    rev2::Command command;
    for (const char* arg : {"/bin/sh", "-c"}) command.add_arguments(arg);
    command.add_arguments(script);
    for (const auto& output : outputs) command.add_output_files(output);  // legacy, as Bazel 4 sends
    rev2::Action action;
    *action.mutable_command_digest() = Put(command.SerializeAsString()).ToProto();
    *action.mutable_input_root_digest() = Put(root.SerializeAsString()).ToProto();
    action.mutable_timeout()->set_seconds(60);
    return {Put(action.SerializeAsString()), action};
  }

  bool HostRuns(const std::string& marker) {
    for (const auto& entry : std::filesystem::directory_iterator("/proc")) {
      std::ifstream cmdline(entry.path() / "cmdline");
      std::string text((std::istreambuf_iterator<char>(cmdline)), std::istreambuf_iterator<char>());
      if (text.find(marker) != std::string::npos) return true;
    }
    return false;
  }

  grpc::health::v1::HealthCheckResponse::ServingStatus Health() {
    auto channel = grpc::CreateChannel(absl::StrCat("127.0.0.1:", worker_->grpc_port()),
                                       grpc::InsecureChannelCredentials());
    auto stub = grpc::health::v1::Health::NewStub(channel);
    grpc::ClientContext context;
    grpc::health::v1::HealthCheckRequest request;
    grpc::health::v1::HealthCheckResponse response;
    if (!stub->Check(&context, request, &response).ok()) return grpc::health::v1::HealthCheckResponse::UNKNOWN;
    return response.status();
  }
  bool AwaitHealth(grpc::health::v1::HealthCheckResponse::ServingStatus want, absl::Duration timeout) {
    const absl::Time deadline = absl::Now() + timeout;
    while (absl::Now() < deadline) {
      if (Health() == want) return true;
      absl::SleepFor(absl::Milliseconds(50));
    }
    return false;
  }

  std::string dir_;
  std::unique_ptr<WorkerServer> storage_;
  std::shared_ptr<grpc::Channel> storage_channel_;
  std::unique_ptr<rev2::ContentAddressableStorage::Stub> cas_;
  std::unique_ptr<rev2::ActionCache::Stub> action_cache_;
  std::unique_ptr<FakeScheduler> scheduler_;
  std::unique_ptr<grpc::Server> scheduler_server_;
  int scheduler_port_ = 0;
  std::unique_ptr<WorkerServer> worker_;
};

TEST_F(ClusterWorkerTest, RunsAnActionFromTheSchedulerAndStoresItsResultInTheClusterCas) {
  auto [digest, action] = MakeAction("cat sub/in.txt; sleep 0.3; echo out > result.txt; echo err >&2", true,
                                     {"result.txt"});
  scheduler_->Enqueue(digest, action);
  std::vector<rev2::ExecuteResponse> completed = scheduler_->AwaitCompleted(1);
  ASSERT_EQ(completed.size(), 1u);
  const rev2::ExecuteResponse& response = completed[0];
  ASSERT_EQ(response.status().code(), 0) << response.status().message();
  const rev2::ActionResult& result = response.result();
  EXPECT_EQ(result.exit_code(), 0);
  // Everything the result names is in the cluster's CAS, not only locally.
  EXPECT_EQ(*Get(result.stdout_digest()), "input from the cluster's CAS\n");
  EXPECT_EQ(*Get(result.stderr_digest()), "err\n");
  ASSERT_EQ(result.output_files_size(), 1);
  EXPECT_EQ(result.output_files(0).path(), "result.txt");
  EXPECT_EQ(*Get(result.output_files(0).digest()), "out\n");
  // The same metadata as standalone: worker name, every timestamp, rusage.
  const rev2::ExecutedActionMetadata& meta = result.execution_metadata();
  EXPECT_EQ(meta.worker(), "kiln-test-7");
  for (const auto* t : {&meta.queued_timestamp(), &meta.worker_start_timestamp(),
                        &meta.input_fetch_start_timestamp(), &meta.input_fetch_completed_timestamp(),
                        &meta.execution_start_timestamp(), &meta.execution_completed_timestamp(),
                        &meta.output_upload_start_timestamp(), &meta.output_upload_completed_timestamp(),
                        &meta.worker_completed_timestamp()}) {
    EXPECT_GT(t->seconds(), 0);
  }
  EXPECT_EQ(meta.auxiliary_metadata_size(), 1);
  // The worker wrote the cluster's action cache itself.
  rev2::GetActionResultRequest get;
  get.set_instance_name("main");
  *get.mutable_action_digest() = digest.ToProto();
  rev2::ActionResult cached;
  grpc::ClientContext context;
  ASSERT_TRUE(action_cache_->GetActionResult(&context, get, &cached).ok());
  EXPECT_EQ(cached.output_files(0).digest().hash(), result.output_files(0).digest().hash());

  // What the scheduler heard: each slot its own worker_id (with the worker's
  // name), the declared platform sorted, the prefix, and the phases in order.
  std::set<std::string> threads;
  std::vector<std::string> phases;
  for (const rw::SynchronizeRequest& request : scheduler_->requests()) {
    EXPECT_EQ(request.worker_id().at("worker"), "kiln-test-7");
    threads.insert(request.worker_id().at("thread"));
    EXPECT_EQ(request.instance_name_prefix(), "main");
    ASSERT_EQ(request.platform().properties_size(), 3);
    EXPECT_EQ(request.platform().properties(0).name(), "Arch");
    EXPECT_EQ(request.platform().properties(1).name(), "Pool");
    EXPECT_EQ(request.platform().properties(2).name(), "Zone");
    const auto& state = request.current_state();
    if (state.has_executing()) {
      const auto& e = state.executing();
      std::string phase = e.has_completed() ? "completed" : e.has_running() ? "running"
                        : e.has_fetching_inputs() ? "fetching" : e.has_uploading_outputs() ? "uploading" : "started";
      if (phases.empty() || phases.back() != phase) phases.push_back(phase);
    }
  }
  EXPECT_EQ(threads, (std::set<std::string>{"0", "1"}));
  ASSERT_FALSE(phases.empty());
  EXPECT_EQ(phases.back(), "completed");
  EXPECT_NE(std::find(phases.begin(), phases.end(), "running"), phases.end());
}

TEST_F(ClusterWorkerTest, AResultOfOnlyEmptyBlobsCostsNoCallToTheClusterCas) {
  worker_.reset();
  StartWorker([](WorkerOptions& options) { options.metrics_listen = "127.0.0.1:0"; });
  auto [digest, action] = MakeAction("cat sub/in.txt > /dev/null; : > empty.txt", true, {"empty.txt"});
  action.set_do_not_cache(true);  // no action cache update either
  const Digest action_digest = Put(action.SerializeAsString());
  scheduler_->Enqueue(action_digest, action);
  std::vector<rev2::ExecuteResponse> completed = scheduler_->AwaitCompleted(1);
  ASSERT_EQ(completed.size(), 1u);
  const rev2::ActionResult& result = completed[0].result();
  ASSERT_EQ(completed[0].status().code(), 0) << completed[0].status().message();
  EXPECT_EQ(result.stdout_digest().size_bytes(), 0);
  EXPECT_EQ(result.stderr_digest().size_bytes(), 0);
  ASSERT_EQ(result.output_files_size(), 1);
  EXPECT_EQ(result.output_files(0).digest().size_bytes(), 0);
  // The client can still read every blob the result names, from the
  // cluster's CAS, which has the empty blob whether or not it was sent.
  EXPECT_EQ(*Get(result.stdout_digest()), "");
  EXPECT_EQ(*Get(result.output_files(0).digest()), "");
  // The inputs were read (batch_read); nothing was asked or sent after.
  const std::string metrics = testing::HttpGet(worker_->metrics_port(), "/metrics");
  EXPECT_NE(metrics.find("kiln_remote_cas_requests_total{code=\"OK\",operation=\"batch_read\"}"),
            std::string::npos) << metrics;
  for (const char* operation : {"find_missing", "batch_update", "bytestream_write", "update_action_result"}) {
    EXPECT_EQ(metrics.find(absl::StrCat("operation=\"", operation, "\"")), std::string::npos)
        << operation << " was called:\n" << metrics;
  }
}

TEST_F(ClusterWorkerTest, MissingInputsAreFailedPreconditionWithOneViolationEach) {
  auto [digest, action] = MakeAction("cat sub/in.txt", /*upload_input=*/false);
  scheduler_->Enqueue(digest, action);
  std::vector<rev2::ExecuteResponse> completed = scheduler_->AwaitCompleted(1);
  ASSERT_EQ(completed.size(), 1u);
  EXPECT_EQ(completed[0].status().code(), static_cast<int>(grpc::StatusCode::FAILED_PRECONDITION));
  ASSERT_EQ(completed[0].status().details_size(), 1);
  google::rpc::PreconditionFailure failure;
  ASSERT_TRUE(completed[0].status().details(0).UnpackTo(&failure));
  ASSERT_EQ(failure.violations_size(), 1);
  EXPECT_EQ(failure.violations(0).type(), "MISSING");
  const Digest input = Digest::Of("input from the cluster's CAS\n");
  EXPECT_EQ(failure.violations(0).subject(), absl::StrCat("blobs/", input.hash, "/", input.size));
}

// The local CAS is a cache smaller than one action's inputs: each blob
// fetched evicts the ones fetched before it unless they are held until the
// action is staged.
TEST_F(ClusterWorkerTest, FetchedInputsStayInASmallLocalCacheUntilStaged) {
  worker_.reset();
  StartWorker([](WorkerOptions& options) { options.cas_max_bytes = 32 << 10; });
  rev2::Directory root;
  for (int i = 0; i < 16; ++i) {
    auto* file = root.add_files();
    file->set_name(absl::StrCat("f", 10 + i, ".txt"));
    *file->mutable_digest() = Put(std::string(6000, static_cast<char>('a' + i))).ToProto();
  }
  rev2::Command command;
  for (const char* arg : {"/bin/sh", "-c", "cat f*.txt | wc -c"}) command.add_arguments(arg);
  rev2::Action action;
  *action.mutable_command_digest() = Put(command.SerializeAsString()).ToProto();
  *action.mutable_input_root_digest() = Put(root.SerializeAsString()).ToProto();
  action.mutable_timeout()->set_seconds(60);
  scheduler_->Enqueue(Put(action.SerializeAsString()), action);
  std::vector<rev2::ExecuteResponse> completed = scheduler_->AwaitCompleted(1);
  ASSERT_EQ(completed.size(), 1u);
  ASSERT_EQ(completed[0].status().code(), 0) << completed[0].status().message();
  EXPECT_EQ(completed[0].result().exit_code(), 0);
  EXPECT_EQ(*Get(completed[0].result().stdout_digest()), "96000\n");
}

TEST_F(ClusterWorkerTest, ACompletionTheSchedulerDidNotTakeIsSentAgainNotRunAgain) {
  scheduler_->FailNextCompletions(3);
  auto [digest, action] = MakeAction("echo once");
  scheduler_->Enqueue(digest, action);
  std::vector<rev2::ExecuteResponse> completed = scheduler_->AwaitCompleted(1);
  ASSERT_EQ(completed.size(), 1u);
  EXPECT_EQ(completed[0].status().code(), 0);
  EXPECT_EQ(*Get(completed[0].result().stdout_digest()), "once\n");
  EXPECT_EQ(scheduler_->handed_out(), 1);
  int completed_reports = 0;
  for (const auto& request : scheduler_->requests()) {
    if (request.current_state().executing().has_completed()) ++completed_reports;
  }
  EXPECT_EQ(completed_reports, 4);  // three refused, one taken
}

TEST_F(ClusterWorkerTest, DesiredIdleWhileExecutingKillsTheSandbox) {
  const std::string marker = absl::StrCat("1000.", getpid(), "417");
  auto [digest, action] = MakeAction(absl::StrCat("sleep ", marker));
  scheduler_->CancelWhenRunning(digest);
  scheduler_->Enqueue(digest, action);
  ASSERT_TRUE(scheduler_->AwaitRunning(digest, absl::Seconds(30)));
  // The sandbox (and the sleep in it) is gone within the kill grace. The
  // marker alone is looked for: `sh -c` execs the sleep, whose command line
  // is then "sleep\0<marker>". "Running" is reported before the sandbox has
  // started the sleep, so it may first appear (or already be killed).
  const absl::Time appear_by = absl::Now() + absl::Seconds(2);
  while (!HostRuns(marker) && absl::Now() < appear_by) absl::SleepFor(absl::Milliseconds(5));
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  while (HostRuns(marker) && absl::Now() < deadline) absl::SleepFor(absl::Milliseconds(50));
  EXPECT_FALSE(HostRuns(marker));
  // The slot is idle again and takes the next action.
  auto [next, next_action] = MakeAction("echo next");
  scheduler_->Enqueue(next, next_action);
  std::vector<rev2::ExecuteResponse> completed = scheduler_->AwaitCompleted(1);
  ASSERT_EQ(completed.size(), 1u);
  EXPECT_EQ(*Get(completed[0].result().stdout_digest()), "next\n");
}

TEST_F(ClusterWorkerTest, ReconnectsAfterTheSchedulerRestartsAndHealthFollowsIt) {
  ASSERT_TRUE(AwaitHealth(grpc::health::v1::HealthCheckResponse::SERVING, absl::Seconds(10)));
  const int port = scheduler_port_;
  scheduler_server_->Shutdown(std::chrono::system_clock::now());
  scheduler_server_.reset();
  EXPECT_TRUE(AwaitHealth(grpc::health::v1::HealthCheckResponse::NOT_SERVING, absl::Seconds(10)));
  StartScheduler(port);
  ASSERT_EQ(scheduler_port_, port);
  EXPECT_TRUE(AwaitHealth(grpc::health::v1::HealthCheckResponse::SERVING, absl::Seconds(10)));
  auto [digest, action] = MakeAction("echo after restart");
  scheduler_->Enqueue(digest, action);
  std::vector<rev2::ExecuteResponse> completed = scheduler_->AwaitCompleted(1);
  ASSERT_EQ(completed.size(), 1u);
  EXPECT_EQ(*Get(completed[0].result().stdout_digest()), "after restart\n");
}

}  // namespace
}  // namespace kiln

namespace kiln {
namespace {

TEST_F(ClusterWorkerTest, DrainLetsTheRunningActionFinishAndPrefersBeingIdle) {
  auto [digest, action] = MakeAction("sleep 1; echo drained");
  scheduler_->Enqueue(digest, action);
  ASSERT_TRUE(scheduler_->AwaitRunning(digest, absl::Seconds(30)));
  std::thread drain([this] { worker_->Shutdown(absl::Seconds(20)); });
  std::vector<rev2::ExecuteResponse> completed = scheduler_->AwaitCompleted(1);
  drain.join();
  ASSERT_EQ(completed.size(), 1u);
  EXPECT_EQ(completed[0].status().code(), 0) << completed[0].status().message();
  EXPECT_EQ(*Get(completed[0].result().stdout_digest()), "drained\n");
  // The completion went out with prefer_being_idle, and no slot asked for
  // work after it.
  std::vector<rw::SynchronizeRequest> requests = scheduler_->requests();
  size_t completion = 0;
  for (size_t i = 0; i < requests.size(); ++i) {
    if (requests[i].current_state().executing().has_completed()) completion = i;
  }
  EXPECT_TRUE(requests[completion].prefer_being_idle());
  for (size_t i = completion + 1; i < requests.size(); ++i) {
    EXPECT_TRUE(requests[i].prefer_being_idle());
  }
  EXPECT_EQ(scheduler_->handed_out(), 1);
}

}  // namespace
}  // namespace kiln

namespace kiln {
namespace {

TEST_F(ClusterWorkerTest, SendsItsTokenToACasThatRequiresOne) {
  worker_.reset();
  storage_.reset();
  std::ofstream(dir_ + "/token") << "cluster-s3cret\n";
  std::ofstream(dir_ + "/principals.json")
      << R"({"principals": [{"name": "workers", "token_sha256": ")" << Digest::Of("cluster-s3cret").hash
      << R"(", "grants": [{"instance_prefix": "", "permissions": ["cas-read", "cas-write", "ac-read", "ac-write"]}]}]})";
  StartStorage(dir_ + "/principals.json");
  // Without the token the storage refuses.
  rev2::GetActionResultRequest probe;
  *probe.mutable_action_digest() = Digest::Of("x").ToProto();
  rev2::ActionResult ignored;
  grpc::ClientContext plain;
  EXPECT_EQ(action_cache_->GetActionResult(&plain, probe, &ignored).error_code(), grpc::StatusCode::UNAUTHENTICATED);
  // The test and the worker both use the cluster channel with the token file.
  cluster::ChannelCredentialFiles files;
  files.token_file = dir_ + "/token";
  auto channel = cluster::CreateClusterChannel(absl::StrCat("127.0.0.1:", storage_->grpc_port()), files);
  ASSERT_TRUE(channel.ok()) << channel.status();
  cas_ = rev2::ContentAddressableStorage::NewStub(*channel);
  action_cache_ = rev2::ActionCache::NewStub(*channel);
  StartWorker([this](WorkerOptions& options) { options.cluster.credentials.token_file = dir_ + "/token"; });

  auto [digest, action] = MakeAction("cat sub/in.txt");
  scheduler_->Enqueue(digest, action);
  std::vector<rev2::ExecuteResponse> completed = scheduler_->AwaitCompleted(1);
  ASSERT_EQ(completed.size(), 1u);
  ASSERT_EQ(completed[0].status().code(), 0) << completed[0].status().message();
  EXPECT_EQ(*Get(completed[0].result().stdout_digest()), "input from the cluster's CAS\n");
  rev2::GetActionResultRequest get;
  get.set_instance_name("main");
  *get.mutable_action_digest() = digest.ToProto();
  grpc::ClientContext context;
  EXPECT_TRUE(action_cache_->GetActionResult(&context, get, &ignored).ok());
}


// The cluster's scheduler and CAS behind TLS (the CAS also with bearer
// tokens), their credentials made by deploy/make-credentials.sh, as
// docs/operations.md tells operators to.
TEST_F(ClusterWorkerTest, ReachesASchedulerAndACasOverTlsWithAToken) {
  worker_.reset();
  storage_.reset();
  scheduler_server_->Shutdown();
  const std::string creds = dir_ + "/creds";
  ASSERT_EQ(std::system((std::string(KILN_SOURCE_DIR) + "/deploy/make-credentials.sh " + creds +
                         " localhost > /dev/null").c_str()), 0);
  std::ifstream token_in(creds + "/ci.token");
  std::string token;
  std::getline(token_in, token);
  std::ofstream(dir_ + "/principals.json")
      << R"({"principals": [{"name": "workers", "token_sha256": ")" << Digest::Of(token).hash
      << R"(", "grants": [{"instance_prefix": "", "permissions": ["cas-read", "cas-write", "ac-read", "ac-write"]}]}]})";
  StartStorage(dir_ + "/principals.json", creds);
  const std::string target = absl::StrCat("localhost:", storage_->grpc_port());
  cluster::ChannelCredentialFiles files;
  files.tls_ca = creds + "/ca.crt";
  files.token_file = creds + "/ci.token";
  auto channel = cluster::CreateClusterChannel(target, files);
  ASSERT_TRUE(channel.ok()) << channel.status();
  cas_ = rev2::ContentAddressableStorage::NewStub(*channel);
  action_cache_ = rev2::ActionCache::NewStub(*channel);
  StartScheduler(0, creds);
  StartWorker([&](WorkerOptions& options) {
    options.cluster.scheduler = absl::StrCat("localhost:", scheduler_port_);
    options.cluster.cas = target;
    options.cluster.credentials = files;
  });

  auto [digest, action] = MakeAction("cat sub/in.txt; echo out > result.txt", true, {"result.txt"});
  scheduler_->Enqueue(digest, action);
  std::vector<rev2::ExecuteResponse> completed = scheduler_->AwaitCompleted(1);
  ASSERT_EQ(completed.size(), 1u);
  ASSERT_EQ(completed[0].status().code(), 0) << completed[0].status().message();
  EXPECT_EQ(*Get(completed[0].result().stdout_digest()), "input from the cluster's CAS\n");
  EXPECT_EQ(*Get(completed[0].result().output_files(0).digest()), "out\n");

}

}  // namespace
}  // namespace kiln
