// Live stdout/stderr of running actions. The sandbox writes to a plain file,
// which never blocks it whatever the readers do; a LogStream keeps that file
// open for reading (it stays readable after the action directory is gone) and
// tells readers when no more bytes will come. Memory stays constant whatever
// the output size: the bytes live on disk.
//
// LogRegistry maps the ByteStream resource names announced in
// ExecuteOperationMetadata.stdout_stream_name / stderr_stream_name to the
// streams of operations still in flight. Both are thread-safe.
#ifndef KILN_SERVER_EXEC_LOG_STREAM_H_
#define KILN_SERVER_EXEC_LOG_STREAM_H_

#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "common/posix.h"

namespace kiln::exec {

class LogStream {
 public:
  // A stream whose file does not exist yet: it reads as empty (and not
  // finished) until Attach, so its name can be announced before the action
  // starts.
  static std::shared_ptr<LogStream> Pending();
  // Opens the file the writer appends to. Once only.
  absl::Status Attach(const std::string& path);

  // Up to `max` bytes from `offset`; empty when nothing new was written yet.
  absl::StatusOr<std::string> Read(int64_t offset, int64_t max) const;
  // Called once the writer is gone (or will never come): no byte will be
  // added any more.
  void MarkFinished();
  bool finished() const;

 private:
  LogStream() = default;
  mutable absl::Mutex mu_;
  UniqueFd fd_ ABSL_GUARDED_BY(mu_);  // invalid until Attach
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
};

class LogRegistry {
 public:
  // `owner`: the principal whose operation writes the stream.
  void Register(const std::string& name, std::shared_ptr<LogStream> stream,
                const std::string& owner = "");
  void Unregister(const std::string& name);
  // nullptr for unknown names and for operations that have finished;
  // `owner`, if given, receives the stream's owner.
  std::shared_ptr<LogStream> Find(const std::string& name, std::string* owner = nullptr);

  // "{instance}/kiln-logs/{operation id}/{stdout|stderr}"
  static std::string StreamName(const std::string& instance, const std::string& operation_name,
                                const std::string& which);
  static bool IsStreamName(const std::string& resource_name);

 private:
  absl::Mutex mu_;
  struct Entry {
    std::shared_ptr<LogStream> stream;
    std::string owner;
  };
  absl::flat_hash_map<std::string, Entry> streams_ ABSL_GUARDED_BY(mu_);
};

}  // namespace kiln::exec

#endif  // KILN_SERVER_EXEC_LOG_STREAM_H_
