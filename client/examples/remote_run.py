#!/usr/bin/python3
"""Runs one command on a Kiln worker with nothing but grpcio: the whole REAPI
round trip in ~60 lines. Prints the remote stdout live and exits with the
remote exit code.

    /usr/bin/python3 client/examples/remote_run.py 127.0.0.1:8980 sh -c 'uname -a; make test'

Debian's /usr/bin/python3 has grpcio (python3-grpcio); the stubs are generated
from Kiln's proto/ with grpc_tools (python3-grpc-tools) on first use.
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
from google.bytestream import bytestream_pb2 as bs, bytestream_pb2_grpc as bs_grpc  # noqa: E402


def digest(data):
    return re.Digest(hash=hashlib.sha256(data).hexdigest(), size_bytes=len(data))


def main(server, argv):
    channel = grpc.insecure_channel(server)
    cas = re_grpc.ContentAddressableStorageStub(channel)
    command = re.Command(arguments=argv, environment_variables=[
        re.Command.EnvironmentVariable(name="PATH", value="/usr/bin:/bin")]).SerializeToString()
    root = re.Directory().SerializeToString()
    action = re.Action(command_digest=digest(command), input_root_digest=digest(root)).SerializeToString()
    cas.BatchUpdateBlobs(re.BatchUpdateBlobsRequest(requests=[
        re.BatchUpdateBlobsRequest.Request(digest=digest(blob), data=blob) for blob in (command, root, action)]))

    streamed = 0
    for operation in re_grpc.ExecutionStub(channel).Execute(
            re.ExecuteRequest(action_digest=digest(action), skip_cache_lookup=True)):
        metadata = re.ExecuteOperationMetadata()
        operation.metadata.Unpack(metadata)
        if metadata.stdout_stream_name and not streamed:
            # Live output: a ByteStream read that ends when the action ends.
            for chunk in bs_grpc.ByteStreamStub(channel).Read(bs.ReadRequest(resource_name=metadata.stdout_stream_name)):
                sys.stdout.buffer.write(chunk.data)
                sys.stdout.flush()
                streamed += len(chunk.data)
    response = re.ExecuteResponse()
    operation.response.Unpack(response)
    if response.status.code:
        sys.exit("kiln: %s" % response.status.message)
    return response.result.exit_code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2:]))
