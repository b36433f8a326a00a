"""Shared helpers for the security regression suite: a real kiln-worker on
free ports with its own state dir (as root or as user nobody), blob upload,
Directory trees, Execute, and checks on the state dir's CAS files.

Every test file runs as `/usr/bin/python3 FILE.py BIN_DIR` (ctest passes
build/bin) or with $KILN_BIN_DIR set. Everything a test starts is stopped by
pid and every directory it creates is removed through addCleanup, also when
the test fails.
"""
import hashlib
import os
import random
import re as regex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest
import uuid

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
PROTO_DIR = os.path.join(ROOT, "proto")
NOBODY = 65534
HEX64 = regex.compile(r"^[0-9a-f]{64}")


def _stubs():
    """Generates the Python stubs from proto/ once per uid (like client/examples/remote_run.py)."""
    stubs = os.path.join(tempfile.gettempdir(), "kiln-security-stubs-%d" % os.getuid())
    if not os.path.isdir(stubs):
        tmp = tempfile.mkdtemp(prefix="kiln-security-stubs.")
        subprocess.check_call([sys.executable, "-m", "grpc_tools.protoc", "-I" + PROTO_DIR, "-I/usr/include",
                               "--python_out=" + tmp, "--grpc_python_out=" + tmp,
                               "build/bazel/remote/execution/v2/remote_execution.proto",
                               "build/bazel/semver/semver.proto", "google/longrunning/operations.proto",
                               "google/rpc/status.proto", "google/bytestream/bytestream.proto"])
        try:
            os.rename(tmp, stubs)
        except OSError:  # another test process won the race
            shutil.rmtree(tmp, ignore_errors=True)
    sys.path.insert(0, stubs)


_stubs()
import grpc  # noqa: E402
from build.bazel.remote.execution.v2 import remote_execution_pb2 as rex  # noqa: E402,F401
from build.bazel.remote.execution.v2 import remote_execution_pb2_grpc as rex_grpc  # noqa: E402,F401
from google.bytestream import bytestream_pb2 as bs, bytestream_pb2_grpc as bs_grpc  # noqa: E402,F401
from google.longrunning import operations_pb2  # noqa: E402,F401
from google.rpc import status_pb2  # noqa: E402,F401

BIN_DIR = os.environ.get("KILN_BIN_DIR", os.path.join(ROOT, "build", "bin"))

# google.rpc.Code numbers
OK, CANCELLED, UNKNOWN, INVALID_ARGUMENT, DEADLINE_EXCEEDED, NOT_FOUND = 0, 1, 2, 3, 4, 5
PERMISSION_DENIED, RESOURCE_EXHAUSTED, FAILED_PRECONDITION, INTERNAL, UNAVAILABLE = 7, 8, 9, 13, 14
CODE_NAMES = {v: k for k, v in dict(OK=0, CANCELLED=1, UNKNOWN=2, INVALID_ARGUMENT=3, DEADLINE_EXCEEDED=4,
                                    NOT_FOUND=5, ALREADY_EXISTS=6, PERMISSION_DENIED=7, RESOURCE_EXHAUSTED=8,
                                    FAILED_PRECONDITION=9, ABORTED=10, OUT_OF_RANGE=11, UNIMPLEMENTED=12,
                                    INTERNAL=13, UNAVAILABLE=14, DATA_LOSS=15).items()}


def main():
    """unittest.main, taking the binary dir from argv[1] when given."""
    global BIN_DIR
    if len(sys.argv) > 1 and os.path.isdir(sys.argv[1]):
        BIN_DIR = os.path.abspath(sys.argv.pop(1))
    os.environ["KILN_BIN_DIR"] = BIN_DIR
    unittest.main(verbosity=2)


def digest(data):
    return rex.Digest(hash=hashlib.sha256(data).hexdigest(), size_bytes=len(data))


def sha256(data):
    return hashlib.sha256(data).hexdigest()


def remove_tree(path):
    """rm -rf that also gets through read-only dirs the actions left."""
    if not os.path.lexists(path):
        return
    subprocess.call(["chmod", "-R", "u+rwx", path], stderr=subprocess.DEVNULL)
    shutil.rmtree(path, ignore_errors=True)
    if os.path.lexists(path):
        subprocess.call(["rm", "-rf", "--one-file-system", path])


def temp_dir(test, prefix="kiln-sec-", mode=None, owner=None):
    """A fresh directory removed after the test."""
    path = tempfile.mkdtemp(prefix=prefix)
    test.addCleanup(remove_tree, path)
    if owner is not None:
        os.chown(path, owner, owner)
    if mode is not None:
        os.chmod(path, mode)
    return path


def secret_file(test, size=48):
    """A root-owned 0600 file with random content (stands in for /etc/shadow).
    Returns (path, content)."""
    d = temp_dir(test, "kiln-sec-secret-", mode=0o755)
    path = os.path.join(d, "secret")
    content = b"SECRET-" + os.urandom(size).hex().encode() + b"\n"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.write(fd, content)
    os.close(fd)
    return path, content


def as_nobody():
    return ["/usr/bin/setpriv", "--reuid=%d" % NOBODY, "--regid=%d" % NOBODY, "--clear-groups"]


def run_as_nobody(argv, timeout=30):
    return subprocess.run(as_nobody() + argv, capture_output=True, timeout=timeout)


class Result:
    """An Execute outcome: `code` is the gRPC call's error code when the call
    failed, else ExecuteResponse.status.code; `response` the ExecuteResponse."""

    def __init__(self, code, message, response=None, seconds=0.0):
        self.code, self.message, self.response, self.seconds = code, message, response, seconds

    @property
    def result(self):
        return self.response.result if self.response is not None else rex.ActionResult()

    def __repr__(self):
        r = self.result
        return "Result(%s, %r, exit=%s, files=%s, dirs=%s, %.1fs)" % (
            CODE_NAMES.get(self.code, self.code), self.message[:300], r.exit_code,
            [f.path for f in r.output_files], [d.path for d in r.output_directories], self.seconds)


class Worker:
    """A kiln-worker process with its own state dir; stopped and removed at cleanup."""

    def __init__(self, test, flags=(), unprivileged=False, state_dir=None, concurrency=1):
        self.test = test
        self.base = temp_dir(test, "kiln-sec-worker-", owner=NOBODY if unprivileged else None,
                             mode=0o755)  # like /var/lib: the state dir must protect itself
        self.state_dir = state_dir or os.path.join(self.base, "state")
        self.log_path = os.path.join(self.base, "worker.log")
        argv = [os.path.join(BIN_DIR, "kiln-worker"), "--listen=127.0.0.1:0", "--metrics_listen=",
                "--state_dir=" + self.state_dir, "--concurrency=%d" % concurrency] + list(flags)
        if not any(f.startswith("--build_uid_base") for f in flags):
            # Not the default 61000: other workers on this host (parallel ctest,
            # other suites) must not share our build uids.
            argv.append("--build_uid_base=%d" % random.randrange(62000, 63900, 16))
        if unprivileged:
            argv = as_nobody() + argv
        self.out_path = os.path.join(self.base, "worker.out")
        out = open(self.out_path, "wb")
        log = open(self.log_path, "wb")
        # The worker's kiln-sandbox processes inherit its environment: this
        # tag tells them apart from those of other workers on the host.
        self.tag = uuid.uuid4().hex
        env = dict(os.environ, KILN_TEST_WORKER_TAG=self.tag)
        # setpriv execs the worker: the pid is the worker's.
        self.proc = subprocess.Popen(argv, stdout=out, stderr=log, stdin=subprocess.DEVNULL, env=env)
        out.close()
        log.close()
        test.addCleanup(self.stop)
        self.port = None
        deadline = time.time() + 20
        while time.time() < deadline:
            with open(self.out_path) as f:
                m = regex.search(r"grpc_port=(\d+)", f.read())
            if m:
                self.port = int(m.group(1))
                break
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        if self.port is None:
            raise AssertionError("kiln-worker did not start: " + self.log())
        self.channel = grpc.insecure_channel("127.0.0.1:%d" % self.port)
        test.addCleanup(self.channel.close)
        self.cas = rex_grpc.ContentAddressableStorageStub(self.channel)
        self.bytestream = bs_grpc.ByteStreamStub(self.channel)
        self.execution = rex_grpc.ExecutionStub(self.channel)
        self.action_cache = rex_grpc.ActionCacheStub(self.channel)

    @property
    def pid(self):
        return self.proc.pid

    def log(self):
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()[-4000:]
        except OSError:
            return ""

    def alive(self):
        return self.proc.poll() is None

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def vm_hwm_kib(self):
        with open("/proc/%d/status" % self.pid) as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
        return 0

    # --- storage -------------------------------------------------------
    def put(self, data):
        """Uploads one blob (ByteStream for big ones) and returns its Digest."""
        d = digest(data)
        if len(data) < 2_000_000:
            resp = self.cas.BatchUpdateBlobs(rex.BatchUpdateBlobsRequest(requests=[
                rex.BatchUpdateBlobsRequest.Request(digest=d, data=data)]), timeout=60)
            assert resp.responses[0].status.code == 0, resp
        else:
            name = "uploads/%s/blobs/%s/%d" % (uuid.uuid4(), d.hash, d.size_bytes)
            chunk = 1 << 20

            def requests():
                for off in range(0, len(data), chunk):
                    yield bs.WriteRequest(resource_name=name if off == 0 else "", write_offset=off,
                                          finish_write=off + chunk >= len(data), data=data[off:off + chunk])
            self.bytestream.Write(requests(), timeout=120)
        return d

    def put_message(self, message):
        return self.put(message.SerializeToString())

    def missing(self, digests):
        resp = self.cas.FindMissingBlobs(rex.FindMissingBlobsRequest(blob_digests=list(digests)), timeout=30)
        return {d.hash for d in resp.missing_blob_digests}

    def read(self, d):
        name = "blobs/%s/%d" % (d.hash, d.size_bytes)
        return b"".join(r.data for r in self.bytestream.Read(bs.ReadRequest(resource_name=name), timeout=60))

    def directory(self, files=None, dirs=None, symlinks=None):
        """Uploads a Directory: files {name: bytes or (bytes, is_executable)},
        dirs {name: Digest}, symlinks {name: target}; returns its Digest."""
        msg = rex.Directory()
        for name in sorted(files or {}):
            content = files[name]
            data, executable = content if isinstance(content, tuple) else (content, False)
            msg.files.add(name=name, digest=self.put(data), is_executable=executable)
        for name in sorted(dirs or {}):
            msg.directories.add(name=name, digest=dirs[name])
        for name in sorted(symlinks or {}):
            msg.symlinks.add(name=name, target=symlinks[name])
        return self.put_message(msg)

    def empty_dir(self):
        return self.directory()

    # --- execution -----------------------------------------------------
    def action(self, argv, root=None, output_paths=(), output_files=(), output_directories=(),
               working_directory="", env=None, timeout_s=0, do_not_cache=True):
        env = {"PATH": "/usr/bin:/bin"} if env is None else env
        command = rex.Command(arguments=list(argv), working_directory=working_directory,
                              output_paths=sorted(output_paths), output_files=sorted(output_files),
                              output_directories=sorted(output_directories))
        for name in sorted(env):
            command.environment_variables.add(name=name, value=env[name])
        action = rex.Action(command_digest=self.put_message(command),
                            input_root_digest=root if root is not None else self.empty_dir(),
                            do_not_cache=do_not_cache)
        if timeout_s:
            action.timeout.seconds = timeout_s
        return self.put_message(action)

    def execute_digest(self, action_digest, deadline=120, **request_fields):
        start = time.time()
        last = None
        try:
            for op in self.execution.Execute(rex.ExecuteRequest(action_digest=action_digest,
                                                                skip_cache_lookup=True, **request_fields),
                                             timeout=deadline):
                last = op
        except grpc.RpcError as e:
            return Result(e.code().value[0], e.details() or "", None, time.time() - start)
        seconds = time.time() - start
        if last is None or not last.done:
            return Result(UNKNOWN, "no completed operation", None, seconds)
        if last.HasField("error"):
            return Result(last.error.code, last.error.message, None, seconds)
        response = rex.ExecuteResponse()
        last.response.Unpack(response)
        return Result(response.status.code, response.status.message, response, seconds)

    def execute(self, argv, deadline=120, inline_stdout=False, **action_fields):
        """Runs argv as an action and waits for the result (a Result)."""
        request = {"inline_stdout": True} if inline_stdout else {}
        return self.execute_digest(self.action(argv, **action_fields), deadline=deadline, **request)

    # --- the state dir -------------------------------------------------
    def stored_files(self):
        """(path, content-hash-name) of every file under the state dir named by a sha256."""
        found = []
        for top in ("cas", "exec-cache", "ac"):
            for dirpath, _, names in os.walk(os.path.join(self.state_dir, top)):
                for name in names:
                    if HEX64.match(name):
                        found.append(os.path.join(dirpath, name))
        return found

    def corrupt_blobs(self):
        """Paths in cas/ and exec-cache/ whose content no longer hashes to their name."""
        bad = []
        for path in self.stored_files():
            if "/ac/" in path:
                continue
            with open(path, "rb") as f:
                if sha256(f.read()) != os.path.basename(path)[:64]:
                    bad.append(path)
        return bad

    def files_containing(self, needle, under=""):
        """Every file under the state dir (or its subdir `under`) whose bytes contain needle."""
        hits = []
        for dirpath, _, names in os.walk(os.path.join(self.state_dir, under)):
            for name in names:
                path = os.path.join(dirpath, name)
                try:
                    if os.path.isfile(path) and not os.path.islink(path):
                        with open(path, "rb") as f:
                            if needle in f.read():
                                hits.append(path)
                except OSError:
                    pass
        return hits

    def processes_left(self, settle_seconds=10):
        """Processes started by this worker (its kiln-sandbox launchers and
        their PID 1s, found by the environment tag) that are still there
        settle_seconds after the worker ended. Each must end with the
        worker, even one it was starting when it was SIGKILLed."""
        needle = b"KILN_TEST_WORKER_TAG=" + self.tag.encode()
        deadline = time.monotonic() + settle_seconds
        while True:
            left = []
            for name in os.listdir("/proc"):
                if not name.isdigit() or int(name) == self.pid:
                    continue
                try:
                    with open("/proc/%s/environ" % name, "rb") as f:
                        if needle not in f.read().split(b"\0"):
                            continue
                    with open("/proc/%s/cmdline" % name, "rb") as f:
                        left.append((int(name), f.read().replace(b"\0", b" ").decode(errors="replace")))
                except OSError:
                    pass  # gone meanwhile
            if not left or time.monotonic() > deadline:
                return left
            time.sleep(0.1)

    def exec_leftovers(self, settle_seconds=10):
        """What is left of finished actions in the exec root. Action
        directories are moved into exec/.trash and deleted in the background
        after the answer: what is still there after settle_seconds counts.
        exec/.spare holds fresh directories made ahead for the next actions."""
        d = os.path.join(self.state_dir, "exec")
        deadline = time.monotonic() + settle_seconds
        while True:
            left = []
            if os.path.isdir(d):
                for name in sorted(os.listdir(d)):
                    if name == ".trash":
                        left += [".trash/" + n for n in sorted(os.listdir(os.path.join(d, name)))]
                    elif name == ".spare":
                        continue  # made ahead for the next actions; no action had them
                    else:
                        left.append(name)
            if not left or time.monotonic() > deadline:
                return left
            time.sleep(0.1)


class SecurityTest(unittest.TestCase):
    """Base class: skip unless root (the suite needs real uids, setpriv and chown)."""

    def setUp(self):
        if os.geteuid() != 0:
            self.skipTest("the security suite runs as root")
        if not os.path.exists(os.path.join(BIN_DIR, "kiln-worker")):
            self.fail("no kiln-worker in %s" % BIN_DIR)

    def worker(self, **kwargs):
        return Worker(self, **kwargs)

    def assertSecretNowhere(self, worker, content, result=None):
        """No blob with the secret's bytes in the CAS (FindMissingBlobs and a
        scan of the state dir), and no output of the result carries them."""
        d = digest(content)
        self.assertIn(d.hash, worker.missing([d]), "the host secret reached the CAS")
        self.assertEqual(worker.files_containing(content), [], "the host secret is in the state dir")
        if result is not None and result.response is not None:
            r = result.result
            for f in r.output_files:
                self.assertNotEqual(f.digest.hash, d.hash, "output %s carries the host secret" % f.path)
                self.assertNotIn(content, f.contents)
            self.assertNotIn(content, r.stdout_raw)
