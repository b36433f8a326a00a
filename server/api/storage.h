// What the storage services share: the stores, the pool that runs their disk
// work off the gRPC threads, and the limits they announce and enforce.
#ifndef KILN_SERVER_API_STORAGE_H_
#define KILN_SERVER_API_STORAGE_H_

#include <cstdint>
#include <functional>

#include "common/thread_pool.h"
#include "server/cas/action_cache.h"
#include "server/cas/blob_store.h"
#include "server/api/authorizer.h"
#include "server/exec/log_stream.h"

namespace kiln::api {

struct Storage {
  cas::BlobStore* cas = nullptr;
  cas::ActionCache* action_cache = nullptr;
  ThreadPool* io = nullptr;
  // Total blob bytes accepted in one BatchUpdateBlobs / BatchReadBlobs call;
  // kept below the gRPC message limit so a full batch still fits on the wire.
  int64_t max_batch_total_bytes = 0;
  // Live action output streams; null when the worker does not execute.
  exec::LogRegistry* logs = nullptr;
  // Who may call what; null: authorization is off.
  const Authorizer* authorizer = nullptr;
};

}  // namespace kiln::api

#endif  // KILN_SERVER_API_STORAGE_H_
