// A gRPC client interceptor that adds `authorization: Bearer <token>` to
// every call of a channel. An interceptor rather than call credentials,
// which gRPC sends over TLS only: a worker or scheduler on loopback or a
// private network may take tokens in plaintext. Shared by the `kiln` client
// and the cluster worker's channels.
#ifndef KILN_COMMON_BEARER_INTERCEPTOR_H_
#define KILN_COMMON_BEARER_INTERCEPTOR_H_

#include <string>

#include <grpcpp/support/client_interceptor.h>

namespace kiln {

class BearerInterceptorFactory final : public grpc::experimental::ClientInterceptorFactoryInterface {
 public:
  explicit BearerInterceptorFactory(const std::string& token) : header_("Bearer " + token) {}
  grpc::experimental::Interceptor* CreateClientInterceptor(grpc::experimental::ClientRpcInfo*) override {
    return new Interceptor(&header_);
  }

 private:
  class Interceptor final : public grpc::experimental::Interceptor {
   public:
    explicit Interceptor(const std::string* header) : header_(header) {}
    void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
      if (methods->QueryInterceptionHookPoint(
              grpc::experimental::InterceptionHookPoints::PRE_SEND_INITIAL_METADATA)) {
        methods->GetSendInitialMetadata()->insert({"authorization", *header_});
      }
      methods->Proceed();
    }

   private:
    const std::string* header_;
  };

  const std::string header_;  // lives as long as the channel
};

}  // namespace kiln

#endif  // KILN_COMMON_BEARER_INTERCEPTOR_H_
