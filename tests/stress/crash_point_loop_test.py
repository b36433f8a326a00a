"""Crash points: kill -9 the worker at random moments while clients write
blobs (ByteStream and BatchUpdateBlobs), update the action cache, run
actions, and a small --cas_max_bytes makes the store evict; then
`kiln-worker --verify_cas` on the state dir must find nothing wrong, and the
restarted worker must serve every write a client saw acknowledged, byte for
byte. Repeated KILN_CRASH_KILLS times (default 200) on one state dir.

Eviction may remove an acknowledged blob later (that is what a cap is for),
so the check is: a blob acknowledged since the previous restart is served
exactly; an older one is served exactly or NOT_FOUND, never other bytes.
Every other worker lifetime runs with --fsync=never.
Each round writes far less than the cap, so the newest writes cannot be the
least recently used. Cached results reference only the empty blob (which is
never evicted), so eviction never makes one stale: every result acknowledged
since the previous restart must come back as written.

Run: /usr/bin/python3 tests/stress/crash_point_loop_test.py build/bin
"""
import os
import random
import signal
import subprocess
import sys
import threading
import time
import unittest
import uuid

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "security"))
import kiln_harness as h  # noqa: E402
from kiln_harness import bs, grpc, rex  # noqa: E402

KILLS = int(os.environ.get("KILN_CRASH_KILLS", "200"))
CAS_MAX_BYTES = 2 << 20
BLOBS_PER_ROUND = 40    # per writer thread; at most 8 KiB on disk each
EMPTY = h.digest(b"")


class Round:
    """The load of one worker lifetime, and what the server acknowledged."""

    def __init__(self, worker, rng):
        self.worker = worker
        self.rng = random.Random(rng.random())
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.blobs = {}    # hash -> bytes, acknowledged
        self.results = {}  # action hash -> ActionResult, acknowledged
        self.errors = []   # anything but a dead server's UNAVAILABLE/CANCELLED
        self.actions = 0   # completed with OK

    def note(self, error):
        if isinstance(error, grpc.RpcError) and error.code() in (
                grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED, grpc.StatusCode.DEADLINE_EXCEEDED):
            return  # the server died under the call: nothing was acknowledged
        with self.lock:
            self.errors.append(repr(error))

    def blob(self):
        return os.urandom(self.rng.randrange(1, 6000))

    def bytestream_writer(self):
        for _ in range(BLOBS_PER_ROUND):
            if self.stop.is_set():
                return
            data = self.blob()
            d = h.digest(data)
            name = "uploads/%s/blobs/%s/%d" % (uuid.uuid4(), d.hash, d.size_bytes)
            cut = self.rng.randrange(0, len(data) + 1)
            requests = [bs.WriteRequest(resource_name=name, write_offset=0, data=data[:cut]),
                        bs.WriteRequest(write_offset=cut, data=data[cut:], finish_write=True)]
            try:
                resp = self.worker.bytestream.Write(iter(requests), timeout=10)
            except Exception as e:  # noqa: BLE001
                self.note(e)
                continue
            if resp.committed_size not in (d.size_bytes, -1):
                self.errors.append("Write acknowledged %d of %d bytes" % (resp.committed_size, d.size_bytes))
                continue
            with self.lock:
                self.blobs[d.hash] = data

    def batch_writer(self):
        written = 0
        while written < BLOBS_PER_ROUND and not self.stop.is_set():
            datas = [self.blob() for _ in range(self.rng.randrange(1, 5))]
            written += len(datas)
            request = rex.BatchUpdateBlobsRequest(requests=[
                rex.BatchUpdateBlobsRequest.Request(digest=h.digest(x), data=x) for x in datas])
            try:
                resp = self.worker.cas.BatchUpdateBlobs(request, timeout=10)
            except Exception as e:  # noqa: BLE001
                self.note(e)
                continue
            for r, data in zip(resp.responses, datas):
                if r.status.code == 0:
                    with self.lock:
                        self.blobs[r.digest.hash] = data

    def action_cache_writer(self):
        for _ in range(BLOBS_PER_ROUND):
            if self.stop.is_set():
                return
            action = h.digest(os.urandom(16))
            result = rex.ActionResult(exit_code=self.rng.randrange(0, 3), stdout_digest=EMPTY,
                                      stdout_raw=os.urandom(self.rng.randrange(0, 64)))
            try:
                self.worker.action_cache.UpdateActionResult(
                    rex.UpdateActionResultRequest(action_digest=action, action_result=result), timeout=10)
            except Exception as e:  # noqa: BLE001
                self.note(e)
                continue
            with self.lock:
                self.results[action.hash] = (action, result)

    def executor(self):
        # Actions with outputs (not cached: their outputs may be evicted),
        # and cached ones whose results name only the empty blob.
        while not self.stop.is_set():
            try:
                if self.rng.random() < 0.5:
                    argv = ["sh", "-c", "head -c %d /dev/urandom > out; sleep 0.0%d" %
                            (self.rng.randrange(1, 9000), self.rng.randrange(0, 9))]
                    digest = self.worker.action(argv, output_paths=["out"], timeout_s=30)
                else:
                    argv = ["sh", "-c", ": %s" % uuid.uuid4()]
                    digest = self.worker.action(argv, do_not_cache=False, timeout_s=30)
                result = self.worker.execute_digest(digest, deadline=10)
                if result.code == h.OK:
                    with self.lock:
                        self.actions += 1
                if result.code not in (h.OK, h.UNAVAILABLE, h.CANCELLED, h.DEADLINE_EXCEEDED):
                    with self.lock:
                        self.errors.append("Execute: %s %s" % (h.CODE_NAMES.get(result.code), result.message))
            except Exception as e:  # noqa: BLE001
                self.note(e)

    def run(self, seconds):
        threads = [threading.Thread(target=f) for f in (
            self.bytestream_writer, self.batch_writer, self.action_cache_writer, self.executor)]
        for t in threads:
            t.start()
        try:
            time.sleep(seconds)
            os.kill(self.worker.pid, signal.SIGKILL)
            self.worker.proc.wait()
        finally:
            self.stop.set()
            for t in threads:
                t.join()


class CrashPointLoopTest(unittest.TestCase):

    def verify_cas(self, state_dir):
        proc = subprocess.run([os.path.join(h.BIN_DIR, "kiln-worker"), "--verify_cas",
                               "--state_dir=" + state_dir], capture_output=True, text=True, timeout=120)
        self.assertEqual(proc.returncode, 0, "--verify_cas found problems:\n" + proc.stdout + proc.stderr)
        return proc.stdout

    def check_served(self, worker, recent, older, results):
        """Every recent write exactly; older ones exactly or NOT_FOUND (counted
        in self.evicted)."""
        for hashes, must_exist in ((recent, True), (older, False)):
            items = list(hashes.items())
            for i in range(0, len(items), 100):
                chunk = items[i:i + 100]
                resp = worker.cas.BatchReadBlobs(rex.BatchReadBlobsRequest(
                    digests=[h.digest(data) for _, data in chunk]), timeout=30)
                for r, (hash_, data) in zip(resp.responses, chunk):
                    if r.status.code == h.NOT_FOUND and not must_exist:
                        self.evicted.add(hash_)
                        continue
                    self.assertEqual(r.status.code, 0, "acknowledged blob %s lost: %s" % (hash_, r.status))
                    self.assertEqual(r.data, data, "blob %s served with other bytes" % hash_)
        for action, result in results.values():
            got = worker.action_cache.GetActionResult(rex.GetActionResultRequest(action_digest=action),
                                                      timeout=30)
            self.assertEqual(got.exit_code, result.exit_code)
            self.assertEqual(got.stdout_raw, result.stdout_raw)

    def test_kill_nine_at_random_points(self):
        seed = int(os.environ.get("KILN_CRASH_SEED", str(int(time.time()))))
        print("KILN_CRASH_SEED=%d" % seed, file=sys.stderr)
        rng = random.Random(seed)
        base = h.temp_dir(self, "kiln-crash-", mode=0o755)
        state_dir = os.path.join(base, "state")
        flags = ["--cas_max_bytes=%d" % CAS_MAX_BYTES, "--log_level=warn"]
        recent, older, results = {}, {}, {}
        self.evicted = set()
        blobs = actions = entries = 0
        start = time.time()
        for kill in range(KILLS):
            # Every other lifetime writes without fsync: a kill -9 must lose
            # nothing then either (the page cache survives the process), and
            # switching modes must keep every acknowledged write.
            fsync = ["--fsync=never"] if kill % 2 else ["--fsync=always"]
            worker = h.Worker(self, flags=flags + fsync, state_dir=state_dir, concurrency=2)
            try:
                self.check_served(worker, recent, older, results)
            except BaseException:
                print("round %d; worker log:\n%s" % (kill, worker.log()), file=sys.stderr)
                if os.environ.get("KILN_CRASH_GDB"):  # where each thread of a stuck worker is
                    subprocess.call(["ss", "-tnp"], stdout=sys.stderr)
                    fresh = grpc.insecure_channel("127.0.0.1:%d" % worker.port,
                                                  options=[("grpc.use_local_subchannel_pool", 1)])
                    try:
                        stub = h.rex_grpc.ContentAddressableStorageStub(fresh)
                        r = stub.FindMissingBlobs(rex.FindMissingBlobsRequest(blob_digests=[EMPTY]), timeout=10)
                        print("a fresh channel gets an answer: %r" % r, file=sys.stderr)
                    except grpc.RpcError as e:
                        print("a fresh channel fails too: %s" % e, file=sys.stderr)
                    fresh.close()
                    subprocess.call(["gdb", "-p", str(worker.pid), "-batch", "-ex", "thread apply all bt"],
                                    stdout=sys.stderr, stderr=subprocess.DEVNULL)
                raise
            older.update(recent)
            if len(older) > 3000:  # keep the checks quick; a sample stays
                older = dict(rng.sample(sorted(older.items()), 1000))
            load = Round(worker, rng)
            load.run(rng.uniform(0.02, 0.35))
            # gRPC shares connections between channels to the same address:
            # a later worker that gets this port would inherit this dead
            # worker's connection in backoff (UNAVAILABLE or a hang) unless
            # the channel is closed.
            worker.channel.close()
            self.assertEqual(load.errors, [], "round %d" % kill)
            # Its sandboxes went with it, also one it was just starting.
            left = worker.processes_left()
            for pid, _ in left:
                os.kill(pid, signal.SIGKILL)  # ours, found by the worker's tag
            self.assertEqual(left, [], "round %d: processes outlived the SIGKILLed worker" % kill)
            recent, results = load.blobs, load.results
            blobs, actions, entries = blobs + len(recent), actions + load.actions, entries + len(results)
            self.verify_cas(state_dir)
        # The last round's writes, once more, through a final worker.
        worker = h.Worker(self, flags=flags, state_dir=state_dir, concurrency=2)
        self.check_served(worker, recent, older, results)
        worker.stop()
        print("%d kills in %.0f s, verify_cas clean after each; acknowledged: %d blobs, %d cached results, "
              "%d actions; %d older blobs evicted" % (KILLS, time.time() - start, blobs, entries, actions,
                                                      len(self.evicted)), file=sys.stderr)
        # The load did what it is meant to: writes, results, actions, and
        # enough of them that the cap evicted.
        self.assertGreater(blobs, KILLS)
        self.assertGreater(entries, KILLS)
        self.assertGreater(actions, KILLS // 10)
        if KILLS >= 50:
            self.assertGreater(len(self.evicted), 0)


if __name__ == "__main__":
    h.main()
