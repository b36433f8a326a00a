// Uploading blobs and shell actions to a worker under test: the steps the
// suites against the real kiln-worker share.
#ifndef KILN_TESTS_TEST_ACTIONS_H_
#define KILN_TESTS_TEST_ACTIONS_H_

#include <functional>
#include <map>
#include <memory>
#include <string>

#include <grpcpp/channel.h>
#include <grpcpp/client_context.h>

#include "common/digest.h"

namespace kiln::testing {

// Adds what a call needs besides its deadline, e.g. a bearer token.
using CallSetup = std::function<void(grpc::ClientContext&)>;

// Uploads `data` with BatchUpdateBlobs; a refusal is a test failure.
Digest UploadBlob(const std::shared_ptr<grpc::Channel>& channel, const std::string& data,
                  const CallSetup& setup = nullptr);

struct ShellActionOptions {
  std::string salt;
  bool do_not_cache = true;
  std::map<std::string, std::string> platform;  // Action.platform properties
};

// Uploads an Action running `/bin/sh -c script` (PATH=/usr/bin:/bin) on an
// empty input root, with its Command; returns the Action's digest.
Digest UploadShellAction(const std::shared_ptr<grpc::Channel>& channel, const std::string& script,
                         const ShellActionOptions& options = {}, const CallSetup& setup = nullptr);

}  // namespace kiln::testing

#endif  // KILN_TESTS_TEST_ACTIONS_H_
