// bb_storage for a small Buildbarn cluster of Kiln workers: the CAS and the
// action cache on sparse block files, and the frontend that clients (Bazel)
// talk to, forwarding Execution to bb_scheduler. Buildbarn reads every
// environment variable as a jsonnet external variable:
//   BB_STATE_DIR          directory for the CAS and AC files (cas/ and ac/ must exist)
//   BB_FRONTEND           HOST:PORT clients and workers use (REAPI)
//   BB_SCHEDULER_CLIENTS  bb_scheduler's client address (clientGrpcServers)
// README.md ("Joining a Buildbarn cluster") and tests/buildbarn/cluster.sh use it.
local state = std.extVar('BB_STATE_DIR');
local localStore(dir, sizeBytes) = {
  'local': {
    keyLocationMapOnBlockDevice: { file: { path: dir + '/key_location_map', sizeBytes: 16 * 1024 * 1024 } },
    keyLocationMapMaximumGetAttempts: 8,
    keyLocationMapMaximumPutAttempts: 32,
    oldBlocks: 8,
    currentBlocks: 24,
    newBlocks: 1,
    blocksOnBlockDevice: {
      source: { file: { path: dir + '/blocks', sizeBytes: sizeBytes } },
      spareBlocks: 3,
    },
  },
};
{
  grpcServers: [{ listenAddresses: [std.extVar('BB_FRONTEND')], authenticationPolicy: { allow: {} } }],
  schedulers: { '': { endpoint: { address: std.extVar('BB_SCHEDULER_CLIENTS') } } },
  maximumMessageSizeBytes: 16 * 1024 * 1024,
  executeAuthorizer: { allow: {} },
  contentAddressableStorage: {
    backend: localStore(state + '/cas', 2 * 1024 * 1024 * 1024),
    getAuthorizer: { allow: {} },
    putAuthorizer: { allow: {} },
    findMissingAuthorizer: { allow: {} },
  },
  actionCache: {
    // Only results whose outputs are all still in the CAS.
    backend: {
      completenessChecking: {
        backend: localStore(state + '/ac', 64 * 1024 * 1024),
        maximumTotalTreeSizeBytes: 64 * 1024 * 1024,
      },
    },
    getAuthorizer: { allow: {} },
    putAuthorizer: { allow: {} },
  },
}
