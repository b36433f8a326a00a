// The worker<->sandbox contract (proto/kiln/sandbox/v1/sandbox.proto) on the
// launcher's side: SandboxSpec/SandboxPolicy from a SandboxRequest and back,
// SandboxResult to its message, and the length-prefixed framing both sides
// use on their socket.
#ifndef KILN_SANDBOX_SANDBOX_PROTO_H_
#define KILN_SANDBOX_SANDBOX_PROTO_H_

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "common/posix.h"
#include "kiln/sandbox/v1/sandbox.pb.h"
#include "sandbox/sandbox_spec.h"

namespace kiln::sandbox {

namespace pb = ::kiln::sandbox::v1;

// The largest message either side accepts: an argv and environment far
// beyond the kernel's own ARG_MAX, and a bound on what a peer can make us
// allocate.
inline constexpr uint32_t kMaxMessageBytes = 64u << 20;

pb::SandboxRequest ToRequest(const SandboxSpec& spec, const SandboxPolicy& policy);
// Fills `spec` and `policy` from `request`; fields the request leaves unset
// keep their defaults. INVALID_ARGUMENT for values that do not fit.
absl::Status FromRequest(const pb::SandboxRequest& request, SandboxSpec* spec, SandboxPolicy* policy);

pb::SandboxResult ToResultMessage(const SandboxResult& result);
pb::SandboxResult ErrorResultMessage(const absl::Status& status);

// Writes one message: 4-byte little-endian length, then the bytes. Retries
// short writes and EINTR; never raises SIGPIPE (sockets only). `fds` go
// with the message's first bytes (SCM_RIGHTS; a Unix socket only).
absl::Status WriteMessage(int fd, const google::protobuf::MessageLite& message,
                          absl::Span<const int> fds = {});
// Reads one message written by WriteMessage. NOT_FOUND on a clean end of
// stream before the first byte (the peer closed), DATA_LOSS on a torn or
// oversized message or one that does not parse. The descriptors that came
// with it go to `fds`; without `fds` any that came are closed.
absl::Status ReadMessage(int fd, google::protobuf::MessageLite* message,
                         std::vector<UniqueFd>* fds = nullptr);

}  // namespace kiln::sandbox

#endif  // KILN_SANDBOX_SANDBOX_PROTO_H_
