#!/usr/bin/python3
"""Warm sandboxes and early completion (issue 14): the worker answers as soon
as the action's process tree is gone, before the sandbox is torn down, and
each slot's next sandbox is prepared before its action arrives. Attacks:

- an action leaves a writer looping on a file in its outputs and a daemonised
  double-fork: nothing of it may run or write while the outputs are read, and
  no process of the build users may exist once the answer is there;
- an action leaves state behind for the next action of its slot (same build
  uid): a listening TCP socket on loopback, an abstract unix socket, SysV
  shm/sem/msg objects, a POSIX message queue, a key in the user keyring,
  files in /tmp and /dev/shm. The next action must see none of it."""
import json
import os
import random
import subprocess
import time

import kiln_harness as h

BUSY = r'''
mkdir -p out
( while :; do echo x >> out/busy; done ) &
( setsid sh -c 'while :; do echo y >> out/daemon; done' & )
sleep 0.3
echo started
'''

# Leaves (argv[1] == "leave") or looks for (argv[1] == "probe") every kind of
# state; prints what it found as JSON. The leave run probes its own objects
# too, so a probe that cannot see what exists would show.
STATE = r'''
import ctypes, json, os, socket, sys, time
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
L = ctypes.c_long
KEY = 0x4b494c4e
IPC_CREAT = 0o1000
PORT = 47123
ABSTRACT = b"\0kiln-warm-leak"
token = sys.argv[2]

def probe():
    found = {}
    found["tmp_file"] = os.path.exists("/tmp/kiln-leak")
    found["shm_file"] = os.path.exists("/dev/shm/kiln-leak")
    found["sysv_shm"] = libc.shmget(KEY, 0, 0) >= 0
    found["sysv_sem"] = libc.semget(KEY, 0, 0) >= 0
    found["sysv_msg"] = libc.msgget(KEY, 0) >= 0
    mq = libc.mq_open(b"/kiln-leak", ctypes.c_int(os.O_RDONLY))
    found["posix_mq"] = mq >= 0
    key = libc.syscall(L(250), L(10), L(-4), b"user", token.encode(), L(0))  # KEYCTL_SEARCH
    found["user_key"] = key >= 0
    for name, family, address in (("tcp_listener", socket.AF_INET, ("127.0.0.1", PORT)),
                                  ("abstract_socket", socket.AF_UNIX, ABSTRACT)):
        s = socket.socket(family, socket.SOCK_STREAM)
        try:
            s.connect(address)
            found[name] = True
        except OSError:
            found[name] = False
        s.close()
    return found

if sys.argv[1] == "probe":
    found = probe()
    found["uid"] = os.getuid()
    print(json.dumps(found))
    sys.exit(0)
if sys.argv[1].startswith("host-"):  # outside any sandbox, as a build uid
    if sys.argv[1] == "host-add":
        r = libc.syscall(L(248), b"user", token.encode(), b"payload", ctypes.c_size_t(7), L(-4))
        print("added" if r >= 0 else "denied")
    elif sys.argv[1] == "host-invalidate":  # KEYCTL_SEARCH, then KEYCTL_INVALIDATE
        key = libc.syscall(L(250), L(10), L(-4), b"user", token.encode(), L(0))
        if key >= 0:
            libc.syscall(L(250), L(21), L(key))
    else:
        print("found" if probe()["user_key"] else "not-found")
    sys.exit(0)

made = {}
for path in ("/tmp/kiln-leak", "/dev/shm/kiln-leak"):
    with open(path, "w") as f:
        f.write(token)
made["sysv_shm"] = libc.shmget(KEY, 4096, IPC_CREAT | 0o666) >= 0
made["sysv_sem"] = libc.semget(KEY, 1, IPC_CREAT | 0o666) >= 0
made["sysv_msg"] = libc.msgget(KEY, IPC_CREAT | 0o666) >= 0
made["posix_mq"] = libc.mq_open(b"/kiln-leak", ctypes.c_int(os.O_CREAT | os.O_RDWR), ctypes.c_int(0o666), None) >= 0
# add_key("user", token, payload, len, KEY_SPEC_USER_KEYRING)
added = libc.syscall(L(248), b"user", token.encode(), token.encode(), ctypes.c_size_t(len(token)), L(-4))
made["user_key"] = "added" if added >= 0 else "denied errno %d" % ctypes.get_errno()
ready_r, ready_w = os.pipe()
if os.fork() == 0:  # a daemon holding the sockets
    os.setsid()
    if os.fork() == 0:
        tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        tcp.bind(("127.0.0.1", PORT))
        tcp.listen(16)
        unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        unix.bind(ABSTRACT)
        unix.listen(16)
        os.write(ready_w, b"1")
        while True:
            time.sleep(1)
    os._exit(0)
os.read(ready_r, 1)
print(json.dumps({"made": made, "seen": probe()}))
'''

KINDS = ["tmp_file", "shm_file", "sysv_shm", "sysv_sem", "sysv_msg", "posix_mq", "user_key",
         "tcp_listener", "abstract_socket"]


# Build uids no other test leases (the default pool starts at 61000, the
# harness's at 62000-63964, other tests' at 64000-65343): the checks below
# count every process of these uids on the host, and a test running at the
# same time must not show up in them.
WARM_TEST_UIDS = (60000, 60900, 64)


def build_uid_processes(base, size=64):
    """Host pids whose real or effective uid is a build uid of [base, base+size)."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open("/proc/%s/status" % pid) as f:
                for line in f:
                    if line.startswith("Uid:"):
                        uids = [int(u) for u in line.split()[1:3]]
                        if any(base <= u < base + size for u in uids):
                            found.append(pid)
                        break
        except OSError:
            pass
    return found


class WarmSandboxTest(h.SecurityTest):

    def warm_worker(self, base, flags=(), unprivileged=False):
        return self.worker(flags=["--build_uid_base=%d" % base, "--log_level=info"] + list(flags),
                           concurrency=1, unprivileged=unprivileged)

    def test_nothing_runs_or_writes_when_outputs_are_read(self):
        """A writer loops on out/busy and a daemon on out/daemon when the action exits."""
        base = random.randrange(*WARM_TEST_UIDS)
        w = self.warm_worker(base)
        for attempt in range(3):  # the first may run cold, the next ones warm
            r = w.execute(["sh", "-c", BUSY], output_paths=["out"])
            self.assertEqual((r.code, r.result.exit_code), (h.OK, 0), r)
            # The answer is there: no process of a build user may be left.
            self.assertEqual(build_uid_processes(base), [], "processes of the action outlived its answer")
            out = r.result.output_directories
            self.assertEqual(len(out), 1, r.result)
            tree = h.rex.Tree()
            tree.ParseFromString(w.read(out[0].tree_digest))
            files = {f.name: f.digest for f in tree.root.files}
            self.assertIn("busy", files)
            for name, d in files.items():
                data = w.read(d)
                # What was stored is what was hashed: the file did not grow
                # while it was read.
                self.assertEqual((len(data), h.sha256(data)), (d.size_bytes, d.hash), name)
                self.assertEqual(set(data.split(b"\n")) - {b""}, {b"x" if name == "busy" else b"y"}, name)
        self.assertIn("warm_sandbox=true", w.log(), "no action ran in a warm sandbox")

    def test_nothing_carries_over_between_actions_of_a_slot(self):
        self.check_nothing_carries_over(unprivileged=False)

    def test_nothing_carries_over_between_actions_of_a_slot_of_an_unprivileged_worker(self):
        """The same with the worker as nobody: user namespaces, the build uid base+slot in each."""
        self.check_nothing_carries_over(unprivileged=True)

    def check_nothing_carries_over(self, unprivileged):
        base = random.randrange(*WARM_TEST_UIDS)
        w = self.warm_worker(base, unprivileged=unprivileged)
        token = "kiln-warm-" + os.urandom(6).hex()
        root = w.directory(files={"state.py": STATE.encode()})
        # Warm up: the slot's next sandbox is prepared before action 1 comes.
        first = w.execute(["/usr/bin/python3", "state.py", "leave", token], root=root)
        self.assertEqual((first.code, first.result.exit_code), (h.OK, 0), first)
        report = json.loads(w.read(first.result.stdout_digest))
        for kind in KINDS:
            if kind == "user_key":
                continue
            self.assertTrue(report["made"].get(kind, True), "action 1 could not make %s: %s" % (kind, report))
            self.assertTrue(report["seen"][kind], "the probe does not see %s in its own sandbox: %s" % (kind, report))
        # Keys outlive sandboxes (a user keyring is per uid, and as root the
        # build uids are reused): the seccomp filter refuses to make them.
        self.assertTrue(report["made"]["user_key"].startswith("denied"), report)
        if not unprivileged:
            # Without the sandbox's defence a key outlives its process: two
            # processes of one build uid, one after the other, share it. Plant
            # one for each uid the next action may get (the slot's uids are
            # reused: a slot holds at most two at once).
            for uid in range(base, base + 4):
                setpriv = ["/usr/bin/setpriv", "--reuid=%d" % uid, "--regid=%d" % uid, "--clear-groups",
                           "/usr/bin/python3", "-c", STATE]
                self.addCleanup(subprocess.call, setpriv + ["host-invalidate", token], stdout=subprocess.DEVNULL)
                self.assertEqual(subprocess.check_output(setpriv + ["host-add", token], text=True).strip(), "added")
                self.assertEqual(subprocess.check_output(setpriv + ["host-read", token], text=True).strip(), "found")
        time.sleep(0.5)  # the slot's next sandbox is ready
        second = w.execute(["/usr/bin/python3", "state.py", "probe", token], root=root)
        self.assertEqual((second.code, second.result.exit_code), (h.OK, 0), second)
        seen = json.loads(w.read(second.result.stdout_digest))
        self.assertEqual({k for k in KINDS if seen[k]}, set(), "action 2 saw action 1's state: %s" % seen)
        if not unprivileged:
            self.assertIn(seen["uid"], range(base, base + 4), "action 2 did not run as one of the slot's build uids")
        self.assertIn("warm_sandbox=true", w.log(), "no action ran in a warm sandbox")

    def test_an_action_the_warm_sandbox_was_not_prepared_for_gets_its_own_with_a_full_uid_pool(self):
        """Host network needs a sandbox prepared for it; with one build uid, the warm one gives its uid."""
        base = random.randrange(*WARM_TEST_UIDS)
        w = self.warm_worker(base, flags=["--allow_network", "--build_uid_pool_size=1"])
        time.sleep(0.5)  # the slot's warm sandbox holds the only uid
        command = h.rex.Command(arguments=["sh", "-c", "id -u; tail -n +3 /proc/net/dev | wc -l"])
        command.platform.properties.add(name="network", value="on")
        action = h.rex.Action(command_digest=w.put_message(command), input_root_digest=w.empty_dir(),
                              do_not_cache=True)
        networked = w.execute_digest(w.put_message(action))
        self.assertEqual((networked.code, networked.result.exit_code), (h.OK, 0), networked)
        uid, interfaces = w.read(networked.result.stdout_digest).decode().split()
        self.assertEqual(int(uid), base)
        self.assertGreater(int(interfaces), 1, "the action did not get the host network")
        plain = w.execute(["sh", "-c", "id -u; tail -n +3 /proc/net/dev | wc -l"])
        self.assertEqual((plain.code, plain.result.exit_code), (h.OK, 0), plain)
        self.assertEqual(w.read(plain.result.stdout_digest).decode().split(), [str(base), "1"])


if __name__ == "__main__":
    h.main()
