#include "server/api/reflection_service.h"

#include <string>
#include <utility>

#include <google/protobuf/descriptor.pb.h>
#include <grpcpp/support/server_callback.h>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "grpc/reflection/v1/reflection.grpc.pb.h"
#include "grpc/reflection/v1alpha/reflection.grpc.pb.h"
#include "server/api/reactor_lifetime.h"

namespace kiln::api {
namespace {

using google::protobuf::DescriptorPool;
using google::protobuf::FileDescriptor;

constexpr int kNotFound = 5;  // google.rpc.Code

// What both versions answer from.
struct Index {
  std::vector<std::string> service_names;
};

// Answers one request. v1 and v1alpha messages are identical but for their
// package, so one template serves both. `sent` holds the files this stream
// has already sent.
template <class Request, class Response>
void Answer(const Index& index, const Request& request, absl::flat_hash_set<std::string>* sent,
            Response* response) {
  response->Clear();
  response->set_valid_host(request.host());
  *response->mutable_original_request() = request;
  const DescriptorPool* pool = DescriptorPool::generated_pool();
  auto not_found = [response](std::string message) {
    response->mutable_error_response()->set_error_code(kNotFound);
    response->mutable_error_response()->set_error_message(std::move(message));
  };
  // The file and every dependency this stream has not sent yet, the file
  // first (clients resolve the rest by name).
  auto send_file = [response, sent](const FileDescriptor* file) {
    auto* files = response->mutable_file_descriptor_response();
    std::vector<const FileDescriptor*> pending{file};
    bool first = true;
    while (!pending.empty()) {
      const FileDescriptor* next = pending.back();
      pending.pop_back();
      if (!sent->insert(next->name()).second && !first) continue;
      first = false;
      google::protobuf::FileDescriptorProto proto;
      next->CopyTo(&proto);
      files->add_file_descriptor_proto(proto.SerializeAsString());
      for (int i = 0; i < next->dependency_count(); ++i) pending.push_back(next->dependency(i));
    }
  };

  switch (request.message_request_case()) {
    case Request::kListServices:
      for (const std::string& name : index.service_names) {
        response->mutable_list_services_response()->add_service()->set_name(name);
      }
      break;
    case Request::kFileByFilename:
      if (const FileDescriptor* file = pool->FindFileByName(request.file_by_filename())) {
        send_file(file);
      } else {
        not_found(absl::StrCat("no file named ", request.file_by_filename()));
      }
      break;
    case Request::kFileContainingSymbol:
      if (const FileDescriptor* file = pool->FindFileContainingSymbol(request.file_containing_symbol())) {
        send_file(file);
      } else {
        not_found(absl::StrCat("no symbol named ", request.file_containing_symbol()));
      }
      break;
    case Request::kFileContainingExtension: {
      const auto& wanted = request.file_containing_extension();
      const google::protobuf::Descriptor* type = pool->FindMessageTypeByName(wanted.containing_type());
      const google::protobuf::FieldDescriptor* extension =
          type == nullptr ? nullptr : pool->FindExtensionByNumber(type, wanted.extension_number());
      if (extension != nullptr) {
        send_file(extension->file());
      } else {
        not_found(absl::StrCat("no extension ", wanted.extension_number(), " of ", wanted.containing_type()));
      }
      break;
    }
    case Request::kAllExtensionNumbersOfType:
      if (const google::protobuf::Descriptor* type =
              pool->FindMessageTypeByName(request.all_extension_numbers_of_type())) {
        std::vector<const google::protobuf::FieldDescriptor*> extensions;
        pool->FindAllExtensions(type, &extensions);
        auto* numbers = response->mutable_all_extension_numbers_response();
        numbers->set_base_type_name(type->full_name());
        for (const auto* extension : extensions) numbers->add_extension_number(extension->number());
      } else {
        not_found(absl::StrCat("no message type named ", request.all_extension_numbers_of_type()));
      }
      break;
    default:
      response->mutable_error_response()->set_error_code(12);  // UNIMPLEMENTED
      response->mutable_error_response()->set_error_message("unknown reflection request");
      break;
  }
}

// One reflection stream: read a request, write its answer, repeat until the
// client half-closes. One op at a time, so `sent_` needs no lock.
template <class Request, class Response>
class ReflectionReactor final : public ManagedReactor<grpc::ServerBidiReactor<Request, Response>> {
  using Base = ManagedReactor<grpc::ServerBidiReactor<Request, Response>>;

 public:
  ReflectionReactor(const Index* index, LiveReactors* live) : Base(live), index_(index) {
    this->StartReadHeld(&request_);
  }

  void OnReadDone(bool ok) override {
    typename Base::ScopedRelease release(this);
    if (!ok) {  // the client is done asking
      this->FinishOnce(grpc::Status::OK);
      return;
    }
    Answer(*index_, request_, &sent_, &response_);
    this->StartWriteHeld(&response_);
  }

  void OnWriteDone(bool ok) override {
    typename Base::ScopedRelease release(this);
    if (!ok) {
      this->FinishOnce(grpc::Status(grpc::StatusCode::CANCELLED, "the client went away"));
      return;
    }
    this->StartReadHeld(&request_);
  }

 private:
  const Index* const index_;
  Request request_;
  Response response_;
  absl::flat_hash_set<std::string> sent_;
};

template <class Service, class Request, class Response>
class ReflectionService final : public Service::CallbackService {
 public:
  explicit ReflectionService(std::shared_ptr<const Index> index) : index_(std::move(index)) {}

  grpc::ServerBidiReactor<Request, Response>* ServerReflectionInfo(grpc::CallbackServerContext*) override {
    return new ReflectionReactor<Request, Response>(index_.get(), &live_reactors_);
  }

 private:
  const std::shared_ptr<const Index> index_;
  LiveReactors live_reactors_;  // last: destroyed first, waits for the reactors
};

}  // namespace

std::vector<std::unique_ptr<grpc::Service>> MakeReflectionServices(
    std::vector<const google::protobuf::ServiceDescriptor*> served) {
  namespace v1 = grpc::reflection::v1;
  namespace v1alpha = grpc::reflection::v1alpha;
  served.push_back(v1::ServerReflectionRequest::descriptor()->file()->service(0));
  served.push_back(v1alpha::ServerReflectionRequest::descriptor()->file()->service(0));
  auto index = std::make_shared<Index>();
  for (const auto* service : served) index->service_names.push_back(service->full_name());
  std::vector<std::unique_ptr<grpc::Service>> services;
  services.push_back(std::make_unique<ReflectionService<v1::ServerReflection, v1::ServerReflectionRequest,
                                                        v1::ServerReflectionResponse>>(index));
  services.push_back(
      std::make_unique<ReflectionService<v1alpha::ServerReflection, v1alpha::ServerReflectionRequest,
                                         v1alpha::ServerReflectionResponse>>(index));
  return services;
}

}  // namespace kiln::api
