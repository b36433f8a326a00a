// kiln: run a command on a Kiln (or any REAPI) server as if it were local,
// and look at the CAS and the action cache. See `kiln --help`.
#include <fcntl.h>
#include <getopt.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <filesystem>
#include <thread>

#include <google/protobuf/util/json_util.h>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/strip.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/time.h"
#include "client/remote.h"
#include "client/result_paths.h"
#include "common/path_beneath.h"
#include "common/posix.h"
#include "common/status_macros.h"

namespace {

using kiln::CheckPathComponent;
using kiln::CheckRelativePath;
using kiln::MakeDirectoriesBeneath;
using kiln::OpenBeneath;
using kiln::OpenFile;
using kiln::ParentAndName;
using kiln::PosixError;
using kiln::RemoveTreeAt;
using kiln::UniqueFd;
using kiln::Digest;
using kiln::client::BlobSet;
using kiln::client::CheckResultPaths;
using kiln::client::Progress;
using kiln::client::RemoteClient;
namespace rev2 = build::bazel::remote::execution::v2;

// Exit codes of kiln itself; otherwise `kiln run` exits with the remote
// command's code (128+N when it died of signal N).
constexpr int kExitUsage = 64;        // bad arguments
constexpr int kExitRejected = 65;     // the server refused the request
constexpr int kExitUnreachable = 69;  // no server answered
constexpr int kExitInternal = 70;     // anything else that went wrong
constexpr int kExitBusy = 75;         // the server's queue is full; retry later
constexpr int kExitTimeout = 124;     // the action ran past its timeout (as timeout(1))

constexpr char kMainUsage[] = R"(Usage: kiln COMMAND [options]

Commands:
  run      run a command remotely, with live output, outputs downloaded, and its exit code
  cas put  upload a file or directory to the CAS and print its digest
  cas get  download a blob from the CAS
  result   print the cached ActionResult of an action digest
  health   check that the server is SERVING (a container or load-balancer probe)

Run `kiln COMMAND --help` for the options of each command.
)";

constexpr char kRunUsage[] = R"(Usage: kiln run --server=HOST:PORT [options] -- CMD [ARGS...]

Runs CMD on the server in a sandbox, with DIR (--input_root) as its working
directory, prints its stdout and stderr here as they are produced, downloads
the declared outputs into DIR, and exits with CMD's exit code (128+N for a
signal). Only the files the server does not have yet are uploaded.

Options:
  --server=HOST:PORT   the Kiln server (required)
  --instance=NAME      REAPI instance name (default: none)
  --tls_ca=FILE        speak TLS, trusting this PEM CA (every command takes the
                       credential options)
  --tls_cert=FILE --tls_key=FILE   client certificate (implies TLS)
  --token_file=FILE    bearer token (default: $KILN_TOKEN)
  --input_root=DIR     directory sent as the input root (default: the current one)
  --exclude=GLOB       leave matching files and directories out (repeatable):
                       "build/" or "*.o" match a name at any depth, "out/*" a
                       path from DIR; DIR/.kilnignore lists more, one a line
  --preserve_symlinks  send symlinks that point outside DIR (absolute, or up
                       out of it) as symlinks; by default, unless the server
                       allows absolute ones, what they point to is sent
  --output=PATH        a file or directory CMD produces, relative to DIR (repeatable)
  --env=NAME=VALUE     environment variable (repeatable); the environment is exactly these
  --platform=NAME=VALUE  platform property, e.g. memory=2GiB (repeatable)
  --timeout=DURATION   e.g. 10m (default: the server's)
  --skip_cache         run even if a cached result exists
  --verbose            print what was uploaded and where the action ran

Exit codes of kiln itself: 64 bad arguments, 65 request rejected, 69 server
unreachable, 70 other error, 75 server busy, 124 the action timed out.

Example:
  kiln run --server=ci-worker:8980 --input_root=. --env=PATH=/usr/bin:/bin \
      --output=build/report.xml -- sh -c 'make -j2 test'
)";

constexpr char kCasPutUsage[] = R"(Usage: kiln cas put --server=HOST:PORT [--instance=NAME] FILE|DIR

Uploads FILE (or the whole tree under DIR, as REAPI Directory messages) and
prints its digest as HASH/SIZE. Blobs the server already has are not sent.

Example:
  kiln cas put --server=127.0.0.1:8980 ./testdata
)";

constexpr char kCasGetUsage[] = R"(Usage: kiln cas get --server=HOST:PORT [--instance=NAME] HASH/SIZE PATH

Downloads the blob HASH/SIZE from the CAS into the file PATH.

Example:
  kiln cas get --server=127.0.0.1:8980 e3b0c442...b855/0 /tmp/empty
)";

constexpr char kResultUsage[] = R"(Usage: kiln result --server=HOST:PORT [--instance=NAME] HASH/SIZE

Prints the ActionResult cached for the action digest HASH/SIZE as JSON.

Example:
  kiln result --server=127.0.0.1:8980 5b1f...9c2a/142
)";

constexpr char kHealthUsage[] = R"(Usage: kiln health --server=HOST:PORT [--service=NAME] [--tls_ca=FILE]

Asks the server's grpc.health.v1 service whether it is SERVING and exits 0 if
it is, 1 if not (e.g. draining), 69 if it cannot be reached. Health needs no
credentials; over TLS, --tls_ca says whom to trust. For probes of a worker
whose listener speaks TLS (Kubernetes' own gRPC probe speaks plaintext only).

Example:
  kiln health --server=localhost:8980 --tls_ca=/etc/kiln/tls/ca.crt
)";

[[noreturn]] void Fail(int code, const std::string& message) {
  std::fprintf(stderr, "kiln: %s\n", message.c_str());
  std::exit(code);
}

int ExitCodeFor(const absl::Status& status) {
  switch (status.code()) {
    case absl::StatusCode::kUnavailable: return kExitUnreachable;
    case absl::StatusCode::kResourceExhausted: return kExitBusy;
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kNotFound:
    case absl::StatusCode::kOutOfRange:
    case absl::StatusCode::kPermissionDenied:
    case absl::StatusCode::kUnauthenticated: return kExitRejected;
    case absl::StatusCode::kDeadlineExceeded: return kExitTimeout;
    default: return kExitInternal;
  }
}

[[noreturn]] void FailWith(const absl::Status& status, const std::string& context) {
  Fail(ExitCodeFor(status), absl::StrCat(context, ": ", status.message()));
}

struct CommonOptions {
  std::string server;
  std::string instance;
  std::string tls_ca, tls_cert, tls_key, token_file;  // paths
};

// Credential options shared by every command; getopt ids from 900 up.
enum { kTlsCa = 900, kTlsCert, kTlsKey, kTokenFile };
#define KILN_CREDENTIAL_OPTIONS                                                      \
  {"tls_ca", required_argument, nullptr, kTlsCa},                                  \
      {"tls_cert", required_argument, nullptr, kTlsCert},                          \
      {"tls_key", required_argument, nullptr, kTlsKey},                            \
      {"token_file", required_argument, nullptr, kTokenFile}

// Takes a credential option; false if `option` is not one.
bool ParseCredentialOption(int option, CommonOptions* common) {
  switch (option) {
    case kTlsCa: common->tls_ca = optarg; return true;
    case kTlsCert: common->tls_cert = optarg; return true;
    case kTlsKey: common->tls_key = optarg; return true;
    case kTokenFile: common->token_file = optarg; return true;
    default: return false;
  }
}

std::string ReadCredentialFile(const std::string& path, const char* flag) {
  absl::StatusOr<std::string> text = kiln::ReadFileToString(path);
  if (!text.ok()) Fail(kExitUsage, absl::StrCat("--", flag, "=", path, ": ", text.status().message()));
  return *std::move(text);
}

// The token comes from --token_file, else $KILN_TOKEN; never from argv,
// where other users of the host could read it.
kiln::client::Credentials LoadCredentials(const CommonOptions& options) {
  kiln::client::Credentials credentials;
  if (options.tls_cert.empty() != options.tls_key.empty()) {
    Fail(kExitUsage, "--tls_cert and --tls_key go together");
  }
  if (!options.tls_ca.empty()) credentials.tls_ca = ReadCredentialFile(options.tls_ca, "tls_ca");
  if (!options.tls_cert.empty()) {
    credentials.tls_cert = ReadCredentialFile(options.tls_cert, "tls_cert");
    credentials.tls_key = ReadCredentialFile(options.tls_key, "tls_key");
  }
  if (!options.token_file.empty()) {
    credentials.token = std::string(
        absl::StripAsciiWhitespace(ReadCredentialFile(options.token_file, "token_file")));
  } else if (const char* token = getenv("KILN_TOKEN"); token != nullptr) {
    credentials.token = std::string(absl::StripAsciiWhitespace(token));
  }
  return credentials;
}

// Which credential the server refused, in the user's terms.
std::string RefusedCredential(const CommonOptions& options, const kiln::client::Credentials& credentials,
                              const absl::Status& status) {
  const std::string token_source =
      options.token_file.empty() ? "the token in $KILN_TOKEN" : "the token in --token_file=" + options.token_file;
  if (status.code() == absl::StatusCode::kPermissionDenied) {
    return absl::StrCat("the server knows ",
                        credentials.token.empty() ? "the client certificate (--tls_cert)" : token_source,
                        " but does not allow this: ", status.message());
  }
  if (!credentials.token.empty()) return absl::StrCat("the server refused ", token_source, ": ", status.message());
  if (!credentials.tls_cert.empty()) {
    return absl::StrCat("the server refused the client certificate --tls_cert=", options.tls_cert, ": ",
                        status.message());
  }
  return absl::StrCat("the server wants credentials (--token_file, $KILN_TOKEN or --tls_cert/--tls_key): ",
                      status.message());
}

absl::StatusOr<Digest> ParseDigestArg(const std::string& text) {
  std::vector<std::string> parts = absl::StrSplit(text, '/');
  int64_t size = 0;
  if (parts.size() != 2 || !absl::SimpleAtoi(parts[1], &size)) {
    return absl::InvalidArgumentError(absl::StrCat("\"", text, "\" is not a digest; write HASH/SIZE"));
  }
  return kiln::ParseDigest(parts[0], size);
}

RemoteClient Connect(const CommonOptions& options) {
  if (options.server.empty()) Fail(kExitUsage, "--server=HOST:PORT is required");
  const kiln::client::Credentials credentials = LoadCredentials(options);
  RemoteClient client(options.server, options.instance, credentials);
  absl::Status reachable = client.CheckReachable(absl::Seconds(10));
  if (reachable.code() == absl::StatusCode::kUnauthenticated ||
      reachable.code() == absl::StatusCode::kPermissionDenied) {
    Fail(kExitRejected, RefusedCredential(options, credentials, reachable));
  }
  if (!reachable.ok() && credentials.tls()) {
    Fail(kExitUnreachable, absl::StrCat("cannot reach the server at ", options.server,
                                        " over TLS (check --tls_ca, and --tls_cert/--tls_key if "
                                        "it requires a client certificate): ", reachable.message()));
  }
  if (!reachable.ok()) {
    Fail(kExitUnreachable, absl::StrCat("cannot reach the server at ", options.server, " (",
                                        reachable.message(), ")"));
  }
  return client;
}

// A Tree deeper than this is refused rather than recursed into.
constexpr int kMaxOutputTreeDepth = 256;

// Writes an output directory's Tree into the open directory `dirfd`. Every
// name is one checked component, every directory is opened without
// following a symlink, and every file is verified against its digest.
absl::Status MaterializeTree(RemoteClient& client, const rev2::Tree& tree, int dirfd) {
  std::map<std::string, rev2::Directory> children;
  for (const auto& child : tree.children()) children[Digest::Of(child.SerializeAsString()).hash] = child;
  std::function<absl::Status(const rev2::Directory&, int, int)> write =
      [&](const rev2::Directory& dir, int at, int depth) -> absl::Status {
    if (depth > kMaxOutputTreeDepth) return absl::InvalidArgumentError("the output Tree is too deep");
    for (const auto& file : dir.files()) {
      RETURN_IF_ERROR(client.DownloadFileAt(file.digest(), at, file.name(), file.is_executable(), nullptr));
    }
    for (const auto& link : dir.symlinks()) {
      RETURN_IF_ERROR(CheckPathComponent(link.name(), "symlink in an output Tree"));
      RETURN_IF_ERROR(RemoveTreeAt(at, link.name()));
      if (symlinkat(link.target().c_str(), at, link.name().c_str()) != 0) {
        return PosixError("symlink " + link.name(), errno);
      }
    }
    for (const auto& sub : dir.directories()) {
      auto it = children.find(sub.digest().hash());
      if (it == children.end()) return absl::DataLossError("the output Tree lacks a directory");
      ASSIGN_OR_RETURN(UniqueFd sub_fd, MakeDirectoriesBeneath(at, sub.name(), 0755, -1, -1));
      RETURN_IF_ERROR(write(it->second, sub_fd.get(), depth + 1));
    }
    return absl::OkStatus();
  };
  return write(tree.root(), dirfd, 0);
}

// Puts the result's outputs in place under `root_fd` (the input root):
// files, then directories, then symlinks, each parent created or opened
// beneath the root without following a symlink.
absl::Status PlaceOutputs(RemoteClient& client, const rev2::ActionResult& result, int root_fd) {
  RETURN_IF_ERROR(CheckResultPaths(result));
  auto parent_of = [&](const std::string& path) -> absl::StatusOr<ParentAndName> {
    size_t slash = path.rfind('/');
    ParentAndName at;
    at.name = slash == std::string::npos ? path : path.substr(slash + 1);
    if (slash == std::string::npos) {
      ASSIGN_OR_RETURN(at.parent, OpenBeneath(root_fd, "", O_RDONLY | O_DIRECTORY));
    } else {
      ASSIGN_OR_RETURN(at.parent, MakeDirectoriesBeneath(root_fd, path.substr(0, slash), 0755, -1, -1));
    }
    return at;
  };
  int64_t download_bytes = 0;
  for (const auto& file : result.output_files()) download_bytes += file.digest().size_bytes();
  {
    Progress progress("downloading", download_bytes);
    for (const auto& file : result.output_files()) {
      ASSIGN_OR_RETURN(ParentAndName at, parent_of(file.path()));
      absl::Status s = client.DownloadFileAt(file.digest(), at.parent.get(), at.name, file.is_executable(), &progress);
      if (!s.ok()) return absl::Status(s.code(), absl::StrCat("downloading ", file.path(), ": ", s.message()));
    }
  }
  for (const auto& dir : result.output_directories()) {
    absl::StatusOr<std::string> tree_bytes = client.ReadBlob(dir.tree_digest());
    rev2::Tree tree;
    if (!tree_bytes.ok()) return tree_bytes.status();
    if (!tree.ParseFromString(*tree_bytes)) return absl::DataLossError("the Tree of " + dir.path() + " does not parse");
    ASSIGN_OR_RETURN(UniqueFd target, MakeDirectoriesBeneath(root_fd, dir.path(), 0755, -1, -1));
    absl::Status s = MaterializeTree(client, tree, target.get());
    if (!s.ok()) return absl::Status(s.code(), absl::StrCat("downloading ", dir.path(), ": ", s.message()));
  }
  for (const auto& link : result.output_symlinks()) {
    ASSIGN_OR_RETURN(ParentAndName at, parent_of(link.path()));
    RETURN_IF_ERROR(RemoveTreeAt(at.parent.get(), at.name));
    if (symlinkat(link.target().c_str(), at.parent.get(), at.name.c_str()) != 0) {
      return PosixError("symlink " + link.path(), errno);
    }
  }
  return absl::OkStatus();
}

int Run(int argc, char** argv) {
  CommonOptions common;
  std::string input_root = ".";
  std::vector<std::string> outputs;
  std::vector<std::pair<std::string, std::string>> env, platform;
  absl::Duration timeout = absl::ZeroDuration();
  bool skip_cache = false, verbose = false, preserve_symlinks = false;
  kiln::client::InputRootOptions root_options;
  root_options.read_kilnignore = true;
  enum { kServer = 1000, kInstance, kInputRoot, kOutput, kEnv, kPlatform, kTimeout, kSkipCache, kVerbose, kHelp,
         kExclude, kPreserveSymlinks };
  static const struct option kOptions[] = {
      {"server", required_argument, nullptr, kServer}, {"instance", required_argument, nullptr, kInstance},
      {"input_root", required_argument, nullptr, kInputRoot}, {"output", required_argument, nullptr, kOutput},
      {"env", required_argument, nullptr, kEnv}, {"platform", required_argument, nullptr, kPlatform},
      {"timeout", required_argument, nullptr, kTimeout}, {"skip_cache", no_argument, nullptr, kSkipCache},
      {"verbose", no_argument, nullptr, kVerbose}, {"help", no_argument, nullptr, kHelp},
      {"exclude", required_argument, nullptr, kExclude},
      {"preserve_symlinks", no_argument, nullptr, kPreserveSymlinks},
      KILN_CREDENTIAL_OPTIONS, {nullptr, 0, nullptr, 0}};
  auto pair = [](const char* option, const std::string& text) {
    size_t eq = text.find('=');
    if (eq == std::string::npos || eq == 0) Fail(kExitUsage, absl::StrCat("--", option, "=", text, ": expected NAME=VALUE"));
    return std::make_pair(text.substr(0, eq), text.substr(eq + 1));
  };
  opterr = 0;
  for (int option; (option = getopt_long(argc, argv, "+", kOptions, nullptr)) != -1;) {
    switch (option) {
      case kServer: common.server = optarg; break;
      case kInstance: common.instance = optarg; break;
      case kInputRoot: input_root = optarg; break;
      case kOutput: outputs.push_back(optarg); break;
      case kEnv: env.push_back(pair("env", optarg)); break;
      case kPlatform: platform.push_back(pair("platform", optarg)); break;
      case kTimeout:
        if (!absl::ParseDuration(optarg, &timeout)) Fail(kExitUsage, absl::StrCat("--timeout=", optarg, ": not a duration (e.g. 90s, 10m)"));
        break;
      case kSkipCache: skip_cache = true; break;
      case kVerbose: verbose = true; break;
      case kExclude: root_options.excludes.push_back(optarg); break;
      case kPreserveSymlinks: preserve_symlinks = true; break;
      case kHelp: std::fputs(kRunUsage, stdout); return 0;
      default:
        if (ParseCredentialOption(option, &common)) break;
        Fail(kExitUsage, absl::StrCat("unknown option \"", argv[optind - 1], "\"; see kiln run --help"));
    }
  }
  if (optind >= argc) Fail(kExitUsage, "no command given; usage: kiln run [options] -- CMD [ARGS...]");
  for (const std::string& output : outputs) {
    if (output.empty() || output[0] == '/' || absl::StrContains("/" + output + "/", "/../")) {
      Fail(kExitUsage, absl::StrCat("--output=", output, ": must be a path inside the input root"));
    }
  }
  struct stat st;
  if (stat(input_root.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    Fail(kExitUsage, absl::StrCat("--input_root=", input_root, " is not a directory"));
  }
  RemoteClient client = Connect(common);

  BlobSet blobs;
  // Kiln itself refuses absolute and escaping symlinks in an input root;
  // another server may allow absolute ones (escaping ones never stay inside).
  root_options.resolve_outside_symlinks = !preserve_symlinks && !client.absolute_symlinks_allowed();
  absl::StatusOr<Digest> root = kiln::client::BuildInputRoot(input_root, &blobs, root_options);
  if (!root.ok()) FailWith(root.status(), "reading the input root");
  rev2::Command command;
  for (int i = optind; i < argc; ++i) command.add_arguments(argv[i]);
  std::sort(env.begin(), env.end());
  for (const auto& [name, value] : env) {
    auto* variable = command.add_environment_variables();
    variable->set_name(name);
    variable->set_value(value);
  }
  std::vector<std::string> sorted_outputs = outputs;
  std::sort(sorted_outputs.begin(), sorted_outputs.end());
  for (const std::string& output : sorted_outputs) command.add_output_paths(output);
  Digest command_digest, action_digest;
  blobs.AddMessage(command.SerializeAsString(), &command_digest);
  rev2::Action action;
  *action.mutable_command_digest() = command_digest.ToProto();
  *action.mutable_input_root_digest() = root->ToProto();
  if (timeout > absl::ZeroDuration()) action.mutable_timeout()->set_seconds(absl::ToInt64Seconds(timeout));
  std::sort(platform.begin(), platform.end());
  for (const auto& [name, value] : platform) {
    auto* property = action.mutable_platform()->add_properties();
    property->set_name(name);
    property->set_value(value);
  }
  blobs.AddMessage(action.SerializeAsString(), &action_digest);

  int64_t total_bytes = 0;
  for (const auto& [hash, digest] : blobs.digests) total_bytes += digest.size;
  absl::StatusOr<kiln::client::UploadStats> uploaded;
  {
    Progress progress("uploading", total_bytes);
    uploaded = client.UploadMissing(blobs, &progress);
  }
  if (!uploaded.ok()) FailWith(uploaded.status(), "uploading inputs");
  if (verbose) {
    std::fprintf(stderr, "kiln: uploaded %lld of %lld blobs (%lld bytes); action %s\n",
                 static_cast<long long>(uploaded->blobs_uploaded), static_cast<long long>(uploaded->blobs_total),
                 static_cast<long long>(uploaded->bytes_uploaded), action_digest.ToString().c_str());
  }

  // Execute, and follow stdout/stderr live as soon as the server names them.
  rev2::ExecuteRequest request;
  request.set_instance_name(common.instance);
  *request.mutable_action_digest() = action_digest.ToProto();
  request.set_skip_cache_lookup(skip_cache);
  grpc::ClientContext context;
  auto reader = client.execution().Execute(&context, request);
  google::longrunning::Operation operation;
  std::atomic<int64_t> printed[2] = {0, 0};
  std::vector<std::thread> followers;
  bool following = false;
  while (reader->Read(&operation)) {
    rev2::ExecuteOperationMetadata metadata;
    operation.metadata().UnpackTo(&metadata);
    if (!following && !metadata.stdout_stream_name().empty()) {
      following = true;
      std::string names[2] = {metadata.stdout_stream_name(), metadata.stderr_stream_name()};
      for (int i = 0; i < 2; ++i) {
        followers.emplace_back([&client, &printed, name = names[i], i] {
          FILE* out = i == 0 ? stdout : stderr;
          (void)client.FollowStream(name, 0, [&](absl::string_view chunk) {
            std::fwrite(chunk.data(), 1, chunk.size(), out);
            std::fflush(out);
            printed[i] += static_cast<int64_t>(chunk.size());
          });
        });
      }
    }
  }
  absl::Status call = kiln::client::FromGrpc(reader->Finish());
  for (auto& follower : followers) follower.join();
  if (!call.ok()) FailWith(call, "the server did not run the action");
  rev2::ExecuteResponse response;
  if (!operation.done() || !operation.response().UnpackTo(&response)) {
    Fail(kExitInternal, "the server ended the operation without a result");
  }
  const rev2::ActionResult& result = response.result();
  // Whatever the live streams did not deliver (a cache hit, or a stream that
  // ended early) comes from the CAS, from where they stopped.
  const rev2::Digest* digests[2] = {&result.stdout_digest(), &result.stderr_digest()};
  for (int i = 0; i < 2; ++i) {
    if (digests[i]->hash().empty() || printed[i] >= digests[i]->size_bytes()) continue;
    FILE* out = i == 0 ? stdout : stderr;
    (void)client.FollowStream(
        absl::StrCat(common.instance, common.instance.empty() ? "" : "/", "blobs/", digests[i]->hash(), "/",
                     digests[i]->size_bytes()),
        printed[i], [&](absl::string_view chunk) { std::fwrite(chunk.data(), 1, chunk.size(), out); });
    std::fflush(out);
  }
  if (verbose) {
    std::fprintf(stderr, "kiln: %s on %s%s\n", response.cached_result() ? "cached result" : "ran",
                 result.execution_metadata().worker().c_str(),
                 response.message().empty() ? "" : (" — " + response.message()).c_str());
  }
  // Outputs go into place even when the command failed: a test report, say.
  {
    absl::StatusOr<UniqueFd> root_fd = OpenFile(input_root, O_RDONLY | O_DIRECTORY);
    absl::Status placed = root_fd.ok() ? PlaceOutputs(client, result, root_fd->get()) : root_fd.status();
    if (!placed.ok()) FailWith(placed, "placing the outputs");
  }
  const absl::StatusCode code = static_cast<absl::StatusCode>(response.status().code());
  if (code == absl::StatusCode::kDeadlineExceeded) {
    Fail(kExitTimeout, absl::StrCat("the action timed out: ", response.status().message()));
  }
  if (code == absl::StatusCode::kResourceExhausted && result.exit_code() != 0) {
    std::fprintf(stderr, "kiln: %s\n", response.status().message().c_str());
    return result.exit_code();
  }
  if (code != absl::StatusCode::kOk) {
    FailWith(absl::Status(code, response.status().message()), "the server could not run the action");
  }
  return result.exit_code();
}

// Parses --server, --instance and --help for the small commands.
std::vector<std::string> ParseCommon(int argc, char** argv, const char* usage, CommonOptions* common) {
  enum { kServer = 1000, kInstance, kHelp };
  static const struct option kOptions[] = {{"server", required_argument, nullptr, kServer},
                                           {"instance", required_argument, nullptr, kInstance},
                                           {"help", no_argument, nullptr, kHelp},
                                           KILN_CREDENTIAL_OPTIONS,
                                           {nullptr, 0, nullptr, 0}};
  opterr = 0;
  for (int option; (option = getopt_long(argc, argv, "+", kOptions, nullptr)) != -1;) {
    switch (option) {
      case kServer: common->server = optarg; break;
      case kInstance: common->instance = optarg; break;
      case kHelp: std::fputs(usage, stdout); std::exit(0);
      default:
        if (ParseCredentialOption(option, common)) break;
        Fail(kExitUsage, absl::StrCat("unknown option \"", argv[optind - 1], "\"\n", usage));
    }
  }
  return std::vector<std::string>(argv + optind, argv + argc);
}

int CasPut(int argc, char** argv) {
  CommonOptions common;
  std::vector<std::string> args = ParseCommon(argc, argv, kCasPutUsage, &common);
  if (args.size() != 1) Fail(kExitUsage, std::string("expected one FILE or DIR\n") + kCasPutUsage);
  RemoteClient client = Connect(common);
  BlobSet blobs;
  struct stat st;
  if (stat(args[0].c_str(), &st) != 0) Fail(kExitUsage, args[0] + " does not exist");
  absl::StatusOr<Digest> digest = S_ISDIR(st.st_mode) ? kiln::client::BuildInputRoot(args[0], &blobs)
                                                       : kiln::client::DigestFile(args[0]);
  if (!digest.ok()) FailWith(digest.status(), "reading " + args[0]);
  if (!S_ISDIR(st.st_mode)) blobs.AddFile(args[0], *digest);
  absl::StatusOr<kiln::client::UploadStats> uploaded;
  {
    Progress progress("uploading", st.st_size);
    uploaded = client.UploadMissing(blobs, &progress);
  }
  if (!uploaded.ok()) FailWith(uploaded.status(), "uploading");
  std::printf("%s\n", digest->ToString().c_str());
  return 0;
}

int CasGet(int argc, char** argv) {
  CommonOptions common;
  std::vector<std::string> args = ParseCommon(argc, argv, kCasGetUsage, &common);
  if (args.size() != 2) Fail(kExitUsage, std::string("expected HASH/SIZE and PATH\n") + kCasGetUsage);
  absl::StatusOr<Digest> digest = ParseDigestArg(args[0]);
  if (!digest.ok()) Fail(kExitUsage, std::string(digest.status().message()));
  RemoteClient client = Connect(common);
  Progress progress("downloading", digest->size);
  absl::Status s = client.DownloadFile(digest->ToProto(), args[1], false, &progress);
  if (!s.ok()) FailWith(s, "downloading " + args[0]);
  return 0;
}

int Result(int argc, char** argv) {
  CommonOptions common;
  std::vector<std::string> args = ParseCommon(argc, argv, kResultUsage, &common);
  if (args.size() != 1) Fail(kExitUsage, std::string("expected an action digest HASH/SIZE\n") + kResultUsage);
  absl::StatusOr<Digest> digest = ParseDigestArg(args[0]);
  if (!digest.ok()) Fail(kExitUsage, std::string(digest.status().message()));
  RemoteClient client = Connect(common);
  rev2::GetActionResultRequest request;
  request.set_instance_name(common.instance);
  *request.mutable_action_digest() = digest->ToProto();
  rev2::ActionResult result;
  grpc::ClientContext context;
  absl::Status s = kiln::client::FromGrpc(client.action_cache().GetActionResult(&context, request, &result));
  if (!s.ok()) FailWith(s, "no cached result for " + args[0]);
  std::string json;
  google::protobuf::util::JsonPrintOptions options;
  options.add_whitespace = true;
  options.preserve_proto_field_names = true;
  (void)google::protobuf::util::MessageToJsonString(result, &json, options);
  std::printf("%s", json.c_str());
  return 0;
}

int Health(int argc, char** argv) {
  CommonOptions common;
  std::string service;
  // --service is this command's own; the rest are the common options.
  std::vector<char*> rest;
  for (int i = 0; i < argc; ++i) {
    absl::string_view arg = argv[i];
    if (absl::ConsumePrefix(&arg, "--service=")) {
      service = std::string(arg);
    } else {
      rest.push_back(argv[i]);
    }
  }
  std::vector<std::string> args =
      ParseCommon(static_cast<int>(rest.size()), rest.data(), kHealthUsage, &common);
  if (!args.empty()) Fail(kExitUsage, absl::StrCat("unexpected argument \"", args[0], "\"\n", kHealthUsage));
  if (common.server.empty()) Fail(kExitUsage, "--server=HOST:PORT is required");
  RemoteClient client(common.server, common.instance, LoadCredentials(common));
  absl::StatusOr<bool> serving = client.CheckHealth(service, absl::Seconds(5));
  if (!serving.ok()) {
    Fail(kExitUnreachable, absl::StrCat("no health answer from ", common.server, ": ",
                                        serving.status().message()));
  }
  std::printf("%s\n", *serving ? "SERVING" : "NOT_SERVING");
  return *serving ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || std::string(argv[1]) == "--help" || std::string(argv[1]) == "help") {
    std::fputs(kMainUsage, argc < 2 ? stderr : stdout);
    return argc < 2 ? kExitUsage : 0;
  }
  std::string command = argv[1];
  if (command == "run") return Run(argc - 1, argv + 1);
  if (command == "result") return Result(argc - 1, argv + 1);
  if (command == "health") return Health(argc - 1, argv + 1);
  if (command == "cas" && argc >= 3) {
    std::string sub = argv[2];
    if (sub == "put") return CasPut(argc - 2, argv + 2);
    if (sub == "get") return CasGet(argc - 2, argv + 2);
  }
  Fail(kExitUsage, absl::StrCat("unknown command \"", command, "\"\n", kMainUsage));
}
