#!/usr/bin/python3
"""Attack 1: output collection follows symlinks the action planted in the
parent components of declared outputs, and uploads host files into the CAS."""
import os

import kiln_harness as h

REFUSED = {h.FAILED_PRECONDITION, h.INVALID_ARGUMENT}


class OutputSymlinkTest(h.SecurityTest):

    def assertOutputRefusedOrAbsent(self, result, path):
        """Non-OK with FAILED_PRECONDITION/INVALID_ARGUMENT, or OK without the output."""
        if result.code == h.OK:
            r = result.result
            paths = [f.path for f in r.output_files] + [d.path for d in r.output_directories]
            self.assertNotIn(path, paths, "output collected through a planted symlink: %r" % result)
        else:
            self.assertIn(result.code, REFUSED, result)

    def test_output_file_through_planted_parent_symlink(self):
        """`rmdir d && ln -s HOSTDIR d`, output `d/secret`: the host file must not be collected."""
        secret, content = h.secret_file(self)
        w = self.worker()
        root = w.directory(dirs={"d": w.empty_dir()})
        result = w.execute(["sh", "-c", "rmdir d && ln -s %s d" % os.path.dirname(secret)],
                           root=root, output_paths=["d/secret"])
        self.assertOutputRefusedOrAbsent(result, "d/secret")
        self.assertSecretNowhere(w, content, result)

    def test_legacy_output_file_through_planted_parent_symlink(self):
        """Same attack through the legacy Command.output_files field."""
        secret, content = h.secret_file(self)
        w = self.worker()
        root = w.directory(dirs={"d": w.empty_dir()})
        result = w.execute(["sh", "-c", "rmdir d && ln -s %s d" % os.path.dirname(secret)],
                           root=root, output_files=["d/secret"])
        self.assertOutputRefusedOrAbsent(result, "d/secret")
        self.assertSecretNowhere(w, content, result)

    def test_output_directory_through_symlink_to_host_root(self):
        """`ln -s / x`, output directory `x/<host victim dir>`: the host tree must not be collected."""
        secret, content = h.secret_file(self)
        victim = os.path.dirname(secret).lstrip("/")
        w = self.worker()
        result = w.execute(["sh", "-c", "rm -rf x && ln -s / x"], output_directories=["x/" + victim])
        self.assertOutputRefusedOrAbsent(result, "x/" + victim)
        self.assertSecretNowhere(w, content, result)

    def test_output_directory_through_symlink_into_the_state_dir(self):
        """`ln -s STATE_DIR d`, output directory `d/ac`: the worker's action cache must not be collected."""
        w = self.worker()
        marker = ("ac-entry-marker-" + os.urandom(16).hex()).encode()
        cached = h.rex.ActionResult(exit_code=0)
        cached.execution_metadata.worker = marker.decode()
        w.action_cache.UpdateActionResult(h.rex.UpdateActionResultRequest(
            action_digest=h.digest(b"some action " + marker), action_result=cached), timeout=30)
        self.assertNotEqual(w.files_containing(marker, "ac"), [], "the AC entry was not stored in ac/")
        root = w.directory(dirs={"d": w.empty_dir()})
        result = w.execute(["sh", "-c", "rmdir d && ln -s %s d" % w.state_dir], root=root,
                           output_directories=["d/ac"])
        self.assertOutputRefusedOrAbsent(result, "d/ac")
        self.assertEqual(w.files_containing(marker, "cas"), [], "an AC entry was copied into the CAS")

    def test_output_file_through_symlink_into_the_cas(self):
        """`ln -s STATE_DIR/cas/blobs d`, output `d/<shard>/<hash>`: no output re-exported from the worker's CAS."""
        w = self.worker()
        blob = b"a blob only the CAS has " + os.urandom(8).hex().encode()
        d = w.put(blob)
        rel = "%s/%s" % (d.hash[:2], d.hash)
        root = w.directory(dirs={"d": w.empty_dir()})
        result = w.execute(["sh", "-c", "rm -rf d && ln -s %s/cas/blobs d" % w.state_dir], root=root,
                           output_paths=["d/" + rel])
        self.assertOutputRefusedOrAbsent(result, "d/" + rel)
        self.assertEqual(w.corrupt_blobs(), [])


if __name__ == "__main__":
    h.main()
