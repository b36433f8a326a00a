// Verifies JWT bearer tokens (RFC 7519) against configured public keys, with
// libjwt (OpenSSL underneath); no crypto is written here.
//
// Only RS256 and ES256 are accepted. The algorithm is checked after libjwt
// verified the signature with the header's algorithm, so a token that claims
// "none" or HS256 (signed with the public key as an HMAC secret, the classic
// algorithm-confusion attack) is refused whatever its signature. `exp` is
// required, `nbf` and `iat` are honoured with a small leeway, `aud` must name
// the configured audience, `iss` must match when configured. The principal is
// the `sub` claim. Verified tokens are cached by their SHA-256 until they
// expire, so a client reusing its token costs a hash, not a signature check.
#ifndef KILN_SERVER_API_JWT_VERIFIER_H_
#define KILN_SERVER_API_JWT_VERIFIER_H_

#include <sys/stat.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace kiln::api {

struct JwtOptions {
  std::string public_keys_file;  // one or more PEM public keys, concatenated
  std::string audience;          // required in `aud`
  std::string issuer;            // "" accepts any `iss`
};

// True if `token` has the shape of a JWT (three base64url parts).
bool LooksLikeJwt(absl::string_view token);

class JwtVerifier {
 public:
  // Reads the keys; errors name the file and what is wrong with it.
  static absl::StatusOr<std::unique_ptr<JwtVerifier>> Create(const JwtOptions& options);

  // The `sub` of a valid token. UNAUTHENTICATED says why a token is refused
  // (expired, not yet valid, wrong audience, bad signature, ...) and never
  // repeats it.
  absl::StatusOr<std::string> Verify(const std::string& token, absl::Time now) const;

  // Re-reads the key file if it changed; a bad file keeps the previous keys.
  void ReloadIfChanged() const;

  static constexpr absl::Duration kLeeway = absl::Seconds(30);

 private:
  explicit JwtVerifier(JwtOptions options) : options_(std::move(options)) {}
  absl::Status Load() const;
  absl::StatusOr<std::string> VerifyUncached(const std::string& token, absl::Time now,
                                             absl::Time* expires) const;

  struct Cached {
    std::string subject;
    absl::Time expires;
  };
  static constexpr size_t kMaxCached = 4096;

  const JwtOptions options_;
  mutable absl::Mutex mu_;
  mutable std::shared_ptr<const std::vector<std::string>> keys_ ABSL_GUARDED_BY(mu_);
  mutable struct timespec loaded_mtime_ ABSL_GUARDED_BY(mu_) = {};
  mutable ino_t loaded_inode_ ABSL_GUARDED_BY(mu_) = 0;
  mutable absl::flat_hash_map<std::string, Cached> cache_ ABSL_GUARDED_BY(mu_);
};

}  // namespace kiln::api

#endif  // KILN_SERVER_API_JWT_VERIFIER_H_
