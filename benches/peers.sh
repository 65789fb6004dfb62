#!/usr/bin/env bash
# Fan-out side by side: the floor server, herald, Nchan (nginx + libnginx-mod-nchan) and Pushpin,
# both from Debian's packages (installed when missing); the same load generator against each, on
# loopback only.
#
# Usage: benches/peers.sh [subscribers] [changes]      (default 10000 5)
set -euo pipefail
cd "$(dirname "$0")/.."
subs=${1:-10000}
changes=${2:-5}

for pkg in libnginx-mod-nchan pushpin; do
  if ! dpkg -s "$pkg" >/dev/null 2>&1; then
    echo "installing $pkg from Debian's packages"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q nginx "$pkg" >/dev/null
  fi
done

work=$(mktemp -d)
cleanup() {
  nginx -p "$work" -c nginx.conf -s stop 2>/dev/null || true
  [ -n "${pushpin_pid:-}" ] && kill "$pushpin_pid" 2>/dev/null && sleep 1
  [ -n "${origin_pid:-}" ] && kill "$origin_pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
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
nginx -p "$work" -c nginx.conf -s stop

# Pushpin: its runner starts condure (client connections), zurl (requests to the origin),
# pushpin-proxy and pushpin-handler; all four are measured together. Subscribers' requests go to
# a GRIP origin (herald-bench grip-origin) that holds each on the channel `bench`; a change is
# published to the handler's HTTP control port. Changed from Debian's defaults, so that Pushpin
# is not held back: zurl may reach the origin on loopback (its template denies 127.*), the
# handler's delivery rate limit (message_rate 2,500/s) and queue (message_hwm) are lifted.
pp="$work/pushpin"
mkdir -p "$pp/run" "$pp/log"
cp -r /usr/lib/pushpin "$pp/lib"
sed -i 's#^deny=.*#deny=#' "$pp/lib/runner/zurl.conf.template"
sed -i 's#ipc:///var/run/zurl/zurl-#ipc://{rundir}/{ipc_prefix}zurl-#' "$pp/lib/internal.conf"
sed -e "s#^\[global\]#[global]\nlibdir=$pp/lib#" -e "s#^include=.*#include={libdir}/internal.conf#" \
  -e "s#^rundir=.*#rundir=$pp/run#" -e "s#^logdir=.*#logdir=$pp/log#" \
  -e "s#^services=.*#services=condure,zurl,pushpin-proxy,pushpin-handler#" \
  -e "s#^http_port=.*#http_port=127.0.0.1:18096#" -e "s#^routesfile=.*#routesfile=$pp/routes#" \
  -e "s#^message_rate=.*#message_rate=1000000#" -e "s#^message_hwm=.*#message_hwm=1000000#" \
  /etc/pushpin/pushpin.conf > "$pp/pushpin.conf"
echo "* 127.0.0.1:18097" > "$pp/routes"
$bench grip-origin --listen 127.0.0.1:18097 >/dev/null &
origin_pid=$!
pushpin --config "$pp/pushpin.conf" >"$pp/log/runner.log" 2>&1 &
pushpin_pid=$!
sleep 3
pids=$(pgrep -d, -P "$pushpin_pid")
body='{"items":[{"channel":"bench","formats":{"http-stream":{"content":"event: change\ndata: {marker}\n\n"}}}]}'
$bench fanout --target external --sub 127.0.0.1:18096/sub --publish 127.0.0.1:5561/publish/ \
  --publish-body "$body" --pid "$pids" --subs "$subs" --changes "$changes" 2>/dev/null | tail -1 > "$work/pushpin.json"

python3 - "$work" <<'PY'
import json, sys
d = sys.argv[1]
rows = {t: json.load(open(f"{d}/{t}.json")) for t in ("floor", "herald", "nchan", "pushpin")}
floor, herald = rows["floor"], rows["herald"]
print(f"{'target':8} {'subs':>6} {'delivered':>10} {'retried':>8} {'spread p50':>11} {'spread p99':>11} {'latency p99':>12} {'deliv/s':>9} {'KiB/sub':>8} {'spread p99 / floor':>19}")
for t, r in rows.items():
    print(f"{t:8} {r['subscribers']:>6} {r['delivered']:>10} {r.get('retried', 0):>8} {r['spread_ms']['p50']:>9.1f}ms {r['spread_ms']['p99']:>9.1f}ms "
          f"{r['latency_ms']['p99']:>10.1f}ms {r['deliveries_per_second']:>9.0f} {r['rss_per_subscriber_bytes']/1024:>8.1f} "
          f"{r['spread_ms']['p99']/max(floor['spread_ms']['p99'],1e-9):>19.2f}")
for peer in ("nchan", "pushpin"):
    r = rows[peer]
    print(f"herald / {peer}: spread p99 {herald['spread_ms']['p99']/r['spread_ms']['p99']:.2f}x, "
          f"memory per subscriber {herald['rss_per_subscriber_bytes']/r['rss_per_subscriber_bytes']:.2f}x, "
          f"deliveries/s {herald['deliveries_per_second']/r['deliveries_per_second']:.2f}x")
PY
