// Authentication and authorization against the real kiln-worker binary:
// every RPC of every service (enumerated from the service descriptors, so a
// new method fails here until it is covered) without credentials, with a
// wrong token, with a principal lacking each grant; client certificates from
// the right and from another CA; the cache-poisoning attack; rotation of the
// token file and of the server certificate without a restart. Certificates
// are made at test time with the openssl CLI.
#include <signal.h>
#include <sys/stat.h>
#include <stdlib.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <functional>
#include <map>
#include <set>
#include <thread>

#include <google/protobuf/descriptor.h>
#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>

#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "build/bazel/remote/execution/v2/remote_execution.grpc.pb.h"
#include "common/digest.h"
#include "common/posix.h"
#include "common/sha256.h"
#include "google/bytestream/bytestream.grpc.pb.h"
#include "google/longrunning/operations.grpc.pb.h"
#include "tests/worker_process.h"

namespace kiln {
namespace {

namespace rev2 = ::build::bazel::remote::execution::v2;
namespace bs = ::google::bytestream;
namespace lro = ::google::longrunning;
using grpc::StatusCode;
using testing::RunToCompletion;
using testing::WorkerProcess;

// The grants of the principals file, and which one each method needs.
const std::vector<std::string> kPermissions = {"cas-read", "cas-write", "ac-read",
                                               "ac-write", "execute",   "operations"};

struct Call {
  std::shared_ptr<grpc::Channel> channel;
  std::string token;  // empty: none sent
  void Prepare(grpc::ClientContext* context) const {
    context->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
    if (!token.empty()) context->AddMetadata("authorization", "Bearer " + token);
  }
};

struct Method {
  std::string permission;  // "" for Capabilities: any grant
  std::function<grpc::Status(const Call&)> call;
};

const std::string kBlobHash = Digest::Of("x").hash;

template <typename Reader, typename Response>
grpc::Status Drain(Reader reader, Response* response) {
  while (reader->Read(response)) {
  }
  return reader->Finish();
}

// Every method of every service but Health and reflection; the
// "ByteStream/Read (kiln-logs)" entry is the live-log form of Read.
std::map<std::string, Method> MethodTable() {
  std::map<std::string, Method> table;
  const std::string cas = "build.bazel.remote.execution.v2.ContentAddressableStorage/";
  table["build.bazel.remote.execution.v2.Capabilities/GetCapabilities"] = {"", [](const Call& c) {
    grpc::ClientContext context;
    c.Prepare(&context);
    rev2::ServerCapabilities response;
    return rev2::Capabilities::NewStub(c.channel)->GetCapabilities(&context, {}, &response);
  }};
  table[cas + "FindMissingBlobs"] = {"cas-read", [](const Call& c) {
    grpc::ClientContext context;
    c.Prepare(&context);
    rev2::FindMissingBlobsResponse response;
    return rev2::ContentAddressableStorage::NewStub(c.channel)->FindMissingBlobs(&context, {}, &response);
  }};
  table[cas + "BatchUpdateBlobs"] = {"cas-write", [](const Call& c) {
    grpc::ClientContext context;
    c.Prepare(&context);
    rev2::BatchUpdateBlobsResponse response;
    return rev2::ContentAddressableStorage::NewStub(c.channel)->BatchUpdateBlobs(&context, {}, &response);
  }};
  table[cas + "BatchReadBlobs"] = {"cas-read", [](const Call& c) {
    grpc::ClientContext context;
    c.Prepare(&context);
    rev2::BatchReadBlobsResponse response;
    return rev2::ContentAddressableStorage::NewStub(c.channel)->BatchReadBlobs(&context, {}, &response);
  }};
  table[cas + "GetTree"] = {"cas-read", [](const Call& c) {
    grpc::ClientContext context;
    c.Prepare(&context);
    rev2::GetTreeResponse response;
    return Drain(rev2::ContentAddressableStorage::NewStub(c.channel)->GetTree(&context, {}), &response);
  }};
  table["google.bytestream.ByteStream/Read"] = {"cas-read", [](const Call& c) {
    grpc::ClientContext context;
    c.Prepare(&context);
    bs::ReadRequest request;
    request.set_resource_name(absl::StrCat("blobs/", kBlobHash, "/1"));
    bs::ReadResponse response;
    return Drain(bs::ByteStream::NewStub(c.channel)->Read(&context, request), &response);
  }};
  table["google.bytestream.ByteStream/Read (kiln-logs)"] = {"execute", [](const Call& c) {
    grpc::ClientContext context;
    c.Prepare(&context);
    bs::ReadRequest request;
    request.set_resource_name("kiln-logs/no-such-operation/stdout");
    bs::ReadResponse response;
    return Drain(bs::ByteStream::NewStub(c.channel)->Read(&context, request), &response);
  }};
  table["google.bytestream.ByteStream/Write"] = {"cas-write", [](const Call& c) {
    grpc::ClientContext context;
    c.Prepare(&context);
    bs::WriteResponse response;
    auto writer = bs::ByteStream::NewStub(c.channel)->Write(&context, &response);
    bs::WriteRequest request;
    request.set_resource_name(absl::StrCat("uploads/u1/blobs/", kBlobHash, "/1"));
    request.set_data("x");
    request.set_finish_write(true);
    writer->Write(request);
    writer->WritesDone();
    return writer->Finish();
  }};
  table["google.bytestream.ByteStream/QueryWriteStatus"] = {"cas-write", [](const Call& c) {
    grpc::ClientContext context;
    c.Prepare(&context);
    bs::QueryWriteStatusRequest request;
    request.set_resource_name(absl::StrCat("uploads/u2/blobs/", kBlobHash, "/1"));
    bs::QueryWriteStatusResponse response;
    return bs::ByteStream::NewStub(c.channel)->QueryWriteStatus(&context, request, &response);
  }};
  table["build.bazel.remote.execution.v2.ActionCache/GetActionResult"] = {"ac-read", [](const Call& c) {
    grpc::ClientContext context;
    c.Prepare(&context);
    rev2::ActionResult response;
    return rev2::ActionCache::NewStub(c.channel)->GetActionResult(&context, {}, &response);
  }};
  table["build.bazel.remote.execution.v2.ActionCache/UpdateActionResult"] = {"ac-write", [](const Call& c) {
    grpc::ClientContext context;
    c.Prepare(&context);
    rev2::ActionResult response;
    return rev2::ActionCache::NewStub(c.channel)->UpdateActionResult(&context, {}, &response);
  }};
  table["build.bazel.remote.execution.v2.Execution/Execute"] = {"execute", [](const Call& c) {
    grpc::ClientContext context;
    c.Prepare(&context);
    lro::Operation response;
    return Drain(rev2::Execution::NewStub(c.channel)->Execute(&context, {}), &response);
  }};
  table["build.bazel.remote.execution.v2.Execution/WaitExecution"] = {"execute", [](const Call& c) {
    grpc::ClientContext context;
    c.Prepare(&context);
    lro::Operation response;
    return Drain(rev2::Execution::NewStub(c.channel)->WaitExecution(&context, {}), &response);
  }};
  table["google.longrunning.Operations/GetOperation"] = {"operations", [](const Call& c) {
    grpc::ClientContext context;
    c.Prepare(&context);
    lro::Operation response;
    return lro::Operations::NewStub(c.channel)->GetOperation(&context, {}, &response);
  }};
  table["google.longrunning.Operations/ListOperations"] = {"operations", [](const Call& c) {
    grpc::ClientContext context;
    c.Prepare(&context);
    lro::ListOperationsResponse response;
    return lro::Operations::NewStub(c.channel)->ListOperations(&context, {}, &response);
  }};
  table["google.longrunning.Operations/CancelOperation"] = {"operations", [](const Call& c) {
    grpc::ClientContext context;
    c.Prepare(&context);
    google::protobuf::Empty response;
    return lro::Operations::NewStub(c.channel)->CancelOperation(&context, {}, &response);
  }};
  table["google.longrunning.Operations/DeleteOperation"] = {"operations", [](const Call& c) {
    grpc::ClientContext context;
    c.Prepare(&context);
    google::protobuf::Empty response;
    return lro::Operations::NewStub(c.channel)->DeleteOperation(&context, {}, &response);
  }};
  return table;
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

void WriteFile(const std::string& path, const std::string& text) {
  std::ofstream(path + ".tmp") << text;
  ASSERT_EQ(rename((path + ".tmp").c_str(), path.c_str()), 0);
}

class AuthTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string pattern = ::testing::TempDir() + "/kiln-auth-XXXXXX";
    dir_ = mkdtemp(pattern.data());
  }
  void TearDown() override { (void)RemoveTree(dir_); }

  void Openssl(const std::vector<std::string>& args) {
    std::vector<std::string> argv = {"/usr/bin/openssl"};  // RunToCompletion does not search $PATH
    argv.insert(argv.end(), args.begin(), args.end());
    testing::ProcessResult result = RunToCompletion(argv);
    ASSERT_EQ(result.exit_code, 0) << result.stderr_text;
  }
  // A self-signed CA `name`.pem / `name`.key.
  void MakeCa(const std::string& name) {
    Openssl({"req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", dir_ + "/" + name + ".key", "-out", dir_ + "/" + name + ".pem", "-days", "2",
             "-subj", "/CN=" + name});
  }
  // `name`.pem / `name`.key with subject CN=`cn`, signed by `ca`; for
  // localhost and 127.0.0.1 so that it also serves as a server certificate.
  void MakeCert(const std::string& name, const std::string& cn, const std::string& ca) {
    const std::string base = dir_ + "/" + name;
    Openssl({"req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout",
             base + ".key", "-out", base + ".csr", "-subj", "/CN=" + cn});
    std::ofstream(base + ".ext") << "subjectAltName=DNS:localhost,IP:127.0.0.1\n";
    Openssl({"x509", "-req", "-in", base + ".csr", "-CA", dir_ + "/" + ca + ".pem", "-CAkey",
             dir_ + "/" + ca + ".key", "-CAcreateserial", "-out", base + ".pem", "-days", "2",
             "-extfile", base + ".ext"});
  }

  // Principals: "full" and "other" (every grant), "admin" (every grant and
  // operations-admin), "no-<p>" (every grant but p),
  // "nothing" (known, no grant), "team" (every grant on instance "team"),
  // "alice" (certificate only, every grant). Token: "token-<name><suffix>".
  std::string PrincipalsFile(const std::string& suffix = "") {
    std::string all = "[";
    for (const std::string& p : kPermissions) absl::StrAppend(&all, all.size() > 1 ? "," : "", "\"", p, "\"");
    all += "]";
    auto entry = [&](const std::string& name, const std::string& grants) {
      return absl::StrCat("{\"name\": \"", name, "\", \"token_sha256\": \"",
                          Sha256::HexOf("token-" + name + suffix), "\", \"grants\": ", grants, "}");
    };
    std::string admin = all;
    admin.insert(admin.size() - 1, ",\"operations-admin\"");
    std::vector<std::string> entries = {entry("full", "[{\"permissions\": " + all + "}]"),
                                        entry("other", "[{\"permissions\": " + all + "}]"),
                                        entry("admin", "[{\"permissions\": " + admin + "}]"),
                                        entry("nothing", "[]"),
                                        entry("team", "[{\"instance_prefix\": \"team\", \"permissions\": " + all + "}]"),
                                        "{\"name\": \"alice\", \"grants\": [{\"permissions\": " + all + "}]}"};
    for (const std::string& lacking : kPermissions) {
      std::string some = "[";
      for (const std::string& p : kPermissions) {
        if (p != lacking) absl::StrAppend(&some, some.size() > 1 ? "," : "", "\"", p, "\"");
      }
      some += "]";
      entries.push_back(entry("no-" + lacking, "[{\"permissions\": " + some + "}]"));
    }
    std::string text = "{\"principals\": [";
    for (size_t i = 0; i < entries.size(); ++i) absl::StrAppend(&text, i ? ",\n" : "\n", entries[i]);
    return text + "]}";
  }

  std::vector<std::string> WorkerFlags(const std::string& name) {
    return {"--listen=127.0.0.1:0", "--metrics_listen=", "--state_dir=" + dir_ + "/" + name,
            "--concurrency=1", "--io_threads=2"};
  }

  std::shared_ptr<grpc::Channel> Plaintext(const WorkerProcess& worker) {
    return grpc::CreateChannel(worker.address(), grpc::InsecureChannelCredentials());
  }
  // A TLS channel trusting `ca`, presenting `cert` (if not empty).
  std::shared_ptr<grpc::Channel> Tls(const WorkerProcess& worker, const std::string& ca,
                                     const std::string& cert = "") {
    grpc::SslCredentialsOptions ssl;
    ssl.pem_root_certs = ReadFile(dir_ + "/" + ca + ".pem");
    if (!cert.empty()) {
      ssl.pem_cert_chain = ReadFile(dir_ + "/" + cert + ".pem");
      ssl.pem_private_key = ReadFile(dir_ + "/" + cert + ".key");
    }
    grpc::ChannelArguments args;
    args.SetSslTargetNameOverride("localhost");
    return grpc::CreateCustomChannel(worker.address(), grpc::SslCredentials(ssl), args);
  }

  std::string dir_;
};

TEST_F(AuthTest, TheTableCoversEveryMethodOfEveryService) {
  std::set<std::string> covered;
  for (const auto& [name, method] : MethodTable()) covered.insert(name.substr(0, name.find(' ')));
  for (const char* name :
       {rev2::Capabilities::service_full_name(), rev2::ContentAddressableStorage::service_full_name(),
        rev2::ActionCache::service_full_name(), rev2::Execution::service_full_name(),
        bs::ByteStream::service_full_name(), lro::Operations::service_full_name()}) {
    const google::protobuf::ServiceDescriptor* service =
        google::protobuf::DescriptorPool::generated_pool()->FindServiceByName(name);
    ASSERT_NE(service, nullptr) << name;
    for (int i = 0; i < service->method_count(); ++i) {
      const google::protobuf::MethodDescriptor* method = service->method(i);
      // Not served by Kiln: gRPC answers UNIMPLEMENTED before any handler.
      if (method->full_name() == "google.longrunning.Operations.WaitOperation") {
        continue;
      }
      EXPECT_TRUE(covered.count(service->full_name() + "/" + method->name()) == 1)
          << method->full_name() << " has no row in the authorization table";
    }
  }
}

TEST_F(AuthTest, EveryMethodRefusesMissingWrongAndUngrantedCredentials) {
  WriteFile(dir_ + "/principals.json", PrincipalsFile());
  std::vector<std::string> flags = WorkerFlags("state");
  flags.push_back("--token_file=" + dir_ + "/principals.json");
  WorkerProcess worker(flags);
  ASSERT_TRUE(worker.started());
  auto channel = Plaintext(worker);

  for (const auto& [name, method] : MethodTable()) {
    SCOPED_TRACE(name);
    grpc::Status none = method.call({channel, ""});
    EXPECT_EQ(none.error_code(), StatusCode::UNAUTHENTICATED) << none.error_message();
    EXPECT_NE(none.error_message().find("no credentials"), std::string::npos) << none.error_message();

    grpc::Status wrong = method.call({channel, "guessed-secret"});
    EXPECT_EQ(wrong.error_code(), StatusCode::UNAUTHENTICATED) << wrong.error_message();
    EXPECT_EQ(wrong.error_message().find("guessed-secret"), std::string::npos) << wrong.error_message();

    grpc::Status nothing = method.call({channel, "token-nothing"});
    EXPECT_EQ(nothing.error_code(), StatusCode::PERMISSION_DENIED) << nothing.error_message();
    EXPECT_NE(nothing.error_message().find("principal \"nothing\" lacks"), std::string::npos);

    grpc::Status full = method.call({channel, "token-full"});
    EXPECT_NE(full.error_code(), StatusCode::UNAUTHENTICATED) << full.error_message();
    EXPECT_NE(full.error_code(), StatusCode::PERMISSION_DENIED) << full.error_message();

    for (const std::string& lacking : kPermissions) {
      grpc::Status status = method.call({channel, "token-no-" + lacking});
      if (method.permission == lacking) {
        EXPECT_EQ(status.error_code(), StatusCode::PERMISSION_DENIED) << lacking;
        EXPECT_NE(status.error_message().find("lacks the " + lacking + " grant"), std::string::npos)
            << status.error_message();
      } else {
        EXPECT_NE(status.error_code(), StatusCode::PERMISSION_DENIED)
            << lacking << ": " << status.error_message();
        EXPECT_NE(status.error_code(), StatusCode::UNAUTHENTICATED) << lacking;
      }
    }
  }
}

TEST_F(AuthTest, GrantsApplyToTheirInstancePrefixOnly) {
  WriteFile(dir_ + "/principals.json", PrincipalsFile());
  std::vector<std::string> flags = WorkerFlags("state");
  flags.push_back("--token_file=" + dir_ + "/principals.json");
  WorkerProcess worker(flags);
  ASSERT_TRUE(worker.started());
  auto stub = rev2::ContentAddressableStorage::NewStub(Plaintext(worker));
  for (const auto& [instance, code] : std::vector<std::pair<std::string, StatusCode>>{
           {"team", StatusCode::OK}, {"team/ci", StatusCode::OK},
           {"teammate", StatusCode::PERMISSION_DENIED}, {"", StatusCode::PERMISSION_DENIED}}) {
    grpc::ClientContext context;
    Call{nullptr, "token-team"}.Prepare(&context);
    rev2::FindMissingBlobsRequest request;
    request.set_instance_name(instance);
    rev2::FindMissingBlobsResponse response;
    EXPECT_EQ(stub->FindMissingBlobs(&context, request, &response).error_code(), code) << instance;
  }
}

TEST_F(AuthTest, ACallerWithoutTheGrantLearnsNothingFromItsDigests) {
  // FindMissingBlobs reads its request itself; a bad digest must still be
  // judged only after the caller is.
  WriteFile(dir_ + "/principals.json", PrincipalsFile());
  std::vector<std::string> flags = WorkerFlags("state");
  flags.push_back("--token_file=" + dir_ + "/principals.json");
  WorkerProcess worker(flags);
  ASSERT_TRUE(worker.started());
  auto stub = rev2::ContentAddressableStorage::NewStub(Plaintext(worker));
  rev2::FindMissingBlobsRequest request;
  request.set_instance_name("teammate");
  request.add_blob_digests()->set_hash("not a hash");
  for (const auto& [token, code] : std::vector<std::pair<const char*, StatusCode>>{
           {"", StatusCode::UNAUTHENTICATED}, {"token-team", StatusCode::PERMISSION_DENIED}}) {
    grpc::ClientContext context;
    Call{nullptr, token}.Prepare(&context);
    rev2::FindMissingBlobsResponse response;
    EXPECT_EQ(stub->FindMissingBlobs(&context, request, &response).error_code(), code);
  }
  request.set_instance_name("team");
  grpc::ClientContext context;
  Call{nullptr, "token-team"}.Prepare(&context);
  rev2::FindMissingBlobsResponse response;
  EXPECT_EQ(stub->FindMissingBlobs(&context, request, &response).error_code(), StatusCode::INVALID_ARGUMENT);
}

TEST_F(AuthTest, DecisionsAreCountedByPrincipalAndResult) {
  WriteFile(dir_ + "/principals.json", PrincipalsFile());
  std::vector<std::string> flags = WorkerFlags("state");
  flags[1] = "--metrics_listen=127.0.0.1:0";
  flags.push_back("--token_file=" + dir_ + "/principals.json");
  WorkerProcess worker(flags);
  ASSERT_TRUE(worker.started());
  auto channel = Plaintext(worker);
  const auto table = MethodTable();
  const auto& update = table.at("build.bazel.remote.execution.v2.ActionCache/UpdateActionResult");
  update.call({channel, ""});
  update.call({channel, "token-no-ac-write"});
  update.call({channel, "token-no-ac-write"});
  update.call({channel, "token-full"});
  const std::string metrics = testing::HttpGet(worker.metrics_port(), "/metrics");
  for (const char* line :
       {"kiln_authorization_decisions_total{principal=\"\",result=\"unauthenticated\"} 1",
        "kiln_authorization_decisions_total{principal=\"no-ac-write\",result=\"permission_denied\"} 2",
        "kiln_authorization_decisions_total{principal=\"full\",result=\"allowed\"} 1"}) {
    EXPECT_NE(metrics.find(line), std::string::npos) << line << "\n" << metrics;
  }
}

// The attack of issue 10: a client forges the result of a victim's action.
TEST_F(AuthTest, CachePoisoningIsRefusedWithoutAcWrite) {
  WriteFile(dir_ + "/principals.json", PrincipalsFile());
  std::vector<std::string> flags = WorkerFlags("state");
  flags.push_back("--token_file=" + dir_ + "/principals.json");
  WorkerProcess worker(flags);
  ASSERT_TRUE(worker.started());
  auto stub = rev2::ActionCache::NewStub(Plaintext(worker));
  rev2::UpdateActionResultRequest update;
  *update.mutable_action_digest() = Digest::Of("the victim's action").ToProto();
  update.mutable_action_result()->set_exit_code(0);
  update.mutable_action_result()->set_stdout_raw("ALL 1234 TESTS PASSED (forged)");
  for (const std::string& attacker : {"no-ac-write", "nothing"}) {
    grpc::ClientContext context;
    Call{nullptr, "token-" + attacker}.Prepare(&context);
    rev2::ActionResult response;
    grpc::Status status = stub->UpdateActionResult(&context, update, &response);
    EXPECT_EQ(status.error_code(), StatusCode::PERMISSION_DENIED) << attacker;
  }
  grpc::ClientContext context;
  Call{nullptr, "token-full"}.Prepare(&context);
  rev2::GetActionResultRequest get;
  *get.mutable_action_digest() = update.action_digest();
  rev2::ActionResult result;
  EXPECT_EQ(stub->GetActionResult(&context, get, &result).error_code(), StatusCode::NOT_FOUND);
}

TEST_F(AuthTest, TokenFileRotationNeedsNoRestart) {
  WriteFile(dir_ + "/principals.json", PrincipalsFile());
  std::vector<std::string> flags = WorkerFlags("state");
  flags.push_back("--token_file=" + dir_ + "/principals.json");
  WorkerProcess worker(flags);
  ASSERT_TRUE(worker.started());
  auto channel = Plaintext(worker);
  const auto table = MethodTable();
  const auto& capabilities = table.at("build.bazel.remote.execution.v2.Capabilities/GetCapabilities");
  ASSERT_TRUE(capabilities.call({channel, "token-full"}).ok());

  WriteFile(dir_ + "/principals.json", PrincipalsFile("-rotated"));
  // The file is checked at most once a second.
  grpc::Status status;
  for (int i = 0; i < 50; ++i) {
    status = capabilities.call({channel, "token-full-rotated"});
    if (status.ok()) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(capabilities.call({channel, "token-full"}).error_code(), StatusCode::UNAUTHENTICATED);

  // SIGHUP re-reads the file (and, unlike its default action, does not stop
  // the worker).
  WriteFile(dir_ + "/principals.json", PrincipalsFile("-again"));
  ASSERT_EQ(kill(worker.pid(), SIGHUP), 0);
  status = grpc::Status(StatusCode::UNKNOWN, "");
  for (int i = 0; i < 50 && !status.ok(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    status = capabilities.call({channel, "token-full-again"});
  }
  EXPECT_TRUE(status.ok()) << status.error_message();

  // A broken file keeps the previous principals.
  WriteFile(dir_ + "/principals.json", "{not json");
  std::this_thread::sleep_for(std::chrono::milliseconds(1200));
  EXPECT_TRUE(capabilities.call({channel, "token-full-again"}).ok());
}

TEST_F(AuthTest, ClientCertificatesFromTheClientCaOnly) {
  MakeCa("ca");
  MakeCa("other-ca");
  MakeCert("server", "localhost", "ca");
  MakeCert("alice", "alice", "ca");
  MakeCert("bob", "bob", "ca");  // signed by the CA, not in the principals file
  MakeCert("mallory", "alice", "other-ca");
  WriteFile(dir_ + "/principals.json", PrincipalsFile());
  std::vector<std::string> flags = WorkerFlags("state");
  flags.push_back("--tls_cert=" + dir_ + "/server.pem");
  flags.push_back("--tls_key=" + dir_ + "/server.key");
  flags.push_back("--tls_client_ca=" + dir_ + "/ca.pem");
  flags.push_back("--token_file=" + dir_ + "/principals.json");
  WorkerProcess worker(flags);
  ASSERT_TRUE(worker.started());
  const auto table = MethodTable();
  const auto& capabilities = table.at("build.bazel.remote.execution.v2.Capabilities/GetCapabilities");
  const auto& update = table.at("build.bazel.remote.execution.v2.ActionCache/UpdateActionResult");

  EXPECT_TRUE(capabilities.call({Tls(worker, "ca", "alice"), ""}).ok());
  EXPECT_EQ(update.call({Tls(worker, "ca", "alice"), ""}).error_code(), StatusCode::INVALID_ARGUMENT);
  grpc::Status bob = capabilities.call({Tls(worker, "ca", "bob"), ""});
  EXPECT_EQ(bob.error_code(), StatusCode::PERMISSION_DENIED) << bob.error_message();
  // The handshake itself fails: no call reaches a handler.
  EXPECT_EQ(capabilities.call({Tls(worker, "ca", "mallory"), ""}).error_code(), StatusCode::UNAVAILABLE);
  EXPECT_EQ(capabilities.call({Tls(worker, "ca"), "token-full"}).error_code(), StatusCode::UNAVAILABLE);
  EXPECT_EQ(capabilities.call({Plaintext(worker), "token-full"}).error_code(), StatusCode::UNAVAILABLE);
  // A token on a certificate's connection names the principal.
  EXPECT_EQ(update.call({Tls(worker, "ca", "bob"), "token-no-ac-write"}).error_code(),
            StatusCode::PERMISSION_DENIED);
}

TEST_F(AuthTest, ServerCertificateRotationReachesNewConnections) {
  MakeCa("ca");
  MakeCa("next-ca");
  MakeCert("server", "localhost", "ca");
  MakeCert("next-server", "localhost", "next-ca");
  WriteFile(dir_ + "/principals.json", PrincipalsFile());
  std::vector<std::string> flags = WorkerFlags("state");
  flags.push_back("--tls_cert=" + dir_ + "/live.pem");
  flags.push_back("--tls_key=" + dir_ + "/live.key");
  flags.push_back("--tls_reload_interval=1s");
  flags.push_back("--token_file=" + dir_ + "/principals.json");
  WriteFile(dir_ + "/live.pem", ReadFile(dir_ + "/server.pem"));
  WriteFile(dir_ + "/live.key", ReadFile(dir_ + "/server.key"));
  WorkerProcess worker(flags);
  ASSERT_TRUE(worker.started());
  const auto table = MethodTable();
  const auto& capabilities = table.at("build.bazel.remote.execution.v2.Capabilities/GetCapabilities");
  EXPECT_TRUE(capabilities.call({Tls(worker, "ca"), "token-full"}).ok());
  EXPECT_EQ(capabilities.call({Tls(worker, "next-ca"), "token-full"}).error_code(), StatusCode::UNAVAILABLE);

  WriteFile(dir_ + "/live.key", ReadFile(dir_ + "/next-server.key"));
  WriteFile(dir_ + "/live.pem", ReadFile(dir_ + "/next-server.pem"));
  grpc::Status status;
  for (int i = 0; i < 60; ++i) {
    status = capabilities.call({Tls(worker, "next-ca"), "token-full"});
    if (status.ok()) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(250));
  }
  EXPECT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(capabilities.call({Tls(worker, "ca"), "token-full"}).error_code(), StatusCode::UNAVAILABLE);
}

// A build runs through a rotation of the server certificate (to another CA)
// and of the principals file: it finishes, and new connections get the new
// material. The client's own token stays in the new file (rotation adds the
// next token before the old one is dropped, as docs/operations.md says).
TEST_F(AuthTest, RotationDuringARunningBuild) {
  MakeCa("ca");
  MakeCa("next-ca");
  MakeCert("server", "localhost", "ca");
  MakeCert("next-server", "localhost", "next-ca");
  WriteFile(dir_ + "/principals.json", PrincipalsFile());
  WriteFile(dir_ + "/live.pem", ReadFile(dir_ + "/server.pem"));
  WriteFile(dir_ + "/live.key", ReadFile(dir_ + "/server.key"));
  std::vector<std::string> flags = WorkerFlags("state");
  flags.push_back("--tls_cert=" + dir_ + "/live.pem");
  flags.push_back("--tls_key=" + dir_ + "/live.key");
  flags.push_back("--tls_reload_interval=1s");
  flags.push_back("--token_file=" + dir_ + "/principals.json");
  WorkerProcess worker(flags);
  ASSERT_TRUE(worker.started());
  WriteFile(dir_ + "/token", "token-full\n");
  ASSERT_EQ(mkdir((dir_ + "/project").c_str(), 0755), 0);
  WriteFile(dir_ + "/project/input.txt", "compiled from input\n");

  // The build: prints, waits out the rotation, then writes an output.
  testing::ProcessResult build;
  std::thread client([&] {
    build = RunToCompletion(
        {std::string(getenv("KILN_BIN_DIR")) + "/kiln", "run",
         "--server=localhost:" + std::to_string(worker.grpc_port()), "--tls_ca=" + dir_ + "/ca.pem",
         "--token_file=" + dir_ + "/token", "--input_root=" + dir_ + "/project", "--output=out.txt",
         "--", "/bin/sh", "-c", "echo started; /bin/sleep 4; /bin/cat input.txt > out.txt; echo finished"});
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(1000));
  // Rotate both while the action runs: a new certificate from another CA,
  // and principals where "other" now has a new token.
  WriteFile(dir_ + "/live.key", ReadFile(dir_ + "/next-server.key"));
  WriteFile(dir_ + "/live.pem", ReadFile(dir_ + "/next-server.pem"));
  std::string rotated = PrincipalsFile();
  const std::string old_hash = Sha256::HexOf("token-other");
  rotated.replace(rotated.find(old_hash), old_hash.size(), Sha256::HexOf("token-other-next"));
  WriteFile(dir_ + "/principals.json", rotated);

  const auto table = MethodTable();
  const auto& capabilities = table.at("build.bazel.remote.execution.v2.Capabilities/GetCapabilities");
  grpc::Status fresh;
  for (int i = 0; i < 40; ++i) {
    fresh = capabilities.call({Tls(worker, "next-ca"), "token-other-next"});
    if (fresh.ok()) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_TRUE(fresh.ok()) << "new connections should get the new certificate: " << fresh.error_message();
  client.join();

  EXPECT_EQ(build.exit_code, 0) << build.stderr_text;
  EXPECT_EQ(build.stdout_text, "started\nfinished\n");
  EXPECT_EQ(ReadFile(dir_ + "/project/out.txt"), "compiled from input\n");
  EXPECT_EQ(capabilities.call({Tls(worker, "ca"), "token-full"}).error_code(), StatusCode::UNAVAILABLE);
  EXPECT_EQ(capabilities.call({Tls(worker, "next-ca"), "token-other"}).error_code(),
            StatusCode::UNAUTHENTICATED);
}

// The kiln client: each credential option, and errors naming the refused one.
TEST_F(AuthTest, KilnClientSendsAndNamesItsCredentials) {
  MakeCa("ca");
  MakeCert("server", "localhost", "ca");
  MakeCert("alice", "alice", "ca");
  WriteFile(dir_ + "/principals.json", PrincipalsFile());
  std::vector<std::string> flags = WorkerFlags("state");
  flags.push_back("--tls_cert=" + dir_ + "/server.pem");
  flags.push_back("--tls_key=" + dir_ + "/server.key");
  flags.push_back("--token_file=" + dir_ + "/principals.json");
  WorkerProcess worker(flags);
  ASSERT_TRUE(worker.started());
  WriteFile(dir_ + "/blob", "hello");
  WriteFile(dir_ + "/good-token", "token-full\n");
  WriteFile(dir_ + "/bad-token", "token-forged\n");
  WriteFile(dir_ + "/readonly-token", "token-no-cas-write\n");
  const std::string kiln = std::string(getenv("KILN_BIN_DIR")) + "/kiln";
  // "localhost" matches the server certificate's SAN.
  const std::string server = "--server=localhost:" + std::to_string(worker.grpc_port());
  WriteFile(dir_ + "/new-blob", "not uploaded yet");
  auto put = [&](const std::vector<std::string>& extra, const std::string& file = "blob") {
    std::vector<std::string> argv = {kiln, "cas", "put", server, "--tls_ca=" + dir_ + "/ca.pem"};
    argv.insert(argv.end(), extra.begin(), extra.end());
    argv.push_back(dir_ + "/" + file);
    return RunToCompletion(argv);
  };
  testing::ProcessResult ok = put({"--token_file=" + dir_ + "/good-token"});
  EXPECT_EQ(ok.exit_code, 0) << ok.stderr_text;
  EXPECT_EQ(ok.stdout_text, Digest::Of("hello").ToString() + "\n");

  testing::ProcessResult none = put({});
  EXPECT_EQ(none.exit_code, 65);
  EXPECT_NE(none.stderr_text.find("--token_file, $KILN_TOKEN or --tls_cert"), std::string::npos)
      << none.stderr_text;
  testing::ProcessResult forged = put({"--token_file=" + dir_ + "/bad-token"});
  EXPECT_EQ(forged.exit_code, 65);
  EXPECT_NE(forged.stderr_text.find("refused the token in --token_file"), std::string::npos)
      << forged.stderr_text;
  EXPECT_EQ(forged.stderr_text.find("token-forged"), std::string::npos);
  testing::ProcessResult readonly = put({"--token_file=" + dir_ + "/readonly-token"}, "new-blob");
  EXPECT_EQ(readonly.exit_code, 65);
  EXPECT_NE(readonly.stderr_text.find("lacks the cas-write grant"), std::string::npos)
      << readonly.stderr_text;
  testing::ProcessResult plaintext = RunToCompletion(
      {kiln, "cas", "put", server, "--token_file=" + dir_ + "/good-token", dir_ + "/blob"});
  EXPECT_EQ(plaintext.exit_code, 69) << plaintext.stderr_text;
}

TEST_F(AuthTest, UnauthenticatedNonLoopbackListenerIsRefused) {
  std::vector<std::string> argv = {std::string(getenv("KILN_BIN_DIR")) + "/kiln-worker",
                                   "--listen=0.0.0.0:0", "--metrics_listen=",
                                   "--state_dir=" + dir_ + "/state", "--concurrency=0"};
  testing::ProcessResult refused = RunToCompletion(argv);
  EXPECT_EQ(refused.exit_code, 2);
  for (const char* flag : {"--tls_client_ca", "--token_file", "--insecure_allow_unauthenticated"}) {
    EXPECT_NE(refused.stderr_text.find(flag), std::string::npos) << refused.stderr_text;
  }
  argv.push_back("--insecure_allow_unauthenticated");
  WorkerProcess allowed(std::vector<std::string>(argv.begin() + 1, argv.end()));
  EXPECT_TRUE(allowed.started());
}

}  // namespace
}  // namespace kiln
