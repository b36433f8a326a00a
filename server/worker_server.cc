#include "server/worker_server.h"

#include <fcntl.h>
#include <algorithm>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <grpcpp/health_check_service_interface.h>
#include <grpcpp/security/server_credentials.h>
#include <grpcpp/security/tls_certificate_provider.h>
#include <grpcpp/security/tls_credentials_options.h>
#include <grpcpp/server_builder.h>
#include <spdlog/spdlog.h>

#include "absl/strings/str_cat.h"
#include "common/ext_journal.h"
#include "common/path_beneath.h"
#include "common/status_macros.h"
#include "grpc/health/v1/health.pb.h"
#include "server/api/reflection_service.h"
#include "server/cas/unsynced_writes.h"
#include "server/process_metrics.h"

namespace kiln {
namespace {

// The state dir holds every tenant's blobs and results and the actions'
// roots: only the worker may enter it. An existing dir is tightened to 0700,
// never widened.
absl::Status MakePrivateStateDir(const std::string& state_dir) {
  if (mkdir(state_dir.c_str(), 0700) == 0) return absl::OkStatus();
  if (errno == ENOENT) {
    RETURN_IF_ERROR(MakeDirectories(state_dir, 0700));
    return absl::OkStatus();
  }
  if (errno != EEXIST) return PosixError("mkdir " + state_dir, errno);
  struct stat st;
  if (lstat(state_dir.c_str(), &st) != 0) return PosixError("lstat " + state_dir, errno);
  if (!S_ISDIR(st.st_mode)) {
    return absl::FailedPreconditionError(absl::StrCat("--state_dir ", state_dir, " is not a directory"));
  }
  if (st.st_uid != geteuid()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "--state_dir ", state_dir, " belongs to uid ", st.st_uid, ", not to this worker's uid ",
        geteuid(), "; another user could read or change every blob in it"));
  }
  if ((st.st_mode & 077) != 0) {
    spdlog::warn("state dir {} was mode {:o}; making it 0700 (only the worker may read it)",
                 state_dir, st.st_mode & 07777);
    if (chmod(state_dir.c_str(), 0700) != 0) return PosixError("chmod " + state_dir, errno);
  }
  return absl::OkStatus();
}

absl::StatusOr<UniqueFd> LockStateDir(const std::string& state_dir) {
  RETURN_IF_ERROR(MakePrivateStateDir(state_dir));
  std::string path = state_dir + "/LOCK";
  ASSIGN_OR_RETURN(UniqueFd fd, OpenFile(path, O_RDWR | O_CREAT, 0644));
  if (flock(fd.get(), LOCK_EX | LOCK_NB) != 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        "state dir ", state_dir, " is in use by another kiln-worker (", path,
        " is locked); stop it or pass a different --state_dir"));
  }
  return fd;
}

// Every action creates and removes about a dozen inodes in the state dir; on
// an ext4 without a journal each create scans past the recently freed ones
// (common/ext_journal.h). An operator cannot see that from the worker's
// numbers alone, so it is said once, at start.
void WarnIfWithoutJournal(const std::string& state_dir) {
  absl::StatusOr<bool> without = IsExtWithoutJournal(state_dir);
  if (!without.ok()) {
    spdlog::debug("cannot tell whether {} has a journal: {}", state_dir, without.status().ToString());
  } else if (*without) {
    spdlog::warn(
        "state dir {} is on an ext4 without a journal: there each new file or directory is found by "
        "scanning past every inode freed in the last minutes, and each action makes about a dozen "
        "(0.15-0.7 ms of CPU each, against ~0.03 ms with a journal). Put --state_dir on a journaled "
        "ext4 or on xfs (docs/operations.md, \"The state dir's filesystem\")",
        state_dir);
  }
}

absl::Status CheckReadable(const std::string& path, const char* flag) {
  if (access(path.c_str(), R_OK) != 0) {
    return absl::NotFoundError(absl::StrCat("cannot read ", flag, "=", path));
  }
  return absl::OkStatus();
}

// gRPC's own TLS: the file watcher re-reads the certificate, key and client
// CA when they change, so rotation needs no restart and keeps connections.
absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> ListenerCredentials(
    const WorkerOptions& options) {
  if (options.tls_cert.empty() && options.tls_key.empty()) {
    if (!options.tls_client_ca.empty()) {
      return absl::InvalidArgumentError("--tls_client_ca needs --tls_cert and --tls_key");
    }
    return grpc::InsecureServerCredentials();
  }
  if (options.tls_cert.empty() || options.tls_key.empty()) {
    return absl::InvalidArgumentError("--tls_cert and --tls_key go together");
  }
  RETURN_IF_ERROR(CheckReadable(options.tls_cert, "--tls_cert"));
  RETURN_IF_ERROR(CheckReadable(options.tls_key, "--tls_key"));
  if (!options.tls_client_ca.empty()) {
    RETURN_IF_ERROR(CheckReadable(options.tls_client_ca, "--tls_client_ca"));
  }
  auto provider = std::make_shared<grpc::experimental::FileWatcherCertificateProvider>(
      options.tls_key, options.tls_cert, options.tls_client_ca,
      static_cast<unsigned int>(std::max<int64_t>(1, absl::ToInt64Seconds(options.tls_reload_interval))));
  grpc::experimental::TlsServerCredentialsOptions tls(provider);
  tls.watch_identity_key_cert_pairs();
  if (options.tls_client_ca.empty()) {
    tls.set_cert_request_type(GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE);
  } else {
    tls.watch_root_certs();
    tls.set_cert_request_type(GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
  }
  return grpc::experimental::TlsServerCredentials(tls);
}

// Resolves --fsync and readies the state dir for that kind of write
// (server/cas/unsynced_writes.h); returns whether writes are fsynced.
absl::StatusOr<bool> PrepareWrites(const WorkerOptions& options, bool cluster_mode) {
  bool fsync;
  if (options.fsync == "always") {
    fsync = true;
  } else if (options.fsync == "never") {
    fsync = false;
  } else if (options.fsync == "auto") {
    fsync = !cluster_mode;
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("--fsync=", options.fsync, " is not one of auto, always, never"));
  }
  ASSIGN_OR_RETURN(std::string boot_id, cas::CurrentBootId());
  ASSIGN_OR_RETURN(cas::UnsyncedWritesReport report,
                   cas::PrepareStateDirForWrites(options.state_dir, fsync, boot_id));
  if (report.verified) {
    spdlog::warn(
        "state dir {} was written without fsync before the machine restarted (boot {}): {} blobs "
        "({} bytes) verified, {} torn ones quarantined, {} action-cache entries dropped",
        options.state_dir, report.unsynced_boot_id, report.verify.blobs_checked,
        report.verify.bytes_checked, report.verify.problems.size(), report.verify.entries_dropped);
    for (const std::string& problem : report.verify.problems) spdlog::warn("{}", problem);
  }
  if (!fsync) {
    spdlog::info("CAS and action cache writes are not fsynced (--fsync={}): a machine crash loses "
                 "recent ones, and the next start verifies the state dir", options.fsync);
  }
  return fsync;
}

}  // namespace

absl::StatusOr<std::unique_ptr<WorkerServer>> WorkerServer::Start(const WorkerOptions& options) {
  std::unique_ptr<WorkerServer> worker(new WorkerServer());
  ASSIGN_OR_RETURN(worker->state_lock_, LockStateDir(options.state_dir));
  WarnIfWithoutJournal(options.state_dir);
  const bool cluster_mode = !options.cluster.scheduler.empty();
  ASSIGN_OR_RETURN(const bool fsync, PrepareWrites(options, cluster_mode));

  cas::BlobStoreOptions cas_options;
  cas_options.root = options.state_dir + "/cas";
  cas_options.max_bytes = options.cas_max_bytes;
  cas_options.max_blob_bytes =
      options.cas_max_blob_bytes == 0 ? options.cas_max_bytes : options.cas_max_blob_bytes;
  cas_options.fsync = fsync;
  ASSIGN_OR_RETURN(worker->cas_, cas::BlobStore::Open(cas_options));
  ASSIGN_OR_RETURN(worker->action_cache_,
                   cas::ActionCache::Open(options.state_dir + "/ac", worker->cas_.get(), fsync));
  const cas::BlobStoreStats stats = worker->cas_->GetStats();
  spdlog::info("CAS at {}: {} blobs, {} bytes (cap {} bytes)", cas_options.root, stats.blobs,
               stats.bytes, cas_options.max_bytes);

  ASSIGN_OR_RETURN(std::shared_ptr<grpc::ServerCredentials> credentials, ListenerCredentials(options));

  worker->metrics_ = std::make_unique<metrics::WorkerMetrics>(*worker->registry_);
  if (!options.token_file.empty() || !options.tls_client_ca.empty() ||
      !options.jwt.public_keys_file.empty()) {
    api::AuthorizerOptions auth_options;
    auth_options.token_file = options.token_file;
    auth_options.jwt = options.jwt;
    auth_options.client_certificates = !options.tls_client_ca.empty();
    metrics::WorkerMetrics* recorder = worker->metrics_.get();
    auth_options.on_decision = [recorder](const std::string& principal, absl::StatusCode code) {
      recorder->RecordAuthorization(principal, code);
    };
    ASSIGN_OR_RETURN(worker->authorizer_, api::Authorizer::Create(auth_options));
  }

  worker->io_ = std::make_unique<ThreadPool>(options.io_threads);
  api::Storage storage{worker->cas_.get(), worker->action_cache_.get(), worker->io_.get(),
                       kMaxBatchTotalBytes, &worker->logs_, worker->authorizer_.get()};
  if (cluster_mode && options.concurrency < 1) {
    return absl::InvalidArgumentError("--scheduler needs --concurrency of at least 1 (the slots it offers)");
  }
  // In cluster mode clients execute through the cluster's frontend, not here.
  const bool exec_enabled = options.concurrency > 0 && !cluster_mode;
  worker->capabilities_service_ =
      std::make_unique<api::CapabilitiesService>(kMaxBatchTotalBytes, exec_enabled,
                                                worker->authorizer_.get(), cas_options.max_blob_bytes);
  if (exec_enabled || cluster_mode) {
    exec::ExecOptions exec_options = options.exec;
    exec_options.exec_root = options.state_dir + "/exec";
    // Action directories of a previous run (a crash) are removed here.
    RETURN_IF_ERROR(RemoveTreeBeneathParent(exec_options.exec_root));
    RETURN_IF_ERROR(MakeDirectories(exec_options.exec_root, 0700));
    if (access(exec_options.sandbox_binary.c_str(), X_OK) != 0) {
      return absl::FailedPreconditionError(absl::StrCat(
          "the sandbox binary ", exec_options.sandbox_binary, " is not executable (--sandbox_binary)"));
    }
    ASSIGN_OR_RETURN(worker->stager_, exec::InputStager::Create(worker->cas_.get(),
                                                                options.state_dir + "/exec-cache"));
    worker->runner_ = std::make_unique<exec::ActionRunner>(worker->cas_.get(), worker->action_cache_.get(),
                                                           worker->stager_.get(), exec_options);
    worker->runner_->Prewarm(options.concurrency);
  }
  if (exec_enabled) {
    metrics::WorkerMetrics* recorder = worker->metrics_.get();
    worker->scheduler_ = std::make_unique<exec::Scheduler>(
        worker->runner_.get(), &worker->logs_, options.concurrency, options.max_queued_actions,
        [recorder](const rev2::ExecuteResponse& response, const exec::RunReport& report) {
          recorder->RecordAction(response, report);
        },
        options.max_kept_operations);
    worker->execution_service_ = std::make_unique<api::ExecutionService>(
        storage, worker->scheduler_.get(), [recorder] { recorder->RecordCacheHit(); });
    worker->operations_service_ = std::make_unique<api::OperationsService>(worker->scheduler_.get(),
                                                                          worker->authorizer_.get());
  }
  worker->cas_service_ = std::make_unique<api::CasService>(storage);
  worker->bytestream_service_ = std::make_unique<api::ByteStreamService>(storage);
  worker->action_cache_service_ = std::make_unique<api::ActionCacheService>(storage);

  worker->state_collector_ =
      std::make_shared<metrics::WorkerStateCollector>(worker->cas_.get(), worker->scheduler_.get());
  if (!options.metrics_listen.empty()) {
    try {
      worker->exposer_ = std::make_unique<prometheus::Exposer>(options.metrics_listen);
    } catch (const std::exception& e) {
      return absl::UnavailableError(absl::StrCat("cannot serve metrics on --metrics_listen=",
                                                 options.metrics_listen, ": ", e.what()));
    }
    worker->exposer_->RegisterCollectable(worker->registry_);
    worker->process_metrics_ = std::make_shared<ProcessMetrics>();
    // The exposer holds collectables weakly; the worker owns them.
    worker->exposer_->RegisterCollectable(worker->process_metrics_);
    worker->exposer_->RegisterCollectable(worker->state_collector_);
    worker->metrics_port_ = worker->exposer_->GetListeningPorts().front();
  }

  worker->memory_trimmer_ = std::make_unique<MemoryTrimmer>(absl::Seconds(5));

  grpc::EnableDefaultHealthCheckService(true);
  grpc::ServerBuilder builder;
  builder.AddListeningPort(options.listen, credentials, &worker->grpc_port_);
  builder.SetMaxReceiveMessageSize(kMaxGrpcMessageBytes);
  builder.SetMaxSendMessageSize(kMaxGrpcMessageBytes);
  std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>> interceptors;
  interceptors.push_back(worker->metrics_->InterceptorFactory());
  builder.experimental().SetInterceptorCreators(std::move(interceptors));
  builder.RegisterService(worker->capabilities_service_.get());
  builder.RegisterService(worker->cas_service_.get());
  builder.RegisterService(worker->bytestream_service_.get());
  builder.RegisterService(worker->action_cache_service_.get());
  if (exec_enabled) {
    builder.RegisterService(worker->execution_service_.get());
    builder.RegisterService(worker->operations_service_.get());
  }
  // What this worker serves, for reflection and for Health.Check by name.
  std::vector<std::string> served_names = {
      rev2::Capabilities::service_full_name(), rev2::ContentAddressableStorage::service_full_name(),
      api::bs::ByteStream::service_full_name(), rev2::ActionCache::service_full_name()};
  if (exec_enabled) {
    served_names.push_back(rev2::Execution::service_full_name());
    served_names.push_back(api::lro::Operations::service_full_name());
  }
  if (options.reflection) {
    // HealthCheckRequest::descriptor() also links Health's descriptor in.
    std::vector<const google::protobuf::ServiceDescriptor*> served = {
        grpc::health::v1::HealthCheckRequest::descriptor()->file()->FindServiceByName("Health")};
    for (const std::string& name : served_names) {
      served.push_back(google::protobuf::DescriptorPool::generated_pool()->FindServiceByName(name));
    }
    worker->reflection_services_ = api::MakeReflectionServices(std::move(served));
    for (const auto& service : worker->reflection_services_) builder.RegisterService(service.get());
  }
  worker->server_ = builder.BuildAndStart();
  if (worker->server_ == nullptr || worker->grpc_port_ == 0) {
    return absl::UnavailableError(absl::StrCat(
        "cannot listen on --listen=", options.listen,
        " (is the address valid and the port free?)"));
  }
  // Health.Check of a named service answers SERVING for each one served
  // (until draining); other names stay NOT_FOUND.
  for (const std::string& name : served_names) {
    worker->server_->GetHealthCheckService()->SetServingStatus(name, true);
  }
  if (cluster_mode) {
    // Health says whether the scheduler is reachable: NOT_SERVING until a
    // slot's Synchronize succeeded, and whenever none does.
    grpc::HealthCheckServiceInterface* health = worker->server_->GetHealthCheckService();
    health->SetServingStatus(false);
    cluster::ClusterOptions cluster_options = options.cluster;
    cluster_options.slots = options.concurrency;
    cluster_options.worker_name = options.exec.worker_name;
    cluster_options.platform = exec::AdvertisedPlatform(options.exec.platform);
    worker->cluster_metrics_ = std::make_unique<cluster::ClusterMetrics>(*worker->registry_);
    metrics::WorkerMetrics* recorder = worker->metrics_.get();
    WorkerServer* self = worker.get();
    ASSIGN_OR_RETURN(
        worker->cluster_worker_,
        cluster::ClusterWorker::Start(
            cluster_options, worker->runner_.get(), worker->cas_.get(), &worker->logs_,
            worker->cluster_metrics_.get(),
            [recorder](const rev2::ExecuteResponse& response, const exec::RunReport& report) {
              recorder->RecordAction(response, report);
            },
            [self](bool reachable) {
              if (self->shut_down_) return;
              spdlog::info("scheduler {}", reachable ? "reachable: health SERVING" : "unreachable: health NOT_SERVING");
              self->server_->GetHealthCheckService()->SetServingStatus(reachable);
            }));
  }
  spdlog::info("kiln-worker serving REAPI on {} (port {}, {}, authorization {}, reflection {}), metrics on {}",
               options.listen, worker->grpc_port_, options.tls_cert.empty() ? "plaintext" : "TLS",
               worker->authorizer_ != nullptr ? "on" : "off", options.reflection ? "on" : "off",
               options.metrics_listen.empty() ? "(disabled)" : options.metrics_listen);
  return worker;
}

WorkerServer::~WorkerServer() {
  if (server_ != nullptr) Shutdown(absl::ZeroDuration());
  scheduler_.reset();  // joins the slot threads
  cluster_worker_.reset();
  io_.reset();  // finish queued disk work before the stores go away
}

void WorkerServer::Wait() { server_->Wait(); }

void WorkerServer::Shutdown(absl::Duration grace) {
  if (shut_down_.exchange(true)) return;
  server_->GetHealthCheckService()->Shutdown();
  if (scheduler_ != nullptr) {
    spdlog::info("draining: running actions get {} to finish", absl::FormatDuration(grace));
    scheduler_->Drain(grace);
  }
  if (cluster_worker_ != nullptr) {
    spdlog::info("draining: no new work from the scheduler, running actions get {} to finish",
                 absl::FormatDuration(grace));
    cluster_worker_->Drain(grace);
  }
  // Streams of finished operations have their last message queued by now.
  server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
}

}  // namespace kiln
