// JWT bearer tokens against the real kiln-worker binary: RS256 and ES256
// tokens signed by configured keys name their principal by `sub`; expired,
// not-yet-valid, wrong-audience, wrong-issuer and foreign-key tokens are
// UNAUTHENTICATED; "none" and the HS256 algorithm-confusion attack (the
// public key used as an HMAC secret) are refused although libjwt alone
// accepts the latter. Keys are made with the openssl CLI, tokens with libjwt.
#include <jwt.h>
#include <stdlib.h>

#include <chrono>
#include <ctime>
#include <fstream>
#include <string>

#include <grpcpp/create_channel.h>

#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "build/bazel/remote/execution/v2/remote_execution.grpc.pb.h"
#include "common/digest.h"
#include "common/posix.h"
#include "tests/worker_process.h"

namespace kiln {
namespace {

namespace rev2 = ::build::bazel::remote::execution::v2;
using grpc::StatusCode;
using testing::RunToCompletion;
using testing::WorkerProcess;

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

struct Claims {
  std::string sub = "builder";
  std::string aud = "kiln-test";
  std::string aud_json;  // an array instead, e.g. ["other","kiln-test"]
  std::string iss = "https://issuer.test";
  long exp_in = 600;  // seconds from now; 0: no exp claim
  long nbf_in = -60;
};

class JwtAuthTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string pattern = ::testing::TempDir() + "/kiln-jwt-XXXXXX";
    dir_ = mkdtemp(pattern.data());
    Openssl({"genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", dir_ + "/rsa.key"});
    Openssl({"pkey", "-in", dir_ + "/rsa.key", "-pubout", "-out", dir_ + "/rsa.pub"});
    Openssl({"genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", dir_ + "/ec.key"});
    Openssl({"pkey", "-in", dir_ + "/ec.key", "-pubout", "-out", dir_ + "/ec.pub"});
    Openssl({"genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", dir_ + "/foreign.key"});
    std::ofstream(dir_ + "/keys.pem") << ReadFile(dir_ + "/rsa.pub") << ReadFile(dir_ + "/ec.pub");
    std::ofstream(dir_ + "/principals.json") << R"({"principals": [
      {"name": "builder", "grants": [{"permissions": ["cas-read", "cas-write"]}]},
      {"name": "reader", "grants": [{"permissions": ["cas-read"]}]}]})";
    worker_ = std::make_unique<WorkerProcess>(std::vector<std::string>{
        "--listen=127.0.0.1:0", "--metrics_listen=", "--state_dir=" + dir_ + "/state", "--concurrency=0",
        "--token_file=" + dir_ + "/principals.json", "--jwt_public_keys=" + dir_ + "/keys.pem",
        "--jwt_audience=kiln-test", "--jwt_issuer=https://issuer.test"});
    ASSERT_TRUE(worker_->started());
    cas_ = rev2::ContentAddressableStorage::NewStub(
        grpc::CreateChannel(worker_->address(), grpc::InsecureChannelCredentials()));
  }
  void TearDown() override {
    worker_.reset();
    (void)RemoveTree(dir_);
  }

  void Openssl(const std::vector<std::string>& args) {
    std::vector<std::string> argv = {"/usr/bin/openssl"};
    argv.insert(argv.end(), args.begin(), args.end());
    testing::ProcessResult result = RunToCompletion(argv);
    ASSERT_EQ(result.exit_code, 0) << result.stderr_text;
  }

  // A token with `claims`, signed with `alg` and `key` (PEM or HMAC bytes).
  static std::string Sign(jwt_alg_t alg, const std::string& key, const Claims& claims) {
    jwt_t* jwt = nullptr;
    EXPECT_EQ(jwt_new(&jwt), 0);
    const long now = static_cast<long>(std::time(nullptr));
    jwt_add_grant(jwt, "sub", claims.sub.c_str());
    if (claims.aud_json.empty()) {
      jwt_add_grant(jwt, "aud", claims.aud.c_str());
    } else {
      EXPECT_EQ(jwt_add_grants_json(jwt, absl::StrCat(R"({"aud": )", claims.aud_json, "}").c_str()), 0);
    }
    jwt_add_grant(jwt, "iss", claims.iss.c_str());
    if (claims.exp_in != 0) jwt_add_grant_int(jwt, "exp", now + claims.exp_in);
    jwt_add_grant_int(jwt, "nbf", now + claims.nbf_in);
    EXPECT_EQ(jwt_set_alg(jwt, alg, key.empty() ? nullptr : reinterpret_cast<const unsigned char*>(key.data()),
                          static_cast<int>(key.size())),
              0);
    char* encoded = jwt_encode_str(jwt);
    std::string token = encoded == nullptr ? "" : encoded;
    free(encoded);
    jwt_free(jwt);
    EXPECT_FALSE(token.empty());
    return token;
  }
  std::string Rs256(const Claims& claims = {}) { return Sign(JWT_ALG_RS256, ReadFile(dir_ + "/rsa.key"), claims); }
  std::string Es256(const Claims& claims = {}) { return Sign(JWT_ALG_ES256, ReadFile(dir_ + "/ec.key"), claims); }

  // FindMissingBlobs (cas-read) or BatchUpdateBlobs (cas-write) with `token`.
  grpc::Status Call(const std::string& token, bool write = false) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
    context.AddMetadata("authorization", "Bearer " + token);
    if (write) {
      rev2::BatchUpdateBlobsRequest request;
      auto* entry = request.add_requests();
      *entry->mutable_digest() = Digest::Of("jwt").ToProto();
      entry->set_data("jwt");
      rev2::BatchUpdateBlobsResponse response;
      return cas_->BatchUpdateBlobs(&context, request, &response);
    }
    rev2::FindMissingBlobsResponse response;
    return cas_->FindMissingBlobs(&context, {}, &response);
  }
  void ExpectRefused(const std::string& token, const std::string& reason) {
    grpc::Status status = Call(token);
    EXPECT_EQ(status.error_code(), StatusCode::UNAUTHENTICATED) << reason << ": " << status.error_message();
    EXPECT_NE(status.error_message().find(reason), std::string::npos) << status.error_message();
    EXPECT_EQ(status.error_message().find(token), std::string::npos) << "the token was echoed";
  }

  std::string dir_;
  std::unique_ptr<WorkerProcess> worker_;
  std::unique_ptr<rev2::ContentAddressableStorage::Stub> cas_;
};

TEST_F(JwtAuthTest, ValidTokensNameTheirPrincipalAndItsGrants) {
  EXPECT_TRUE(Call(Rs256()).ok());
  EXPECT_TRUE(Call(Es256(), /*write=*/true).ok());
  Claims list;
  list.aud_json = R"(["another-service", "kiln-test"])";
  EXPECT_TRUE(Call(Rs256(list)).ok());

  Claims reader;
  reader.sub = "reader";
  EXPECT_TRUE(Call(Es256(reader)).ok());
  grpc::Status write = Call(Es256(reader), /*write=*/true);
  EXPECT_EQ(write.error_code(), StatusCode::PERMISSION_DENIED);
  EXPECT_NE(write.error_message().find("principal \"reader\" lacks the cas-write grant"), std::string::npos)
      << write.error_message();
  Claims stranger;
  stranger.sub = "not-in-the-principals-file";
  EXPECT_EQ(Call(Rs256(stranger)).error_code(), StatusCode::PERMISSION_DENIED);
}

TEST_F(JwtAuthTest, InvalidTokensAreUnauthenticatedAndSayWhy) {
  Claims expired;
  expired.exp_in = -3600;
  ExpectRefused(Rs256(expired), "expired");
  Claims early;
  early.nbf_in = 3600;
  ExpectRefused(Es256(early), "not valid before");
  Claims endless;
  endless.exp_in = 0;
  ExpectRefused(Rs256(endless), "`exp`");
  Claims elsewhere;
  elsewhere.aud = "another-service";
  ExpectRefused(Rs256(elsewhere), "`aud`");
  Claims impostor;
  impostor.iss = "https://evil.test";
  ExpectRefused(Es256(impostor), "`iss`");
  ExpectRefused(Sign(JWT_ALG_ES256, ReadFile(dir_ + "/foreign.key"), {}), "signature does not verify");
  std::string tampered = Rs256();
  tampered[tampered.size() - 5] = tampered[tampered.size() - 5] == 'A' ? 'B' : 'A';
  ExpectRefused(tampered, "signature does not verify");
}

TEST_F(JwtAuthTest, NoneAndAlgorithmConfusionAreRefused) {
  grpc::Status none = Call(Sign(JWT_ALG_NONE, "", {}));
  EXPECT_EQ(none.error_code(), StatusCode::UNAUTHENTICATED) << none.error_message();

  // The attacker knows the public key and signs HS256 with its PEM bytes as
  // the HMAC secret. libjwt, given that key, accepts the signature: only
  // Kiln's algorithm check stands between this token and the grants.
  const std::string public_pem = ReadFile(dir_ + "/rsa.pub");
  const std::string forged = Sign(JWT_ALG_HS256, public_pem, {});
  jwt_t* decoded = nullptr;
  ASSERT_EQ(jwt_decode(&decoded, forged.c_str(), reinterpret_cast<const unsigned char*>(public_pem.data()),
                       static_cast<int>(public_pem.size())),
            0);
  jwt_free(decoded);
  grpc::Status confused = Call(forged);
  EXPECT_EQ(confused.error_code(), StatusCode::UNAUTHENTICATED) << confused.error_message();
  EXPECT_NE(confused.error_message().find("only RS256 and ES256"), std::string::npos)
      << confused.error_message();
}

TEST_F(JwtAuthTest, ABadKeyConfigurationStopsTheStartNamingTheProblem) {
  std::ofstream(dir_ + "/no-keys.pem") << "not a key\n";
  std::ofstream(dir_ + "/broken.pem") << "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n";
  const std::string worker = std::string(getenv("KILN_BIN_DIR")) + "/kiln-worker";
  struct Case {
    std::vector<std::string> flags;
    std::string expected;
  } cases[] = {
      {{"--jwt_public_keys=" + dir_ + "/keys.pem"}, "--jwt_audience"},
      {{"--jwt_public_keys=" + dir_ + "/no-keys.pem", "--jwt_audience=a"}, "BEGIN PUBLIC KEY"},
      {{"--jwt_public_keys=" + dir_ + "/broken.pem", "--jwt_audience=a"}, "public key #1 is not readable"},
      {{"--jwt_public_keys=" + dir_ + "/missing.pem", "--jwt_audience=a"}, "missing.pem"},
  };
  for (const Case& c : cases) {
    std::vector<std::string> argv = {worker, "--listen=127.0.0.1:0", "--metrics_listen=",
                                     "--state_dir=" + dir_ + "/bad-state", "--concurrency=0"};
    argv.insert(argv.end(), c.flags.begin(), c.flags.end());
    testing::ProcessResult result = RunToCompletion(argv);
    EXPECT_NE(result.exit_code, 0) << c.expected;
    EXPECT_NE(result.stderr_text.find(c.expected), std::string::npos) << result.stderr_text;
  }
}

}  // namespace
}  // namespace kiln
