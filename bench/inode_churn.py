#!/usr/bin/python3
"""What a new inode costs on a filesystem, under a worker's churn: each round
makes a tree of 8 directories and 3 files in one of 8 reused directories (as
an action's inputs, output parents and logs), creates one file in a sibling
directory (as a blob stored in the CAS), then removes the tree. Prints, per
1,000 rounds, the time per round and per sibling create. On an ext4 without
a journal each create scans past the inodes freed in the last minutes
(docs/operations.md, "The state dir's filesystem").

    bench/inode_churn.py DIR [ROUNDS]
"""
import os
import shutil
import sys
import tempfile
import time


def main(parent, rounds):
    base = tempfile.mkdtemp(prefix="kiln-inode-churn.", dir=parent)
    try:
        dirs = [os.path.join(base, "action-%d" % k) for k in range(8)]
        for d in dirs:
            os.mkdir(d)
        cas = os.path.join(base, "cas")
        os.mkdir(cas)
        last = time.monotonic()
        cas_seconds = 0.0
        for i in range(rounds):
            d = dirs[i % len(dirs)]
            path = d
            for name in "abcdefgh":
                path = os.path.join(path, name)
                os.mkdir(path)
            for name in ("stdout", "stderr", "out"):
                open(os.path.join(d, name), "w").close()
            start = time.perf_counter()
            open(os.path.join(cas, str(i)), "w").close()
            cas_seconds += time.perf_counter() - start
            for name in ("stdout", "stderr", "out"):
                os.unlink(os.path.join(d, name))
            shutil.rmtree(os.path.join(d, "a"))
            if (i + 1) % 1000 == 0:
                now = time.monotonic()
                print("rounds %5d: %.3f ms per round, %.0f us per sibling create" % (
                    i + 1, (now - last), cas_seconds * 1000), flush=True)
                last, cas_seconds = now, 0.0
    finally:
        shutil.rmtree(base)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 5000)
