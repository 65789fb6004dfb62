#!/usr/bin/env bash
# Checks deploy/ with each ecosystem's own tool (.ci/tools.sh installs them); .ci/run calls it.
# The metrics the dashboard and alerts name are checked against a live /metrics by tests/deploy.rs.
set -euo pipefail
cd "$(dirname "$0")/.."

.ci/tools.sh
venv=target/ci-tools

echo "deploy: Dockerfile (hadolint)"
"$venv/bin/hadolint" deploy/Dockerfile

echo "deploy: compose.yaml (compose specification schema)"
"$venv/bin/check-jsonschema" --builtin-schema vendor.compose-spec deploy/compose.yaml

echo "deploy: k8s/ (Kubernetes API schemas, strict)"
"$venv/bin/kubernetes-validate" --strict --quiet deploy/k8s/{configmap,deployment,service,pdb}.yaml

echo "deploy: prometheus/ (promtool)"
promtool check rules deploy/prometheus/alerts.yml
promtool check config deploy/prometheus/prometheus.yml

echo "deploy: grafana/herald.json (JSON)"
python3 -m json.tool deploy/grafana/herald.json >/dev/null

echo "deploy: gateway.yaml (herald check), and k8s/configmap.yaml holds the same file"
cargo build -q -p herald
HERALD_UPSTREAM=http://api.internal:8081 HERALD_API_KEY=check-key-0123456789 \
    HERALD_ADMIN_TOKEN=check-token-0123456789 target/debug/herald check -c deploy/gateway.yaml
python3 - <<'PY'
import re, sys
cm = open("deploy/k8s/configmap.yaml").read().split("  gateway.yaml: |\n", 1)[1]
embedded = "\n".join(line[4:] for line in cm.splitlines()) + "\n"
if embedded != open("deploy/gateway.yaml").read():
    sys.exit("deploy/k8s/configmap.yaml: gateway.yaml differs from deploy/gateway.yaml (regenerate it)")
PY

echo "deploy: systemd/herald.service (systemd-analyze verify)"
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root/usr/local/bin" "$root/usr/lib/systemd" "$root/etc/systemd/system" "$root/bin"
cp -r /usr/lib/systemd/system "$root/usr/lib/systemd/"
cp target/debug/herald "$root/usr/local/bin/herald"
cp "$(type -P kill)" "$root/bin/kill"
cp deploy/systemd/herald.service "$root/etc/systemd/system/"
# verify exits 0 on some problems it only prints: any output is a failure.
out=$(systemd-analyze verify --root="$root" herald.service 2>&1)
if [ -n "$out" ]; then
    echo "$out"
    exit 1
fi
echo "deploy: ok"
