#!/usr/bin/env bash
# Pass-through throughput and latency: wrk against a static upstream directly, through nginx as
# a reverse proxy, and through herald, in one run on this machine (loopback only).
#
# Needs: nginx and wrk (Debian: apt-get install nginx wrk).
# Usage: [TARGET=/api/items] benches/passthrough.sh [seconds] [connections] [herald binary]
# (herald binary default: built here; TARGET /files/64k.json or /files/1m.json for larger bodies)
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
conns=${2:-32}
. benches/common.sh
needs nginx wrk
[ -n "${3:-}" ] || cargo build --release -q -p herald
herald=$(realpath "${3:-target/release/herald}")
upstream_start
proxy_start
"$herald" run -c "$herald_yaml" &
sleep 1

run() { # name port
  local out
  out=$(wrk -t1 -c"$conns" -d"${secs}s" --latency "http://127.0.0.1:$2${TARGET:-/api/items}" 2>&1)
  local rps p50 p99
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  p50=$(awk '$1=="50%" {print $2}' <<<"$out")
  p99=$(awk '$1=="99%" {print $2}' <<<"$out")
  printf '%-22s %12s %10s %10s\n' "$1" "$rps" "$p50" "$p99"
  echo "$1 $rps" >> "$work/rps"
}
echo "wrk -t1 -c$conns -d${secs}s, GET ${TARGET:-/api/items (28-byte JSON body)}, $(nproc) CPUs shared by all processes"
printf '%-22s %12s %10s %10s\n' "target" "requests/s" "p50" "p99"
run "upstream directly" 18091
run "nginx reverse proxy" 18092
run "herald pass-through" 18093
awk '/^nginx/ {n=$NF} /^herald/ {h=$NF} END {printf "herald / nginx throughput: %.2f\n", h/n}' "$work/rps"
