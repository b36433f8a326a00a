#!/usr/bin/python3
"""Attack 8: setuid files and the state dir: another local user (nobody)
lists the worker's state dir, runs a setuid copy of bash an action left in
its exec dir, and reads CAS blobs and action-cache entries."""
import json
import os
import stat
import subprocess
import threading
import time

import kiln_harness as h

PROBE = r'''
import json, os, subprocess, sys
state, setuid_files, readable = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
report = {"listed": [], "read": [], "ran": {}}
for top in [state] + [os.path.join(state, d) for d in ("cas", "cas/blobs", "ac", "exec", "exec-cache")]:
    try:
        os.listdir(top)
        report["listed"].append(top)
    except OSError:
        pass
for path in readable:
    try:
        with open(path, "rb") as f:
            f.read(1)
        report["read"].append(path)
    except OSError:
        pass
for path in setuid_files:
    try:
        out = subprocess.run([path, "-p", "-c", "id -u"], capture_output=True, timeout=10)
        report["ran"][path] = out.stdout.decode().strip()
    except OSError:
        pass
print(json.dumps(report))
'''


class StateDirTest(h.SecurityTest):

    def _find(self, top, predicate):
        found = []
        for dirpath, _, names in os.walk(top):
            for name in names:
                p = os.path.join(dirpath, name)
                try:
                    if predicate(p, os.lstat(p)):
                        found.append(p)
                except OSError:
                    pass
        return found

    def test_other_users_cannot_reach_the_state_dir_or_a_setuid_copy_in_it(self):
        """Root worker; an action leaves a setuid copy of bash in /work and sleeps; nobody probes the state dir."""
        w = self.worker()
        # Something in the CAS and the action cache for nobody to try to read.
        cached = w.execute(["sh", "-c", "echo cached-output > out"], output_paths=["out"], do_not_cache=False)
        self.assertEqual(cached.code, h.OK, cached)
        done = []
        thread = threading.Thread(target=lambda: done.append(w.execute(
            ["sh", "-c", "cp /bin/bash sh2 && chmod 4755 sh2 && sleep 5"], deadline=60)))
        thread.start()
        self.addCleanup(thread.join)
        setuid = []
        deadline = time.time() + 20
        while not setuid and time.time() < deadline:
            setuid = self._find(os.path.join(w.state_dir, "exec"),
                                lambda p, st: stat.S_ISREG(st.st_mode) and st.st_mode & stat.S_ISUID)
            time.sleep(0.1)
        self.assertTrue(setuid, "the action did not create its setuid file")
        readable = self._find(w.state_dir, lambda p, st: stat.S_ISREG(st.st_mode) and "/exec/" not in p)
        probe = h.run_as_nobody(["/usr/bin/python3", "-c", PROBE, w.state_dir, json.dumps(setuid),
                                 json.dumps(readable)])
        report = json.loads(probe.stdout)
        self.assertEqual(report["ran"], {}, "nobody ran the action's setuid file (printed uids)")
        self.assertEqual(report["read"], [], "nobody can read CAS blobs / AC entries")
        self.assertEqual(report["listed"], [], "nobody can list parts of the state dir")
        mode = stat.S_IMODE(os.stat(w.state_dir).st_mode)
        self.assertEqual(mode & 0o077, 0, "state dir mode %o" % mode)

    def test_setuid_copy_does_not_elevate_inside_the_sandbox(self):
        """Inside the action, `./sh2 -p -c 'id -u'` (a 4755 copy of bash) prints the action's own uid."""
        w = self.worker()
        result = w.execute(["sh", "-c", "cp /bin/bash sh2 && chmod 4755 sh2 && id -u && ./sh2 -p -c 'id -u'"])
        self.assertEqual((result.code, result.result.exit_code), (h.OK, 0), result)
        own, elevated = w.read(result.result.stdout_digest).split()
        self.assertEqual(elevated, own)
        self.assertNotEqual(own, b"0")

    def test_precreated_0700_state_dir_is_not_widened(self):
        """The operator pre-creates the state dir with mode 0700: after the start it is still 0700."""
        base = h.temp_dir(self, "kiln-sec-state-")
        state = os.path.join(base, "state")
        os.mkdir(state, 0o700)
        os.chmod(state, 0o700)
        w = self.worker(state_dir=state)
        result = w.execute(["true"])
        self.assertEqual(result.code, h.OK, result)
        self.assertEqual(stat.S_IMODE(os.stat(state).st_mode), 0o700)


if __name__ == "__main__":
    h.main()
