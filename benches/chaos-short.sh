#!/usr/bin/env bash
# The chaos scenario's short run, meant for CI (about two minutes with startup): herald's
# cluster-mode promise under every kind of fault, a fault every 8-15 s for 90 s, 60 subscribers.
# The seed is random and printed; to replay a failure, run the same command with `--seed N`.
#
# Usage: benches/chaos-short.sh [herald-bench] [herald] [more chaos options…]
#        (default target/debug/herald-bench and target/debug/herald, which `cargo test
#        --workspace` builds). Needs redis-server and redis-cli (Debian's packages).
set -euo pipefail
cd "$(dirname "$0")/.."
bench=${1:-target/debug/herald-bench}
herald=${2:-target/debug/herald}
shift $(( $# < 2 ? $# : 2 ))
exec "$bench" --herald "$herald" chaos --duration 90s --fault-every 8s..15s --subs 60 --quiesce 45s "$@"
