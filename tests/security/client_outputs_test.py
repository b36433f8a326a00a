#!/usr/bin/python3
"""Attack 6: a malicious (or broken) server makes `kiln run` write outside its
input root, follow symlinks it planted, or write bytes that do not match their
digest; and a real worker accepts ActionResults with escaping output paths."""
import os
import subprocess
from concurrent import futures

import grpc

import kiln_harness as h
from kiln_harness import rex, rex_grpc, bs, bs_grpc, operations_pb2


class FakeServer(rex_grpc.CapabilitiesServicer, rex_grpc.ContentAddressableStorageServicer,
                 rex_grpc.ActionCacheServicer, rex_grpc.ExecutionServicer, bs_grpc.ByteStreamServicer):
    """Just enough REAPI for `kiln run`: every Execute answers the next scripted
    ActionResult; ByteStream/BatchReadBlobs serve `served` (hash -> bytes)."""

    def __init__(self, test):
        self.results = []
        self.served = {}
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        rex_grpc.add_CapabilitiesServicer_to_server(self, self.server)
        rex_grpc.add_ContentAddressableStorageServicer_to_server(self, self.server)
        rex_grpc.add_ActionCacheServicer_to_server(self, self.server)
        rex_grpc.add_ExecutionServicer_to_server(self, self.server)
        bs_grpc.add_ByteStreamServicer_to_server(self, self.server)
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()
        test.addCleanup(self.server.stop, None)

    def serve(self, data, as_digest=None):
        d = as_digest or h.digest(data)
        self.served[d.hash] = data
        return d

    def GetCapabilities(self, request, context):
        caps = rex.ServerCapabilities()
        caps.cache_capabilities.digest_functions.append(rex.DigestFunction.SHA256)
        caps.cache_capabilities.max_batch_total_size_bytes = 4000000
        caps.execution_capabilities.digest_function = rex.DigestFunction.SHA256
        caps.execution_capabilities.exec_enabled = True
        return caps

    def FindMissingBlobs(self, request, context):
        return rex.FindMissingBlobsResponse(missing_blob_digests=request.blob_digests)

    def BatchUpdateBlobs(self, request, context):
        return rex.BatchUpdateBlobsResponse(responses=[
            rex.BatchUpdateBlobsResponse.Response(digest=r.digest) for r in request.requests])

    def BatchReadBlobs(self, request, context):
        return rex.BatchReadBlobsResponse(responses=[
            rex.BatchReadBlobsResponse.Response(digest=d, data=self.served.get(d.hash, b""))
            for d in request.digests])

    def Write(self, request_iterator, context):
        size = 0
        for r in request_iterator:
            size = r.write_offset + len(r.data)
        return bs.WriteResponse(committed_size=size)

    def Read(self, request, context):
        parts = request.resource_name.split("/")
        data = self.served.get(parts[parts.index("blobs") + 1]) if "blobs" in parts else None
        if data is None:
            context.abort(grpc.StatusCode.NOT_FOUND, "no such blob")
        yield bs.ReadResponse(data=data[request.read_offset:])

    def GetActionResult(self, request, context):
        context.abort(grpc.StatusCode.NOT_FOUND, "not cached")

    def Execute(self, request, context):
        response = rex.ExecuteResponse(result=self.results.pop(0))
        metadata = rex.ExecuteOperationMetadata(stage=rex.ExecutionStage.COMPLETED,
                                                action_digest=request.action_digest)
        op = operations_pb2.Operation(name="operations/fake", done=True)
        op.metadata.Pack(metadata)
        op.response.Pack(response)
        yield op


def snapshot(top):
    """Every path under top (symlinks not followed) with its mode and size."""
    found = {}
    for dirpath, dirnames, names in os.walk(top):
        for name in dirnames + names:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            found[p] = (st.st_mode, st.st_size)
    return found


class ClientOutputsTest(h.SecurityTest):

    def setUp(self):
        super().setUp()
        self.fake = FakeServer(self)
        self.top = h.temp_dir(self, "kiln-sec-client-")
        self.input_root = os.path.join(self.top, "p1", "p2", "root")
        os.makedirs(self.input_root)
        with open(os.path.join(self.input_root, "in.txt"), "w") as f:
            f.write("input\n")
        self.victim = h.temp_dir(self, "kiln-sec-victim-")

    def kiln_run(self):
        return subprocess.run([os.path.join(h.BIN_DIR, "kiln"), "run", "--server=127.0.0.1:%d" % self.fake.port,
                               "--input_root=" + self.input_root, "--output=out.txt", "--", "true"],
                              capture_output=True, timeout=60, stdin=subprocess.DEVNULL)

    def outside(self):
        """Everything outside the input root: the dirs above it and the victim dir."""
        return {p: v for p, v in list(snapshot(self.top).items()) + list(snapshot(self.victim).items())
                if not (p + "/").startswith(self.input_root + "/")}

    def assertRefusedAndContained(self, before, victim_entries=()):
        run = self.kiln_run()
        self.assertNotEqual(run.returncode, 0, "kiln run accepted a malicious result: %r" % run)
        self.assertNotEqual(run.stderr.strip(), b"", "kiln run failed without a message")
        self.assertEqual(self.outside(), before, "kiln run wrote outside its input root")
        self.assertEqual(sorted(os.listdir(self.victim)), sorted(victim_entries))
        return run

    def result_with_file(self, path, data=b"#!/bin/sh\necho pwned\n"):
        result = rex.ActionResult(exit_code=0)
        result.output_files.add(path=path, digest=self.fake.serve(data), is_executable=True)
        return result

    def test_output_file_with_dotdot_path(self):
        """The server returns output file `../../x.sh`: kiln run must fail and write nothing above DIR."""
        before = self.outside()
        self.fake.results.append(self.result_with_file("../../x.sh"))
        self.assertRefusedAndContained(before)

    def test_output_file_with_absolute_path(self):
        """The server returns an output file with an absolute path (into the victim dir)."""
        before = self.outside()
        self.fake.results.append(self.result_with_file(os.path.join(self.victim, "abs.sh")))
        self.assertRefusedAndContained(before)

    def test_output_file_through_returned_output_symlink(self):
        """The server returns output_symlinks `link -> VICTIM`, then an output file `link/f`."""
        before = self.outside()
        first = rex.ActionResult(exit_code=0)
        first.output_symlinks.add(path="link", target=self.victim)
        self.fake.results.append(first)
        self.fake.results.append(self.result_with_file("link/f"))
        self.kiln_run()  # may create the symlink or refuse it
        self.assertEqual(os.listdir(self.victim), [])
        run = self.kiln_run()
        self.assertEqual(self.outside(), before, "kiln run wrote through the output symlink")
        self.assertEqual(os.listdir(self.victim), [])
        link = os.path.join(self.input_root, "link")
        if not (os.path.isdir(link) and not os.path.islink(link)):  # f not written to a real dir in DIR
            self.assertNotEqual(run.returncode, 0, "kiln run accepted a path through a symlink: %r" % run)
            self.assertNotEqual(run.stderr.strip(), b"", "kiln run failed without a message")

    def test_output_directory_tree_writes_through_its_own_symlink(self):
        """An output directory Tree with symlink `link -> VICTIM` and a subdirectory `link` holding `f`."""
        before = self.outside()
        child = rex.Directory()
        child.files.add(name="f", digest=self.fake.serve(b"pwned\n"))
        tree = rex.Tree(children=[child])
        tree.root.symlinks.add(name="link", target=self.victim)
        tree.root.directories.add(name="link", digest=h.digest(child.SerializeToString()))
        result = rex.ActionResult(exit_code=0)
        result.output_directories.add(path="out", tree_digest=self.fake.serve(tree.SerializeToString()))
        self.fake.results.append(result)
        self.assertRefusedAndContained(before)

    def test_output_file_bytes_not_matching_digest(self):
        """The server serves bytes that do not hash to the output file's digest: never written."""
        bad = b"NOT-THE-DIGESTS-BYTES-" + os.urandom(8).hex().encode()
        result = rex.ActionResult(exit_code=0)
        result.output_files.add(path="out.txt", digest=self.fake.serve(bad, as_digest=h.digest(b"the real bytes\n")))
        self.fake.results.append(result)
        before = self.outside()
        self.assertRefusedAndContained(before)
        for dirpath, _, names in os.walk(self.top):
            for name in names:
                p = os.path.join(dirpath, name)
                if not os.path.islink(p):
                    with open(p, "rb") as f:
                        self.assertNotIn(bad, f.read(), "%s holds the mismatching bytes" % p)

    def test_worker_refuses_action_results_with_escaping_paths(self):
        """UpdateActionResult with output path `../../x.sh` or `a/../../x` on a real worker: INVALID_ARGUMENT."""
        w = self.worker()
        blob = w.put(b"#!/bin/sh\necho pwned\n")
        for i, path in enumerate(["../../x.sh", "a/../../x"]):
            with self.subTest(path=path):
                result = rex.ActionResult(exit_code=0)
                result.output_files.add(path=path, digest=blob)
                try:
                    w.action_cache.UpdateActionResult(rex.UpdateActionResultRequest(
                        action_digest=h.digest(b"action %d" % i), action_result=result), timeout=30)
                    code = h.OK
                except grpc.RpcError as e:
                    code = e.code().value[0]
                self.assertEqual(code, h.INVALID_ARGUMENT, "UpdateActionResult with output path %r" % path)


if __name__ == "__main__":
    h.main()
