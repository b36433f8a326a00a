// The real kiln-worker binary: flag errors, the state-dir lock, the metrics
// endpoint, SIGTERM, and durability across kill -9.
#include <signal.h>
#include <stdlib.h>

#include <sys/stat.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <thread>

#include <grpcpp/create_channel.h>
#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "build/bazel/remote/execution/v2/remote_execution.grpc.pb.h"
#include "common/digest.h"
#include "common/posix.h"
#include "google/bytestream/bytestream.grpc.pb.h"
#include "sandbox/cgroup_delegation.h"
#include "sandbox/cgroup_paths.h"
#include "tests/test_actions.h"
#include "tests/worker_process.h"

namespace kiln {
namespace {

using testing::RunToCompletion;
using testing::WorkerProcess;

class WorkerBinaryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string pattern = ::testing::TempDir() + "/kiln-bin-XXXXXX";
    state_dir_ = mkdtemp(pattern.data());
  }
  void TearDown() override { (void)RemoveTree(state_dir_); }
  std::string Worker() {
    const char* dir = getenv("KILN_BIN_DIR");
    return std::string(dir ? dir : "build/bin") + "/kiln-worker";
  }
  std::vector<std::string> Flags() {
    return {"--listen=127.0.0.1:0", "--metrics_listen=127.0.0.1:0", "--state_dir=" + state_dir_};
  }
  std::string state_dir_;
};

TEST_F(WorkerBinaryTest, UnknownFlagStopsTheStartWithAClearMessage) {
  auto result = RunToCompletion({Worker(), "--listne=127.0.0.1:1"});
  EXPECT_NE(result.exit_code, 0);
  EXPECT_NE(result.stderr_text.find("listne"), std::string::npos) << result.stderr_text;
}

TEST_F(WorkerBinaryTest, BadValuesStopTheStartNamingTheProblem) {
  struct Case {
    std::string flag;
    std::string expected;
  } cases[] = {
      {"--listen=localhost", "HOST:PORT"},
      {"--listen=127.0.0.1:99999", "65535"},
      {"--metrics_listen=nowhere", "HOST:PORT"},
      {"--cas_max_bytes=lots", "byte size"},
      {"--state_dir=relative/dir", "absolute"},
      {"--io_threads=0", "io_threads"},
      {"--fsync=sometimes", "auto, always, never"},
      {"--log_level=chatty", "log_level"},
      {"--platform=container-image", "expected NAME=VALUE"},
      {"--platform=memory=1GiB", "implements itself"},
      {"--max_action_processes=1", "--max_action_processes"},
      {"--build_uid_pool_size=1", "--build_uid_pool_size"},
  };
  for (const Case& c : cases) {
    auto result = RunToCompletion({Worker(), "--state_dir=" + state_dir_, c.flag});
    EXPECT_NE(result.exit_code, 0) << c.flag;
    EXPECT_NE(result.stderr_text.find(c.expected), std::string::npos)
        << c.flag << " printed: " << result.stderr_text;
  }
}

TEST_F(WorkerBinaryTest, ASecondWorkerOnTheSameStateDirIsRefused) {
  WorkerProcess first(Flags());
  ASSERT_TRUE(first.started());
  auto second = RunToCompletion({Worker(), "--listen=127.0.0.1:0", "--metrics_listen=",
                                 "--state_dir=" + state_dir_});
  EXPECT_NE(second.exit_code, 0);
  EXPECT_NE(second.stderr_text.find("in use by another kiln-worker"), std::string::npos)
      << second.stderr_text;
}

TEST_F(WorkerBinaryTest, MetricsEndpointServesProcessMetrics) {
  WorkerProcess worker(Flags());
  ASSERT_TRUE(worker.started());
  ASSERT_GT(worker.metrics_port(), 0);
  std::string body = testing::HttpGet(worker.metrics_port(), "/metrics");
  EXPECT_NE(body.find("process_resident_memory_bytes"), std::string::npos) << body;
  EXPECT_NE(body.find("process_open_fds"), std::string::npos);
}

TEST_F(WorkerBinaryTest, SigtermShutsDownCleanly) {
  WorkerProcess worker(Flags());
  ASSERT_TRUE(worker.started());
  EXPECT_EQ(worker.Stop(SIGTERM), 0);
}

TEST_F(WorkerBinaryTest, CommittedDataSurvivesKillDashNine) {
  std::vector<std::string> blobs;
  for (int i = 0; i < 40; ++i) blobs.push_back(std::string(1000 + i * 5000, static_cast<char>('A' + i)));
  Digest action = Digest::Of("an action");
  {
    WorkerProcess worker(Flags());
    ASSERT_TRUE(worker.started());
    auto channel = grpc::CreateChannel(worker.address(), grpc::InsecureChannelCredentials());
    auto cas = rev2::ContentAddressableStorage::NewStub(channel);
    auto bytestream = google::bytestream::ByteStream::NewStub(channel);
    for (size_t i = 0; i < blobs.size(); ++i) {
      Digest d = Digest::Of(blobs[i]);
      if (i % 2 == 0) {
        rev2::BatchUpdateBlobsRequest request;
        auto* entry = request.add_requests();
        *entry->mutable_digest() = d.ToProto();
        entry->set_data(blobs[i]);
        rev2::BatchUpdateBlobsResponse response;
        grpc::ClientContext context;
        ASSERT_TRUE(cas->BatchUpdateBlobs(&context, request, &response).ok());
        ASSERT_EQ(response.responses(0).status().code(), 0);
      } else {
        grpc::ClientContext context;
        google::bytestream::WriteResponse response;
        auto writer = bytestream->Write(&context, &response);
        google::bytestream::WriteRequest request;
        request.set_resource_name(absl::StrCat("uploads/k", i, "/blobs/", d.ToString()));
        request.set_data(blobs[i]);
        request.set_finish_write(true);
        writer->Write(request);
        writer->WritesDone();
        ASSERT_TRUE(writer->Finish().ok());
      }
    }
    // Leave an upload half-written when the process dies.
    grpc::ClientContext partial_context;
    google::bytestream::WriteResponse partial_response;
    auto partial = bytestream->Write(&partial_context, &partial_response);
    google::bytestream::WriteRequest request;
    Digest never = Digest::Of(std::string(100000, 'n'));
    request.set_resource_name(absl::StrCat("uploads/p/blobs/", never.ToString()));
    request.set_data(std::string(50000, 'n'));
    partial->Write(request);

    auto ac = rev2::ActionCache::NewStub(channel);
    rev2::UpdateActionResultRequest update;
    *update.mutable_action_digest() = action.ToProto();
    *update.mutable_action_result()->mutable_stdout_digest() = Digest::Of(blobs[3]).ToProto();
    rev2::ActionResult stored;
    grpc::ClientContext context;
    ASSERT_TRUE(ac->UpdateActionResult(&context, update, &stored).ok());
    EXPECT_EQ(worker.Stop(SIGKILL), 128 + SIGKILL);
    partial_context.TryCancel();
  }
  WorkerProcess worker(Flags());
  ASSERT_TRUE(worker.started());
  EXPECT_TRUE(std::filesystem::is_empty(state_dir_ + "/cas/tmp"));
  auto channel = grpc::CreateChannel(worker.address(), grpc::InsecureChannelCredentials());
  auto cas = rev2::ContentAddressableStorage::NewStub(channel);
  for (const std::string& blob : blobs) {
    rev2::BatchReadBlobsRequest request;
    *request.add_digests() = Digest::Of(blob).ToProto();
    rev2::BatchReadBlobsResponse response;
    grpc::ClientContext context;
    ASSERT_TRUE(cas->BatchReadBlobs(&context, request, &response).ok());
    ASSERT_EQ(response.responses(0).status().code(), 0);
    EXPECT_EQ(Digest::Of(response.responses(0).data()), Digest::Of(blob));
  }
  auto ac = rev2::ActionCache::NewStub(channel);
  rev2::GetActionResultRequest get;
  *get.mutable_action_digest() = action.ToProto();
  rev2::ActionResult result;
  grpc::ClientContext context;
  ASSERT_TRUE(ac->GetActionResult(&context, get, &result).ok());
  EXPECT_EQ(result.stdout_digest().hash(), Digest::Of(blobs[3]).hash);
}

// --fsync=never: what a machine crash may leave (a torn blob under its
// name, with the marker naming the boot it was written in) is found at the
// next start, in a later boot, before anything is served.
TEST_F(WorkerBinaryTest, WithoutFsyncTheStartAfterAMachineRestartDropsWhatItMayHaveTorn) {
  const std::string intact(3000, 'i');
  const std::string torn(5000, 't');
  Digest action = Digest::Of("an action");
  {
    std::vector<std::string> flags = Flags();
    flags.push_back("--fsync=never");
    WorkerProcess worker(flags);
    ASSERT_TRUE(worker.started());
    auto channel = grpc::CreateChannel(worker.address(), grpc::InsecureChannelCredentials());
    auto cas = rev2::ContentAddressableStorage::NewStub(channel);
    rev2::BatchUpdateBlobsRequest request;
    for (const std::string* blob : {&intact, &torn}) {
      auto* entry = request.add_requests();
      *entry->mutable_digest() = Digest::Of(*blob).ToProto();
      entry->set_data(*blob);
    }
    rev2::BatchUpdateBlobsResponse response;
    grpc::ClientContext context;
    ASSERT_TRUE(cas->BatchUpdateBlobs(&context, request, &response).ok());
    auto ac = rev2::ActionCache::NewStub(channel);
    rev2::UpdateActionResultRequest update;
    *update.mutable_action_digest() = action.ToProto();
    *update.mutable_action_result()->mutable_stdout_digest() = Digest::Of(intact).ToProto();
    rev2::ActionResult stored;
    grpc::ClientContext update_context;
    ASSERT_TRUE(ac->UpdateActionResult(&update_context, update, &stored).ok());
    EXPECT_EQ(worker.Stop(SIGKILL), 128 + SIGKILL);
  }
  // The crash: half of one blob reached the disk; and the boot has changed.
  const Digest torn_digest = Digest::Of(torn);
  const std::string torn_path =
      absl::StrCat(state_dir_, "/cas/blobs/", torn_digest.hash.substr(0, 2), "/", torn_digest.hash);
  ASSERT_EQ(chmod(torn_path.c_str(), 0644), 0);
  ASSERT_EQ(truncate(torn_path.c_str(), 2500), 0);
  ASSERT_EQ(chmod(torn_path.c_str(), 0444), 0);
  std::ofstream(state_dir_ + "/UNSYNCED", std::ios::trunc) << "00000000-0000-0000-0000-000000000000\n";

  WorkerProcess worker(Flags());  // --fsync=auto: always, standalone
  ASSERT_TRUE(worker.started());
  EXPECT_FALSE(std::filesystem::exists(state_dir_ + "/UNSYNCED"));
  auto channel = grpc::CreateChannel(worker.address(), grpc::InsecureChannelCredentials());
  auto cas = rev2::ContentAddressableStorage::NewStub(channel);
  rev2::FindMissingBlobsRequest find;
  *find.add_blob_digests() = Digest::Of(intact).ToProto();
  *find.add_blob_digests() = torn_digest.ToProto();
  rev2::FindMissingBlobsResponse missing;
  grpc::ClientContext find_context;
  ASSERT_TRUE(cas->FindMissingBlobs(&find_context, find, &missing).ok());
  ASSERT_EQ(missing.missing_blob_digests_size(), 1);
  EXPECT_EQ(missing.missing_blob_digests(0).hash(), torn_digest.hash);
  auto ac = rev2::ActionCache::NewStub(channel);
  rev2::GetActionResultRequest get;
  *get.mutable_action_digest() = action.ToProto();
  rev2::ActionResult result;
  grpc::ClientContext get_context;
  EXPECT_EQ(ac->GetActionResult(&get_context, get, &result).error_code(), grpc::StatusCode::NOT_FOUND);
}

TEST_F(WorkerBinaryTest, ExecutesActionsWhenRunUnprivileged) {
  chmod(state_dir_.c_str(), 0777);
  WorkerProcess worker({"--listen=127.0.0.1:0", "--metrics_listen=", "--state_dir=" + state_dir_ + "/s",
                        "--concurrency=1"},
                       {"/usr/bin/setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"});
  ASSERT_TRUE(worker.started());
  auto channel = grpc::CreateChannel(worker.address(), grpc::InsecureChannelCredentials());
  auto cas = rev2::ContentAddressableStorage::NewStub(channel);
  auto put = [&](const std::string& data) {
    rev2::BatchUpdateBlobsRequest request;
    auto* entry = request.add_requests();
    *entry->mutable_digest() = Digest::Of(data).ToProto();
    entry->set_data(data);
    rev2::BatchUpdateBlobsResponse response;
    grpc::ClientContext context;
    EXPECT_TRUE(cas->BatchUpdateBlobs(&context, request, &response).ok());
    return Digest::Of(data);
  };
  rev2::Command command;
  for (const char* arg : {"/bin/sh", "-c", "id -u > out.txt; hostname >> out.txt"}) command.add_arguments(arg);
  command.add_output_paths("out.txt");
  auto* path = command.add_environment_variables();
  path->set_name("PATH");
  path->set_value("/usr/bin:/bin");
  rev2::Action action;
  *action.mutable_command_digest() = put(command.SerializeAsString()).ToProto();
  *action.mutable_input_root_digest() = put(rev2::Directory().SerializeAsString()).ToProto();
  rev2::ExecuteRequest request;
  *request.mutable_action_digest() = put(action.SerializeAsString()).ToProto();
  auto execution = rev2::Execution::NewStub(channel);
  grpc::ClientContext context;
  auto reader = execution->Execute(&context, request);
  google::longrunning::Operation operation;
  while (reader->Read(&operation)) {
  }
  ASSERT_TRUE(reader->Finish().ok());
  rev2::ExecuteResponse response;
  ASSERT_TRUE(operation.response().UnpackTo(&response));
  ASSERT_EQ(response.status().code(), 0) << response.status().message();
  ASSERT_EQ(response.result().output_files_size(), 1);
  rev2::BatchReadBlobsRequest read;
  *read.add_digests() = response.result().output_files(0).digest();
  rev2::BatchReadBlobsResponse data;
  grpc::ClientContext read_context;
  ASSERT_TRUE(cas->BatchReadBlobs(&read_context, read, &data).ok());
  // The build user inside the user namespace, in its own UTS namespace.
  EXPECT_EQ(data.responses(0).data(), "61000\nlocalhost\n");
}

// The parent pid of `pid`, or 0 when it is gone.
pid_t ParentOf(pid_t pid) {
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  for (std::string line; std::getline(status, line);) {
    if (line.rfind("PPid:", 0) == 0) return std::stoi(line.substr(5));
  }
  return 0;
}

// The worker's children whose command line contains `needle`.
std::vector<pid_t> ChildrenRunning(pid_t parent, const std::string& needle) {
  std::vector<pid_t> found;
  for (const auto& entry : std::filesystem::directory_iterator("/proc")) {
    const pid_t pid = std::atoi(entry.path().filename().c_str());
    if (pid <= 0 || ParentOf(pid) != parent) continue;
    std::ifstream file(entry.path() / "cmdline");
    std::string cmdline((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
    if (cmdline.find(needle) != std::string::npos) found.push_back(pid);
  }
  return found;
}

// The action's exit code, or -1 when it did not run to completion.
int ExecuteShell(const std::shared_ptr<grpc::Channel>& channel, const std::string& script) {
  rev2::ExecuteRequest request;
  *request.mutable_action_digest() = testing::UploadShellAction(channel, script).ToProto();
  auto execution = rev2::Execution::NewStub(channel);
  grpc::ClientContext context;
  auto reader = execution->Execute(&context, request);
  google::longrunning::Operation operation;
  while (reader->Read(&operation)) {
  }
  rev2::ExecuteResponse response;
  if (!reader->Finish().ok() || !operation.response().UnpackTo(&response)) return -1;
  EXPECT_EQ(response.status().code(), 0) << response.status().message();
  return response.status().code() == 0 ? response.result().exit_code() : -1;
}

// Launchers are forked by one kiln-sandbox spawner, the worker's child. If
// it dies (an operator, the OOM killer), the warm sandbox it forked dies
// with it; the next action gets a new sandbox from a new spawner instead
// of failing on the dead one.
TEST_F(WorkerBinaryTest, ActionsStillRunAfterTheSandboxSpawnerIsKilled) {
  std::vector<std::string> flags = Flags();
  flags.push_back("--concurrency=1");
  WorkerProcess worker(flags);
  ASSERT_TRUE(worker.started());
  auto channel = grpc::CreateChannel(worker.address(), grpc::InsecureChannelCredentials());
  ASSERT_EQ(ExecuteShell(channel, "exit 3"), 3);
  std::vector<pid_t> spawners = ChildrenRunning(worker.pid(), "--spawner_fd=");
  ASSERT_EQ(spawners.size(), 1u);
  ASSERT_EQ(kill(spawners[0], SIGKILL), 0);
  // The slot's warm launcher (prepared after the first action) dies with it.
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  for (int round = 0; round < 3; ++round) EXPECT_EQ(ExecuteShell(channel, "exit 7"), 7) << "round " << round;
  std::vector<pid_t> now = ChildrenRunning(worker.pid(), "--spawner_fd=");
  ASSERT_EQ(now.size(), 1u);
  EXPECT_NE(now[0], spawners[0]);
}

// kill -9 of the worker while an action with a limit runs: its kiln-sandbox
// dies with it (the spawner ends with the worker's socket, and the launcher
// with the spawner: PDEATHSIG) without removing the action's cgroup, and
// the next start removes that cgroup.
TEST_F(WorkerBinaryTest, ACrashsLeftoverSandboxCgroupsAreRemovedAtTheNextStart) {
  auto worker = std::make_unique<WorkerProcess>(Flags());
  ASSERT_TRUE(worker->started());
  auto channel = grpc::CreateChannel(worker->address(), grpc::InsecureChannelCredentials());
  auto cas = rev2::ContentAddressableStorage::NewStub(channel);
  auto put = [&](const std::string& data) {
    rev2::BatchUpdateBlobsRequest request;
    auto* entry = request.add_requests();
    *entry->mutable_digest() = Digest::Of(data).ToProto();
    entry->set_data(data);
    rev2::BatchUpdateBlobsResponse response;
    grpc::ClientContext context;
    EXPECT_TRUE(cas->BatchUpdateBlobs(&context, request, &response).ok());
    return Digest::Of(data);
  };
  rev2::Command command;
  for (const char* arg : {"/bin/sleep", "30"}) command.add_arguments(arg);
  rev2::Action action;
  auto* property = action.mutable_platform()->add_properties();
  property->set_name("pids");
  property->set_value("64");
  *action.mutable_command_digest() = put(command.SerializeAsString()).ToProto();
  *action.mutable_input_root_digest() = put(rev2::Directory().SerializeAsString()).ToProto();
  rev2::ExecuteRequest request;
  *request.mutable_action_digest() = put(action.SerializeAsString()).ToProto();
  auto execution = rev2::Execution::NewStub(channel);
  grpc::ClientContext context;
  std::thread client([&] {
    auto reader = execution->Execute(&context, request);
    google::longrunning::Operation operation;
    while (reader->Read(&operation)) {
    }
    (void)reader->Finish();
  });

  // The action's cgroups: kiln-sandbox-<launcher>-N of a launcher the
  // worker started (forked by its sandbox spawner, the worker's child).
  std::vector<std::string> cgroups;
  pid_t launcher = 0;
  for (int attempt = 0; attempt < 200 && cgroups.empty(); ++attempt) {
    for (const std::string& parent : sandbox::ActionCgroupParents("")) {
      for (const auto& entry : std::filesystem::directory_iterator(parent)) {
        std::string name = entry.path().filename();
        if (name.rfind(sandbox::kSandboxCgroupPrefix, 0) != 0) continue;
        pid_t pid = std::atoi(name.c_str() + std::strlen(sandbox::kSandboxCgroupPrefix));
        if (pid > 0 && ParentOf(ParentOf(pid)) == worker->pid()) {
          launcher = pid;
          cgroups.push_back(entry.path());
        }
      }
    }
    if (cgroups.empty()) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  worker->Stop(SIGKILL);
  context.TryCancel();
  client.join();
  ASSERT_FALSE(cgroups.empty()) << "the action's cgroup never appeared";
  for (int attempt = 0; attempt < 100 && ParentOf(launcher) != 0; ++attempt) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ASSERT_EQ(ParentOf(launcher), 0) << "kiln-sandbox outlived its worker";
  // Left behind (unless a worker another test started meanwhile in this
  // cgroup already removed them: the same clean-up).
  for (const std::string& cgroup : cgroups) {
    if (!std::filesystem::exists(cgroup)) std::printf("%s: already removed by another worker\n", cgroup.c_str());
  }

  worker = std::make_unique<WorkerProcess>(Flags());
  ASSERT_TRUE(worker->started());
  for (const std::string& cgroup : cgroups) EXPECT_FALSE(std::filesystem::exists(cgroup)) << cgroup;
}

}  // namespace
}  // namespace kiln
