#!/usr/bin/python3
"""Per-action overhead through a REAPI frontend: N distinct `/bin/true`
actions (a salt in the environment makes each one new; nothing is cached)
for the platform `bench=VALUE` (`-`: no platform), C at a time. Blobs are
uploaded before the clock starts. Prints one JSON line: p50/p99 of the
Execute call, actions/s, and the medians of where the time went according
to ExecutedActionMetadata.

    bench/cluster_load.py 127.0.0.1:PORT kiln 200 8 [KIND]

KIND `outputs` runs, instead, an action that writes a line to stdout, one
to stderr and one to an output file, each with its salt (three new blobs to
store), cached on success.
"""
import concurrent.futures
import hashlib
import json
import os
import random
import subprocess
import sys
import tempfile
import time

PROTO_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "proto")
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


def seconds(a, b):
    return (b.seconds - a.seconds) + (b.nanos - a.nanos) / 1e9


def median(values):
    values = sorted(values)
    return values[len(values) // 2] if values else 0.0


COMMANDS = {
    "true": dict(arguments=["/bin/true"]),
    "outputs": dict(arguments=["/bin/sh", "-c", "echo out $SALT; echo err $SALT >&2; echo x $SALT > o"],
                    output_paths=["o"]),
}


def main(server, platform_value, n, concurrency, kind="true"):
    channel = grpc.insecure_channel(server, options=[("grpc.max_receive_message_length", 64 << 20)])
    platform = re.Platform() if platform_value == "-" else re.Platform(
        properties=[re.Platform.Property(name="bench", value=platform_value)])
    salt = "%x" % random.getrandbits(64)
    root = re.Directory().SerializeToString()
    blobs, actions = [root], []
    for i in range(n):
        command = re.Command(platform=platform, environment_variables=[
            re.Command.EnvironmentVariable(name="SALT", value="%s-%d" % (salt, i))],
            **COMMANDS[kind]).SerializeToString()
        action = re.Action(command_digest=digest(command), input_root_digest=digest(root), platform=platform,
                           do_not_cache=(kind == "true")).SerializeToString()
        blobs += [command, action]
        actions.append(digest(action))
    cas = re_grpc.ContentAddressableStorageStub(channel)
    for start in range(0, len(blobs), 500):
        cas.BatchUpdateBlobs(re.BatchUpdateBlobsRequest(requests=[
            re.BatchUpdateBlobsRequest.Request(digest=digest(b), data=b) for b in blobs[start:start + 500]]))
    execution = re_grpc.ExecutionStub(channel)

    def run(action_digest):
        start = time.monotonic()
        last = None
        for operation in execution.Execute(re.ExecuteRequest(action_digest=action_digest, skip_cache_lookup=True)):
            last = operation
        elapsed = time.monotonic() - start
        response = re.ExecuteResponse()
        last.response.Unpack(response)
        if response.status.code or response.result.exit_code:
            raise SystemExit("action failed: %s" % response.status.message)
        return elapsed, response.result.execution_metadata

    begin = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
        results = list(pool.map(run, actions))
    wall = time.monotonic() - begin
    latencies = sorted(r[0] for r in results)
    meta = [r[1] for r in results]
    print(json.dumps({
        "platform": platform_value, "n": n, "concurrency": concurrency,
        "p50_ms": 1000 * latencies[len(latencies) // 2],
        "p99_ms": 1000 * latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
        "actions_per_s": n / wall,
        # Medians, ms: in the worker (worker start to completion), of which
        # fetching inputs, running the command, uploading outputs.
        "worker_ms": 1000 * median([seconds(m.worker_start_timestamp, m.worker_completed_timestamp) for m in meta]),
        "fetch_ms": 1000 * median([seconds(m.input_fetch_start_timestamp, m.input_fetch_completed_timestamp) for m in meta]),
        "exec_ms": 1000 * median([seconds(m.execution_start_timestamp, m.execution_completed_timestamp) for m in meta]),
        "upload_ms": 1000 * median([seconds(m.output_upload_start_timestamp, m.output_upload_completed_timestamp) for m in meta]),
    }), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), *sys.argv[5:6])
