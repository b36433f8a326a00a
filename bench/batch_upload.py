#!/usr/bin/python3
"""BatchUpdateBlobs latency: CALLS calls of BLOBS new 200-byte blobs each
(random bytes, so every blob is new and must be stored). Prints the p50 and
p90 of the call.

    bench/batch_upload.py 127.0.0.1:PORT 100 20
"""
import hashlib
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cluster_load import grpc, re, re_grpc  # noqa: E402  (builds the stubs)


def main(server, calls, blobs):
    cas = re_grpc.ContentAddressableStorageStub(grpc.insecure_channel(server))
    times = []
    for _ in range(calls):
        requests = []
        for _ in range(blobs):
            data = os.urandom(200)
            requests.append(re.BatchUpdateBlobsRequest.Request(
                digest=re.Digest(hash=hashlib.sha256(data).hexdigest(), size_bytes=len(data)), data=data))
        start = time.perf_counter()
        response = cas.BatchUpdateBlobs(re.BatchUpdateBlobsRequest(requests=requests))
        times.append(time.perf_counter() - start)
        if any(r.status.code for r in response.responses):
            raise SystemExit("a blob was refused: %s" % response)
    times.sort()
    print("BatchUpdateBlobs of %d blobs: p50 %.2f ms, p90 %.2f ms" % (
        blobs, 1000 * times[len(times) // 2], 1000 * times[len(times) * 9 // 10]))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
