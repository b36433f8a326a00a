#!/usr/bin/python3
"""Attack 7: state leaking between actions through the build uid: the kernel
keyring is per uid and build uids are fixed per slot; and two workers on one
host with the same --build_uid_base run actions as the same uid."""
import os
import random
import subprocess
import threading

import kiln_harness as h

KEYCTL = r'''
import ctypes, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
L = ctypes.c_long
op, desc = sys.argv[1], sys.argv[2].encode()
if op == "add":  # add_key("user", desc, payload, len, KEY_SPEC_USER_KEYRING)
    payload = sys.argv[3].encode()
    r = libc.syscall(L(248), b"user", desc, payload, ctypes.c_size_t(len(payload)), L(-4))
    print("added" if r >= 0 else "add-denied %d" % ctypes.get_errno())
else:  # keyctl(KEYCTL_SEARCH, KEY_SPEC_USER_KEYRING, "user", desc, 0)
    key = libc.syscall(L(250), L(10), L(-4), b"user", desc, L(0))
    if key < 0:
        print("not-found %d" % ctypes.get_errno())
    elif op == "read":  # keyctl(KEYCTL_READ, key, buf, len)
        buf = ctypes.create_string_buffer(4096)
        n = libc.syscall(L(250), L(11), L(key), buf, L(4096))
        print("read:" + (buf.raw[:n].decode() if n >= 0 else "denied %d" % ctypes.get_errno()))
    else:  # keyctl(KEYCTL_INVALIDATE, key)
        libc.syscall(L(250), L(21), L(key))
'''


class SlotIsolationTest(h.SecurityTest):

    def test_keyring_does_not_leak_between_actions_in_a_slot(self):
        """Action 1 adds a key to its user keyring; action 2 in the same slot must not read it."""
        base = random.randrange(64000, 64900)
        desc = "kiln-sec-" + os.urandom(6).hex()
        payload = "key-payload-" + os.urandom(12).hex()
        # Whatever the worker does, leave no key behind in the host's keyring of that uid.
        self.addCleanup(subprocess.call, ["/usr/bin/setpriv", "--reuid=%d" % base, "--regid=%d" % base,
                                          "--clear-groups", "/usr/bin/python3", "-c", KEYCTL, "invalidate", desc])
        w = self.worker(flags=["--build_uid_base=%d" % base], concurrency=1)
        root = w.directory(files={"keyctl.py": KEYCTL.encode()})
        first = w.execute(["/usr/bin/python3", "keyctl.py", "add", desc, payload], root=root)
        self.assertEqual(first.code, h.OK, first)
        second = w.execute(["/usr/bin/python3", "keyctl.py", "read", desc], root=root)
        self.assertEqual(second.code, h.OK, second)
        out = w.read(second.result.stdout_digest).decode()
        self.assertNotIn(payload, out, "action 2 read action 1's key")

    def test_two_workers_with_the_same_uid_base_use_different_uids(self):
        """Two workers, same --build_uid_base, different state dirs, concurrent `sleep 3; id -u`."""
        base = random.randrange(64000, 64900)
        first = self.worker(flags=["--build_uid_base=%d" % base], concurrency=1)
        try:
            second = self.worker(flags=["--build_uid_base=%d" % base], concurrency=1)
        except AssertionError as refused:  # refusing to start is fine, with a message
            self.assertNotEqual(str(refused).split("did not start:", 1)[-1].strip(), "",
                                "the second worker refused to start without a message")
            return
        results = [None, None]

        def run(i, w):
            results[i] = w.execute(["sh", "-c", "sleep 3; id -u"], deadline=60)
        threads = [threading.Thread(target=run, args=(i, w)) for i, w in enumerate((first, second))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        uids = []
        for w, r in zip((first, second), results):
            self.assertEqual((r.code, r.result.exit_code), (h.OK, 0), r)
            uids.append(w.read(r.result.stdout_digest).strip())
        self.assertNotEqual(uids[0], uids[1], "both workers ran their actions as uid %s" % uids[0])


if __name__ == "__main__":
    h.main()
