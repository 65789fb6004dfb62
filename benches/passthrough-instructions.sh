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
for tool in nginx wrk valgrind; do command -v $tool >/dev/null || { echo "needs nginx, wrk and valgrind"; exit 1; }; done
w=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; nginx -p "$w/up" -c nginx.conf -s stop 2>/dev/null; rm -rf "$w"' EXIT
. benches/common.sh
upstream_conf "$w/up"
nginx -p "$w/up" -c nginx.conf
herald_conf "$w/herald.yaml"
valgrind --tool=callgrind --callgrind-out-file="$w/out.%p" "$herald" run -c "$w/herald.yaml" 2>/dev/null &
sleep 6
pid=$(pgrep -f "callgrind.*$w/herald.yaml" | head -1)
wrk -t1 -c8 -d2s http://127.0.0.1:18093/api/items >/dev/null
callgrind_control -z "$pid" >/dev/null 2>&1
n=$(wrk -t1 -c8 -d8s http://127.0.0.1:18093/api/items | awk '/requests in/ {print $1}')
callgrind_control -d "$pid" >/dev/null 2>&1
total=$(grep -m1 "^summary:" "$w"/out.*.1 | awk '{print $2}')
echo "$n requests, $total instructions, $((total / n)) per request"
callgrind_annotate --threshold=100 "$w"/out.*.1 2>/dev/null | grep -E "^ *[0-9,]+ \(" \
  | grep -vE "\((100\.0|9[0-9]\.[0-9]+)%\)" | head -15 | sed -E 's#/root/.cargo/registry/src/[^/]+/##; s#/rustc/[0-9a-f]+/##'
