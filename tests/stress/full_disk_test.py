"""A state dir on a small filesystem (a tmpfs with size=, mounted for the
test) filled to the brim by concurrent uploads and actions: every refusal is
a clear RESOURCE_EXHAUSTED, nothing the worker stored is corrupt
(`kiln-worker --verify_cas` is clean), and once space is freed the same
worker (and a restarted one) stores and serves again.

Needs root (mount); run: /usr/bin/python3 tests/stress/full_disk_test.py build/bin
"""
import os
import subprocess
import sys
import threading
import time
import unittest
import uuid

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "security"))
import kiln_harness as h  # noqa: E402
from kiln_harness import bs, grpc, rex  # noqa: E402

FS_BYTES = 24 << 20


class FullDiskTest(unittest.TestCase):

    def mount_small_fs(self):
        base = h.temp_dir(self, "kiln-fulldisk-", mode=0o755)
        mount = os.path.join(base, "fs")
        os.mkdir(mount)
        subprocess.check_call(["mount", "-t", "tmpfs", "-o", "size=%d,mode=0755" % FS_BYTES, "tmpfs", mount])
        self.addCleanup(subprocess.call, ["umount", "-l", mount])
        return mount

    def fill(self, worker, errors, acked, stop):
        """Uploads 256 KiB blobs until told to stop; records what was acknowledged."""
        while not stop.is_set():
            data = os.urandom(256 << 10)
            d = h.digest(data)
            name = "uploads/%s/blobs/%s/%d" % (uuid.uuid4(), d.hash, d.size_bytes)
            try:
                worker.bytestream.Write(iter([bs.WriteRequest(resource_name=name, data=data, finish_write=True)]),
                                        timeout=30)
                acked.append((d, data))
            except grpc.RpcError as e:
                errors.append((e.code(), e.details()))
                if len(errors) > 20:
                    return

    def test_full_filesystem(self):
        mount = self.mount_small_fs()
        state_dir = os.path.join(mount, "state")
        # A file that stands for whatever else filled the disk; removed later to free space.
        ballast = os.path.join(mount, "ballast")
        # A cap far above the filesystem: the disk fills before the CAS evicts.
        worker = h.Worker(self, flags=["--cas_max_bytes=1GiB", "--log_level=warn"], state_dir=state_dir,
                          concurrency=2)
        with open(ballast, "wb") as f:
            f.write(b"\0" * (8 << 20))
        # The actions' blobs go in first: they are not what this test fills.
        actions = [worker.action(["sh", "-c", "head -c 1048576 /dev/urandom > out; echo %d" % i],
                                 output_paths=["out"]) for i in range(6)]
        errors, acked, stop = [], [], threading.Event()
        threads = [threading.Thread(target=self.fill, args=(worker, errors, acked, stop)) for _ in range(4)]
        for t in threads:
            t.start()
        results = []
        for action in actions:  # actions with outputs while the disk fills
            results.append(worker.execute_digest(action))
        deadline = time.time() + 120
        while len(errors) <= 20 and time.time() < deadline:
            time.sleep(0.1)
        stop.set()
        for t in threads:
            t.join()
        self.assertTrue(errors, "the filesystem never filled")
        for code, details in errors:
            self.assertEqual(code, grpc.StatusCode.RESOURCE_EXHAUSTED, details)
            self.assertIn("No space left", details)
        # Each action ran, or was refused for want of space, never an
        # internal error (before the fix: INTERNAL, "the sandbox could not
        # run the action", when kiln-sandbox had no room for its stats file).
        for r in results:
            self.assertIn(r.code, (h.OK, h.RESOURCE_EXHAUSTED), r.message)
            if r.code == h.RESOURCE_EXHAUSTED:
                self.assertRegex(r.message, "[Nn]o space left")
        print("actions: %s" % [h.CODE_NAMES[r.code] for r in results], file=sys.stderr)
        # What was acknowledged is intact.
        for d, data in acked:
            self.assertEqual(worker.read(d), data)
        worker.stop()
        proc = subprocess.run([os.path.join(h.BIN_DIR, "kiln-worker"), "--verify_cas", "--state_dir=" + state_dir],
                              capture_output=True, text=True, timeout=120)
        self.assertEqual(proc.returncode, 0, proc.stdout + proc.stderr)

        # Space freed: a restarted worker stores, serves and runs again.
        os.unlink(ballast)
        worker = h.Worker(self, flags=["--cas_max_bytes=1GiB", "--log_level=warn"], state_dir=state_dir,
                          concurrency=2)
        data = os.urandom(1 << 20)
        self.assertEqual(worker.read(worker.put(data)), data)
        r = worker.execute(["sh", "-c", "echo back"], inline_stdout=True)
        self.assertEqual(r.code, h.OK, r.message)
        for d, old in acked[:20]:
            self.assertEqual(worker.read(d), old)


if __name__ == "__main__":
    h.main()
