// Per-call cost of TLS and of credential checks, against running workers.
//
//   auth_bench --server=localhost:PORT [--tls_ca=ca.pem] [--token=SECRET]
//              [--calls=200] [--executes=30]
//
// One channel, reused (as Bazel and kiln do), so the TLS handshake is paid
// once and what is measured is the per-call cost: FindMissingBlobs of 1,000
// digests (half present), Execute answered from the action cache (the RPC
// path alone), and Execute of /bin/true with skip_cache_lookup (a whole
// action). Prints one line: p50 of each in ms. bench/run_auth_bench.sh runs
// it against workers in every mode, interleaved, and prints the ratios.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <vector>

#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "build/bazel/remote/execution/v2/remote_execution.grpc.pb.h"
#include "common/digest.h"

ABSL_FLAG(std::string, server, "localhost:8980", "kiln-worker gRPC address");
ABSL_FLAG(std::string, tls_ca, "", "PEM CA to trust: speak TLS");
ABSL_FLAG(std::string, token, "", "bearer token to send with every call");
ABSL_FLAG(int, calls, 200, "FindMissingBlobs and cached Execute calls to time");
ABSL_FLAG(int, executes, 30, "uncached /bin/true Executes to time");
ABSL_FLAG(std::string, salt, "", "makes this run's actions distinct from earlier runs'");

namespace {

namespace rev2 = build::bazel::remote::execution::v2;
using Clock = std::chrono::steady_clock;

class Bench {
 public:
  Bench() {
    std::shared_ptr<grpc::ChannelCredentials> credentials = grpc::InsecureChannelCredentials();
    if (const std::string ca = absl::GetFlag(FLAGS_tls_ca); !ca.empty()) {
      std::ifstream in(ca);
      grpc::SslCredentialsOptions ssl;
      ssl.pem_root_certs.assign(std::istreambuf_iterator<char>(in), {});
      credentials = grpc::SslCredentials(ssl);
    }
    auto channel = grpc::CreateChannel(absl::GetFlag(FLAGS_server), credentials);
    cas_ = rev2::ContentAddressableStorage::NewStub(channel);
    execution_ = rev2::Execution::NewStub(channel);
  }

  void Prepare(grpc::ClientContext* context) const {
    context->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
    if (const std::string token = absl::GetFlag(FLAGS_token); !token.empty()) {
      context->AddMetadata("authorization", "Bearer " + token);
    }
  }

  kiln::Digest Put(const std::string& bytes) {
    rev2::BatchUpdateBlobsRequest request;
    auto* entry = request.add_requests();
    *entry->mutable_digest() = kiln::Digest::Of(bytes).ToProto();
    entry->set_data(bytes);
    rev2::BatchUpdateBlobsResponse response;
    grpc::ClientContext context;
    Prepare(&context);
    Check(cas_->BatchUpdateBlobs(&context, request, &response), "BatchUpdateBlobs");
    return kiln::Digest::Of(bytes);
  }

  void FindMissing(const rev2::FindMissingBlobsRequest& request) {
    rev2::FindMissingBlobsResponse response;
    grpc::ClientContext context;
    Prepare(&context);
    Check(cas_->FindMissingBlobs(&context, request, &response), "FindMissingBlobs");
  }

  void Execute(const kiln::Digest& action, bool skip_cache_lookup) {
    rev2::ExecuteRequest request;
    *request.mutable_action_digest() = action.ToProto();
    request.set_skip_cache_lookup(skip_cache_lookup);
    grpc::ClientContext context;
    Prepare(&context);
    auto reader = execution_->Execute(&context, request);
    google::longrunning::Operation operation;
    while (reader->Read(&operation)) {
    }
    Check(reader->Finish(), "Execute");
    rev2::ExecuteResponse response;
    operation.response().UnpackTo(&response);
    if (response.status().code() != 0 || response.result().exit_code() != 0) {
      std::fprintf(stderr, "auth_bench: the action failed: %s\n", response.status().message().c_str());
      std::exit(1);
    }
  }

 private:
  static void Check(const grpc::Status& status, const char* what) {
    if (status.ok()) return;
    std::fprintf(stderr, "auth_bench: %s: %s\n", what, status.error_message().c_str());
    std::exit(1);
  }

  std::unique_ptr<rev2::ContentAddressableStorage::Stub> cas_;
  std::unique_ptr<rev2::Execution::Stub> execution_;
};

template <typename F>
double P50Ms(int n, F&& f) {
  std::vector<double> ms;
  for (int i = 0; i < n; ++i) {
    auto start = Clock::now();
    f(i);
    ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - start).count());
  }
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  Bench bench;
  const std::string salt = absl::GetFlag(FLAGS_salt);

  rev2::FindMissingBlobsRequest find;
  for (int i = 0; i < 1000; ++i) {
    std::string blob = absl::StrCat("auth-bench blob ", i);
    kiln::Digest digest = i % 2 == 0 ? bench.Put(blob) : kiln::Digest::Of(blob + " absent");
    *find.add_blob_digests() = digest.ToProto();
  }
  rev2::Command command;
  command.add_arguments("/bin/true");
  const kiln::Digest command_digest = bench.Put(command.SerializeAsString());
  const kiln::Digest root = bench.Put(rev2::Directory().SerializeAsString());
  auto action = [&](const std::string& action_salt, bool cache) {
    rev2::Action a;
    *a.mutable_command_digest() = command_digest.ToProto();
    *a.mutable_input_root_digest() = root.ToProto();
    a.set_salt(action_salt);
    a.set_do_not_cache(!cache);
    return bench.Put(a.SerializeAsString());
  };
  const kiln::Digest cached = action("cached " + salt, true);
  bench.Execute(cached, false);  // runs once; the timed calls are cache hits
  std::vector<kiln::Digest> fresh;
  for (int i = 0; i < absl::GetFlag(FLAGS_executes); ++i) fresh.push_back(action(absl::StrCat(salt, " ", i), false));
  for (int i = 0; i < 20; ++i) bench.FindMissing(find);  // warm-up

  const double find_ms = P50Ms(absl::GetFlag(FLAGS_calls), [&](int) { bench.FindMissing(find); });
  const double hit_ms = P50Ms(absl::GetFlag(FLAGS_calls), [&](int) { bench.Execute(cached, false); });
  const double run_ms = P50Ms(static_cast<int>(fresh.size()), [&](int i) { bench.Execute(fresh[i], true); });
  std::printf("find_missing_1000=%.3f execute_cache_hit=%.3f execute_true=%.3f\n", find_ms, hit_ms, run_ms);
  return 0;
}
