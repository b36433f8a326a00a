#include "server/api/jwt_verifier.h"

#include <errno.h>
#include <jwt.h>

#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>
#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <spdlog/spdlog.h>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/sha256.h"
#include "common/status_macros.h"

namespace kiln::api {
namespace {

struct JwtFree {
  void operator()(jwt_t* jwt) const { jwt_free(jwt); }
};
using JwtPtr = std::unique_ptr<jwt_t, JwtFree>;

// The PEM blocks of `text` that OpenSSL reads as public keys.
absl::StatusOr<std::vector<std::string>> ParsePublicKeys(const std::string& text) {
  const std::string kEnd = "-----END PUBLIC KEY-----";
  std::vector<std::string> keys;
  size_t at = 0;
  while ((at = text.find("-----BEGIN PUBLIC KEY-----", at)) != std::string::npos) {
    size_t end = text.find(kEnd, at);
    if (end == std::string::npos) return absl::InvalidArgumentError("a PEM block has no END line");
    std::string pem = text.substr(at, end + kEnd.size() - at) + "\n";
    std::unique_ptr<BIO, decltype(&BIO_free)> bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())),
                                                  BIO_free);
    std::unique_ptr<EVP_PKEY, decltype(&EVP_PKEY_free)> key(
        PEM_read_bio_PUBKEY(bio.get(), nullptr, nullptr, nullptr), EVP_PKEY_free);
    if (key == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat("public key #", keys.size() + 1, " is not readable"));
    }
    const int type = EVP_PKEY_base_id(key.get());
    if (type != EVP_PKEY_RSA && type != EVP_PKEY_EC) {
      return absl::InvalidArgumentError(
          absl::StrCat("public key #", keys.size() + 1, " is neither RSA (RS256) nor EC (ES256)"));
    }
    keys.push_back(std::move(pem));
    at = end + kEnd.size();
  }
  if (keys.empty()) {
    return absl::InvalidArgumentError("no \"-----BEGIN PUBLIC KEY-----\" block (PEM SubjectPublicKeyInfo)");
  }
  return keys;
}

// `aud` is a string or an array of strings (RFC 7519 4.1.3).
bool AudienceNames(jwt_t* jwt, const std::string& audience) {
  if (const char* single = jwt_get_grant(jwt, "aud"); single != nullptr) return audience == single;
  std::unique_ptr<char, decltype(&free)> json(jwt_get_grants_json(jwt, "aud"), free);
  if (json == nullptr) return false;
  nlohmann::json list = nlohmann::json::parse(json.get(), nullptr, false);
  if (!list.is_array()) return false;
  for (const nlohmann::json& entry : list) {
    if (entry.is_string() && entry.get<std::string>() == audience) return true;
  }
  return false;
}

// A numeric date claim; false if it is absent or not a number.
bool NumericClaim(jwt_t* jwt, const char* name, long* value) {
  errno = 0;
  *value = jwt_get_grant_int(jwt, name);
  return errno == 0;
}

}  // namespace

bool LooksLikeJwt(absl::string_view token) {
  std::vector<absl::string_view> parts = absl::StrSplit(token, '.');
  if (parts.size() != 3 || parts[0].empty() || parts[1].empty()) return false;
  for (absl::string_view part : parts) {
    for (char c : part) {
      if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '_' && c != '=') return false;
    }
  }
  return true;
}

absl::StatusOr<std::unique_ptr<JwtVerifier>> JwtVerifier::Create(const JwtOptions& options) {
  if (options.audience.empty()) {
    return absl::InvalidArgumentError("--jwt_public_keys needs --jwt_audience (the `aud` tokens must carry)");
  }
  std::unique_ptr<JwtVerifier> verifier(new JwtVerifier(options));
  RETURN_IF_ERROR(verifier->Load());
  return verifier;
}

absl::Status JwtVerifier::Load() const {
  const std::string& path = options_.public_keys_file;
  struct stat st;
  if (stat(path.c_str(), &st) != 0) return absl::NotFoundError(absl::StrCat("cannot stat --jwt_public_keys=", path));
  {
    absl::MutexLock lock(&mu_);
    if (keys_ != nullptr && st.st_mtim.tv_sec == loaded_mtime_.tv_sec &&
        st.st_mtim.tv_nsec == loaded_mtime_.tv_nsec && st.st_ino == loaded_inode_) {
      return absl::OkStatus();
    }
  }
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read --jwt_public_keys=", path));
  absl::StatusOr<std::vector<std::string>> keys = ParsePublicKeys(text.str());
  if (!keys.ok()) return absl::InvalidArgumentError(absl::StrCat("--jwt_public_keys=", path, ": ", keys.status().message()));
  auto shared = std::make_shared<const std::vector<std::string>>(*std::move(keys));
  absl::MutexLock lock(&mu_);
  keys_ = std::move(shared);
  loaded_mtime_ = st.st_mtim;
  loaded_inode_ = st.st_ino;
  cache_.clear();  // a removed key must stop vouching for its tokens at once
  spdlog::info("loaded {} JWT public keys from {}", keys_->size(), path);
  return absl::OkStatus();
}

void JwtVerifier::ReloadIfChanged() const {
  absl::Status loaded = Load();
  if (!loaded.ok()) spdlog::error("keeping the previous JWT keys: {}", std::string(loaded.message()));
}

absl::StatusOr<std::string> JwtVerifier::Verify(const std::string& token, absl::Time now) const {
  const std::string hash = Sha256::HexOf(token);
  {
    absl::MutexLock lock(&mu_);
    if (auto it = cache_.find(hash); it != cache_.end() && it->second.expires > now) return it->second.subject;
  }
  absl::Time expires;
  ASSIGN_OR_RETURN(std::string subject, VerifyUncached(token, now, &expires));
  absl::MutexLock lock(&mu_);
  if (cache_.size() >= kMaxCached) {
    absl::erase_if(cache_, [now](const auto& entry) { return entry.second.expires <= now; });
    if (cache_.size() >= kMaxCached) cache_.clear();
  }
  cache_[hash] = Cached{subject, expires};
  return subject;
}

absl::StatusOr<std::string> JwtVerifier::VerifyUncached(const std::string& token, absl::Time now,
                                                        absl::Time* expires) const {
  std::shared_ptr<const std::vector<std::string>> keys;
  {
    absl::MutexLock lock(&mu_);
    keys = keys_;
  }
  JwtPtr jwt;
  for (const std::string& key : *keys) {
    jwt_t* decoded = nullptr;
    if (jwt_decode(&decoded, token.c_str(), reinterpret_cast<const unsigned char*>(key.data()),
                   static_cast<int>(key.size())) == 0) {
      jwt.reset(decoded);
      break;
    }
  }
  if (jwt == nullptr) {
    return absl::UnauthenticatedError(
        "the bearer JWT is malformed or its signature does not verify with any --jwt_public_keys key");
  }
  const jwt_alg_t alg = jwt_get_alg(jwt.get());
  if (alg != JWT_ALG_RS256 && alg != JWT_ALG_ES256) {
    return absl::UnauthenticatedError(absl::StrCat("the bearer JWT uses algorithm ", jwt_alg_str(alg),
                                                   "; only RS256 and ES256 are accepted"));
  }
  const long now_seconds = absl::ToUnixSeconds(now);
  const long leeway = absl::ToInt64Seconds(kLeeway);
  long exp = 0, nbf = 0;
  if (!NumericClaim(jwt.get(), "exp", &exp)) {
    return absl::UnauthenticatedError("the bearer JWT has no numeric `exp` claim; tokens must expire");
  }
  if (exp + leeway <= now_seconds) {
    return absl::UnauthenticatedError(
        absl::StrCat("the bearer JWT expired at ", absl::FormatTime(absl::FromUnixSeconds(exp), absl::UTCTimeZone())));
  }
  if (NumericClaim(jwt.get(), "nbf", &nbf) && nbf - leeway > now_seconds) {
    return absl::UnauthenticatedError(absl::StrCat("the bearer JWT is not valid before ",
                                                   absl::FormatTime(absl::FromUnixSeconds(nbf), absl::UTCTimeZone())));
  }
  if (!AudienceNames(jwt.get(), options_.audience)) {
    return absl::UnauthenticatedError(
        absl::StrCat("the bearer JWT's `aud` does not name this worker (\"", options_.audience, "\")"));
  }
  if (!options_.issuer.empty()) {
    const char* issuer = jwt_get_grant(jwt.get(), "iss");
    if (issuer == nullptr || options_.issuer != issuer) {
      return absl::UnauthenticatedError(
          absl::StrCat("the bearer JWT's `iss` is not \"", options_.issuer, "\""));
    }
  }
  const char* subject = jwt_get_grant(jwt.get(), "sub");
  if (subject == nullptr || *subject == '\0') {
    return absl::UnauthenticatedError("the bearer JWT has no `sub` claim naming the principal");
  }
  *expires = absl::FromUnixSeconds(exp);
  return std::string(subject);
}

}  // namespace kiln::api
