// Live stdout/stderr and the `kiln` client, against the real kiln-worker
// binary: lines arrive while the action runs, through `kiln run` and through
// a plain ByteStream reader; concurrent and late readers get identical bytes;
// 200 MB of output keeps the worker's memory bounded; and `kiln run` passes
// exit codes through, puts outputs in place, uploads only what is missing,
// and fails clearly.
#include <fcntl.h>
#include <poll.h>
#include <spawn.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <thread>

#include <grpcpp/create_channel.h>
#include <gtest/gtest.h>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "build/bazel/remote/execution/v2/remote_execution.grpc.pb.h"
#include "common/digest.h"
#include "common/posix.h"
#include "common/sha256.h"
#include "google/bytestream/bytestream.grpc.pb.h"
#include "tests/worker_process.h"

extern char** environ;

namespace kiln {
namespace {

using testing::RunToCompletion;
using testing::WorkerProcess;
namespace bs = google::bytestream;

double NowSeconds() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

// The action prints "tick N <epoch seconds>" once a second, five times.
constexpr char kTicker[] =
    "for i in 1 2 3 4 5; do echo tick $i $(date +%s.%N); sleep 1; done";

// A line and when it reached us, against when the action printed it.
struct Arrival {
  std::string line;
  double printed = 0;
  double arrived = 0;
};

// Starts `argv` with its stdout on a pipe; returns the read end (-1 on error).
int SpawnWithStdoutPipe(std::vector<std::string> argv, pid_t* pid) {
  int out[2];
  if (pipe2(out, O_CLOEXEC) != 0) return -1;
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, out[1], 1);
  std::vector<char*> args;
  for (auto& a : argv) args.push_back(a.data());
  args.push_back(nullptr);
  int error = posix_spawn(pid, args[0], &actions, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  close(out[1]);
  if (error != 0) {
    close(out[0]);
    return -1;
  }
  return out[0];
}

void CollectLines(std::string& pending, double now, std::vector<Arrival>* arrivals) {
  size_t newline;
  while ((newline = pending.find('\n')) != std::string::npos) {
    Arrival a;
    a.line = pending.substr(0, newline);
    pending.erase(0, newline + 1);
    std::vector<std::string> parts = absl::StrSplit(a.line, ' ');
    if (parts.size() == 3 && parts[0] == "tick") (void)absl::SimpleAtod(parts[2], &a.printed);
    a.arrived = now;
    arrivals->push_back(a);
  }
}

class LiveLogsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string pattern = ::testing::TempDir() + "/kiln-live-XXXXXX";
    dir_ = mkdtemp(pattern.data());
    worker_ = std::make_unique<WorkerProcess>(std::vector<std::string>{
        "--listen=127.0.0.1:0", "--metrics_listen=", "--state_dir=" + dir_ + "/state", "--concurrency=2"});
    ASSERT_TRUE(worker_->started());
    channel_ = grpc::CreateChannel(worker_->address(), grpc::InsecureChannelCredentials());
    input_ = dir_ + "/input";
    std::filesystem::create_directories(input_);
  }
  void TearDown() override {
    worker_.reset();
    (void)RemoveTree(dir_);
  }
  std::string Kiln() {
    const char* bin = getenv("KILN_BIN_DIR");
    return std::string(bin ? bin : "build/bin") + "/kiln";
  }
  std::vector<std::string> KilnRun(std::vector<std::string> options, const std::string& script) {
    std::vector<std::string> argv = {Kiln(), "run", "--server=" + worker_->address(),
                                     "--input_root=" + input_, "--env=PATH=/usr/bin:/bin"};
    argv.insert(argv.end(), options.begin(), options.end());
    argv.insert(argv.end(), {"--", "/bin/sh", "-c", script});
    return argv;
  }
  // Starts the ticker through the Execute API; returns the stdout stream name.
  std::string StartTicker(grpc::ClientContext* context,
                          std::unique_ptr<grpc::ClientReader<google::longrunning::Operation>>* reader) {
    auto cas = rev2::ContentAddressableStorage::NewStub(channel_);
    auto put = [&](const std::string& data) {
      rev2::BatchUpdateBlobsRequest request;
      auto* entry = request.add_requests();
      *entry->mutable_digest() = Digest::Of(data).ToProto();
      entry->set_data(data);
      rev2::BatchUpdateBlobsResponse response;
      grpc::ClientContext c;
      EXPECT_TRUE(cas->BatchUpdateBlobs(&c, request, &response).ok());
      return Digest::Of(data);
    };
    rev2::Command command;
    for (const char* arg : {"/bin/sh", "-c", kTicker}) command.add_arguments(arg);
    auto* path = command.add_environment_variables();
    path->set_name("PATH");
    path->set_value("/usr/bin:/bin");
    rev2::Action action;
    *action.mutable_command_digest() = put(command.SerializeAsString()).ToProto();
    *action.mutable_input_root_digest() = put(rev2::Directory().SerializeAsString()).ToProto();
    action.set_salt(absl::StrCat(NowSeconds()));
    rev2::ExecuteRequest request;
    *request.mutable_action_digest() = put(action.SerializeAsString()).ToProto();
    execution_ = rev2::Execution::NewStub(channel_);
    *reader = execution_->Execute(context, request);
    google::longrunning::Operation operation;
    while ((*reader)->Read(&operation)) {
      rev2::ExecuteOperationMetadata metadata;
      operation.metadata().UnpackTo(&metadata);
      if (!metadata.stdout_stream_name().empty()) return metadata.stdout_stream_name();
    }
    return "";
  }
  std::string ReadStream(const std::string& name, std::vector<Arrival>* arrivals = nullptr,
                         grpc::Status* status = nullptr) {
    auto bytestream = bs::ByteStream::NewStub(channel_);
    grpc::ClientContext context;
    bs::ReadRequest request;
    request.set_resource_name(name);
    auto reader = bytestream->Read(&context, request);
    bs::ReadResponse response;
    std::string all, pending;
    while (reader->Read(&response)) {
      all += response.data();
      pending += response.data();
      if (arrivals != nullptr) CollectLines(pending, NowSeconds(), arrivals);
    }
    grpc::Status finished = reader->Finish();
    if (status != nullptr) *status = finished;
    return all;
  }

  std::string dir_;
  std::string input_;
  std::unique_ptr<WorkerProcess> worker_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<rev2::Execution::Stub> execution_;
};

void ExpectLive(const std::vector<Arrival>& arrivals, double finished_at) {
  ASSERT_EQ(arrivals.size(), 5u);
  for (const Arrival& a : arrivals) {
    ASSERT_GT(a.printed, 0) << a.line;
    EXPECT_LT(a.arrived - a.printed, 1.0) << a.line << " arrived " << a.arrived - a.printed << " s late";
  }
  // The first line long before the action ends: streaming, not buffering.
  EXPECT_GT(finished_at - arrivals.front().arrived, 3.0);
}

TEST_F(LiveLogsTest, KilnRunPrintsEachLineWithinASecond) {
  pid_t pid;
  int out = SpawnWithStdoutPipe(KilnRun({}, kTicker), &pid);
  ASSERT_GE(out, 0);
  std::vector<Arrival> arrivals;
  std::string pending;
  char buffer[4096];
  for (ssize_t n; (n = read(out, buffer, sizeof buffer)) > 0;) {
    pending.append(buffer, n);
    CollectLines(pending, NowSeconds(), &arrivals);
  }
  double finished_at = NowSeconds();
  close(out);
  int status = 0;
  waitpid(pid, &status, 0);
  EXPECT_EQ(WEXITSTATUS(status), 0);
  ExpectLive(arrivals, finished_at);
}

TEST_F(LiveLogsTest, APlainByteStreamReaderGetsEachLineWithinASecond) {
  grpc::ClientContext context;
  std::unique_ptr<grpc::ClientReader<google::longrunning::Operation>> execution;
  std::string name = StartTicker(&context, &execution);
  ASSERT_FALSE(name.empty());
  std::vector<Arrival> arrivals;
  grpc::Status status;
  ReadStream(name, &arrivals, &status);
  double finished_at = NowSeconds();
  EXPECT_TRUE(status.ok()) << status.error_message();
  ExpectLive(arrivals, finished_at);
  google::longrunning::Operation operation;
  while (execution->Read(&operation)) {
  }
  execution->Finish();
  // Once the operation is over, its stream names are gone.
  grpc::Status after;
  ReadStream(name, nullptr, &after);
  EXPECT_EQ(after.error_code(), grpc::StatusCode::NOT_FOUND);
  ReadStream("kiln-logs/never-existed/stdout", nullptr, &after);
  EXPECT_EQ(after.error_code(), grpc::StatusCode::NOT_FOUND);
}

TEST_F(LiveLogsTest, ConcurrentAndLateReadersGetIdenticalCompleteBytes) {
  grpc::ClientContext context;
  std::unique_ptr<grpc::ClientReader<google::longrunning::Operation>> execution;
  std::string name = StartTicker(&context, &execution);
  ASSERT_FALSE(name.empty());
  std::string got[3];
  std::thread early1([&] { got[0] = ReadStream(name); });
  std::thread early2([&] { got[1] = ReadStream(name); });
  std::this_thread::sleep_for(std::chrono::milliseconds(2500));
  std::thread late([&] { got[2] = ReadStream(name); });
  early1.join();
  early2.join();
  late.join();
  google::longrunning::Operation operation;
  while (execution->Read(&operation)) {
  }
  ASSERT_TRUE(execution->Finish().ok());
  rev2::ExecuteResponse response;
  operation.response().UnpackTo(&response);
  EXPECT_EQ(got[0].size(), static_cast<size_t>(response.result().stdout_digest().size_bytes()));
  EXPECT_EQ(Digest::Of(got[0]).hash, response.result().stdout_digest().hash());
  EXPECT_EQ(got[0], got[1]);
  EXPECT_EQ(got[0], got[2]);
}

int64_t PeakRssKiB(pid_t pid) {
  std::ifstream status(absl::StrCat("/proc/", pid, "/status"));
  for (std::string line; std::getline(status, line);) {
    int64_t kib = 0;
    if (line.rfind("VmHWM:", 0) == 0 && absl::SimpleAtoi(absl::StripAsciiWhitespace(line.substr(6, line.size() - 9)), &kib)) {
      return kib;
    }
  }
  return -1;
}

TEST_F(LiveLogsTest, TwoHundredMegabytesOfOutputKeepTheWorkerSmall) {
  int64_t before = PeakRssKiB(worker_->pid());
  ASSERT_GT(before, 0);
  // Stream kiln's stdout through a hash without keeping it.
  pid_t pid;
  int out = SpawnWithStdoutPipe(
      KilnRun({}, "head -c 200000000 /dev/urandom | od -An -tx1 | head -c 200000000"), &pid);
  ASSERT_GE(out, 0);
  Sha256 hash;
  int64_t received = 0;
  std::vector<char> buffer(1 << 20);
  for (ssize_t n; (n = read(out, buffer.data(), buffer.size())) > 0;) {
    hash.Update(absl::string_view(buffer.data(), n));
    received += n;
  }
  close(out);
  int status = 0;
  waitpid(pid, &status, 0);
  ASSERT_EQ(WEXITSTATUS(status), 0);
  EXPECT_EQ(received, 200000000);
  int64_t after = PeakRssKiB(worker_->pid());
  // The output went through files and 1 MiB chunks, never whole into memory.
  EXPECT_LT(after - before, 100 * 1024) << "worker peak RSS grew from " << before << " to " << after << " KiB";
  // What the client received is exactly the stdout blob in the CAS.
  std::string digest_hex = hash.FinishHex();
  auto cas = rev2::ContentAddressableStorage::NewStub(channel_);
  rev2::FindMissingBlobsRequest find;
  *find.add_blob_digests() = Digest{digest_hex, received}.ToProto();
  rev2::FindMissingBlobsResponse missing;
  grpc::ClientContext context;
  ASSERT_TRUE(cas->FindMissingBlobs(&context, find, &missing).ok());
  EXPECT_EQ(missing.missing_blob_digests_size(), 0) << "the received bytes are not the stdout blob";
}

TEST_F(LiveLogsTest, KilnRunPassesExitCodesAndSignalsThrough) {
  auto exited = RunToCompletion(KilnRun({}, "echo out; echo err >&2; exit 42"));
  EXPECT_EQ(exited.exit_code, 42);
  EXPECT_EQ(exited.stdout_text, "out\n");
  EXPECT_EQ(exited.stderr_text, "err\n");
  EXPECT_EQ(RunToCompletion(KilnRun({}, "kill -TERM $$")).exit_code, 128 + 15);
  EXPECT_EQ(RunToCompletion(KilnRun({}, "kill -KILL $$")).exit_code, 128 + 9);
}

TEST_F(LiveLogsTest, KilnRunPutsOutputsInPlace) {
  std::ofstream(input_ + "/data.txt") << "payload";
  auto r = RunToCompletion(KilnRun({"--output=out/copy.txt", "--output=out/tree"},
                                   "mkdir -p out/tree/sub; cp data.txt out/copy.txt;"
                                   "echo deep > out/tree/sub/f; printf '#!/bin/sh\\n' > out/tree/run;"
                                   "chmod +x out/tree/run; ln -s sub/f out/tree/link"));
  ASSERT_EQ(r.exit_code, 0) << r.stderr_text;
  std::ifstream copy(input_ + "/out/copy.txt");
  std::string text((std::istreambuf_iterator<char>(copy)), std::istreambuf_iterator<char>());
  EXPECT_EQ(text, "payload");
  EXPECT_TRUE(std::filesystem::exists(input_ + "/out/tree/sub/f"));
  EXPECT_EQ(std::filesystem::read_symlink(input_ + "/out/tree/link").string(), "sub/f");
  EXPECT_TRUE((std::filesystem::status(input_ + "/out/tree/run").permissions() &
               std::filesystem::perms::owner_exec) != std::filesystem::perms::none);
}

TEST_F(LiveLogsTest, KilnRunUploadsOnlyMissingBlobs) {
  std::filesystem::create_directories(input_ + "/a");
  std::filesystem::create_directories(input_ + "/b");
  std::ofstream(input_ + "/a/x") << "x content";
  std::ofstream(input_ + "/b/y") << "y content";
  auto first = RunToCompletion(KilnRun({"--verbose"}, "cat a/x b/y"));
  ASSERT_EQ(first.exit_code, 0) << first.stderr_text;
  // x, y, dirs a and b, the root, the Command and the Action.
  EXPECT_NE(first.stderr_text.find("uploaded 7 of 7 blobs"), std::string::npos) << first.stderr_text;
  std::ofstream(input_ + "/b/y") << "y changed";
  auto second = RunToCompletion(KilnRun({"--verbose"}, "cat a/x b/y"));
  ASSERT_EQ(second.exit_code, 0);
  EXPECT_EQ(second.stdout_text, "x contenty changed");
  // Only the new y, its directory b, the root and the Action.
  EXPECT_NE(second.stderr_text.find("uploaded 4 of 7 blobs"), std::string::npos) << second.stderr_text;
}

// A real project directory (issue 11): a Python venv's absolute symlink
// used to make the server refuse the whole input root, and build output was
// uploaded with everything else.
TEST_F(LiveLogsTest, KilnRunSendsWhatOutsideSymlinksPointToAndLeavesExcludesOut) {
  std::filesystem::create_directories(input_ + "/venv/bin");
  std::filesystem::create_directories(input_ + "/build/obj");
  std::filesystem::create_directories(input_ + "/src");
  std::filesystem::create_symlink("/bin/sh", input_ + "/venv/bin/python3");
  std::filesystem::create_symlink("python3", input_ + "/venv/bin/python");
  std::ofstream(input_ + "/build/obj/big.o") << std::string(1 << 20, 'o');
  std::ofstream(input_ + "/src/main.c") << "int main() {}\n";
  std::ofstream(input_ + "/src/main.o") << "object";
  std::ofstream(input_ + "/.kilnignore") << "# build output\n*.o\n";
  const std::string script =
      "test -f venv/bin/python3 && test ! -L venv/bin/python3 && test -x venv/bin/python3 &&"
      "test \"$(readlink venv/bin/python)\" = python3 && venv/bin/python -c 'echo venv works' &&"
      "test ! -e build && test ! -e src/main.o && test -f src/main.c";
  auto run = RunToCompletion(KilnRun({"--exclude=build/"}, script));
  EXPECT_EQ(run.exit_code, 0) << run.stdout_text << run.stderr_text;
  EXPECT_EQ(run.stdout_text, "venv works\n");
  // Kept as a symlink, the same tree is refused by this server, by name.
  auto preserved = RunToCompletion(KilnRun({"--exclude=build/", "--preserve_symlinks"}, "true"));
  EXPECT_EQ(preserved.exit_code, 65) << preserved.stderr_text;
  EXPECT_NE(preserved.stderr_text.find("python3"), std::string::npos) << preserved.stderr_text;
}

TEST_F(LiveLogsTest, KilnRunFailsClearlyWithDistinctCodes) {
  auto unreachable = RunToCompletion({Kiln(), "run", "--server=127.0.0.1:1", "--", "true"});
  EXPECT_EQ(unreachable.exit_code, 69);
  EXPECT_NE(unreachable.stderr_text.find("cannot reach the server at 127.0.0.1:1"), std::string::npos);
  EXPECT_EQ(std::count(unreachable.stderr_text.begin(), unreachable.stderr_text.end(), '\n'), 1);
  auto timeout = RunToCompletion(KilnRun({"--timeout=1s"}, "echo started; sleep 30"));
  EXPECT_EQ(timeout.exit_code, 124);
  EXPECT_EQ(timeout.stdout_text, "started\n");
  EXPECT_NE(timeout.stderr_text.find("timed out"), std::string::npos);
  auto rejected = RunToCompletion(KilnRun({"--platform=gpu=yes"}, "true"));
  EXPECT_EQ(rejected.exit_code, 65);
  EXPECT_NE(rejected.stderr_text.find("gpu"), std::string::npos) << rejected.stderr_text;
  auto usage = RunToCompletion({Kiln(), "run", "--frobnicate"});
  EXPECT_EQ(usage.exit_code, 64);
  auto help = RunToCompletion({Kiln(), "run", "--help"});
  EXPECT_EQ(help.exit_code, 0);
  EXPECT_NE(help.stdout_text.find("Example:"), std::string::npos);
}

TEST_F(LiveLogsTest, CasPutGetAndResult) {
  std::ofstream(input_ + "/blob.txt") << "some bytes";
  auto put = RunToCompletion({Kiln(), "cas", "put", "--server=" + worker_->address(), input_ + "/blob.txt"});
  ASSERT_EQ(put.exit_code, 0) << put.stderr_text;
  EXPECT_EQ(put.stdout_text, Digest::Of("some bytes").ToString() + "\n");
  auto get = RunToCompletion({Kiln(), "cas", "get", "--server=" + worker_->address(),
                              Digest::Of("some bytes").ToString(), dir_ + "/back.txt"});
  ASSERT_EQ(get.exit_code, 0) << get.stderr_text;
  std::ifstream back(dir_ + "/back.txt");
  EXPECT_EQ(std::string((std::istreambuf_iterator<char>(back)), std::istreambuf_iterator<char>()), "some bytes");
  auto run = RunToCompletion(KilnRun({"--verbose"}, "echo cached"));
  ASSERT_EQ(run.exit_code, 0);
  size_t at = run.stderr_text.find("action ");
  ASSERT_NE(at, std::string::npos);
  std::string action = run.stderr_text.substr(at + 7, run.stderr_text.find('\n', at) - at - 7);
  auto result = RunToCompletion({Kiln(), "result", "--server=" + worker_->address(), action});
  ASSERT_EQ(result.exit_code, 0) << result.stderr_text;
  EXPECT_NE(result.stdout_text.find("\"stdout_digest\""), std::string::npos) << result.stdout_text;
  for (const char* command : {"put", "get"}) {
    auto help = RunToCompletion({Kiln(), "cas", command, "--help"});
    EXPECT_NE(help.stdout_text.find("Example:"), std::string::npos);
  }
}

}  // namespace
}  // namespace kiln
