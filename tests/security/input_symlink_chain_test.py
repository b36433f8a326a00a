#!/usr/bin/python3
"""Attacks 2 and 3: an input root with the symlink chain s0 -> ., s1 -> s0/..,
..., s8 -> s7/.. (each target passes a textual "stays inside" check, together
they climb to the host's /) used in output paths and the working directory."""
import os

import kiln_harness as h

REFUSED = {h.FAILED_PRECONDITION, h.INVALID_ARGUMENT}
CHAIN = 8


def chain_root(w):
    links = {"s0": "."}
    for i in range(1, CHAIN + 1):
        links["s%d" % i] = "s%d/.." % (i - 1)
    return w.directory(symlinks=links)


TOP = "s%d" % CHAIN


class InputSymlinkChainTest(h.SecurityTest):

    def test_output_through_input_symlink_chain(self):
        """Attack 2: command `true`, output `s8/<host secret path>`: no host content anywhere."""
        secret, content = h.secret_file(self)
        w = self.worker()
        out = TOP + secret
        result = w.execute(["true"], root=chain_root(w), output_paths=[out])
        if result.code == h.OK:
            self.assertNotIn(out, [f.path for f in result.result.output_files], result)
        else:
            self.assertIn(result.code, REFUSED, result)
        self.assertSecretNowhere(w, content, result)

    def test_legacy_output_directory_through_input_symlink_chain(self):
        """Attack 2 with the legacy output_directories: `s8/<host secret dir>`."""
        secret, content = h.secret_file(self)
        w = self.worker()
        out = TOP + os.path.dirname(secret)
        result = w.execute(["true"], root=chain_root(w), output_directories=[out])
        if result.code == h.OK:
            self.assertNotIn(out, [d.path for d in result.result.output_directories], result)
        else:
            self.assertIn(result.code, REFUSED, result)
        self.assertSecretNowhere(w, content, result)

    def _assert_host_dir_untouched(self, victim, before):
        st = os.lstat(victim)
        self.assertEqual((st.st_mode, st.st_uid, st.st_gid), before, "the host dir's mode/owner changed")
        self.assertEqual(os.listdir(victim), [], "the worker created entries in a host dir")

    def test_working_directory_through_input_symlink_chain(self):
        """Attack 3: working_directory `s8/<root-owned 0700 host dir>/sub` must not create or chown host dirs."""
        victim = h.temp_dir(self, "kiln-sec-victim-", mode=0o700)
        st = os.lstat(victim)
        before = (st.st_mode, st.st_uid, st.st_gid)
        w = self.worker()
        w.execute(["true"], root=chain_root(w), working_directory=TOP + victim + "/sub")
        self._assert_host_dir_untouched(victim, before)

    def test_output_parents_through_input_symlink_chain(self):
        """Attack 3: output `s8/<root-owned 0700 host dir>/newdir/out` must not create host dirs."""
        victim = h.temp_dir(self, "kiln-sec-victim-", mode=0o700)
        st = os.lstat(victim)
        before = (st.st_mode, st.st_uid, st.st_gid)
        w = self.worker()
        w.execute(["true"], root=chain_root(w), output_paths=[TOP + victim + "/newdir/out"])
        w.execute(["true"], root=chain_root(w), output_files=[TOP + victim + "/newdir2/out"])
        w.execute(["true"], root=chain_root(w), output_directories=[TOP + victim + "/newdir3/out"])
        self._assert_host_dir_untouched(victim, before)


if __name__ == "__main__":
    h.main()
