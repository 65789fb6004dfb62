#!/usr/bin/env bash
# TLS handshakes per second, herald against nginx terminating TLS with the same certificate (the
# tests' fixture), in one run on this machine: `herald-bench handshakes`, full handshakes (no
# resumption), each followed by one small request the server answers itself (a 404), then closed.
#
# Needs: nginx (Debian: apt-get install nginx).
# Usage: benches/handshakes.sh [seconds] [clients] [herald binary]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
conns=${2:-32}
. benches/common.sh
needs nginx
[ -n "${3:-}" ] || cargo build --release -q -p herald
cargo build --release -q -p herald-bench
herald=$(realpath "${3:-target/release/herald}")
cp tests/fixtures/tls-a.pem tests/fixtures/tls-a.key "$work/"
chmod a+r "$work"/tls-a.*
# As many workers as herald has runtime threads (one per CPU).
nginx_start tls "$(nproc)" "server { listen 127.0.0.1:18095 ssl; ssl_certificate $work/tls-a.pem;
    ssl_certificate_key $work/tls-a.key; ssl_session_cache off; ssl_session_tickets off;
    location / { return 404; } }"
echo "full TLS handshakes + one request each, $conns clients, ${secs}s, $(nproc) CPUs shared by all processes"
echo "nginx:";  target/release/herald-bench --herald "$herald" handshakes --secs "$secs" --conns "$conns" --addr 127.0.0.1:18095 --path /none
echo "herald:"; target/release/herald-bench --herald "$herald" handshakes --secs "$secs" --conns "$conns"
