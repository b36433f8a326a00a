#include "server/cluster/channel.h"

#include <fcntl.h>

#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>
#include <grpcpp/support/client_interceptor.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "absl/strings/ascii.h"
#include "common/bearer_interceptor.h"
#include "common/posix.h"
#include "common/status_macros.h"

namespace kiln::cluster {
namespace {

absl::StatusOr<std::string> ReadCredentialFile(const std::string& path, const char* what) {
  absl::StatusOr<UniqueFd> fd = OpenFile(path, O_RDONLY);
  if (!fd.ok()) return absl::NotFoundError(absl::StrCat("cannot read ", what, "=", path, ": ", fd.status().message()));
  // Certificates and tokens are small; a megabyte is far beyond any.
  return ReadAt(fd->get(), 0, 1 << 20, path);
}

}  // namespace

absl::StatusOr<std::shared_ptr<grpc::Channel>> CreateClusterChannel(const std::string& target,
                                                                   const ChannelCredentialFiles& files) {
  std::shared_ptr<grpc::ChannelCredentials> credentials = grpc::InsecureChannelCredentials();
  if (!files.tls_ca.empty() || !files.tls_cert.empty()) {
    grpc::SslCredentialsOptions ssl;
    if (!files.tls_ca.empty()) {
      ASSIGN_OR_RETURN(ssl.pem_root_certs, ReadCredentialFile(files.tls_ca, "tls_ca"));
    }
    if (!files.tls_cert.empty()) {
      if (files.tls_key.empty()) return absl::InvalidArgumentError("a client certificate needs its key");
      ASSIGN_OR_RETURN(ssl.pem_cert_chain, ReadCredentialFile(files.tls_cert, "tls_cert"));
      ASSIGN_OR_RETURN(ssl.pem_private_key, ReadCredentialFile(files.tls_key, "tls_key"));
    }
    credentials = grpc::SslCredentials(ssl);
  }
  std::vector<std::unique_ptr<grpc::experimental::ClientInterceptorFactoryInterface>> interceptors;
  if (!files.token_file.empty()) {
    ASSIGN_OR_RETURN(std::string token, ReadCredentialFile(files.token_file, "token_file"));
    interceptors.push_back(
        std::make_unique<kiln::BearerInterceptorFactory>(std::string(absl::StripAsciiWhitespace(token))));
  }
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(64 << 20);
  // Reconnect quickly after a scheduler restart; the slots add their own
  // jittered backoff on top.
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 2000);
  args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, 30000);
  return grpc::experimental::CreateCustomChannelWithInterceptors(target, credentials, args,
                                                                 std::move(interceptors));
}

absl::Status FromGrpcStatus(const grpc::Status& status) {
  if (status.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()), status.error_message());
}

}  // namespace kiln::cluster
