#include "server/api/authorizer.h"

#include <sys/stat.h>

#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>
#include <openssl/crypto.h>
#include <spdlog/spdlog.h>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/sha256.h"
#include "common/status_macros.h"

namespace kiln::api {
namespace {

constexpr std::pair<Permission, absl::string_view> kPermissionNames[] = {
    {Permission::kAny, "any"},
    {Permission::kCasRead, "cas-read"},
    {Permission::kCasWrite, "cas-write"},
    {Permission::kAcRead, "ac-read"},
    {Permission::kAcWrite, "ac-write"},
    {Permission::kExecute, "execute"},
    {Permission::kOperations, "operations"},
    {Permission::kOperationsAdmin, "operations-admin"},
};

bool IsLowerHex64(absl::string_view s) {
  if (s.size() != 64) return false;
  for (char c : s) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

// The bearer token of the call, if it sent one ("" if not).
std::string BearerToken(const grpc::ServerContextBase& context) {
  auto range = context.client_metadata().equal_range("authorization");
  for (auto it = range.first; it != range.second; ++it) {
    absl::string_view value(it->second.data(), it->second.size());
    if (value.size() > 7 && absl::EqualsIgnoreCase(value.substr(0, 7), "bearer ")) {
      return std::string(absl::StripAsciiWhitespace(value.substr(7)));
    }
  }
  return "";
}

// The verified client certificate's subject CN, else its first SAN.
std::string CertificateName(const grpc::ServerContextBase& context) {
  std::shared_ptr<const grpc::AuthContext> auth = context.auth_context();
  if (auth == nullptr || !auth->IsPeerAuthenticated()) return "";
  for (const char* property : {"x509_common_name", "x509_subject_alternative_name"}) {
    std::vector<grpc::string_ref> values = auth->FindPropertyValues(property);
    if (!values.empty()) return std::string(values[0].data(), values[0].size());
  }
  return "";
}

}  // namespace

absl::string_view PermissionName(Permission permission) {
  for (const auto& [value, name] : kPermissionNames) {
    if (value == permission) return name;
  }
  return "?";
}

absl::StatusOr<Permission> ParsePermission(absl::string_view name) {
  for (const auto& [value, known] : kPermissionNames) {
    if (known == name && value != Permission::kAny) return value;
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "unknown permission \"", name,
      "\"; use cas-read, cas-write, ac-read, ac-write, execute, operations or operations-admin"));
}

absl::StatusOr<PrincipalTable> ParsePrincipalTable(absl::string_view text) {
  nlohmann::json json = nlohmann::json::parse(text.begin(), text.end(), nullptr, false);
  if (json.is_discarded() || !json.is_object() || !json.contains("principals") ||
      !json["principals"].is_array()) {
    return absl::InvalidArgumentError("expected a JSON object with a \"principals\" array");
  }
  PrincipalTable table;
  for (const nlohmann::json& entry : json["principals"]) {
    Principal principal;
    if (!entry.is_object() || !entry.contains("name") || !entry["name"].is_string() ||
        entry["name"].get<std::string>().empty()) {
      return absl::InvalidArgumentError("every principal needs a non-empty \"name\"");
    }
    principal.name = entry["name"].get<std::string>();
    const std::string where = absl::StrCat("principal \"", principal.name, "\": ");
    if (entry.contains("token_sha256")) {
      if (!entry["token_sha256"].is_string() || !IsLowerHex64(entry["token_sha256"].get<std::string>())) {
        return absl::InvalidArgumentError(absl::StrCat(
            where, "token_sha256 must be 64 lowercase hex digits (sha256sum of the token)"));
      }
      principal.token_sha256 = entry["token_sha256"].get<std::string>();
    }
    if (entry.contains("grants") && !entry["grants"].is_array()) {
      return absl::InvalidArgumentError(absl::StrCat(where, "\"grants\" must be an array"));
    }
    for (const nlohmann::json& g : entry.value("grants", nlohmann::json::array())) {
      Grant grant;
      if (!g.is_object() || !g.value("permissions", nlohmann::json()).is_array()) {
        return absl::InvalidArgumentError(
            absl::StrCat(where, "each grant needs a \"permissions\" array"));
      }
      if (g.contains("instance_prefix")) {
        if (!g["instance_prefix"].is_string()) {
          return absl::InvalidArgumentError(absl::StrCat(where, "instance_prefix must be a string"));
        }
        grant.instance_prefix = g["instance_prefix"].get<std::string>();
      }
      for (const nlohmann::json& p : g["permissions"]) {
        if (!p.is_string()) return absl::InvalidArgumentError(absl::StrCat(where, "permissions must be strings"));
        absl::StatusOr<Permission> permission = ParsePermission(p.get<std::string>());
        if (!permission.ok()) return absl::InvalidArgumentError(absl::StrCat(where, permission.status().message()));
        grant.permissions.push_back(*permission);
      }
      principal.grants.push_back(std::move(grant));
    }
    table.principals.push_back(std::move(principal));
  }
  return table;
}

bool PrefixCovers(absl::string_view prefix, absl::string_view instance) {
  if (prefix.empty()) return true;
  if (!absl::StartsWith(instance, prefix)) return false;
  return instance.size() == prefix.size() || instance[prefix.size()] == '/';
}

absl::Status CheckGrant(const Principal& principal, Permission permission,
                        std::optional<absl::string_view> instance) {
  for (const Grant& grant : principal.grants) {
    if (instance.has_value() && !PrefixCovers(grant.instance_prefix, *instance)) continue;
    for (Permission held : grant.permissions) {
      // An operations admin holds the operations grant too.
      if (permission == Permission::kAny || held == permission ||
          (permission == Permission::kOperations && held == Permission::kOperationsAdmin)) {
        return absl::OkStatus();
      }
    }
  }
  std::string what = permission == Permission::kAny
                         ? "any grant"
                         : absl::StrCat("the ", PermissionName(permission), " grant");
  std::string where = instance.has_value() ? absl::StrCat(" on instance \"", *instance, "\"")
                                           : std::string(" on any instance");
  return absl::PermissionDeniedError(
      absl::StrCat("principal \"", principal.name, "\" lacks ", what, where));
}

absl::string_view ResourceInstance(absl::string_view name) {
  std::vector<absl::string_view> parts = absl::StrSplit(name, '/');
  size_t offset = 0;
  for (absl::string_view part : parts) {
    if (part == "blobs" || part == "compressed-blobs" || part == "uploads" || part == "kiln-logs") {
      return name.substr(0, offset == 0 ? 0 : offset - 1);
    }
    offset += part.size() + 1;
  }
  return name;
}

absl::StatusOr<std::unique_ptr<Authorizer>> Authorizer::Create(const AuthorizerOptions& options) {
  std::unique_ptr<Authorizer> authorizer(new Authorizer(options));
  if (!options.token_file.empty()) RETURN_IF_ERROR(authorizer->Load());
  if (!options.jwt.public_keys_file.empty()) {
    ASSIGN_OR_RETURN(authorizer->jwt_, JwtVerifier::Create(options.jwt));
  }
  return authorizer;
}

absl::Status Authorizer::Load() const {
  struct stat st;
  if (stat(options_.token_file.c_str(), &st) != 0) {
    return absl::NotFoundError(absl::StrCat("cannot stat --token_file=", options_.token_file));
  }
  {
    absl::MutexLock lock(&mu_);
    last_check_ = absl::Now();
    if (table_ != nullptr && st.st_mtim.tv_sec == loaded_mtime_.tv_sec &&
        st.st_mtim.tv_nsec == loaded_mtime_.tv_nsec && st.st_ino == loaded_inode_ &&
        st.st_size == loaded_size_) {
      return absl::OkStatus();
    }
  }
  std::ifstream in(options_.token_file);
  std::stringstream text;
  text << in.rdbuf();
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read --token_file=", options_.token_file));
  absl::StatusOr<PrincipalTable> table = ParsePrincipalTable(text.str());
  if (!table.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--token_file=", options_.token_file, ": ", table.status().message()));
  }
  auto shared = std::make_shared<const PrincipalTable>(*std::move(table));
  absl::MutexLock lock(&mu_);
  table_ = std::move(shared);
  loaded_mtime_ = st.st_mtim;
  loaded_inode_ = st.st_ino;
  loaded_size_ = st.st_size;
  spdlog::info("loaded {} principals from {}", table_->principals.size(), options_.token_file);
  return absl::OkStatus();
}

void Authorizer::ReloadIfChanged() const {
  if (jwt_ != nullptr) jwt_->ReloadIfChanged();
  if (options_.token_file.empty()) return;
  absl::Status loaded = Load();
  if (!loaded.ok()) spdlog::error("keeping the previous principals: {}", std::string(loaded.message()));
}

std::shared_ptr<const Principal> Authorizer::PrincipalNamed(
    const std::shared_ptr<const PrincipalTable>& table, const std::string& name) {
  if (table == nullptr) {
    // No principals file: the client CA or the JWT issuer is the whole policy.
    auto everything = std::make_shared<Principal>();
    everything->name = name;
    everything->grants.push_back(Grant{"", {Permission::kCasRead, Permission::kCasWrite,
                                            Permission::kAcRead, Permission::kAcWrite,
                                            Permission::kExecute, Permission::kOperations}});
    return everything;
  }
  for (const Principal& principal : table->principals) {
    if (principal.name == name) return std::shared_ptr<const Principal>(table, &principal);
  }
  // Verified but not listed: known, yet granted nothing.
  auto nobody = std::make_shared<Principal>();
  nobody->name = name;
  return nobody;
}

absl::StatusOr<std::shared_ptr<const Principal>> Authorizer::Authenticate(
    const grpc::ServerContextBase& context) const {
  std::shared_ptr<const PrincipalTable> table;
  bool check = false;
  {
    absl::MutexLock lock(&mu_);
    table = table_;
    check = (!options_.token_file.empty() || jwt_ != nullptr) &&
            absl::Now() - last_check_ >= absl::Seconds(1);
    if (check) last_check_ = absl::Now();  // one caller re-reads; the others go on
  }
  if (check) {
    ReloadIfChanged();
    absl::MutexLock lock(&mu_);
    table = table_;
  }

  const std::string token = BearerToken(context);
  if (!token.empty() && jwt_ != nullptr && LooksLikeJwt(token)) {
    absl::StatusOr<std::string> subject = jwt_->Verify(token, absl::Now());
    if (!subject.ok()) return subject.status();
    return PrincipalNamed(table, *subject);
  }
  if (!token.empty()) {
    const std::string hash = Sha256::HexOf(token);
    std::shared_ptr<const Principal> found;
    if (table != nullptr) {
      // Every entry is compared in constant time, so timing tells nothing
      // about how close a guess came.
      for (const Principal& principal : table->principals) {
        if (principal.token_sha256.size() == hash.size() &&
            CRYPTO_memcmp(principal.token_sha256.data(), hash.data(), hash.size()) == 0) {
          found = std::shared_ptr<const Principal>(table, &principal);
        }
      }
    }
    if (found == nullptr) {
      return absl::UnauthenticatedError(
          "the bearer token (authorization metadata) is not known to this worker");
    }
    return found;
  }

  const std::string certificate = CertificateName(context);
  if (!certificate.empty() && options_.client_certificates) {
    return PrincipalNamed(table, certificate);
  }
  return absl::UnauthenticatedError(
      options_.client_certificates
          ? "no credentials: send a client certificate or an 'authorization: Bearer <token>' header"
          : "no credentials: send an 'authorization: Bearer <token>' header");
}

absl::Status Authorizer::Decide(const absl::StatusOr<std::shared_ptr<const Principal>>& caller,
                               Permission permission, std::optional<absl::string_view> instance) const {
  absl::Status decision = caller.ok() ? CheckGrant(**caller, permission, instance) : caller.status();
  if (options_.on_decision) options_.on_decision(caller.ok() ? (*caller)->name : "", decision.code());
  return decision;
}

absl::Status Authorize(const Authorizer* authorizer, const grpc::ServerContextBase& context,
                       Permission permission, std::optional<absl::string_view> instance) {
  if (authorizer == nullptr) return absl::OkStatus();
  return authorizer->Decide(authorizer->Authenticate(context), permission, instance);
}

absl::StatusOr<std::shared_ptr<const Principal>> AuthorizeCaller(
    const Authorizer* authorizer, const grpc::ServerContextBase& context, Permission permission,
    std::optional<absl::string_view> instance) {
  if (authorizer == nullptr) return std::shared_ptr<const Principal>();
  absl::StatusOr<std::shared_ptr<const Principal>> caller = authorizer->Authenticate(context);
  RETURN_IF_ERROR(authorizer->Decide(caller, permission, instance));
  return caller;
}

std::string OwnerName(const Principal* caller) { return caller == nullptr ? "" : caller->name; }

bool MayAccessOperation(const Principal* caller, const std::string& owner, absl::string_view instance) {
  if (caller == nullptr) return true;
  if (caller->name == owner) return true;
  return CheckGrant(*caller, Permission::kOperationsAdmin, instance).ok();
}

}  // namespace kiln::api
