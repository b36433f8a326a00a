#!/usr/bin/python3
"""Attack 4: an action writes through its (hardlinked) inputs into the CAS, so
every later action and every client reading that digest gets poisoned bytes."""
import os

import kiln_harness as h


class CasIntegrityTest(h.SecurityTest):

    def _stdout(self, w, result):
        self.assertEqual(result.code, h.OK, result)
        return w.read(result.result.stdout_digest)

    def _attack(self, unprivileged, name, content, executable, check_argv):
        w = self.worker(unprivileged=unprivileged)
        d = h.digest(content)
        root = w.directory(files={name: (content, executable)})
        w.execute(["sh", "-c", "chmod u+w %s; echo 'echo poisoned' > %s" % (name, name)], root=root)
        # Whatever happened to the action, the CAS must still be intact.
        self.assertEqual(w.corrupt_blobs(), [], "CAS files no longer hash to their names")
        self.assertEqual(w.missing([d]), set())
        self.assertEqual(w.read(d), content, "ByteStream Read returned other bytes than the digest's")
        batch = w.cas.BatchReadBlobs(h.rex.BatchReadBlobsRequest(digests=[d]), timeout=30)
        self.assertEqual(batch.responses[0].data, content)
        out = self._stdout(w, w.execute(check_argv, root=root))
        self.assertNotIn(b"poisoned", out, "a later action saw the poisoned input")
        return out

    def test_unprivileged_worker_input_file(self):
        """Worker as nobody (state dir owned by nobody): `chmod u+w in.txt; echo poisoned > in.txt`."""
        content = b"original " + os.urandom(8).hex().encode() + b"\n"
        self.assertEqual(self._attack(True, "in.txt", content, False, ["cat", "in.txt"]), content)

    def test_unprivileged_worker_executable_input(self):
        """Worker as nobody: the same against an is_executable input tool.sh (exec-cache copy)."""
        marker = b"original-" + os.urandom(8).hex().encode()
        content = b"#!/bin/sh\necho " + marker + b"\n"
        self.assertEqual(self._attack(True, "tool.sh", content, True, ["./tool.sh"]), marker + b"\n")

    def test_root_worker_input_file(self):
        """Worker as root (action as a build uid): `chmod u+w in.txt; echo poisoned > in.txt`."""
        content = b"original " + os.urandom(8).hex().encode() + b"\n"
        self.assertEqual(self._attack(False, "in.txt", content, False, ["cat", "in.txt"]), content)

    def test_root_worker_executable_input(self):
        """Worker as root: the same against an is_executable input tool.sh."""
        marker = b"original-" + os.urandom(8).hex().encode()
        content = b"#!/bin/sh\necho " + marker + b"\n"
        self.assertEqual(self._attack(False, "tool.sh", content, True, ["./tool.sh"]), marker + b"\n")


if __name__ == "__main__":
    h.main()
