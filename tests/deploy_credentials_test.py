#!/usr/bin/python3
"""The shipped deploy files start a worker that is safe to expose, as written.

For each of deploy/systemd/kiln-worker.service, deploy/kubernetes/kiln-worker.yaml
and the Dockerfile: make credentials with deploy/make-credentials.sh (as
docs/operations.md says), take the worker's exact arguments from the file
(only the secret directory, the state dir and the ports are moved into a temp
dir), start it on 0.0.0.0 (which the worker refuses without credentials), and
check that
  - the file's own health probe command answers SERVING over TLS;
  - a client with the generated token and CA uploads a blob;
  - without the token it is refused (kiln exit 65), in plaintext it cannot
    connect (69);
  - systemd's ExecReload (SIGHUP) leaves it serving.

usage: deploy_credentials_test.py BIN_DIR
"""
import json
import os
import pathlib
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import time

import yaml

BIN = pathlib.Path(sys.argv[1]).resolve()
ROOT = pathlib.Path(__file__).resolve().parent.parent


def systemd_args():
    text = (ROOT / "deploy/systemd/kiln-worker.service").read_text().replace("\\\n", " ")
    line = next(l for l in text.splitlines() if l.startswith("ExecStart="))
    reload = next(l for l in text.splitlines() if l.startswith("ExecReload="))
    assert reload.split("=", 1)[1].split()[:2] == ["/bin/kill", "-HUP"], reload
    return shlex.split(line.split("=", 1)[1])[1:], None, {"/etc/kiln/": ""}


def kubernetes_args():
    docs = list(yaml.safe_load_all((ROOT / "deploy/kubernetes/kiln-worker.yaml").read_text()))
    pod = next(d for d in docs if d and d["kind"] == "StatefulSet")["spec"]["template"]["spec"]
    container = pod["containers"][0]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    secrets = {v["name"]: v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v}
    # The secret names the operations doc tells people to create.
    assert secrets == {"tls": "kiln-tls", "principals": "kiln-principals"}, secrets
    probe = container["readinessProbe"]["exec"]["command"]
    assert container["livenessProbe"]["exec"]["command"] == probe
    return container["args"], probe, {mounts["tls"] + "/": "", mounts["principals"] + "/": ""}


def docker_args():
    text = (ROOT / "Dockerfile").read_text()
    entry = json.loads(re.search(r"^ENTRYPOINT (\[.*\])$", text, re.M).group(1))
    probe = json.loads(re.search(r"^HEALTHCHECK CMD (\[.*\])$", text, re.M).group(1))
    return entry[1:], probe, {"/etc/kiln/": ""}


def run(argv, **kw):
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, **kw)


def check(name, args, probe, secret_dirs, work):
    creds = work / name / "creds"
    made = run([str(ROOT / "deploy/make-credentials.sh"), str(creds), "kiln.test"])
    assert made.returncode == 0, made.stderr

    def local(arg):
        for prefix in secret_dirs:
            arg = arg.replace(prefix, str(creds) + "/")
        return arg

    worker_args = []
    for arg in args:
        flag = arg.split("=", 1)[0]
        if flag == "--listen":
            assert arg.startswith("--listen=0.0.0.0:"), arg
            worker_args.append("--listen=0.0.0.0:0")
        elif flag == "--metrics_listen":
            worker_args.append("--metrics_listen=127.0.0.1:0")
        elif flag == "--state_dir":
            worker_args.append("--state_dir=%s" % (work / name / "state"))
        elif flag == "--cas_max_bytes":
            worker_args.append("--cas_max_bytes=1GiB")
        else:
            worker_args.append(local(arg))
    assert not any("insecure" in a for a in worker_args), worker_args
    for flag in ("--tls_cert", "--tls_key", "--token_file"):
        assert any(a.startswith(flag + "=") for a in worker_args), (name, flag)

    log = open(work / name / "worker.log", "w")
    worker = subprocess.Popen([str(BIN / "kiln-worker")] + worker_args, stdout=subprocess.PIPE,
                              stderr=log, text=True)
    try:
        line = worker.stdout.readline()
        match = re.match(r"kiln-worker listening grpc_port=(\d+)", line)
        assert match, "%s: the worker did not start: %s %s" % (name, line,
                                                                (work / name / "worker.log").read_text())
        port = match.group(1)
        server = "--server=localhost:" + port

        if probe is not None:
            command = [str(BIN / "kiln") if a == "/usr/local/bin/kiln" else local(a) for a in probe]
            command = [a.replace("localhost:8980", "localhost:" + port) for a in command]
            health = run(command)
            assert health.returncode == 0 and health.stdout.strip() == "SERVING", (name, health)

        blob = work / name / "blob"
        blob.write_text("deployed " + name)
        ca = "--tls_ca=%s/ca.crt" % creds
        put = run([str(BIN / "kiln"), "cas", "put", server, ca, "--token_file=%s/ci.token" % creds, str(blob)])
        assert put.returncode == 0, (name, put.stderr)
        anonymous = run([str(BIN / "kiln"), "cas", "put", server, ca, str(blob)])
        assert anonymous.returncode == 65, (name, anonymous.returncode, anonymous.stderr)
        plaintext = run([str(BIN / "kiln"), "cas", "put", server, "--token_file=%s/ci.token" % creds, str(blob)])
        assert plaintext.returncode == 69, (name, plaintext.returncode, plaintext.stderr)

        worker.send_signal(signal.SIGHUP)
        time.sleep(0.3)
        assert worker.poll() is None, "%s: SIGHUP stopped the worker" % name
        health = run([str(BIN / "kiln"), "health", server, ca])
        assert health.returncode == 0, (name, health.stderr)
        print("  ok", name)
    finally:
        worker.terminate()
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
        log.close()


def main():
    with tempfile.TemporaryDirectory(prefix="kiln-deploy-creds-") as tmp:
        work = pathlib.Path(tmp)
        for name, (args, probe, dirs) in (("systemd", systemd_args()), ("kubernetes", kubernetes_args()),
                                          ("docker", docker_args())):
            (work / name).mkdir()
            check(name, args, probe, dirs, work)
    print("PASS: every deploy file runs a TLS + token worker, with its own probe")


if __name__ == "__main__":
    main()
