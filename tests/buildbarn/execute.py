#!/usr/bin/python3
"""Executes one `sh -c SCRIPT` action through a REAPI endpoint (the cluster's
frontend) and prints, line by line as they happen: `operation NAME` once the
operation exists, then `status CODE MESSAGE` and `exit CODE` when it
completes. The cluster fault tests read these lines.

    /usr/bin/python3 tests/buildbarn/execute.py 127.0.0.1:PORT 'sleep 100'

Stubs come from Kiln's proto/ with grpc_tools, as client/examples/remote_run.py does.
"""
import hashlib
import os
import subprocess
import sys
import tempfile

PROTO_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "proto")
STUBS = os.path.join(tempfile.gettempdir(), "kiln-python-stubs-%d" % os.getuid())
if not os.path.isdir(STUBS):
    os.makedirs(STUBS + ".tmp", exist_ok=True)
    subprocess.check_call([sys.executable, "-m", "grpc_tools.protoc", "-I" + PROTO_DIR, "-I/usr/include",
                           "--python_out=" + STUBS + ".tmp", "--grpc_python_out=" + STUBS + ".tmp",
                           "build/bazel/remote/execution/v2/remote_execution.proto",
                           "build/bazel/semver/semver.proto", "google/longrunning/operations.proto",
                           "google/rpc/status.proto", "google/bytestream/bytestream.proto"])
    os.rename(STUBS + ".tmp", STUBS)
sys.path.insert(0, STUBS)

import grpc  # noqa: E402
from build.bazel.remote.execution.v2 import remote_execution_pb2 as re  # noqa: E402
from build.bazel.remote.execution.v2 import remote_execution_pb2_grpc as re_grpc  # noqa: E402


def digest(data):
    return re.Digest(hash=hashlib.sha256(data).hexdigest(), size_bytes=len(data))


def main(server, script):
    channel = grpc.insecure_channel(server)
    command = re.Command(arguments=["/bin/sh", "-c", script]).SerializeToString()
    root = re.Directory().SerializeToString()
    action = re.Action(command_digest=digest(command), input_root_digest=digest(root),
                       do_not_cache=True).SerializeToString()
    re_grpc.ContentAddressableStorageStub(channel).BatchUpdateBlobs(re.BatchUpdateBlobsRequest(requests=[
        re.BatchUpdateBlobsRequest.Request(digest=digest(blob), data=blob) for blob in (command, root, action)]))
    named = False
    for operation in re_grpc.ExecutionStub(channel).Execute(
            re.ExecuteRequest(action_digest=digest(action), skip_cache_lookup=True)):
        if not named:
            print("operation", operation.name, flush=True)
            named = True
        if operation.done:
            response = re.ExecuteResponse()
            operation.response.Unpack(response)
            print("status", response.status.code, response.status.message, flush=True)
            print("exit", response.result.exit_code, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
