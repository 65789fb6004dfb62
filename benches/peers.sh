#!/usr/bin/env bash
# Fan-out side by side: the floor server, herald and Nchan (nginx + libnginx-mod-nchan from
# Debian, installed when missing), the same load generator against each, on loopback only.
#
# Usage: benches/peers.sh [subscribers] [changes]      (default 10000 5)
set -euo pipefail
cd "$(dirname "$0")/.."
subs=${1:-10000}
changes=${2:-5}

if ! dpkg -s libnginx-mod-nchan >/dev/null 2>&1; then
  echo "installing nginx and libnginx-mod-nchan from Debian's packages"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q nginx libnginx-mod-nchan >/dev/null
fi

work=$(mktemp -d)
trap 'nginx -p "$work" -c nginx.conf -s stop 2>/dev/null || true; rm -rf "$work"' EXIT
mkdir -p "$work/logs"
# One worker, so that its process is the one measured (RSS, CPU).
cat > "$work/nginx.conf" <<CONF
load_module /usr/lib/nginx/modules/ngx_nchan_module.so;
worker_processes 1;
worker_rlimit_nofile 20000;
pid $work/nginx.pid;
error_log $work/logs/error.log;
events { worker_connections 19500; }
http {
  access_log off;
  server {
    listen 127.0.0.1:18095 backlog=4096;
    location = /sub { nchan_subscriber eventsource; nchan_channel_id bench; }
    location = /pub { nchan_publisher; nchan_channel_id bench; }
  }
}
CONF
nginx -p "$work" -c nginx.conf
sleep 0.5
worker=$(pgrep -P "$(cat "$work/nginx.pid")" | head -1)

cargo build --release -q -p herald -p herald-bench
bench=target/release/herald-bench
$bench fanout --target floor --subs "$subs" --changes "$changes" 2>/dev/null | tail -1 > "$work/floor.json"
$bench fanout --target herald --subs "$subs" --changes "$changes" 2>/dev/null | tail -1 > "$work/herald.json"
$bench fanout --target external --sub 127.0.0.1:18095/sub --publish 127.0.0.1:18095/pub --pid "$worker" \
  --subs "$subs" --changes "$changes" 2>/dev/null | tail -1 > "$work/nchan.json"

python3 - "$work" <<'PY'
import json, sys
d = sys.argv[1]
rows = {t: json.load(open(f"{d}/{t}.json")) for t in ("floor", "herald", "nchan")}
floor = rows["floor"]
print(f"{'target':8} {'subs':>6} {'delivered':>10} {'spread p50':>11} {'spread p99':>11} {'latency p99':>12} {'deliv/s':>9} {'KiB/sub':>8} {'spread p99 / floor':>19}")
for t, r in rows.items():
    print(f"{t:8} {r['subscribers']:>6} {r['delivered']:>10} {r['spread_ms']['p50']:>9.1f}ms {r['spread_ms']['p99']:>9.1f}ms "
          f"{r['latency_ms']['p99']:>10.1f}ms {r['deliveries_per_second']:>9.0f} {r['rss_per_subscriber_bytes']/1024:>8.1f} "
          f"{r['spread_ms']['p99']/max(floor['spread_ms']['p99'],1e-9):>19.2f}")
PY
