// gRPC channels from a cluster worker to its scheduler and CAS, with the same
// credentials a `kiln` client presents: TLS (a CA to trust, optionally a
// client certificate) and a bearer token in every call's metadata.
#ifndef KILN_SERVER_CLUSTER_CHANNEL_H_
#define KILN_SERVER_CLUSTER_CHANNEL_H_

#include <memory>
#include <string>

#include <grpcpp/channel.h>
#include <grpcpp/support/status.h>

#include "absl/status/statusor.h"

namespace kiln::cluster {

// File paths, as given on the command line; empty: not used.
struct ChannelCredentialFiles {
  std::string tls_ca;    // PEM CA bundle to verify the server (TLS on when set)
  std::string tls_cert;  // PEM client certificate chain (TLS on when set)
  std::string tls_key;   // its key
  std::string token_file;  // one bearer token; sent as `authorization: Bearer ...`
};

// Reads the files and opens a lazily connecting channel to `target`
// (HOST:PORT, or any gRPC target URI). Errors name the unreadable file.
absl::StatusOr<std::shared_ptr<grpc::Channel>> CreateClusterChannel(const std::string& target,
                                                                   const ChannelCredentialFiles& files);

// A call's status as Kiln's error type (the code and message; details are
// dropped).
absl::Status FromGrpcStatus(const grpc::Status& status);

}  // namespace kiln::cluster

#endif  // KILN_SERVER_CLUSTER_CHANNEL_H_
