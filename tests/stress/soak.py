"""The soak: many mixed actions against one kiln-worker, every answer checked,
and nothing left growing.

One worker (--concurrency=SLOTS, as root, metrics on loopback) takes
ACTIONS answers' worth of actions from PROCESSES client processes of THREADS
threads each (tests/stress/soak_client.py): tiny ones, output-heavy ones
(MiBs of output files and stdout, read back and compared), failing (exit 3),
timing out (1 s timeout, sleep 30: DEADLINE_EXCEEDED), cancelled
(CancelOperation while queued or running: CANCELLED), dropped by the client
and collected with WaitExecution, cache hits (cached_result), and identical
actions in flight at once (merged by the worker into one operation).

Checked, with a message naming what went wrong:
- every answer is right (the clients check each one);
- after the run and a short settle, against a baseline taken after a
  warm-up, once with the finished operations still kept (as the worker does
  for 10 minutes) and once after the clients deleted them (DeleteOperation,
  each must succeed): the worker's fds, threads and RSS (bounds below), no exec dir
  left under the state dir, no mount left beneath the worker's directory,
  no kiln-sandbox-* cgroup left, no process left in the worker's build-uid
  range;
- the worker's Prometheus counters moved exactly as the clients saw: actions
  by outcome (distinct operations: merged twins count once), cache hits, and
  merged Execute calls.

Every second it samples the answers so far and the worker's RSS, threads and
fds; with --out it writes soak.csv and soak.png (throughput and RSS over time).

Run: /usr/bin/python3 tests/stress/soak.py [BIN_DIR] [--actions=10000 --processes=4 --threads=16]
     (bench/run_soak.sh wraps it; ctest runs a short version: stress_soak_short_test)
"""
import argparse
import collections
import csv
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "security"))
import kiln_harness as h  # noqa: E402
from google.longrunning import operations_pb2_grpc  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
# --build_uid_pool_size: the default, 64, unless --uids_per_slot is given
# (2 per slot is the least with which a slot's next warm sandbox prepares
# while its action runs; the short soak uses it).
UID_POOL = 64
SETTLE_SECONDS = 12    # after the run: the memory trimmer runs every 5 s, idle gRPC threads exit
SETTLE_LIMIT = 60      # how long fds/threads/RSS may take to come back within bounds

# Bounds against the baseline taken after the warm-up, from measurements
# (docs/soak.md). fds and threads come back to the baseline exactly once the
# clients have disconnected; the slack absorbs a gRPC poller or timer thread
# between jobs at the moment of the sample.
FD_SLACK = 4
THREAD_SLACK = 4
# RSS grows with what the worker keeps by design, so the bound is that plus
# a fixed slack, each term measured on this worker (docs/soak.md):
# - every operation, for 10 minutes after it ends (Scheduler::kKeepCompleted),
#   for WaitExecution and GetOperation: its ExecuteResponse, metadata and
#   names, ~4 KiB each with the allocator's overhead (2,000-8,000 executions
#   of a few actions, nothing else new). Deleting them (DeleteOperation)
#   frees that memory for reuse but does not shrink RSS: the pages also hold
#   CAS index entries made at the same time. Rounds of the same load with
#   every operation deleted after each round level off (+0.1 MiB per round
#   of ~450 operations), so it is reused, not leaked.
# - the CAS index entry of each new blob, kept until eviction: 340 bytes each
#   (40,000 small blobs); allowed 512 (the hash table grows by doubling).
# - 16 MiB for the allocator's arenas and a table doubling at a bad moment.
# Measured: +36 MiB over 10,000 actions (7,049 operations, 20,142 new blobs)
# against a bound of +53 MiB; a leak of ~2.5 KiB per action, or one that
# grows with the bytes moved (~2.5 GiB of outputs), breaks it.
RSS_SLACK_MIB = 16
RSS_PER_OPERATION = 4096
RSS_PER_BLOB = 512


class Cleanups:
    """What kiln_harness.Worker expects of a test: addCleanup, run LIFO."""

    def __init__(self):
        self.functions = []

    def addCleanup(self, function, *args):  # noqa: N802 - unittest's name
        self.functions.append((function, args))

    def run(self):
        while self.functions:
            function, args = self.functions.pop()
            try:
                function(*args)
            except Exception as e:  # noqa: BLE001 - keep cleaning
                print("cleanup: %r" % e, file=sys.stderr)


class Failure(Exception):
    pass


# --- what the host shows -----------------------------------------------------

def proc_status(pid, field):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise Failure("no %s in /proc/%d/status" % (field, pid))


def worker_usage(pid):
    return {"rss_mib": proc_status(pid, "VmRSS") / 1024.0, "threads": proc_status(pid, "Threads"),
            "fds": len(os.listdir("/proc/%d/fd" % pid))}


def mounts_beneath(directory):
    """Mount points of the host's namespace at or beneath `directory`."""
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = line.split()[4].encode().decode("unicode_escape")
            if point == directory or point.startswith(directory.rstrip("/") + "/"):
                found.append(point)
    return found


def sandbox_cgroups():
    """Every kiln-sandbox-<launcher>-<n> cgroup on the host: {path: launcher pid}."""
    found = {}
    for top, dirs, _ in os.walk("/sys/fs/cgroup"):
        for name in dirs:
            m = re.match(r"kiln-sandbox-(\d+)-\d+$", name)
            if m:
                found[os.path.join(top, name)] = int(m.group(1))
    return found


def running_sandbox(pid):
    try:
        with open("/proc/%d/comm" % pid) as f:
            return f.read().strip() == "kiln-sandbox"
    except OSError:
        return False


def processes_of_uids(first, count):
    """(pid, uid, command) of every process whose real or effective uid is in [first, first+count)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            uids = [int(x) for x in open("/proc/%s/status" % entry).read().split("\nUid:")[1].split()[:2]]
            if any(first <= uid < first + count for uid in uids):
                command = open("/proc/%s/cmdline" % entry, "rb").read().replace(b"\0", b" ").decode(
                    errors="replace")
                found.append((int(entry), uids[0], command.strip()))
        except (OSError, IndexError):
            continue  # gone meanwhile
    return found


# --- metrics ------------------------------------------------------------------

def scrape(port):
    """{(name, frozenset(labels)): value} of the worker's /metrics."""
    text = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=30).read().decode()
    values = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            values[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return values


def summed(values, name, **labels):
    """Sum of `name` over every label set that includes `labels`."""
    want = set(labels.items())
    return sum(v for (n, ls), v in values.items() if n == name and want <= ls)


# --- the run --------------------------------------------------------------------

class Soak:
    def __init__(self, args):
        self.args = args
        self.cleanups = Cleanups()
        self.samples = []  # (seconds, answers, rss MiB, threads, fds)

    def start_worker(self):
        # Outside the range kiln_harness picks from (62000-63900), so that
        # the security and stress suites' workers do not share our uids.
        self.uid_base = random.randrange(64000, 65344, UID_POOL)  # below nobody (65534)
        flags = ["--metrics_listen=127.0.0.1:0", "--log_level=warn", "--kill_grace=1s",
                 "--build_uid_base=%d" % self.uid_base, "--build_uid_pool_size=%d" % UID_POOL]
        self.worker = h.Worker(self.cleanups, flags=flags, concurrency=self.args.slots)
        with open(self.worker.out_path) as f:
            self.metrics_port = int(re.search(r"metrics_port=(\d+)", f.read()).group(1))
        self.exec_root = os.path.join(self.worker.state_dir, "exec")

    def clients(self, actions, label, sample=False):
        """Runs the client processes to the end; returns their merged reports."""
        out_dir = tempfile.mkdtemp(prefix="kiln-soak-%s-" % label)
        self.cleanups.addCleanup(h.remove_tree, out_dir)
        procs, outs = [], []
        progress = [0] * self.args.processes
        share = [actions // self.args.processes + (i < actions % self.args.processes)
                 for i in range(self.args.processes)]
        for i in range(self.args.processes):
            out = os.path.join(out_dir, "client-%d.json" % i)
            argv = [sys.executable, os.path.join(HERE, "soak_client.py"), "--port=%d" % self.worker.port,
                    "--actions=%d" % share[i], "--threads=%d" % self.args.threads,
                    "--seed=%d" % (self.args.seed * 100 + i + (50 if label == "warmup" else 0)), "--out=" + out]
            proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, env=dict(os.environ))
            self.cleanups.addCleanup(self.stop_process, proc)
            procs.append(proc)
            outs.append(out)

        def read_progress(i, proc):
            for line in proc.stdout:
                if line.startswith("progress "):
                    progress[i] = int(line.split()[1])
        readers = [threading.Thread(target=read_progress, args=(i, p), daemon=True) for i, p in enumerate(procs)]
        for t in readers:
            t.start()
        start = time.time()
        next_sample = start
        while any(p.poll() is None for p in procs):
            if not self.worker.alive():
                raise Failure("the worker died during the %s:\n%s" % (label, self.worker.log()))
            if sample and time.time() >= next_sample:
                usage = worker_usage(self.worker.pid)
                self.samples.append((time.time() - start, sum(progress), usage["rss_mib"], usage["threads"],
                                     usage["fds"]))
                next_sample += 1
                if not self.args.quiet and len(self.samples) % 10 == 0:
                    print("  %4.0f s: %d answers, RSS %.1f MiB, %d threads, %d fds" % self.samples[-1],
                          file=sys.stderr, flush=True)
            time.sleep(0.05)
        seconds = time.time() - start
        for t in readers:
            t.join(5)
        merged = {"answers": [], "cache_hits": 0, "by_kind": collections.Counter(), "errors": [],
                  "duplicate_groups": 0, "duplicate_groups_merged": 0, "seconds": seconds}
        for i, (proc, out) in enumerate(zip(procs, outs)):
            if proc.returncode != 0 or not os.path.exists(out):
                raise Failure("client process %d of the %s exited with %s" % (i, label, proc.returncode))
            with open(out) as f:
                report = json.load(f)
            merged["answers"] += report["answers"]
            merged["cache_hits"] += report["cache_hits"]
            merged["by_kind"].update(report["by_kind"])
            merged["errors"] += ["client %d: %s" % (i, e) for e in report["errors"]]
            merged["duplicate_groups"] += report["duplicate_groups"]
            merged["duplicate_groups_merged"] += report["duplicate_groups_merged"]
        merged["total"] = len(merged["answers"]) + merged["cache_hits"]
        return merged

    @staticmethod
    def stop_process(proc):
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def wait_idle(self):
        """Until no action runs or waits (dropped calls' actions finish on their own)."""
        deadline = time.time() + 120
        while time.time() < deadline:
            m = scrape(self.metrics_port)
            if summed(m, "kiln_actions_in_flight") == 0 and summed(m, "kiln_action_queue_depth") == 0:
                return
            time.sleep(0.5)
        raise Failure("actions still running or queued 120 s after the clients finished")

    def exec_dirs(self):
        """Action directories under the exec root, and inside its dot-directories
        (the trash, which stays, emptied after each answer). .spare holds fresh
        directories made ahead for the next actions, never an action's."""
        found = []
        for name in os.listdir(self.exec_root):
            path = os.path.join(self.exec_root, name)
            if name == ".spare":
                continue
            if name.startswith(".") and os.path.isdir(path) and not os.path.islink(path):
                found += [name + "/" + child for child in os.listdir(path)]
            else:
                found.append(name)
        return sorted(found)

    def snapshot(self):
        return {"usage": worker_usage(self.worker.pid), "exec_dirs": self.exec_dirs(),
                "mounts": mounts_beneath(self.worker.base), "cgroups": sandbox_cgroups(),
                "uid_processes": processes_of_uids(self.uid_base, UID_POOL)}

    def leaks(self, baseline, after, operations=0, blobs=0):
        """What did not come back: [] if nothing. `operations` and `blobs` the
        worker keeps by design since the baseline (RSS bound above)."""
        problems = []
        b, a = baseline["usage"], after["usage"]
        rss_bound = RSS_SLACK_MIB + (operations * RSS_PER_OPERATION + blobs * RSS_PER_BLOB) / 1048576.0
        if a["fds"] > b["fds"] + FD_SLACK:
            problems.append("fds: %d after the run, %d at the baseline (bound +%d); open: %s" % (
                a["fds"], b["fds"], FD_SLACK, self.fd_targets()))
        if a["threads"] > b["threads"] + THREAD_SLACK:
            problems.append("threads: %d after the run, %d at the baseline (bound +%d)" % (
                a["threads"], b["threads"], THREAD_SLACK))
        if a["rss_mib"] > b["rss_mib"] + rss_bound:
            problems.append("RSS: %.1f MiB after the run, %.1f MiB at the baseline (bound +%.1f MiB: %d MiB, "
                            "%d operations kept, %d new CAS blobs)" % (
                                a["rss_mib"], b["rss_mib"], rss_bound, RSS_SLACK_MIB, operations, blobs))
        if after["exec_dirs"]:
            problems.append("exec dirs left in %s: %s" % (self.exec_root, after["exec_dirs"][:10]))
        if after["mounts"]:
            problems.append("mounts left beneath %s: %s" % (self.worker.base, after["mounts"][:10]))
        # Another suite's sandbox may run meanwhile: a cgroup whose launcher
        # still runs and is not our worker's child is not ours.
        left = {path: pid for path, pid in after["cgroups"].items() if path not in baseline["cgroups"] and
                (not running_sandbox(pid) or self.parent_of(pid) == self.worker.pid)}
        if left:
            problems.append("kiln-sandbox cgroups left: %s" % sorted(left)[:10])
        # A process of another worker's sandbox (whose uids may overlap) is
        # not ours: ours would have no kiln-worker but ours above it.
        left = [p for p in after["uid_processes"] if not self.under_other_worker(p[0])]
        if left:
            problems.append("processes left in the build-uid range [%d, %d): %s" % (
                self.uid_base, self.uid_base + UID_POOL, left[:10]))
        return problems

    def under_other_worker(self, pid):
        for _ in range(64):
            pid = self.parent_of(pid)
            if pid <= 1 or pid == self.worker.pid:
                return False
            try:
                with open("/proc/%d/comm" % pid) as f:
                    if f.read().strip() == "kiln-worker":
                        return True
            except OSError:
                return False
        return False

    @staticmethod
    def parent_of(pid):
        try:
            return proc_status(pid, "PPid")
        except (OSError, Failure):
            return 0

    def fd_targets(self):
        targets = collections.Counter()
        for fd in os.listdir("/proc/%d/fd" % self.worker.pid):
            try:
                target = os.readlink("/proc/%d/fd/%s" % (self.worker.pid, fd))
            except OSError:
                continue
            targets[re.sub(r"\[\d+\]", "", target)] += 1
        return dict(targets)

    def settle(self, baseline, **kept):
        """Waits SETTLE_SECONDS, then up to SETTLE_LIMIT for the bounds; the last snapshot."""
        time.sleep(SETTLE_SECONDS)
        deadline = time.time() + SETTLE_LIMIT
        while True:
            after = self.snapshot()
            if not self.leaks(baseline, after, **kept) or time.time() > deadline:
                return after
            time.sleep(1)

    def delete_operations(self, names):
        """DeleteOperation for each (finished) operation: the worker forgets them."""
        # A channel of its own, closed after: its connection must not count
        # as an fd the worker kept.
        channel = h.grpc.insecure_channel("127.0.0.1:%d" % self.worker.port)
        stub = operations_pb2_grpc.OperationsStub(channel)
        failures = []
        lock = threading.Lock()
        names = sorted(names)

        def delete(part):
            for name in part:
                try:
                    stub.DeleteOperation(h.operations_pb2.DeleteOperationRequest(name=name), timeout=30)
                except h.grpc.RpcError as e:
                    with lock:
                        failures.append("DeleteOperation(%s): %s %s" % (name, e.code().name, e.details()))
        threads = [threading.Thread(target=delete, args=(names[i::8],)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        channel.close()
        return failures

    def check_metrics(self, before, after, run):
        """The worker's counters moved exactly as the clients saw."""
        problems = []
        by_operation = {}
        for name, outcome, kind in run["answers"]:
            if by_operation.setdefault(name, outcome) != outcome:
                problems.append("operation %s answered both %s and %s" % (name, by_operation[name], outcome))
        ran = collections.Counter(by_operation.values())
        seen = {"success": ran["success"], "nonzero_exit": ran["nonzero_exit"], "timeout": ran["timeout"],
                "cancelled": ran["cancelled"], "error": ran["error"], "oom": 0,
                "cache_hit": run["cache_hits"]}
        counted = {}
        for outcome, want in seen.items():
            got = summed(after, "kiln_actions_total", outcome=outcome) - summed(
                before, "kiln_actions_total", outcome=outcome)
            counted[outcome] = got
            if got != want:
                problems.append("kiln_actions_total{outcome=%s} rose by %d; the clients saw %d" % (
                    outcome, got, want))
        for outcome, code in (("timeout", "DEADLINE_EXCEEDED"), ("cancelled", "CANCELLED"),
                              ("success", "OK"), ("nonzero_exit", "OK"), ("cache_hit", "OK")):
            other = (summed(after, "kiln_actions_total", outcome=outcome) -
                     summed(after, "kiln_actions_total", outcome=outcome, code=code))
            if other:
                problems.append("kiln_actions_total{outcome=%s} has %d with a code other than %s" % (
                    outcome, other, code))
        merged_seen = len(run["answers"]) - len(by_operation)
        merged = summed(after, "kiln_actions_merged_total") - summed(before, "kiln_actions_merged_total")
        counted["merged"] = merged
        if merged != merged_seen:
            problems.append("kiln_actions_merged_total rose by %d; the clients saw %d Execute calls share "
                            "an operation in flight" % (merged, merged_seen))
        teardown = (summed(after, "kiln_sandbox_teardown_failures_total") -
                    summed(before, "kiln_sandbox_teardown_failures_total"))
        if teardown:
            problems.append("kiln_sandbox_teardown_failures_total rose by %d" % teardown)
        return problems, counted

    def run(self):
        a = self.args
        self.start_worker()
        print("soak: worker pid %d, %d slots, %d client processes x %d threads, %d actions (+%d warm-up)" % (
            self.worker.pid, a.slots, a.processes, a.threads, a.actions, a.warmup), file=sys.stderr, flush=True)
        warm = self.clients(a.warmup, "warmup")
        if warm["errors"]:
            raise Failure("wrong answers in the warm-up:\n  " + "\n  ".join(warm["errors"][:20]))
        self.wait_idle()
        time.sleep(SETTLE_SECONDS)
        baseline = self.snapshot()
        before = scrape(self.metrics_port)
        print("soak: baseline after %d warm-up actions: %s" % (warm["total"], baseline["usage"]),
              file=sys.stderr, flush=True)

        run = self.clients(a.actions, "run", sample=True)
        self.wait_idle()
        metrics_after = scrape(self.metrics_port)
        at_end = worker_usage(self.worker.pid)
        operations = {name for name, _, _ in run["answers"]}
        blobs = int(summed(metrics_after, "kiln_cas_blobs") - summed(before, "kiln_cas_blobs"))
        # First with every operation still kept (the worker's default for
        # 10 minutes), then once the clients deleted them: every delete
        # succeeds, and nothing grows further.
        kept = self.settle(baseline, operations=len(operations), blobs=blobs)
        kept_problems = self.leaks(baseline, kept, operations=len(operations), blobs=blobs)
        delete_failures = self.delete_operations(operations)
        after = self.settle(baseline, operations=len(operations), blobs=blobs)
        peak_rss = max([s[2] for s in self.samples] + [at_end["rss_mib"]])
        result = {
            "actions": run["total"], "seconds": round(run["seconds"], 1),
            "throughput": round(run["total"] / run["seconds"], 1),
            "by_kind": dict(sorted(run["by_kind"].items())),
            "duplicate_groups": run["duplicate_groups"], "duplicate_groups_merged": run["duplicate_groups_merged"],
            "rss_mib": {"baseline": round(baseline["usage"]["rss_mib"], 1), "peak": round(peak_rss, 1),
                        "end_of_run": round(at_end["rss_mib"], 1),
                        "settled_operations_kept": round(kept["usage"]["rss_mib"], 1),
                        "settled_operations_deleted": round(after["usage"]["rss_mib"], 1),
                        "hwm": round(self.worker.vm_hwm_kib() / 1024.0, 1)},
            "fds": {"baseline": baseline["usage"]["fds"], "end_of_run": at_end["fds"],
                    "settled": after["usage"]["fds"]},
            "threads": {"baseline": baseline["usage"]["threads"], "end_of_run": at_end["threads"],
                        "settled": after["usage"]["threads"]},
            "peak_threads": max([s[3] for s in self.samples] + [at_end["threads"]]),
            "peak_fds": max([s[4] for s in self.samples] + [at_end["fds"]]),
            "operations": len(operations), "new_cas_blobs": blobs,
        }
        metric_problems, counted = self.check_metrics(before, metrics_after, run)
        result["metrics_delta"] = counted
        if a.out:
            self.write_outputs(result)
        print(json.dumps(result, indent=1), flush=True)
        problems = ["wrong answer: " + e for e in run["errors"][:20]]
        if len(run["errors"]) > 20:
            problems.append("... and %d more wrong answers" % (len(run["errors"]) - 20))
        if run["total"] < a.actions:
            problems.append("only %d of %d actions were answered" % (run["total"], a.actions))
        if a.actions >= 200 and run["duplicate_groups"] and not run["duplicate_groups_merged"]:
            problems.append("no group of identical actions in flight was merged")
        problems += ["with the operations kept: " + p for p in kept_problems]
        problems += delete_failures[:10] + metric_problems
        problems += ["after deleting the operations: " + p
                     for p in self.leaks(baseline, after, operations=len(operations), blobs=blobs)]
        if not self.worker.alive():
            problems.append("the worker died")
        if problems:
            raise Failure("\n  ".join(["the soak failed:"] + problems) + "\nworker log:\n" + self.worker.log())
        print("soak: PASS: %d actions in %.0f s (%.1f/s), every answer right, nothing leaked, metrics match" % (
            run["total"], run["seconds"], result["throughput"]), file=sys.stderr)

    def write_outputs(self, result):
        os.makedirs(self.args.out, exist_ok=True)
        csv_path = os.path.join(self.args.out, "soak.csv")
        with open(csv_path, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["seconds", "answers", "actions_per_second", "rss_mib", "threads", "fds"])
            previous = (0.0, 0)
            for seconds, answers, rss, threads, fds in self.samples:
                rate = (answers - previous[1]) / (seconds - previous[0]) if seconds > previous[0] else 0
                writer.writerow(["%.1f" % seconds, answers, "%.1f" % rate, "%.1f" % rss, threads, fds])
                previous = (seconds, answers)
        with open(os.path.join(self.args.out, "soak.json"), "w") as f:
            json.dump(result, f, indent=1)
        plot(csv_path, os.path.join(self.args.out, "soak.png"), result)


def plot(csv_path, png_path, result):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rows = list(csv.DictReader(open(csv_path)))
    t = [float(r["seconds"]) for r in rows]
    rate = [float(r["actions_per_second"]) for r in rows]
    rss = [float(r["rss_mib"]) for r in rows]
    window = 10
    smooth = [sum(rate[max(0, i - window + 1):i + 1]) / len(rate[max(0, i - window + 1):i + 1])
              for i in range(len(rate))]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 6), sharex=True)
    top.plot(t, rate, color="#9ab", linewidth=0.6, label="per second")
    top.plot(t, smooth, color="#136", linewidth=1.5, label="%d s mean" % window)
    top.set_ylabel("actions answered / s")
    top.legend(loc="lower right")
    top.set_title("Kiln soak: %d actions, %.0f s, %.1f actions/s" % (
        result["actions"], result["seconds"], result["throughput"]))
    bottom.plot(t, rss, color="#a33", linewidth=1.2)
    bottom.axhline(result["rss_mib"]["baseline"], color="#777", linestyle="--", linewidth=0.8,
                   label="baseline after warm-up (%.1f MiB)" % result["rss_mib"]["baseline"])
    bottom.set_ylabel("worker RSS (MiB)")
    bottom.set_xlabel("seconds")
    bottom.set_ylim(bottom=0)
    bottom.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(png_path, dpi=100)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("bin_dir", nargs="?", default=os.environ.get("KILN_BIN_DIR", h.BIN_DIR))
    parser.add_argument("--actions", type=int, default=10000)
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--threads", type=int, default=16, help="per client process")
    parser.add_argument("--slots", type=int, default=8, help="the worker's --concurrency")
    parser.add_argument("--uids_per_slot", type=int, default=0,
                        help="--build_uid_pool_size = this x slots (default: the worker's default, 64)")
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument("--seed", type=int, default=int(time.time()))
    parser.add_argument("--out", help="directory for soak.csv, soak.json and soak.png")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args()
    if args.uids_per_slot > 0:
        global UID_POOL
        UID_POOL = args.uids_per_slot * args.slots
    h.BIN_DIR = os.path.abspath(args.bin_dir)
    os.environ["KILN_BIN_DIR"] = h.BIN_DIR
    if os.geteuid() != 0:
        sys.exit("soak: runs as root (the worker runs actions as build users)")
    print("soak: seed %d" % args.seed, file=sys.stderr)
    soak = Soak(args)
    try:
        soak.run()
    except Failure as e:
        print(str(e), file=sys.stderr)
        sys.exit(1)
    finally:
        soak.cleanups.run()


if __name__ == "__main__":
    main()
