// Who may call what. Every handler of every service calls Authorize (or, for
// ByteStream.Write, whose instance arrives with the first message,
// Authenticate then CheckGrant) before it looks at the request's content.
//
// A caller is identified by a bearer token (`authorization: Bearer <token>`
// metadata, matched by its SHA-256 against the principals file, or a JWT
// verified against configured public keys) or by its TLS client certificate
// (subject CN, else the first SAN). Grants are per
// principal on instance-name prefixes. Missing or unknown credentials are
// UNAUTHENTICATED; a known principal without the grant is PERMISSION_DENIED.
// A null Authorizer means authorization is off (every call is allowed).
#ifndef KILN_SERVER_API_AUTHORIZER_H_
#define KILN_SERVER_API_AUTHORIZER_H_

#include <sys/types.h>

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <grpcpp/server_context.h>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "server/api/jwt_verifier.h"

namespace kiln::api {

enum class Permission {
  kAny,  // any grant at all (Capabilities)
  kCasRead,
  kCasWrite,
  kAcRead,
  kAcWrite,
  kExecute,
  kOperations,
  // See and cancel every principal's operations, not only one's own.
  kOperationsAdmin,
};

// "cas-read", ... as written in the principals file.
absl::string_view PermissionName(Permission permission);
absl::StatusOr<Permission> ParsePermission(absl::string_view name);

struct Grant {
  std::string instance_prefix;  // "" covers every instance; "a/b" covers "a/b" and "a/b/..."
  std::vector<Permission> permissions;
};

struct Principal {
  std::string name;
  std::string token_sha256;  // lowercase hex; empty: no token (certificate only)
  std::vector<Grant> grants;
};

// The parsed principals file:
//   {"principals": [{"name": "ci", "token_sha256": "<64 hex>",
//                    "grants": [{"instance_prefix": "", "permissions": ["cas-read"]}]}]}
struct PrincipalTable {
  std::vector<Principal> principals;
};
absl::StatusOr<PrincipalTable> ParsePrincipalTable(absl::string_view json);

// True if `prefix` covers `instance` segment-wise ("a" covers "a/b", not "ab").
bool PrefixCovers(absl::string_view prefix, absl::string_view instance);

// OK if `principal` holds `permission` on `instance`, or on any instance
// when `instance` is nullopt. PERMISSION_DENIED names the principal, the
// permission and the instance.
absl::Status CheckGrant(const Principal& principal, Permission permission,
                        std::optional<absl::string_view> instance);

// The instance part of a ByteStream resource name: what precedes its first
// "blobs", "compressed-blobs", "uploads" or "kiln-logs" segment (the whole
// name if none, so that a garbage name is still checked against a grant).
absl::string_view ResourceInstance(absl::string_view resource_name);

struct AuthorizerOptions {
  std::string token_file;  // the principals file; empty: none
  // Client certificates were required and verified by the TLS handshake.
  // Without a principals file, every such certificate holds every grant.
  bool client_certificates = false;
  // JWT bearer tokens, when jwt.public_keys_file is set: the `sub` claim
  // names the principal, whose grants come from the principals file (a
  // principal listed without token_sha256). Without a principals file,
  // every valid JWT holds every grant, as a verified certificate does.
  JwtOptions jwt;
  // Called with each decision (for metrics): the principal ("" when not
  // authenticated) and OK, UNAUTHENTICATED or PERMISSION_DENIED.
  std::function<void(const std::string& principal, absl::StatusCode code)> on_decision;
};

class Authorizer {
 public:
  // Reads the principals file (if any); errors name the file and the problem.
  static absl::StatusOr<std::unique_ptr<Authorizer>> Create(const AuthorizerOptions& options);

  // The caller's principal. UNAUTHENTICATED says which credential is missing
  // or unknown, never echoing the token.
  absl::StatusOr<std::shared_ptr<const Principal>> Authenticate(
      const grpc::ServerContextBase& context) const;

  // Checks an authenticated caller's grant (or passes on why it is not
  // authenticated) and reports the decision to on_decision.
  absl::Status Decide(const absl::StatusOr<std::shared_ptr<const Principal>>& caller,
                      Permission permission, std::optional<absl::string_view> instance) const;

  // Re-reads the principals file now if it changed (also done at most once a
  // second from Authenticate). A bad file keeps the previous table.
  void ReloadIfChanged() const;

 private:
  explicit Authorizer(AuthorizerOptions options) : options_(std::move(options)) {}
  absl::Status Load() const;
  // The principal a verified certificate or JWT names.
  static std::shared_ptr<const Principal> PrincipalNamed(
      const std::shared_ptr<const PrincipalTable>& table, const std::string& name);

  const AuthorizerOptions options_;
  std::unique_ptr<JwtVerifier> jwt_;  // null: JWTs are not accepted
  mutable absl::Mutex mu_;
  mutable std::shared_ptr<const PrincipalTable> table_ ABSL_GUARDED_BY(mu_);
  mutable struct timespec loaded_mtime_ ABSL_GUARDED_BY(mu_) = {};
  mutable ino_t loaded_inode_ ABSL_GUARDED_BY(mu_) = 0;
  mutable off_t loaded_size_ ABSL_GUARDED_BY(mu_) = 0;
  mutable absl::Time last_check_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
};

// The one check every handler makes: authenticates the caller and checks its
// grant. `instance` nullopt: the permission on any instance. OK when
// `authorizer` is null (authorization off).
absl::Status Authorize(const Authorizer* authorizer, const grpc::ServerContextBase& context,
                       Permission permission, std::optional<absl::string_view> instance);

// Authorize, returning the caller: nullptr when `authorizer` is null.
absl::StatusOr<std::shared_ptr<const Principal>> AuthorizeCaller(
    const Authorizer* authorizer, const grpc::ServerContextBase& context, Permission permission,
    std::optional<absl::string_view> instance);

// Operations belong to the principal that submitted them. The owner recorded
// for a caller: its name, or "" when authorization is off.
std::string OwnerName(const Principal* caller);

// True if `caller` may see, follow, cancel or delete an operation that
// `owner` submitted on `instance`: it is the owner, it holds operations-admin
// on the instance, or authorization is off (`caller` null).
bool MayAccessOperation(const Principal* caller, const std::string& owner, absl::string_view instance);

}  // namespace kiln::api

#endif  // KILN_SERVER_API_AUTHORIZER_H_
