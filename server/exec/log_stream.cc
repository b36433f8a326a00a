#include "server/exec/log_stream.h"

#include <fcntl.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "common/status_macros.h"

namespace kiln::exec {

std::shared_ptr<LogStream> LogStream::Pending() { return std::shared_ptr<LogStream>(new LogStream()); }

absl::Status LogStream::Attach(const std::string& path) {
  ASSIGN_OR_RETURN(UniqueFd fd, OpenFile(path, O_RDONLY));
  absl::MutexLock lock(&mu_);
  if (fd_.get() >= 0) return absl::FailedPreconditionError("log stream attached twice");
  fd_ = std::move(fd);
  return absl::OkStatus();
}

absl::StatusOr<std::string> LogStream::Read(int64_t offset, int64_t max) const {
  // Held across the read so that the fd cannot change under it; reads of a
  // local file are short, and only MarkFinished/Attach wait on them.
  absl::MutexLock lock(&mu_);
  if (fd_.get() < 0) return std::string();
  return ReadAt(fd_.get(), offset, max, "action log");
}

void LogStream::MarkFinished() {
  absl::MutexLock lock(&mu_);
  finished_ = true;
}

bool LogStream::finished() const {
  absl::MutexLock lock(&mu_);
  return finished_;
}

void LogRegistry::Register(const std::string& name, std::shared_ptr<LogStream> stream,
                           const std::string& owner) {
  absl::MutexLock lock(&mu_);
  streams_[name] = Entry{std::move(stream), owner};
}

void LogRegistry::Unregister(const std::string& name) {
  absl::MutexLock lock(&mu_);
  streams_.erase(name);
}

std::shared_ptr<LogStream> LogRegistry::Find(const std::string& name, std::string* owner) {
  absl::MutexLock lock(&mu_);
  auto it = streams_.find(name);
  if (it == streams_.end()) return nullptr;
  if (owner != nullptr) *owner = it->second.owner;
  return it->second.stream;
}

std::string LogRegistry::StreamName(const std::string& instance, const std::string& operation_name,
                                    const std::string& which) {
  absl::string_view id = operation_name;
  absl::ConsumePrefix(&id, "operations/");
  return absl::StrCat(instance, instance.empty() ? "" : "/", "kiln-logs/", id, "/", which);
}

bool LogRegistry::IsStreamName(const std::string& resource_name) {
  return absl::StartsWith(resource_name, "kiln-logs/") || absl::StrContains(resource_name, "/kiln-logs/");
}

}  // namespace kiln::exec
