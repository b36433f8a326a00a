"""One client process of the soak (tests/stress/soak.py starts several).

Runs a mix of actions against a kiln-worker from several threads, checks
every answer, and writes what it saw as JSON:
  {"answers": [[operation_name, outcome, kind], ...],   # actions that ran
   "cache_hits": N, "by_kind": {kind: answers}, "errors": [...]}
Progress ("progress N", N answers so far) goes to stdout every half second.

An "answer" is one completed Execute (or the WaitExecution that follows a
call the client dropped): the unit the soak counts as an action. Outcomes are
the worker's names (success, nonzero_exit, timeout, cancelled, error) or
cache_hit.

Run: /usr/bin/python3 soak_client.py --port=P --actions=N --threads=T --seed=S --out=FILE
"""
import argparse
import hashlib
import json
import os
import random
import sys
import threading
import time
import uuid

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "security"))
import kiln_harness as h  # noqa: E402
from kiln_harness import bs, bs_grpc, grpc, operations_pb2, rex, rex_grpc  # noqa: E402
from google.longrunning import operations_pb2_grpc  # noqa: E402

CALL_DEADLINE = 300  # s: an action may wait behind 64 others, timeouts and cancels on 8 slots

# Weights of each kind of unit. A unit gives one answer, except cache_pair
# (2: a miss, then a hit) and duplicates (3-4 identical actions at once).
MIX = [
    ("true", 18), ("echo", 18), ("heavy", 5), ("fail", 10), ("timeout", 4), ("cancel", 4),
    ("abandon", 3), ("cache_pair", 8), ("popular", 10), ("duplicates", 5),
]
if os.environ.get("KILN_SOAK_MIX"):  # e.g. "heavy:1,fail:2": to look at some kinds alone
    MIX = [(kind, int(weight)) for kind, weight in
           (item.split(":") for item in os.environ["KILN_SOAK_MIX"].split(","))]
POPULAR = 16  # distinct cacheable actions shared by every client process


def sha(data):
    return hashlib.sha256(data).hexdigest()


def yes_bytes(word, size):
    """What `yes WORD | head -c SIZE` prints."""
    line = (word + "\n").encode()
    return (line * (size // len(line) + 1))[:size]


def outcome_of(response):
    if response.cached_result:
        return "cache_hit"
    code = response.status.code
    if code == h.OK:
        return "success" if response.result.exit_code == 0 else "nonzero_exit"
    return {h.DEADLINE_EXCEEDED: "timeout", h.CANCELLED: "cancelled"}.get(code, "error")


class Wrong(Exception):
    """An answer that is not what the action must give."""


class Client:
    def __init__(self, port, seed, actions, threads):
        self.rng = random.Random(seed)
        self.target = actions
        self.threads = threads
        self.channel = grpc.insecure_channel("127.0.0.1:%d" % port, options=[
            ("grpc.max_receive_message_length", 64 << 20)])
        self.cas = rex_grpc.ContentAddressableStorageStub(self.channel)
        self.bytestream = bs_grpc.ByteStreamStub(self.channel)
        self.execution = rex_grpc.ExecutionStub(self.channel)
        self.operations = operations_pb2_grpc.OperationsStub(self.channel)
        self.lock = threading.Lock()
        self.answered = 0        # answers so far (guarded by lock)
        self.reserved = 0        # answers the units started so far will give
        self.answers = []        # [op name, outcome, kind] of actions that ran
        self.cache_hits = 0
        self.by_kind = {}
        self.errors = []
        self.stop = threading.Event()
        self.empty_root = self.put_message(rex.Directory())
        # A 64 KiB input file every heavy action stages (the exec cache's hit path).
        self.input_text = yes_bytes("input-%d" % seed, 64 << 10)
        root = rex.Directory()
        root.files.add(name="in.txt", digest=self.put(self.input_text))
        self.heavy_root = self.put_message(root)

    # --- storage -------------------------------------------------------
    def put(self, data):
        d = h.digest(data)
        if len(data) < (2 << 20):
            resp = self.cas.BatchUpdateBlobs(rex.BatchUpdateBlobsRequest(requests=[
                rex.BatchUpdateBlobsRequest.Request(digest=d, data=data)]), timeout=60)
            if resp.responses[0].status.code != 0:
                raise RuntimeError("upload failed: %s" % resp.responses[0].status)
        else:
            name = "uploads/%s/blobs/%s/%d" % (uuid.uuid4(), d.hash, d.size_bytes)

            def chunks():
                for off in range(0, len(data), 1 << 20):
                    yield bs.WriteRequest(resource_name=name if off == 0 else "", write_offset=off,
                                          finish_write=off + (1 << 20) >= len(data),
                                          data=data[off:off + (1 << 20)])
            self.bytestream.Write(chunks(), timeout=60)
        return d

    def put_message(self, message):
        return self.put(message.SerializeToString())

    def read(self, d):
        if d.size_bytes == 0:
            return b""
        name = "blobs/%s/%d" % (d.hash, d.size_bytes)
        return b"".join(r.data for r in self.bytestream.Read(bs.ReadRequest(resource_name=name), timeout=60))

    def action(self, argv, env=None, timeout_s=0, do_not_cache=True, root=None, output_paths=(),
               platform=None):
        command = rex.Command(arguments=argv, output_paths=sorted(output_paths))
        env = dict(env or {}, PATH="/usr/bin:/bin")
        for name in sorted(env):
            command.environment_variables.add(name=name, value=env[name])
        for name in sorted(platform or {}):
            command.platform.properties.add(name=name, value=platform[name])
        action = rex.Action(command_digest=self.put_message(command),
                            input_root_digest=root or self.empty_root, do_not_cache=do_not_cache)
        if timeout_s:
            action.timeout.seconds = timeout_s
        return self.put_message(action)

    # --- execution -----------------------------------------------------
    @staticmethod
    def unpack(op):
        """(stage, ExecuteResponse or None) of a google.longrunning.Operation."""
        meta = rex.ExecuteOperationMetadata()
        op.metadata.Unpack(meta)
        if not op.done:
            return meta.stage, None
        if op.HasField("error"):
            raise Wrong("operation %s ended with error %s: %s" % (op.name, op.error.code, op.error.message))
        response = rex.ExecuteResponse()
        op.response.Unpack(response)
        return meta.stage, response

    def finish(self, stream, on_message=None):
        """Reads an Execute/WaitExecution stream to its end: (name, ExecuteResponse)."""
        name, response = None, None
        for op in stream:
            name = op.name
            stage, response = self.unpack(op)
            if on_message is not None and response is None:
                on_message(op, stage)
        if response is None:
            raise Wrong("the stream of %s ended without a result" % name)
        return name, response

    def execute(self, digest, skip_cache_lookup=True, inline_stdout=False, on_message=None):
        request = rex.ExecuteRequest(action_digest=digest, skip_cache_lookup=skip_cache_lookup,
                                     inline_stdout=inline_stdout)
        return self.finish(self.execution.Execute(request, timeout=CALL_DEADLINE), on_message)

    def expect(self, name, response, outcome, exit_code=None, stdout=None, stderr=None):
        got = outcome_of(response)
        if got != outcome:
            raise Wrong("%s: expected %s, got %s (status %d %r, exit %d)" % (
                name, outcome, got, response.status.code, response.status.message, response.result.exit_code))
        r = response.result
        if exit_code is not None and r.exit_code != exit_code:
            raise Wrong("%s: exit code %d, expected %d" % (name, r.exit_code, exit_code))
        for label, want, raw, d in (("stdout", stdout, r.stdout_raw, r.stdout_digest),
                                    ("stderr", stderr, r.stderr_raw, r.stderr_digest)):
            if want is None:
                continue
            if raw and raw != want:
                raise Wrong("%s: inlined %s %r, expected %r" % (name, label, raw[:80], want[:80]))
            if d.hash != sha(want) or d.size_bytes != len(want):
                raise Wrong("%s: %s digest %s/%d, expected %s/%d" % (
                    name, label, d.hash, d.size_bytes, sha(want), len(want)))
            if self.read(d) != want:
                raise Wrong("%s: %s blob content differs from its digest's" % (name, label))

    def record(self, kind, name, response):
        outcome = outcome_of(response)
        with self.lock:
            self.answered += 1
            self.by_kind[kind] = self.by_kind.get(kind, 0) + 1
            if outcome == "cache_hit":
                self.cache_hits += 1
            else:
                self.answers.append([name, outcome, kind])

    # --- the kinds -----------------------------------------------------
    def unit_true(self, rng):
        d = self.action(["/bin/true"], env={"SOAK_ID": uuid.uuid4().hex})
        name, response = self.execute(d, skip_cache_lookup=False)
        self.record("true", name, response)
        self.expect(name, response, "success", exit_code=0, stdout=b"", stderr=b"")

    def unit_echo(self, rng):
        token = uuid.uuid4().hex
        # Half of them with limits: each such action gets its own cgroups.
        platform = {"pids": "64", "memory": "128MiB"} if rng.random() < 0.5 else None
        d = self.action(["echo", "echo-" + token], platform=platform)
        name, response = self.execute(d, inline_stdout=rng.random() < 0.5)
        self.record("echo", name, response)
        self.expect(name, response, "success", exit_code=0, stdout=("echo-%s\n" % token).encode())

    def unit_heavy(self, rng):
        token = uuid.uuid4().hex
        a_size = rng.randrange(1 << 20, 5 << 19)        # 1 - 2.5 MiB
        out_size = rng.randrange(256 << 10, 1 << 20)    # 256 KiB - 1 MiB of stdout
        script = ("yes A-$SOAK_ID | head -c %d > a.bin && mkdir -p d && cat in.txt in.txt > d/b.txt && "
                  "echo C-$SOAK_ID > d/c.txt && yes S-$SOAK_ID | head -c %d" % (a_size, out_size))
        d = self.action(["sh", "-c", script], env={"SOAK_ID": token}, root=self.heavy_root,
                        output_paths=["a.bin", "d"])
        name, response = self.execute(d)
        self.record("heavy", name, response)
        self.expect(name, response, "success", exit_code=0, stdout=yes_bytes("S-" + token, out_size))
        r = response.result
        want_a = yes_bytes("A-" + token, a_size)
        files = {f.path: f for f in r.output_files}
        if set(files) != {"a.bin"} or [x.path for x in r.output_directories] != ["d"]:
            raise Wrong("%s: outputs %s and %s" % (name, sorted(files), [x.path for x in r.output_directories]))
        if files["a.bin"].digest.hash != sha(want_a) or self.read(files["a.bin"].digest) != want_a:
            raise Wrong("%s: a.bin is not what the action wrote" % name)
        tree = rex.Tree()
        tree.ParseFromString(self.read(r.output_directories[0].tree_digest))
        want = {"b.txt": self.input_text * 2, "c.txt": ("C-%s\n" % token).encode()}
        got = {f.name: f.digest for f in tree.root.files}
        if sorted(got) != sorted(want) or tree.root.directories or tree.root.symlinks:
            raise Wrong("%s: d/ holds %s" % (name, sorted(got)))
        for file_name, data in want.items():
            if got[file_name].hash != sha(data) or self.read(got[file_name]) != data:
                raise Wrong("%s: d/%s is not what the action wrote" % (name, file_name))

    def unit_fail(self, rng):
        token = uuid.uuid4().hex
        d = self.action(["sh", "-c", "echo fail-$SOAK_ID >&2; exit 3"], env={"SOAK_ID": token})
        name, response = self.execute(d)
        self.record("fail", name, response)
        self.expect(name, response, "nonzero_exit", exit_code=3, stderr=("fail-%s\n" % token).encode())

    def unit_timeout(self, rng):
        d = self.action(["sleep", "30"], env={"SOAK_ID": uuid.uuid4().hex}, timeout_s=1)
        start = time.time()
        name, response = self.execute(d)
        self.record("timeout", name, response)
        self.expect(name, response, "timeout")  # DEADLINE_EXCEEDED, as REAPI says
        if time.time() - start > 25 + CALL_DEADLINE / 2:
            raise Wrong("%s: a 1 s timeout took %.0f s" % (name, time.time() - start))

    def unit_cancel(self, rng):
        """CancelOperation at once (usually while queued) or once it runs."""
        d = self.action(["sleep", "30"], env={"SOAK_ID": uuid.uuid4().hex}, timeout_s=60)
        when_running = rng.random() < 0.5
        cancelled = []

        def on_message(op, stage):
            if cancelled or (when_running and stage != rex.ExecutionStage.EXECUTING):
                return
            if when_running:
                time.sleep(0.2)
            self.operations.CancelOperation(operations_pb2.CancelOperationRequest(name=op.name), timeout=30)
            cancelled.append(op.name)

        name, response = self.execute(d, on_message=on_message)
        self.record("cancel", name, response)
        if not cancelled:
            raise Wrong("%s: completed before the client could cancel it" % name)
        self.expect(name, response, "cancelled")

    def unit_abandon(self, rng):
        """The client drops its Execute call while the action runs; the action
        goes on, and WaitExecution gets its result."""
        token = uuid.uuid4().hex
        d = self.action(["sh", "-c", "sleep 0.5; echo abandoned-$SOAK_ID"], env={"SOAK_ID": token})
        call = self.execution.Execute(rex.ExecuteRequest(action_digest=d, skip_cache_lookup=True),
                                      timeout=CALL_DEADLINE)
        name = None
        try:
            for op in call:
                name = op.name
                if op.done:
                    break
                call.cancel()
        except grpc.RpcError as e:
            if e.code() != grpc.StatusCode.CANCELLED:
                raise
        if name is None:
            raise Wrong("abandon: no operation name before the call was dropped")
        stream = self.execution.WaitExecution(rex.WaitExecutionRequest(name=name), timeout=CALL_DEADLINE)
        name2, response = self.finish(stream)
        self.record("abandon", name2, response)
        if name2 != name:
            raise Wrong("WaitExecution(%s) answered for %s" % (name, name2))
        self.expect(name, response, "success", exit_code=0, stdout=("abandoned-%s\n" % token).encode())

    def unit_cache_pair(self, rng):
        token = uuid.uuid4().hex
        d = self.action(["echo", "cached-" + token], do_not_cache=False)
        want = ("cached-%s\n" % token).encode()
        name, response = self.execute(d, skip_cache_lookup=False)
        self.record("cache_pair", name, response)
        self.expect(name, response, "success", exit_code=0, stdout=want)
        name, response = self.execute(d, skip_cache_lookup=False)
        self.record("cache_pair", name, response)
        self.expect(name, response, "cache_hit", exit_code=0, stdout=want)

    def unit_popular(self, rng):
        """One of a few actions every process runs: the first runs (maybe
        merged with a twin in flight), the rest are cache hits."""
        k = rng.randrange(POPULAR)
        d = self.action(["sh", "-c", "sleep 0.1; echo popular-%d" % k], do_not_cache=False)
        name, response = self.execute(d, skip_cache_lookup=False)
        self.record("popular", name, response)
        if not response.cached_result:
            self.expect(name, response, "success", exit_code=0, stdout=b"popular-%d\n" % k)
        else:
            self.expect(name, response, "cache_hit", exit_code=0, stdout=b"popular-%d\n" % k)

    def unit_duplicates(self, rng, count):
        """3 or 4 identical actions at once: the worker runs one and every
        call gets its result (the same operation)."""
        token = uuid.uuid4().hex
        d = self.action(["sh", "-c", "sleep 0.3; echo dup-$SOAK_ID"], env={"SOAK_ID": token})
        # A server-streaming call starts when it is made: all are in flight
        # before the first answer is read.
        calls = [self.execution.Execute(rex.ExecuteRequest(action_digest=d, skip_cache_lookup=True),
                                        timeout=CALL_DEADLINE) for _ in range(count)]
        results = [self.finish(call) for call in calls]
        for name, response in results:
            self.record("duplicates", name, response)
        for name, response in results:
            self.expect(name, response, "success", exit_code=0, stdout=("dup-%s\n" % token).encode())
        with self.lock:
            self.dup_groups = getattr(self, "dup_groups", 0) + 1
            self.dup_merged_groups = getattr(self, "dup_merged_groups", 0) + (
                len({n for n, _ in results}) < len(results))

    # --- the loop ------------------------------------------------------
    def worker_thread(self, index):
        rng = random.Random(self.rng.random() + index)
        kinds, weights = zip(*MIX)
        while not self.stop.is_set():
            kind = rng.choices(kinds, weights)[0]
            count = {"cache_pair": 2, "duplicates": rng.choice((3, 4))}.get(kind, 1)
            with self.lock:
                if self.reserved >= self.target:
                    return
                self.reserved += count
            try:
                if kind == "duplicates":
                    self.unit_duplicates(rng, count)
                else:
                    getattr(self, "unit_" + kind)(rng)
            except Wrong as e:
                self.error("%s: %s" % (kind, e))
            except grpc.RpcError as e:
                self.error("%s: gRPC %s: %s" % (kind, e.code().name, e.details()))
            except Exception as e:  # noqa: BLE001 - reported, and fails the soak
                self.error("%s: %r" % (kind, e))

    def error(self, message):
        with self.lock:
            self.errors.append(message)
            if len(self.errors) >= 20:  # something is badly wrong: stop early
                self.stop.set()

    def run(self):
        threads = [threading.Thread(target=self.worker_thread, args=(i,), daemon=True)
                   for i in range(self.threads)]
        for t in threads:
            t.start()
        while any(t.is_alive() for t in threads):
            with self.lock:
                answered = self.answered
            print("progress %d" % answered, flush=True)
            for t in threads:
                t.join(0.5 / len(threads))
        self.channel.close()
        print("progress %d" % self.answered, flush=True)
        return {"answers": self.answers, "cache_hits": self.cache_hits, "by_kind": self.by_kind,
                "errors": self.errors, "duplicate_groups": getattr(self, "dup_groups", 0),
                "duplicate_groups_merged": getattr(self, "dup_merged_groups", 0)}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--actions", type=int, required=True)
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    report = Client(args.port, args.seed, args.actions, args.threads).run()
    tmp = args.out + ".tmp"
    with open(tmp, "w") as f:
        json.dump(report, f)
    os.rename(tmp, args.out)


if __name__ == "__main__":
    main()
