#!/usr/bin/env bash
# Checks deploy/ with real tools, offline:
#   - every YAML and JSON file parses;
#   - the Kubernetes manifests validate strictly against the Kubernetes
#     OpenAPI schemas (kubernetes-validate from PyPI, which ships them; kubectl
#     --dry-run needs an API server);
#   - promtool checks the alert rules, the scrape config, and a live worker's
#     /metrics;
#   - every metric the dashboard and the alerts use exists in that output.
set -euo pipefail
BIN_DIR=$(cd "${1:?usage: $0 BIN_DIR}" && pwd)
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d /tmp/kiln-deploy-check.XXXXXX)
source "$ROOT/tests/start_worker.sh"
trap 'stop_worker; rm -rf "$WORK"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

echo "== YAML and JSON parse"
/usr/bin/python3 - "$ROOT" <<'PY'
import json, pathlib, sys, yaml
root = pathlib.Path(sys.argv[1]) / "deploy"
for path in sorted(root.rglob("*")):
    if path.suffix in (".yml", ".yaml"):
        list(yaml.safe_load_all(path.read_text()))
    elif path.suffix == ".json":
        json.loads(path.read_text())
    else:
        continue
    print("  ok", path.relative_to(root.parent))
PY

echo "== Kubernetes manifests, strict schema validation"
VENV="$BIN_DIR/../venv"
if [[ ! -x "$VENV/bin/kubernetes-validate" ]]; then
  /usr/bin/python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet kubernetes-validate==1.37.0
fi
"$VENV/bin/kubernetes-validate" --strict --kubernetes-version 1.31 "$ROOT/deploy/kubernetes/kiln-worker.yaml" \
  "$ROOT/deploy/kubernetes/kiln-cluster-worker.yaml"

echo "== promtool: rules and config"
promtool check rules "$ROOT/deploy/prometheus/kiln-alerts.yml"
# The alerts' own unit tests: each fires on the series it is meant for.
promtool test rules "$ROOT"/tests/alerts/*_test.yml
promtool check config --syntax-only "$ROOT/deploy/prometheus/prometheus.yml"

echo "== a live worker's /metrics"
# With tokens, as deployed, and one refused call, so that the authorization
# counter has samples too.
printf 'deploy-check-token' > "$WORK/token"
cat > "$WORK/principals.json" <<JSON
{"principals": [{"name": "ci", "token_sha256": "$(sha256sum < "$WORK/token" | cut -d' ' -f1)",
  "grants": [{"permissions": ["cas-read", "cas-write", "ac-read", "execute", "operations"]}]}]}
JSON
printf 'wrong' > "$WORK/wrong-token"
start_worker "$WORK/w" --concurrency=1 --token_file="$WORK/principals.json" || fail "worker did not start"
mkdir -p "$WORK/in"
for _ in 1 2; do
  "$BIN_DIR/kiln" run --server="127.0.0.1:$GRPC_PORT" --token_file="$WORK/token" --input_root="$WORK/in" \
    -- /bin/sh -c '(/bin/sleep 0.1 &); /bin/true' > /dev/null
done
if "$BIN_DIR/kiln" cas put --server="127.0.0.1:$GRPC_PORT" --token_file="$WORK/wrong-token" "$WORK/token" 2> /dev/null; then
  fail "a wrong token was accepted"
fi
/usr/bin/python3 -c "import sys, urllib.request; sys.stdout.write(urllib.request.urlopen('http://127.0.0.1:$METRICS_PORT/metrics').read().decode())" > "$WORK/metrics.txt"
promtool check metrics < "$WORK/metrics.txt" || fail "promtool check metrics"

echo "== every metric the dashboard and the alerts use exists"
/usr/bin/python3 - "$ROOT" "$WORK/metrics.txt" <<'PY'
import json, pathlib, re, sys, yaml
root, metrics = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]).read_text()
exposed = {line.split("{")[0].split(" ")[0] for line in metrics.splitlines() if line and not line.startswith("#")}
exprs = [t["expr"] for p in json.loads((root / "deploy/grafana/kiln-dashboard.json").read_text())["panels"] for t in p["targets"]]
for group in yaml.safe_load((root / "deploy/prometheus/kiln-alerts.yml").read_text())["groups"]:
    exprs += [rule["expr"] for rule in group["rules"]]
used = {name for e in exprs for name in re.findall(r"\b((?:kiln|process)_[a-z_]+)\b", e)}
missing = sorted(used - exposed)
print("  %d metric names used, all exposed" % len(used) if not missing else "")
if missing:
    sys.exit("used but not exposed: " + ", ".join(missing))
PY
echo "PASS: deploy/ validates and matches the worker's metrics"
