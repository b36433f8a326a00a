#!/usr/bin/python3
"""Attacks 13 and 14: unbounded work before and after an action (input zip
bombs, huge or countless outputs, huge logs, huge Command blobs)."""
import os
import time

import kiln_harness as h

MiB = 1 << 20
LIMIT = {h.INVALID_ARGUMENT, h.RESOURCE_EXHAUSTED}
OUTPUT_LIMIT = {h.RESOURCE_EXHAUSTED, h.FAILED_PRECONDITION}


class ResourceLimitsTest(h.SecurityTest):

    def assertStillServes(self, w):
        self.assertTrue(w.alive(), "the worker died: " + w.log())
        result = w.execute(["sh", "-c", "echo still-serving"], deadline=60)
        self.assertEqual((result.code, result.result.exit_code), (h.OK, 0), result)
        self.assertEqual(w.read(result.result.stdout_digest), b"still-serving\n")

    def assertStoredNothingLargerThan(self, w, limit):
        for path in w.stored_files():
            self.assertLessEqual(os.lstat(path).st_size, limit, "%s is in the state dir" % path)

    def test_input_directory_dag_bomb(self):
        """Attack 13: 40 Directory levels each pointing twice at the next (~2^40 entries from 42 blobs)."""
        w = self.worker()
        level = w.directory(files={"f1": b"1", "f2": b"2"})
        for _ in range(40):
            level = w.directory(dirs={"a": level, "b": level})
        start = time.time()
        result = w.execute(["true"], root=level, deadline=10)
        self.assertIn(result.code, LIMIT, "%r after %.1fs" % (result, time.time() - start))
        self.assertNotEqual(result.message.strip(), "", "the refusal does not say which limit")
        self.assertStillServes(w)
        self.assertEqual(w.exec_leftovers(), [], "exec dirs left behind")

    def test_sparse_100g_output_file(self):
        """Attack 14a: `truncate -s 100G out`: answered within 10 s naming the output size limit."""
        w = self.worker()
        result = w.execute(["sh", "-c", "truncate -s 100G out"], output_paths=["out"], deadline=10)
        self.assertIn(result.code, OUTPUT_LIMIT, result)
        self.assertNotEqual(result.message.strip(), "", "the refusal does not name the limit")
        self.assertNotIn("out", [f.path for f in result.result.output_files])
        self.assertStoredNothingLargerThan(w, MiB)

    def test_150k_output_files(self):
        """Attack 14b: 150,000 empty files in an output directory: refused (limit 100,000) without
        collecting them: the worker's output stage takes under 10 s. (Creating the files is the
        action's own time, which depends on the machine's load, so the deadline is generous.)"""
        w = self.worker()
        result = w.execute(["sh", "-c", "mkdir o && cd o && seq 1 150000 | xargs touch"],
                           output_paths=["o"], deadline=300)
        self.assertIn(result.code, OUTPUT_LIMIT, result)
        self.assertNotEqual(result.message.strip(), "", "the refusal does not name the limit")
        meta = result.result.execution_metadata
        if meta.HasField("output_upload_start_timestamp"):
            upload_start = meta.output_upload_start_timestamp.ToNanoseconds()
            completed = meta.worker_completed_timestamp.ToNanoseconds()
            self.assertLess((completed - upload_start) / 1e9, 10.0, "output stage took too long")

    def test_stdout_over_max_log_bytes_keeps_the_result(self):
        """Attack 14c: --max_log_bytes=1MiB and 8 MB of stdout: truncated, but exit code and outputs kept."""
        w = self.worker(flags=["--max_log_bytes=1048576"])
        result = w.execute(["sh", "-c", "head -c 8000000 /dev/zero | tr '\\0' x; echo done > out"],
                           output_paths=["out"], deadline=120)
        r = result.result
        self.assertTrue(result.code == h.OK or r.exit_code == 0, result)
        self.assertEqual(r.exit_code, 0, result)
        self.assertIn("out", [f.path for f in r.output_files], result)
        self.assertLessEqual(r.stdout_digest.size_bytes, MiB)
        self.assertIn("truncat", result.response.message.lower(), "ExecuteResponse.message: %r" % result.message)

    def test_sandbox_limits_set_by_the_worker(self):
        """Attack 12: default limits an operator sets on the worker reach the sandbox: /tmp and
        /dev/shm are bounded tmpfs and the number of processes is capped."""
        w = self.worker(flags=["--action_tmp_size=1MiB", "--action_shm_size=1MiB",
                               "--max_action_processes=20"])
        for target in ("/tmp/big", "/dev/shm/big"):
            result = w.execute(["sh", "-c", "head -c 4000000 /dev/zero > %s && echo wrote" % target])
            self.assertEqual(result.code, h.OK, result)
            self.assertNotEqual(result.result.exit_code, 0, "wrote 4 MB into a 1 MiB " + target)
            self.assertNotIn(b"wrote", w.read(result.result.stdout_digest))
        result = w.execute(["sh", "-c", "for i in $(seq 40); do sleep 5 & done; wait; echo forked"],
                           deadline=60)
        self.assertEqual(result.code, h.OK, result)
        self.assertNotEqual(result.result.exit_code, 0, "40 processes ran under a limit of 20")
        self.assertNotIn(b"forked", w.read(result.result.stdout_digest))

    def test_disk_filled_while_the_action_runs(self):
        """Attack 12: an action fills /work, or floods stdout, without end: stopped with
        RESOURCE_EXHAUSTED naming --max_action_disk_bytes, and the worker keeps serving."""
        w = self.worker(flags=["--max_action_disk_bytes=20MiB"])
        fill = ("i=0; while [ $i -lt 400 ]; do head -c 1000000 /dev/zero > f$i; i=$((i+1)); "
                "sleep 0.02; done; echo finished")
        for argv in (["sh", "-c", fill], ["sh", "-c", "yes kiln; echo finished"]):
            result = w.execute(argv, deadline=120)
            self.assertEqual(result.code, h.RESOURCE_EXHAUSTED, result)
            self.assertIn("--max_action_disk_bytes", result.message)
            self.assertLess(result.seconds, 60, result)
            self.assertNotIn(b"finished", w.read(result.result.stdout_digest)[-100:])
        self.assertStillServes(w)
        self.assertEqual(w.exec_leftovers(), [], "exec dirs left behind")

    def test_inline_stdout_of_300mb(self):
        """Attack 14d: inline_stdout with 300 MB of stdout: stdout_raw <= 1 MiB, worker VmHWM < 200 MiB."""
        w = self.worker()
        result = w.execute(["sh", "-c", "head -c 300000000 /dev/zero"], inline_stdout=True, deadline=180)
        hwm = w.vm_hwm_kib()
        self.assertLessEqual(len(result.result.stdout_raw), MiB, result)
        self.assertLess(hwm, 200 * 1024, "worker VmHWM %d KiB" % hwm)

    def test_80mb_command_blob(self):
        """Attack 14e: an 80 MB blob (uploaded via ByteStream) as the Command: INVALID_ARGUMENT, VmHWM +<40 MiB."""
        w = self.worker()
        big = w.put(os.urandom(80 * MiB))
        action = w.put_message(h.rex.Action(command_digest=big, input_root_digest=w.empty_dir()))
        before = w.vm_hwm_kib()
        result = w.execute_digest(action, deadline=30)
        grown = w.vm_hwm_kib() - before
        self.assertEqual(result.code, h.INVALID_ARGUMENT, result)
        self.assertLess(result.seconds, 10, result)
        self.assertLess(grown, 40 * 1024, "worker VmHWM grew by %d KiB" % grown)
        self.assertStillServes(w)


if __name__ == "__main__":
    h.main()
