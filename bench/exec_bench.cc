// Per-action overhead and input staging of a running kiln-worker.
//
//   exec_bench --server=127.0.0.1:8980 --mode=overhead --actions=200 --clients=1
//   exec_bench --server=127.0.0.1:8980 --mode=staging --files=20000 --scratch=DIR
//
// overhead: Execute-to-result latency of /bin/true (unique salt, so neither
// the cache nor deduplication helps) minus the time /bin/true itself takes
// (a bare posix_spawn, measured in the same run); p50 and p99.
// staging: a tree of --files files in 100-file directories, executed twice
// (cold, then warm Directory cache); reports the worker's input-fetch time
// (ExecutedActionMetadata) next to `cp -al` of the same tree on the same disk.
#include <spawn.h>
#include <sys/wait.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <thread>
#include <vector>

#include <google/protobuf/util/time_util.h>
#include <grpcpp/create_channel.h>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "build/bazel/remote/execution/v2/remote_execution.grpc.pb.h"
#include "common/digest.h"

ABSL_FLAG(std::string, server, "127.0.0.1:8980", "kiln-worker address");
ABSL_FLAG(std::string, mode, "overhead", "overhead or staging");
ABSL_FLAG(int, actions, 200, "overhead: actions per client... in total");
ABSL_FLAG(int, clients, 1, "overhead: concurrent clients");
ABSL_FLAG(int, files, 20000, "staging: files in the input root");
ABSL_FLAG(std::string, scratch, "/tmp", "staging: where to build the tree for cp -al");
ABSL_FLAG(std::string, platform, "",
          "overhead: a platform property NAME=VALUE for the actions, e.g. to pick a pool behind a "
          "Buildbarn scheduler");

extern char** environ;

namespace {

namespace rev2 = build::bazel::remote::execution::v2;
using Clock = std::chrono::steady_clock;
using google::protobuf::util::TimeUtil;

double Ms(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

class Client {
 public:
  explicit Client(const std::string& server) {
    grpc::ChannelArguments args;
    args.SetMaxReceiveMessageSize(64 << 20);
    channel_ = grpc::CreateCustomChannel(server, grpc::InsecureChannelCredentials(), args);
    cas_ = rev2::ContentAddressableStorage::NewStub(channel_);
    execution_ = rev2::Execution::NewStub(channel_);
  }
  void PutAll(const std::vector<std::string>& blobs) {
    rev2::BatchUpdateBlobsRequest request;
    int64_t bytes = 0;
    auto flush = [&] {
      if (request.requests_size() == 0) return;
      rev2::BatchUpdateBlobsResponse response;
      grpc::ClientContext context;
      if (!cas_->BatchUpdateBlobs(&context, request, &response).ok()) std::abort();
      request.Clear();
      bytes = 0;
    };
    for (const std::string& blob : blobs) {
      if (bytes + static_cast<int64_t>(blob.size()) > 3000000) flush();
      auto* entry = request.add_requests();
      *entry->mutable_digest() = kiln::Digest::Of(blob).ToProto();
      entry->set_data(blob);
      bytes += blob.size();
    }
    flush();
  }
  kiln::Digest Put(const google::protobuf::Message& m) {
    std::string bytes = m.SerializeAsString();
    PutAll({bytes});
    return kiln::Digest::Of(bytes);
  }
  rev2::ExecuteResponse Execute(const kiln::Digest& action) {
    rev2::ExecuteRequest request;
    *request.mutable_action_digest() = action.ToProto();
    request.set_skip_cache_lookup(true);
    grpc::ClientContext context;
    auto reader = execution_->Execute(&context, request);
    google::longrunning::Operation operation;
    while (reader->Read(&operation)) {
    }
    if (!reader->Finish().ok()) std::abort();
    rev2::ExecuteResponse response;
    operation.response().UnpackTo(&response);
    if (response.status().code() != 0 || response.result().exit_code() != 0) {
      std::fprintf(stderr, "action failed: %s\n", response.status().message().c_str());
      std::abort();
    }
    return response;
  }

 private:
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<rev2::ContentAddressableStorage::Stub> cas_;
  std::unique_ptr<rev2::Execution::Stub> execution_;
};

double BareTrueMs() {
  std::vector<double> times;
  char* argv[] = {const_cast<char*>("/bin/true"), nullptr};
  for (int i = 0; i < 101; ++i) {
    auto start = Clock::now();
    pid_t pid;
    posix_spawn(&pid, argv[0], nullptr, nullptr, argv, environ);
    int status;
    waitpid(pid, &status, 0);
    times.push_back(Ms(Clock::now() - start));
  }
  std::sort(times.begin(), times.end());
  return times[50];
}

void Overhead(const std::string& server) {
  const int clients = absl::GetFlag(FLAGS_clients);
  const int total = absl::GetFlag(FLAGS_actions);
  Client setup(server);
  rev2::Command command;
  command.add_arguments("/bin/true");
  rev2::Platform platform;
  if (const std::string property = absl::GetFlag(FLAGS_platform); !property.empty()) {
    std::pair<std::string, std::string> name_value = absl::StrSplit(property, absl::MaxSplits('=', 1));
    auto* entry = platform.add_properties();
    entry->set_name(name_value.first);
    entry->set_value(name_value.second);
  }
  *command.mutable_platform() = platform;
  kiln::Digest command_digest = setup.Put(command);
  kiln::Digest root_digest = setup.Put(rev2::Directory());
  std::vector<kiln::Digest> actions;
  for (int i = 0; i < total; ++i) {
    rev2::Action action;
    *action.mutable_command_digest() = command_digest.ToProto();
    *action.mutable_input_root_digest() = root_digest.ToProto();
    action.set_salt(absl::StrCat("bench-", i, "-", std::chrono::system_clock::now().time_since_epoch().count()));
    action.set_do_not_cache(true);
    *action.mutable_platform() = platform;
    actions.push_back(setup.Put(action));
  }
  const double bare = BareTrueMs();
  std::vector<std::vector<double>> latencies(clients);
  // Where each action's time went, from the worker's own timestamps (same
  // host, same realtime clock): client send -> queued, the worker's parts,
  // worker_completed -> client has the result.
  struct Split {
    double in, queued, fetch, exec, upload, done, out;
  };
  std::vector<std::vector<Split>> splits(clients);
  auto start = Clock::now();
  std::vector<std::thread> threads;
  for (int c = 0; c < clients; ++c) {
    threads.emplace_back([&, c] {
      Client client(server);
      for (int i = c; i < total; i += clients) {
        auto t0 = Clock::now();
        const int64_t sent = absl::ToUnixNanos(absl::Now());
        rev2::ExecuteResponse response = client.Execute(actions[i]);
        const int64_t received = absl::ToUnixNanos(absl::Now());
        latencies[c].push_back(Ms(Clock::now() - t0));
        const auto& m = response.result().execution_metadata();
        auto ns = [](const google::protobuf::Timestamp& t) { return TimeUtil::TimestampToNanoseconds(t); };
        splits[c].push_back(Split{
            (ns(m.queued_timestamp()) - sent) / 1e6,
            (ns(m.worker_start_timestamp()) - ns(m.queued_timestamp())) / 1e6,
            (ns(m.input_fetch_completed_timestamp()) - ns(m.worker_start_timestamp())) / 1e6,
            (ns(m.execution_completed_timestamp()) - ns(m.input_fetch_completed_timestamp())) / 1e6,
            (ns(m.output_upload_completed_timestamp()) - ns(m.execution_completed_timestamp())) / 1e6,
            (ns(m.worker_completed_timestamp()) - ns(m.output_upload_completed_timestamp())) / 1e6,
            (received - ns(m.worker_completed_timestamp())) / 1e6});
      }
    });
  }
  for (auto& t : threads) t.join();
  double wall = Ms(Clock::now() - start);
  std::vector<double> all;
  for (auto& l : latencies) all.insert(all.end(), l.begin(), l.end());
  std::sort(all.begin(), all.end());
  double p50 = all[all.size() / 2], p99 = all[std::min(all.size() - 1, all.size() * 99 / 100)];
  std::printf("clients=%d actions=%d  bare /bin/true %.2f ms\n", clients, total, bare);
  std::printf("Execute-to-result  p50 %.2f ms  p99 %.2f ms\n", p50, p99);
  std::printf("overhead (minus bare /bin/true)  p50 %.2f ms  p99 %.2f ms\n", p50 - bare, p99 - bare);
  std::printf("throughput %.1f actions/s\n", total / (wall / 1000));
  std::vector<Split> every;
  for (auto& s : splits) every.insert(every.end(), s.begin(), s.end());
  auto median = [&](double Split::*field) {
    std::vector<double> v;
    for (const Split& s : every) v.push_back(s.*field);
    std::nth_element(v.begin(), v.begin() + v.size() / 2, v.end());
    return v[v.size() / 2];
  };
  std::printf(
      "p50 split (ms): send->queued %.2f  queued->slot %.2f  slot->staged %.2f  staged->sandbox done %.2f  "
      "outputs %.2f  ->completed %.2f  completed->client %.2f\n",
      median(&Split::in), median(&Split::queued), median(&Split::fetch), median(&Split::exec),
      median(&Split::upload), median(&Split::done), median(&Split::out));
}

void Staging(const std::string& server) {
  const int files = absl::GetFlag(FLAGS_files);
  const int per_dir = 100;
  Client client(server);
  std::filesystem::path tree = std::filesystem::path(absl::GetFlag(FLAGS_scratch)) / "kiln-staging-tree";
  std::filesystem::remove_all(tree);
  std::vector<std::string> blobs;
  rev2::Directory root;
  for (int d = 0; d * per_dir < files; ++d) {
    rev2::Directory dir;
    std::string name = absl::StrFormat("d%04d", d);
    std::filesystem::create_directories(tree / name);
    for (int f = d * per_dir; f < std::min(files, (d + 1) * per_dir); ++f) {
      std::string content = absl::StrCat("file ", f, "\n");
      std::string file_name = absl::StrFormat("f%05d.txt", f);
      std::ofstream(tree / name / file_name) << content;
      auto* node = dir.add_files();
      node->set_name(file_name);
      *node->mutable_digest() = kiln::Digest::Of(content).ToProto();
      blobs.push_back(content);
    }
    std::string dir_bytes = dir.SerializeAsString();
    blobs.push_back(dir_bytes);
    auto* child = root.add_directories();
    child->set_name(name);
    *child->mutable_digest() = kiln::Digest::Of(dir_bytes).ToProto();
  }
  client.PutAll(blobs);
  kiln::Digest root_digest = client.Put(root);
  rev2::Command command;
  command.add_arguments("/bin/true");
  kiln::Digest command_digest = client.Put(command);
  auto stage_ms = [&](int run) {
    rev2::Action action;
    *action.mutable_command_digest() = command_digest.ToProto();
    *action.mutable_input_root_digest() = root_digest.ToProto();
    action.set_salt(absl::StrCat("staging-", run, "-", std::chrono::system_clock::now().time_since_epoch().count()));
    rev2::ExecuteResponse response = client.Execute(client.Put(action));
    const auto& m = response.result().execution_metadata();
    if (getenv("KILN_BENCH_DEBUG")) std::fprintf(stderr, "%s\n", m.DebugString().c_str());
    return (TimeUtil::TimestampToNanoseconds(m.input_fetch_completed_timestamp()) -
            TimeUtil::TimestampToNanoseconds(m.input_fetch_start_timestamp())) / 1e6;
  };
  double cold = stage_ms(1);
  double warm = stage_ms(2);
  double warm2 = stage_ms(3);
  std::filesystem::path copy = tree.string() + "-copy";
  std::filesystem::remove_all(copy);
  std::string cp = absl::StrCat("cp -al ", tree.string(), " ", copy.string());
  auto t0 = Clock::now();
  if (std::system(cp.c_str()) != 0) std::abort();
  double cp_ms = Ms(Clock::now() - t0);
  std::filesystem::remove_all(copy);
  std::filesystem::remove_all(tree);
  std::printf("input root of %d files in %d directories\n", files, (files + per_dir - 1) / per_dir);
  std::printf("kiln staging: first %.1f ms, repeated %.1f ms and %.1f ms\n", cold, warm, warm2);
  std::printf("cp -al of the same tree: %.1f ms   (repeated kiln / cp -al = %.2f)\n", cp_ms,
              std::min(warm, warm2) / cp_ms);
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  if (absl::GetFlag(FLAGS_mode) == "staging") {
    Staging(absl::GetFlag(FLAGS_server));
  } else {
    Overhead(absl::GetFlag(FLAGS_server));
  }
  return 0;
}
