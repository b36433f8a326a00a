// bb_scheduler for a small Buildbarn cluster of Kiln workers. Environment
// variables (jsonnet external variables):
//   BB_SCHEDULER_CLIENTS  where bb_storage forwards Execution (clientGrpcServers)
//   BB_SCHEDULER_WORKERS  where workers call Synchronize: kiln-worker --scheduler
//   BB_SCHEDULER_ADMIN    the web UI (queues, workers, "kill operation")
//   BB_FRONTEND           bb_storage, to read Actions and Commands
{
  adminHttpServers: [{ listenAddresses: [std.extVar('BB_SCHEDULER_ADMIN')], authenticationPolicy: { allow: {} } }],
  clientGrpcServers: [{ listenAddresses: [std.extVar('BB_SCHEDULER_CLIENTS')], authenticationPolicy: { allow: {} } }],
  workerGrpcServers: [{ listenAddresses: [std.extVar('BB_SCHEDULER_WORKERS')], authenticationPolicy: { allow: {} } }],
  contentAddressableStorage: { grpc: { client: { address: std.extVar('BB_FRONTEND') } } },
  maximumMessageSizeBytes: 16 * 1024 * 1024,
  executeAuthorizer: { allow: {} },
  modifyDrainsAuthorizer: { allow: {} },
  killOperationsAuthorizer: { allow: {} },
  synchronizeAuthorizer: { allow: {} },
  actionRouter: {
    simple: {
      // Bazel 4 puts the platform in the Command only.
      platformKeyExtractor: { actionAndCommand: {} },
      invocationKeyExtractors: [{ toolInvocationId: {} }],
      initialSizeClassAnalyzer: { defaultExecutionTimeout: '1800s', maximumExecutionTimeout: '7200s' },
    },
  },
  // An action for a platform no worker offers fails at once, but a platform
  // whose workers all restart keeps its queue this long.
  platformQueueWithNoWorkersTimeout: '900s',
}
