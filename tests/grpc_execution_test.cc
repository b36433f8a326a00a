// Execution over real gRPC on loopback against an in-process worker that
// launches the real kiln-sandbox: results, every rejection, timeouts,
// cancellation, deduplication, a full queue, drain, and no leftover daemons.
#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <optional>
#include <thread>

#include <grpcpp/create_channel.h>
#include <google/protobuf/util/time_util.h>
#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "common/posix.h"
#include "google/longrunning/operations.grpc.pb.h"
#include "google/rpc/error_details.pb.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "kiln/v1/resource_usage.pb.h"
#include "sandbox/uid_pool.h"
#include "server/worker_server.h"

namespace kiln {
namespace {

namespace lro = google::longrunning;
using grpc::StatusCode;

// A directory tree built in memory and uploaded as REAPI messages.
struct InputFile {
  std::string path;  // within one directory level: name only
  std::string content;
  bool executable = false;
};

class ExecutionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string pattern = ::testing::TempDir() + "/kiln-exec-XXXXXX";
    state_dir_ = mkdtemp(pattern.data());
    StartWorker(2, 100);
  }
  void TearDown() override {
    worker_.reset();
    (void)RemoveTree(state_dir_);
  }
  void StartWorker(int concurrency, int max_queued,
                   const std::function<void(WorkerOptions&)>& adjust = nullptr) {
    worker_.reset();
    WorkerOptions options;
    options.listen = "127.0.0.1:0";
    options.metrics_listen = "";
    options.state_dir = state_dir_;
    options.io_threads = 4;
    options.concurrency = concurrency;
    options.max_queued_actions = max_queued;
    const char* bin = getenv("KILN_BIN_DIR");
    options.exec.sandbox_binary = std::string(bin ? bin : "build/bin") + "/kiln-sandbox";
    options.exec.worker_name = "test-worker";
    options.exec.max_timeout = absl::Minutes(5);
    options.exec.kill_grace = absl::Milliseconds(500);
    options.exec.platform.ignored = {"container-image"};
    if (adjust) adjust(options);
    auto worker = WorkerServer::Start(options);
    ASSERT_TRUE(worker.ok()) << worker.status();
    worker_ = *std::move(worker);
    channel_ = grpc::CreateChannel(absl::StrCat("127.0.0.1:", worker_->grpc_port()),
                                   grpc::InsecureChannelCredentials());
    cas_ = rev2::ContentAddressableStorage::NewStub(channel_);
    execution_ = rev2::Execution::NewStub(channel_);
    operations_ = lro::Operations::NewStub(channel_);
    action_cache_ = rev2::ActionCache::NewStub(channel_);
  }

  Digest Put(const std::string& data) {
    rev2::BatchUpdateBlobsRequest request;
    auto* entry = request.add_requests();
    *entry->mutable_digest() = Digest::Of(data).ToProto();
    entry->set_data(data);
    rev2::BatchUpdateBlobsResponse response;
    grpc::ClientContext context;
    EXPECT_TRUE(cas_->BatchUpdateBlobs(&context, request, &response).ok());
    return Digest::Of(data);
  }
  Digest PutMessage(const google::protobuf::Message& message) { return Put(message.SerializeAsString()); }
  std::string Get(const rev2::Digest& digest) {
    rev2::BatchReadBlobsRequest request;
    *request.add_digests() = digest;
    rev2::BatchReadBlobsResponse response;
    grpc::ClientContext context;
    EXPECT_TRUE(cas_->BatchReadBlobs(&context, request, &response).ok());
    return response.responses(0).data();
  }

  // An Action running `script` with sh, in an input root of `files`.
  Digest MakeAction(const std::string& script, const std::vector<InputFile>& files = {},
                    const std::vector<std::string>& outputs = {}, int timeout_seconds = 0,
                    std::vector<std::pair<std::string, std::string>> platform = {},
                    rev2::Directory* root_override = nullptr) {
    rev2::Directory root;
    if (root_override != nullptr) {
      root = *root_override;
    } else {
      for (const InputFile& f : files) {
        auto* node = root.add_files();
        node->set_name(f.path);
        *node->mutable_digest() = Put(f.content).ToProto();
        node->set_is_executable(f.executable);
      }
    }
    rev2::Command command;
    command.add_arguments("/bin/sh");
    command.add_arguments("-c");
    command.add_arguments(script);
    auto* path = command.add_environment_variables();
    path->set_name("PATH");
    path->set_value("/usr/bin:/bin");
    for (const auto& output : outputs) command.add_output_paths(output);
    rev2::Action action;
    *action.mutable_command_digest() = PutMessage(command).ToProto();
    *action.mutable_input_root_digest() = PutMessage(root).ToProto();
    if (timeout_seconds > 0) action.mutable_timeout()->set_seconds(timeout_seconds);
    for (const auto& [name, value] : platform) {
      auto* property = action.mutable_platform()->add_properties();
      property->set_name(name);
      property->set_value(value);
    }
    return PutMessage(action);
  }

  struct Execution {
    grpc::Status call;
    std::vector<lro::Operation> updates;
    rev2::ExecuteResponse response;
  };
  Execution Execute(const Digest& action, bool skip_cache = false, int priority = 0) {
    rev2::ExecuteRequest request;
    *request.mutable_action_digest() = action.ToProto();
    request.set_skip_cache_lookup(skip_cache);
    request.mutable_execution_policy()->set_priority(priority);
    grpc::ClientContext context;
    auto reader = execution_->Execute(&context, request);
    Execution out;
    lro::Operation operation;
    while (reader->Read(&operation)) out.updates.push_back(operation);
    out.call = reader->Finish();
    if (!out.updates.empty() && out.updates.back().done()) {
      out.updates.back().response().UnpackTo(&out.response);
    }
    return out;
  }
  static rev2::ExecutionStage::Value Stage(const lro::Operation& operation) {
    rev2::ExecuteOperationMetadata metadata;
    operation.metadata().UnpackTo(&metadata);
    return metadata.stage();
  }
  bool HostRuns(const std::string& marker) {
    for (const auto& entry : std::filesystem::directory_iterator("/proc")) {
      std::ifstream cmdline(entry.path() / "cmdline");
      std::string text((std::istreambuf_iterator<char>(cmdline)), std::istreambuf_iterator<char>());
      if (text.find(marker) != std::string::npos) return true;
    }
    return false;
  }

  std::string state_dir_;
  std::unique_ptr<WorkerServer> worker_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<rev2::ContentAddressableStorage::Stub> cas_;
  std::unique_ptr<rev2::Execution::Stub> execution_;
  std::unique_ptr<lro::Operations::Stub> operations_;
  std::unique_ptr<rev2::ActionCache::Stub> action_cache_;
};

TEST_F(ExecutionTest, RunsTheCommandAndReturnsACompleteResult) {
  Digest action = MakeAction(
      "cat in.txt; echo to-stderr >&2; mkdir -p out/dir/sub; echo f > out/file.txt;"
      "echo x > out/dir/sub/tool; chmod +x out/dir/sub/tool; ln -s sub/tool out/dir/link;"
      "./run.sh > out/ran.txt",
      {{"in.txt", "input content\n"}, {"run.sh", "#!/bin/sh\necho ran\n", true}},
      {"out/file.txt", "out/dir", "out/ran.txt", "out/missing"});
  Execution e = Execute(action);
  ASSERT_TRUE(e.call.ok()) << e.call.error_message();
  ASSERT_GE(e.updates.size(), 2u);
  EXPECT_EQ(Stage(e.updates.back()), rev2::ExecutionStage::COMPLETED);
  EXPECT_EQ(e.response.status().code(), 0) << e.response.status().message();
  const rev2::ActionResult& result = e.response.result();
  EXPECT_EQ(result.exit_code(), 0);
  EXPECT_EQ(Get(result.stdout_digest()), "input content\n");
  EXPECT_EQ(Get(result.stderr_digest()), "to-stderr\n");
  EXPECT_TRUE(result.stdout_raw().empty());  // inlining was not requested
  ASSERT_EQ(result.output_files_size(), 2);
  std::map<std::string, rev2::OutputFile> files;
  for (const auto& f : result.output_files()) files[f.path()] = f;
  EXPECT_EQ(Get(files["out/file.txt"].digest()), "f\n");
  EXPECT_EQ(Get(files["out/ran.txt"].digest()), "ran\n");
  ASSERT_EQ(result.output_directories_size(), 1);
  rev2::Tree tree;
  ASSERT_TRUE(tree.ParseFromString(Get(result.output_directories(0).tree_digest())));
  ASSERT_EQ(tree.root().directories_size(), 1);
  ASSERT_EQ(tree.root().symlinks_size(), 1);
  EXPECT_EQ(tree.root().symlinks(0).target(), "sub/tool");
  ASSERT_EQ(tree.children_size(), 1);
  EXPECT_TRUE(tree.children(0).files(0).is_executable());
  // Metadata: every timestamp, the worker, and the sandbox's resource usage.
  const auto& meta = result.execution_metadata();
  EXPECT_EQ(meta.worker(), "test-worker");
  for (const auto* ts : {&meta.queued_timestamp(), &meta.worker_start_timestamp(),
                         &meta.input_fetch_start_timestamp(), &meta.input_fetch_completed_timestamp(),
                         &meta.execution_start_timestamp(), &meta.execution_completed_timestamp(),
                         &meta.output_upload_start_timestamp(), &meta.output_upload_completed_timestamp(),
                         &meta.worker_completed_timestamp()}) {
    EXPECT_GT(ts->seconds(), 0);
  }
  EXPECT_LE(google::protobuf::util::TimeUtil::TimestampToNanoseconds(meta.execution_start_timestamp()),
            google::protobuf::util::TimeUtil::TimestampToNanoseconds(meta.execution_completed_timestamp()));
  ASSERT_EQ(meta.auxiliary_metadata_size(), 1);
  kiln::v1::SandboxResourceUsage usage;
  ASSERT_TRUE(meta.auxiliary_metadata(0).UnpackTo(&usage));
  EXPECT_GT(usage.maximum_resident_set_size(), 0);
  // Nothing to remark on: no message (the action reaped no orphan).
  EXPECT_EQ(e.response.message(), "");
  // A successful action is cached: the same Execute is now a cache hit.
  Execution again = Execute(action);
  EXPECT_TRUE(again.response.cached_result());
  EXPECT_EQ(again.response.result().stdout_digest().hash(), result.stdout_digest().hash());
}

// Each stage reaches a stream follower once: EXECUTING arrives with the live
// log names and the partial metadata (v2.6) in the same message, never twice.
// Every metadata names the digest function (v2.11), cache hits included.
TEST_F(ExecutionTest, EachStageIsSentOnceWithStreamNamesAndPartialMetadata) {
  Digest action = MakeAction("sleep 0.5; echo hi");
  for (bool cached : {false, true}) {
    SCOPED_TRACE(cached ? "cache hit" : "executed");
    Execution e = Execute(action);
    ASSERT_TRUE(e.call.ok()) << e.call.error_message();
    std::map<int, int> seen;
    int last = -1;
    for (const auto& update : e.updates) {
      rev2::ExecuteOperationMetadata metadata;
      ASSERT_TRUE(update.metadata().UnpackTo(&metadata));
      EXPECT_EQ(metadata.digest_function(), rev2::DigestFunction::SHA256);
      EXPECT_GE(metadata.stage(), last);
      last = metadata.stage();
      ++seen[metadata.stage()];
      if (metadata.stage() == rev2::ExecutionStage::EXECUTING) {
        EXPECT_NE(metadata.stdout_stream_name(), "");
        EXPECT_NE(metadata.stderr_stream_name(), "");
        EXPECT_GT(metadata.partial_execution_metadata().worker_start_timestamp().seconds(), 0);
        EXPECT_GT(metadata.partial_execution_metadata().queued_timestamp().seconds(), 0);
      }
    }
    EXPECT_EQ(e.response.cached_result(), cached);
    EXPECT_EQ(seen[rev2::ExecutionStage::EXECUTING], cached ? 0 : 1);
    EXPECT_LE(seen[rev2::ExecutionStage::QUEUED], 1);
    EXPECT_EQ(seen[rev2::ExecutionStage::COMPLETED], 1);
  }
}

// A second follower (WaitExecution) also sees EXECUTING at most once.
TEST_F(ExecutionTest, WaitExecutionAlsoSeesEachStageOnce) {
  Digest action = MakeAction("sleep 1; echo hi");
  rev2::ExecuteRequest request;
  *request.mutable_action_digest() = action.ToProto();
  grpc::ClientContext context;
  auto reader = execution_->Execute(&context, request);
  lro::Operation first;
  ASSERT_TRUE(reader->Read(&first));
  rev2::WaitExecutionRequest wait;
  wait.set_name(first.name());
  grpc::ClientContext wait_context;
  auto waiter = execution_->WaitExecution(&wait_context, wait);
  std::map<int, int> seen;
  lro::Operation update;
  while (waiter->Read(&update)) ++seen[Stage(update)];
  EXPECT_TRUE(waiter->Finish().ok());
  EXPECT_LE(seen[rev2::ExecutionStage::EXECUTING], 1);
  EXPECT_EQ(seen[rev2::ExecutionStage::COMPLETED], 1);
  while (reader->Read(&update)) {
  }
  EXPECT_TRUE(reader->Finish().ok());
}

// Command.output_directory_format (v2.8): DIRECTORY_ONLY and
// TREE_AND_DIRECTORY also store every Directory and set
// root_directory_digest; the default (TREE_ONLY) stores the Tree alone.
TEST_F(ExecutionTest, OutputDirectoryFormatStoresDirectoriesWhenAsked) {
  for (auto format : {rev2::Command::TREE_ONLY, rev2::Command::DIRECTORY_ONLY,
                      rev2::Command::TREE_AND_DIRECTORY}) {
    SCOPED_TRACE(rev2::Command::OutputDirectoryFormat_Name(format));
    rev2::Command command;
    for (const char* arg : {"/bin/sh", "-c", "mkdir -p out/a/b out/c; echo x > out/a/b/f; echo y > out/top"}) {
      command.add_arguments(arg);
    }
    command.add_arguments(rev2::Command::OutputDirectoryFormat_Name(format));  // a distinct action each
    command.add_output_paths("out");
    command.set_output_directory_format(format);
    rev2::Action action;
    *action.mutable_command_digest() = PutMessage(command).ToProto();
    *action.mutable_input_root_digest() = PutMessage(rev2::Directory()).ToProto();
    Execution e = Execute(PutMessage(action));
    ASSERT_TRUE(e.call.ok()) << e.call.error_message();
    ASSERT_EQ(e.response.status().code(), 0) << e.response.status().message();
    ASSERT_EQ(e.response.result().output_directories_size(), 1);
    const rev2::OutputDirectory& out = e.response.result().output_directories(0);
    rev2::Tree tree;
    ASSERT_TRUE(tree.ParseFromString(Get(out.tree_digest())));
    if (format == rev2::Command::TREE_ONLY) {
      EXPECT_FALSE(out.has_root_directory_digest());
      continue;
    }
    ASSERT_TRUE(out.has_root_directory_digest());
    // Walk the Directory blobs from the root, as a client of this form does.
    std::vector<rev2::Digest> pending = {out.root_directory_digest()};
    int directories = 0, files = 0;
    while (!pending.empty()) {
      rev2::Digest digest = pending.back();
      pending.pop_back();
      rev2::Directory directory;
      ASSERT_TRUE(directory.ParseFromString(Get(digest))) << digest.hash();
      ++directories;
      files += directory.files_size();
      for (const auto& child : directory.directories()) pending.push_back(child.digest());
    }
    EXPECT_EQ(directories, 4);  // out, a, a/b, c
    EXPECT_EQ(files, 2);
    EXPECT_EQ(tree.children_size(), 3);
    // A cache hit carries the same digests.
    Execution again = Execute(PutMessage(action));
    ASSERT_TRUE(again.response.cached_result());
    EXPECT_EQ(again.response.result().output_directories(0).root_directory_digest().hash(),
              out.root_directory_digest().hash());
  }
}

TEST_F(ExecutionTest, MissingInputsAreFailedPreconditionWithOneViolationEach) {
  rev2::Directory root;
  for (const char* name : {"a", "b"}) {
    auto* f = root.add_files();
    f->set_name(name);
    *f->mutable_digest() = Digest::Of(absl::StrCat("never uploaded ", name)).ToProto();
  }
  Execution e = Execute(MakeAction("true", {}, {}, 0, {}, &root));
  ASSERT_TRUE(e.call.ok());
  EXPECT_EQ(e.response.status().code(), StatusCode::FAILED_PRECONDITION);
  ASSERT_EQ(e.response.status().details_size(), 1);
  google::rpc::PreconditionFailure failure;
  ASSERT_TRUE(e.response.status().details(0).UnpackTo(&failure));
  ASSERT_EQ(failure.violations_size(), 2);
  EXPECT_EQ(failure.violations(0).type(), "MISSING");
  EXPECT_EQ(failure.violations(0).subject(), "blobs/" + Digest::Of("never uploaded a").ToString());
}

TEST_F(ExecutionTest, BadInputRootsAndCommandsAreRejectedBeforeRunning) {
  auto expect_invalid = [&](const Digest& action, const std::string& fragment) {
    Execution e = Execute(action);
    ASSERT_TRUE(e.call.ok()) << e.call.error_message();
    EXPECT_EQ(e.response.status().code(), StatusCode::INVALID_ARGUMENT) << fragment;
    EXPECT_NE(e.response.status().message().find(fragment), std::string::npos)
        << "wanted \"" << fragment << "\" in: " << e.response.status().message();
  };
  const Digest content = Put("x");
  auto dir_with = [&](std::vector<std::string> names) {
    rev2::Directory d;
    for (const auto& n : names) {
      auto* f = d.add_files();
      f->set_name(n);
      *f->mutable_digest() = content.ToProto();
    }
    return d;
  };
  rev2::Directory dotdot = dir_with({".."});
  expect_invalid(MakeAction("touch /work/ran", {}, {}, 0, {}, &dotdot), "single path component");
  rev2::Directory slash = dir_with({"a/b"});
  expect_invalid(MakeAction("touch /work/ran", {}, {}, 0, {}, &slash), "single path component");
  rev2::Directory unsorted = dir_with({"b", "a"});
  expect_invalid(MakeAction("touch /work/ran", {}, {}, 0, {}, &unsorted), "not sorted");
  rev2::Directory duplicate = dir_with({"a", "a"});
  expect_invalid(MakeAction("touch /work/ran", {}, {}, 0, {}, &duplicate), "duplicates");
  rev2::Directory escaping;
  auto* link = escaping.add_symlinks();
  link->set_name("up");
  link->set_target("../../etc/passwd");
  expect_invalid(MakeAction("true", {}, {}, 0, {}, &escaping), "outside the input root");
  escaping.mutable_symlinks(0)->set_target("/etc/passwd");
  expect_invalid(MakeAction("true", {}, {}, 0, {}, &escaping), "outside the input root");
  expect_invalid(MakeAction("true", {}, {"../escape"}), "must stay inside");
  expect_invalid(MakeAction("true", {}, {"/abs"}), "relative");
  expect_invalid(MakeAction("true", {}, {}, 0, {{"gpu", "yes"}}), "supported: OSFamily, ISA");
  expect_invalid(MakeAction("true", {}, {}, 0, {{"network", "on"}}), "--allow_network");
  expect_invalid(MakeAction("true", {}, {}, 3600), "maximum");
  // An ignored property (operator's --platform_ignore) and the standard ones run.
  Execution ok = Execute(MakeAction("true", {}, {}, 0,
                                    {{"OSFamily", "linux"}, {"container-image", "docker://x"}}));
  EXPECT_EQ(ok.response.status().code(), 0) << ok.response.status().message();
}

TEST_F(ExecutionTest, TimeoutIsDeadlineExceededWithPartialOutputAndNotCached) {
  Digest action = MakeAction("echo before; trap '' TERM; sleep 30", {}, {}, 1);
  auto start = absl::Now();
  Execution e = Execute(action);
  EXPECT_LT(absl::Now() - start, absl::Seconds(10));
  EXPECT_EQ(e.response.status().code(), StatusCode::DEADLINE_EXCEEDED);
  EXPECT_EQ(Get(e.response.result().stdout_digest()), "before\n");
  // The action's stderr is its own; the timeout is Kiln's remark.
  EXPECT_EQ(Get(e.response.result().stderr_digest()), "");
  EXPECT_NE(e.response.message().find("timed out after 1s"), std::string::npos) << e.response.message();
  rev2::GetActionResultRequest get;
  *get.mutable_action_digest() = action.ToProto();
  rev2::ActionResult cached;
  grpc::ClientContext context;
  EXPECT_EQ(action_cache_->GetActionResult(&context, get, &cached).error_code(), StatusCode::NOT_FOUND);
}

TEST_F(ExecutionTest, NonZeroExitIsAResultNotAnErrorAndIsNotCached) {
  Digest action = MakeAction("echo failing >&2; exit 3");
  Execution e = Execute(action);
  EXPECT_EQ(e.response.status().code(), 0);
  EXPECT_EQ(e.response.result().exit_code(), 3);
  Execution again = Execute(action);
  EXPECT_FALSE(again.response.cached_result());
}

TEST_F(ExecutionTest, OomKillIsReportedNotAPlainExitCode) {
  Execution e = Execute(MakeAction("x=$(head -c 300000000 /dev/zero | tr '\\0' a); echo survived",
                                   {}, {}, 0, {{"memory", "64MiB"}}));
  EXPECT_EQ(e.response.status().code(), StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_NE(e.response.message().find("OOM-killed"), std::string::npos) << e.response.message();
  EXPECT_EQ(Get(e.response.result().stdout_digest()), "");
}

TEST_F(ExecutionTest, ADaemonLeftBehindIsGoneWhenTheResultArrives) {
  const std::string marker = absl::StrCat("1000.", getpid(), "3");
  Execution e = Execute(MakeAction("setsid sleep " + marker + " >/dev/null 2>&1 & sleep 0.2"));
  EXPECT_EQ(e.response.result().exit_code(), 0);
  EXPECT_NE(e.response.message().find("killed at teardown: 1"), std::string::npos) << e.response.message();
  EXPECT_FALSE(HostRuns(marker));
}

TEST_F(ExecutionTest, CancellationThroughOperationsKillsTheAction) {
  const std::string marker = absl::StrCat("600.", getpid(), "5");
  Digest action = MakeAction("sleep " + marker);
  rev2::ExecuteRequest request;
  *request.mutable_action_digest() = action.ToProto();
  grpc::ClientContext context;
  auto reader = execution_->Execute(&context, request);
  lro::Operation operation;
  // Wait until it runs.
  while (reader->Read(&operation) && Stage(operation) != rev2::ExecutionStage::EXECUTING) {
  }
  ASSERT_EQ(Stage(operation), rev2::ExecutionStage::EXECUTING);
  for (int i = 0; i < 250 && !HostRuns(marker); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  EXPECT_TRUE(HostRuns(marker));
  lro::CancelOperationRequest cancel;
  cancel.set_name(operation.name());
  google::protobuf::Empty empty;
  grpc::ClientContext cancel_context;
  ASSERT_TRUE(operations_->CancelOperation(&cancel_context, cancel, &empty).ok());
  while (reader->Read(&operation)) {
  }
  ASSERT_TRUE(reader->Finish().ok());
  rev2::ExecuteResponse response;
  operation.response().UnpackTo(&response);
  EXPECT_EQ(response.status().code(), StatusCode::CANCELLED);
  EXPECT_FALSE(HostRuns(marker));
}

TEST_F(ExecutionTest, IdenticalActionsInFlightRunOnce) {
  Digest action = MakeAction("head -c 16 /dev/urandom | od -An -tx1; sleep 1");
  Execution first, second;
  std::thread a([&] { first = Execute(action, /*skip_cache=*/true); });
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  second = Execute(action, /*skip_cache=*/true);
  a.join();
  ASSERT_FALSE(first.updates.empty());
  ASSERT_FALSE(second.updates.empty());
  EXPECT_EQ(first.updates.back().name(), second.updates.back().name());
  // Random output, identical in both: one run served both waiters.
  EXPECT_EQ(first.response.result().stdout_digest().hash(), second.response.result().stdout_digest().hash());
}

TEST_F(ExecutionTest, WaitExecutionAttachesByNameAndUnknownNamesAreNotFound) {
  Digest action = MakeAction("sleep 1; echo waited");
  rev2::ExecuteRequest request;
  *request.mutable_action_digest() = action.ToProto();
  grpc::ClientContext context;
  auto reader = execution_->Execute(&context, request);
  lro::Operation operation;
  ASSERT_TRUE(reader->Read(&operation));
  context.TryCancel();  // the first client goes away; the action goes on
  reader->Finish();
  rev2::WaitExecutionRequest wait;
  wait.set_name(operation.name());
  grpc::ClientContext wait_context;
  auto waiter = execution_->WaitExecution(&wait_context, wait);
  while (waiter->Read(&operation)) {
  }
  ASSERT_TRUE(waiter->Finish().ok());
  ASSERT_TRUE(operation.done());
  rev2::ExecuteResponse response;
  operation.response().UnpackTo(&response);
  EXPECT_EQ(Get(response.result().stdout_digest()), "waited\n");
  wait.set_name("operations/unknown");
  grpc::ClientContext unknown_context;
  auto unknown = execution_->WaitExecution(&unknown_context, wait);
  while (unknown->Read(&operation)) {
  }
  EXPECT_EQ(unknown->Finish().error_code(), StatusCode::NOT_FOUND);
}

TEST_F(ExecutionTest, AFullQueueAnswersResourceExhausted) {
  StartWorker(/*concurrency=*/1, /*max_queued=*/1);
  Digest long_one = MakeAction("sleep 20");
  Digest queued = MakeAction("sleep 21");
  Digest rejected = MakeAction("sleep 22");
  grpc::ClientContext c1, c2;
  rev2::ExecuteRequest r1, r2;
  *r1.mutable_action_digest() = long_one.ToProto();
  *r2.mutable_action_digest() = queued.ToProto();
  auto s1 = execution_->Execute(&c1, r1);
  lro::Operation op1;
  while (s1->Read(&op1) && Stage(op1) != rev2::ExecutionStage::EXECUTING) {
  }
  auto s2 = execution_->Execute(&c2, r2);
  lro::Operation op2;
  ASSERT_TRUE(s2->Read(&op2));
  EXPECT_EQ(Stage(op2), rev2::ExecutionStage::QUEUED);
  auto start = absl::Now();
  Execution third = Execute(rejected);
  EXPECT_LT(absl::Now() - start, absl::Seconds(2));
  EXPECT_EQ(third.call.error_code(), StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_NE(third.call.error_message().find("queue is full"), std::string::npos);
  for (const auto* op : {&op1, &op2}) {
    lro::CancelOperationRequest cancel;
    cancel.set_name(op->name());
    google::protobuf::Empty empty;
    grpc::ClientContext context;
    operations_->CancelOperation(&context, cancel, &empty);
  }
  while (s1->Read(&op1)) {
  }
  while (s2->Read(&op2)) {
  }
  s1->Finish();
  s2->Finish();
}

TEST_F(ExecutionTest, ShutdownDrainsRunningActionsAndRefusesNewOnes) {
  Digest action = MakeAction("sleep 2; echo finished");
  Execution running;
  std::thread client([&] { running = Execute(action); });
  std::this_thread::sleep_for(std::chrono::milliseconds(400));
  std::thread stopper([&] { worker_->Shutdown(absl::Seconds(20)); });
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  Execution late = Execute(MakeAction("echo too late"));
  EXPECT_EQ(late.call.error_code(), StatusCode::UNAVAILABLE) << late.call.error_message();
  // Health tells load balancers and probes to stop sending work here.
  auto health = grpc::health::v1::Health::NewStub(channel_);
  grpc::health::v1::HealthCheckRequest check;
  grpc::health::v1::HealthCheckResponse serving;
  grpc::ClientContext health_context;
  ASSERT_TRUE(health->Check(&health_context, check, &serving).ok());
  EXPECT_EQ(serving.status(), grpc::health::v1::HealthCheckResponse::NOT_SERVING);
  client.join();
  stopper.join();
  EXPECT_EQ(running.response.status().code(), 0) << running.response.status().message();
  // The server is gone now; the digest shows the action ran to its end.
  EXPECT_EQ(running.response.result().stdout_digest().hash(), Digest::Of("finished\n").hash);
}

TEST_F(ExecutionTest, LowerPriorityValuesRunFirstAndEqualOnesInOrder) {
  StartWorker(/*concurrency=*/1, /*max_queued=*/10);
  // A blocker holds the only slot while three actions queue up.
  Digest blocker = MakeAction("sleep 1");
  std::vector<std::pair<std::string, int>> queued = {{"late", 5}, {"first", -3}, {"second", -3}};
  std::vector<Execution> results(queued.size());
  std::thread blocking([&] { Execute(blocker); });
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  std::vector<std::thread> clients;
  for (size_t i = 0; i < queued.size(); ++i) {
    Digest action = MakeAction("echo " + queued[i].first);
    clients.emplace_back([&, i, action] { results[i] = Execute(action, false, queued[i].second); });
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  for (auto& c : clients) c.join();
  blocking.join();
  auto started = [&](size_t i) {
    return google::protobuf::util::TimeUtil::TimestampToNanoseconds(
        results[i].response.result().execution_metadata().worker_start_timestamp());
  };
  EXPECT_LT(started(1), started(2));  // same priority: FIFO
  EXPECT_LT(started(2), started(0));  // -3 before 5
}

TEST_F(ExecutionTest, ActionPlatformWinsOverCommandPlatformAndLegacyOutputsWork) {
  rev2::Command command;
  command.add_arguments("/bin/sh");
  command.add_arguments("-c");
  command.add_arguments("mkdir -p d; echo a > d/x; echo b > f");
  auto* path = command.add_environment_variables();
  path->set_name("PATH");
  path->set_value("/usr/bin:/bin");
  command.add_output_files("f");
  command.add_output_directories("d");
  auto* bad = command.mutable_platform()->add_properties();
  bad->set_name("no-such-property");  // would be rejected if it counted
  bad->set_value("1");
  rev2::Action action;
  *action.mutable_command_digest() = PutMessage(command).ToProto();
  *action.mutable_input_root_digest() = PutMessage(rev2::Directory()).ToProto();
  auto* good = action.mutable_platform()->add_properties();
  good->set_name("OSFamily");
  good->set_value("linux");
  Execution e = Execute(PutMessage(action));
  ASSERT_EQ(e.response.status().code(), 0) << e.response.status().message();
  ASSERT_EQ(e.response.result().output_files_size(), 1);
  EXPECT_EQ(Get(e.response.result().output_files(0).digest()), "b\n");
  ASSERT_EQ(e.response.result().output_directories_size(), 1)
      << e.response.result().DebugString() << Get(e.response.result().stderr_digest());
  EXPECT_EQ(e.response.result().output_directories(0).path(), "d");
}

TEST_F(ExecutionTest, AnActionWaitsForNoBuildUidAnotherProcessHolds) {
  // Another worker (or kiln-sandbox run) on the host holds every uid of the
  // pool: the action is refused as UNAVAILABLE instead of sharing a uid.
  // Held before the worker starts: a slot's warm sandbox leases its uid as
  // soon as it is prepared, and cannot get one here.
  const std::string lock_dir = state_dir_ + "-uid-locks";
  {
    absl::StatusOr<sandbox::UidLease> held = sandbox::AcquireBuildUid(lock_dir, 64500, 1);
    ASSERT_TRUE(held.ok()) << held.status();
    StartWorker(1, 10, [&](WorkerOptions& options) {
      options.exec.uid_lock_dir = lock_dir;
      options.exec.build_uid_base = 64500;
      options.exec.build_uid_pool_size = 1;
      options.exec.wait_for_build_uid = absl::Seconds(1);  // it never comes free
    });
    Execution refused = Execute(MakeAction("true"));
    EXPECT_EQ(refused.response.status().code(), StatusCode::UNAVAILABLE);
    EXPECT_NE(refused.response.status().message().find("no free build uid"), std::string::npos)
        << refused.response.status().message();
  }
  Execution ran = Execute(MakeAction("id -u"));
  EXPECT_EQ(ran.response.status().code(), 0) << ran.response.status().message();
  EXPECT_EQ(Get(ran.response.result().stdout_digest()), "64500\n");
  (void)RemoveTree(lock_dir);
}

TEST_F(ExecutionTest, AnActionWaitsForABuildUidThatComesFreeWithinSeconds) {
  // The pool is full only for a moment (finished sandboxes are being
  // reaped, or another run ends): the action waits for the uid instead of
  // failing.
  const std::string lock_dir = state_dir_ + "-uid-locks";
  std::optional<absl::StatusOr<sandbox::UidLease>> held = sandbox::AcquireBuildUid(lock_dir, 64510, 1);
  ASSERT_TRUE(held->ok()) << held->status();
  StartWorker(1, 10, [&](WorkerOptions& options) {
    options.exec.uid_lock_dir = lock_dir;
    options.exec.build_uid_base = 64510;
    options.exec.build_uid_pool_size = 1;
  });
  std::thread release([&] {
    absl::SleepFor(absl::Seconds(1));
    held.reset();
  });
  Execution ran = Execute(MakeAction("id -u"));
  release.join();
  ASSERT_EQ(ran.response.status().code(), 0) << ran.response.status().message();
  EXPECT_EQ(Get(ran.response.result().stdout_digest()), "64510\n");
  (void)RemoveTree(lock_dir);
}

TEST_F(ExecutionTest, ACommandWithoutPathGetsNoneAndTheShellFindsItsTools) {
  // Bazel's run_shell without use_default_shell_env sends no PATH: the
  // worker adds nothing, and bash/dash fall back to their built-in path.
  rev2::Command command;
  command.add_arguments("bash");
  command.add_arguments("-c");
  command.add_arguments("mkdir -p out && echo \"PATH=${PATH-unset}\" > out/f");
  command.add_output_paths("out/f");
  rev2::Action action;
  *action.mutable_command_digest() = PutMessage(command).ToProto();
  *action.mutable_input_root_digest() = PutMessage(rev2::Directory()).ToProto();
  Execution e = Execute(PutMessage(action));
  ASSERT_EQ(e.response.status().code(), 0) << e.response.status().message();
  ASSERT_EQ(e.response.result().exit_code(), 0) << Get(e.response.result().stderr_digest());
  ASSERT_EQ(e.response.result().output_files_size(), 1);
  // bash sets its own default PATH inside the shell; none came from Kiln.
  EXPECT_NE(Get(e.response.result().output_files(0).digest()), "PATH=/path-not-set\n");
}

}  // namespace
}  // namespace kiln
