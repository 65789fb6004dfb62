#!/usr/bin/env bash
# User-space instructions herald executes per proxied request, counted by valgrind's callgrind
# (repeatable whatever else the machine does): herald in front of a static nginx upstream,
# `wrk -t1 -c8` for 8 s after a 2 s warm-up; the counters are zeroed after the warm-up.
#
# Usage: benches/passthrough-instructions.sh [herald binary]   (default target/release/herald)
# Needs nginx, wrk and valgrind (Debian: apt-get install nginx wrk valgrind).
set -euo pipefail
cd "$(dirname "$0")/.."
herald=$(realpath "${1:-target/release/herald}")
. benches/common.sh
needs nginx wrk valgrind
upstream_start
valgrind --tool=callgrind --callgrind-out-file="$work/out.%p" "$herald" run -c "$herald_yaml" 2>/dev/null &
sleep 6
pid=$(pgrep -f "callgrind.*$herald_yaml" | head -1)
wrk -t1 -c8 -d2s http://127.0.0.1:18093/api/items >/dev/null
callgrind_control -z "$pid" >/dev/null 2>&1
n=$(wrk -t1 -c8 -d8s http://127.0.0.1:18093/api/items | awk '/requests in/ {print $1}')
callgrind_control -d "$pid" >/dev/null 2>&1
total=$(grep -m1 "^summary:" "$work"/out.*.1 | awk '{print $2}')
echo "$n requests, $total instructions, $((total / n)) per request"
callgrind_annotate --threshold=100 "$work"/out.*.1 2>/dev/null | grep -E "^ *[0-9,]+ \(" \
  | grep -vE "\((100\.0|9[0-9]\.[0-9]+)%\)" | head -15 | sed -E 's#/root/.cargo/registry/src/[^/]+/##; s#/rustc/[0-9a-f]+/##'
