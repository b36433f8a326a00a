// Puts a unary call's request and response on one protobuf Arena, freed at
// once when the call ends. For calls whose messages hold thousands of small
// submessages (FindMissingBlobs with 10,000 digests), this replaces tens of
// thousands of malloc/free pairs with a few block allocations.
#ifndef KILN_SERVER_API_ARENA_MESSAGE_ALLOCATOR_H_
#define KILN_SERVER_API_ARENA_MESSAGE_ALLOCATOR_H_

#include <google/protobuf/arena.h>
#include <grpcpp/support/message_allocator.h>

namespace kiln::api {

// Thread-safe (it keeps no state); must outlive the server, as gRPC requires.
template <class Request, class Response>
class ArenaMessageAllocator final : public grpc::MessageAllocator<Request, Response> {
 public:
  grpc::MessageHolder<Request, Response>* AllocateMessages() override { return new Holder(); }

 private:
  class Holder final : public grpc::MessageHolder<Request, Response> {
   public:
    Holder() {
      this->set_request(google::protobuf::Arena::CreateMessage<Request>(&arena_));
      this->set_response(google::protobuf::Arena::CreateMessage<Response>(&arena_));
    }
    void Release() override { delete this; }

   private:
    google::protobuf::Arena arena_;
  };
};

}  // namespace kiln::api

#endif  // KILN_SERVER_API_ARENA_MESSAGE_ALLOCATOR_H_
