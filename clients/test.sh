#!/usr/bin/env bash
# The client libraries' suites against the real gateway (target/debug/herald, which
# `cargo test --workspace` builds; or HERALD_BIN). Installs what they need: clients/js's npm
# packages, and a virtualenv with clients/python and pytest. .ci/run calls it.
set -euo pipefail
# A HERALD_BIN relative to where this was called from, before the cd.
case "${HERALD_BIN:=$(dirname "$0")/../target/debug/herald}" in /*) ;; *) HERALD_BIN="$PWD/$HERALD_BIN" ;; esac
export HERALD_BIN
cd "$(dirname "$0")"
[ -x "$HERALD_BIN" ] || { echo "clients/test.sh: $HERALD_BIN is missing: cargo build -p herald" >&2; exit 1; }

# JavaScript: the committed dist/ must be what src/ builds (the demo page serves its bundle).
npm ci --prefix js --no-audit --no-fund --loglevel=error
npm run --prefix js --silent build >/dev/null
if [ -n "$(git status --porcelain -- js/dist)" ]; then
    echo "clients/test.sh: clients/js/dist is not what src/ builds; run npm run build in clients/js and commit it" >&2
    git status --short -- js/dist >&2
    exit 1
fi
npm test --prefix js

# Python 3.11+.
if [ ! -x python/.venv/bin/python ]; then
    python3 -m venv python/.venv
fi
python/.venv/bin/pip install --quiet --disable-pip-version-check -e 'python[test]'
(cd python && .venv/bin/python -m mypy --strict src && .venv/bin/python -m pytest -q)
