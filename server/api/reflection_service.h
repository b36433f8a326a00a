// gRPC server reflection, both protocol versions: grpc.reflection.v1 (grpcurl
// 1.9+, current grpc_cli) and grpc.reflection.v1alpha (older clients). gRPC's
// own plugin in Debian's 1.51 speaks v1alpha only and lists only the services
// registered through the builder, so Health (built into gRPC) was missing.
//
// Both answer from the process's generated descriptor pool: `list_services`
// names exactly the services given here (plus the two reflection services),
// and a file is sent with the dependencies not yet sent on the same stream,
// as gRPC's implementation does. Reflection is open like Health: it reveals
// the API's shape, never data (the worker's --reflection turns it off).
#ifndef KILN_SERVER_API_REFLECTION_SERVICE_H_
#define KILN_SERVER_API_REFLECTION_SERVICE_H_

#include <memory>
#include <vector>

#include <google/protobuf/descriptor.h>
#include <grpcpp/impl/service_type.h>

namespace kiln::api {

// The v1 and v1alpha services, to be registered with the server builder and
// kept alive as long as it. `served` are the other services the server
// serves; none may be null.
std::vector<std::unique_ptr<grpc::Service>> MakeReflectionServices(
    std::vector<const google::protobuf::ServiceDescriptor*> served);

}  // namespace kiln::api

#endif  // KILN_SERVER_API_REFLECTION_SERVICE_H_
