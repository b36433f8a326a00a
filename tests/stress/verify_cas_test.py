"""`kiln-worker --verify_cas` on a real state dir: a corrupted blob, a
truncated blob, a stray file among the blobs and an action-cache entry
naming a blob that is gone are each found, reported and quarantined (exit
1); the next check is clean (exit 0), and a restarted worker serves none of
them; while a worker holds the state dir it refuses to run (exit 2).

Run: /usr/bin/python3 tests/stress/verify_cas_test.py build/bin
"""
import os
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "security"))
import kiln_harness as h  # noqa: E402
from kiln_harness import grpc, rex  # noqa: E402


class VerifyCasTest(unittest.TestCase):

    def verify(self, state_dir):
        return subprocess.run([os.path.join(h.BIN_DIR, "kiln-worker"), "--verify_cas",
                               "--state_dir=" + state_dir], capture_output=True, text=True, timeout=120)

    def blob_path(self, state_dir, d):
        return os.path.join(state_dir, "cas", "blobs", d.hash[:2], d.hash)

    def rewrite(self, path, data):
        os.chmod(path, 0o644)
        with open(path, "r+b") as f:
            f.write(data)
        os.chmod(path, 0o444)

    def test_finds_reports_and_quarantines(self):
        base = h.temp_dir(self, "kiln-verify-", mode=0o755)
        state_dir = os.path.join(base, "state")
        worker = h.Worker(self, state_dir=state_dir, flags=["--log_level=warn"])
        corrupt = worker.put(b"corrupt me " * 100)
        truncated = worker.put(b"truncate me " * 100)
        lost = worker.put(b"an output that will vanish")
        good = worker.put(b"a good blob")
        action = h.digest(b"an action")
        worker.action_cache.UpdateActionResult(rex.UpdateActionResultRequest(
            action_digest=action, action_result=rex.ActionResult(
                output_files=[rex.OutputFile(path="out.o", digest=lost)])), timeout=30)
        # Refused while the worker holds the state dir.
        busy = self.verify(state_dir)
        self.assertEqual(busy.returncode, 2, busy.stdout + busy.stderr)
        self.assertIn("in use", busy.stderr)
        worker.stop()

        clean = self.verify(state_dir)
        self.assertEqual(clean.returncode, 0, clean.stdout + clean.stderr)
        self.assertIn("0 problems", clean.stdout)

        self.rewrite(self.blob_path(state_dir, corrupt), b"C")
        os.chmod(self.blob_path(state_dir, truncated), 0o644)
        os.truncate(self.blob_path(state_dir, truncated), 10)
        os.chmod(self.blob_path(state_dir, truncated), 0o444)
        os.unlink(self.blob_path(state_dir, lost))
        stray = os.path.join(state_dir, "cas", "blobs", "00", "upload.tmp")
        with open(stray, "wb") as f:
            f.write(b"stray")
        found = self.verify(state_dir)
        self.assertEqual(found.returncode, 1, found.stdout + found.stderr)
        for needle in (corrupt.hash, truncated.hash, "upload.tmp", "out.o", lost.hash, "4 problems"):
            self.assertIn(needle, found.stdout)
        quarantined = []
        for dirpath, _, names in os.walk(os.path.join(state_dir, "quarantine")):
            quarantined += names
        self.assertEqual(len(quarantined), 4, quarantined)
        self.assertFalse(os.path.exists(stray))

        again = self.verify(state_dir)
        self.assertEqual(again.returncode, 0, again.stdout + again.stderr)

        worker = h.Worker(self, state_dir=state_dir, flags=["--log_level=warn"])
        self.assertEqual(worker.missing([corrupt, truncated, good]), {corrupt.hash, truncated.hash})
        self.assertEqual(worker.read(good), b"a good blob")
        with self.assertRaises(grpc.RpcError) as cm:
            worker.action_cache.GetActionResult(rex.GetActionResultRequest(action_digest=action), timeout=30)
        self.assertEqual(cm.exception.code(), grpc.StatusCode.NOT_FOUND)


if __name__ == "__main__":
    h.main()
