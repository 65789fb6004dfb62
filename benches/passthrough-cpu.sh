#!/usr/bin/env bash
# CPU per request of nginx as a reverse proxy and of herald's pass-through, in front of the same
# static upstream under the same wrk load: task clock, system calls and context switches (perf
# stat), user and system time (/proc/<pid>/stat).
#
# Usage: benches/passthrough-cpu.sh [herald binary]   (default target/release/herald)
# Needs nginx, wrk and perf (Debian: apt-get install nginx wrk linux-perf).
set -euo pipefail
cd "$(dirname "$0")/.."
herald=$(realpath "${1:-target/release/herald}")
for tool in nginx wrk perf; do command -v $tool >/dev/null || { echo "needs nginx, wrk and perf"; exit 1; }; done
w=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; for d in up px; do nginx -p "$w/$d" -c nginx.conf -s stop 2>/dev/null; done; rm -rf "$w"' EXIT
conf() { # DIR WORKERS HTTP-BLOCK
  mkdir -p "$1/logs"
  printf 'worker_processes %s;\npid %s/nginx.pid;\nerror_log %s/logs/error.log;\nevents { worker_connections 4096; }\nhttp { access_log off; %s }\n' \
    "$2" "$1" "$1" "$3" > "$1/nginx.conf"
}
conf "$w/up" 1 "server { listen 127.0.0.1:18091; keepalive_requests 100000; location / { default_type application/json; return 200 '{\"ok\":true,\"items\":[1,2,3]}'; } }"
conf "$w/px" 2 "upstream legacy { server 127.0.0.1:18091; keepalive 64; } server { listen 127.0.0.1:18092; keepalive_requests 100000; location / { proxy_pass http://legacy; proxy_http_version 1.1; proxy_set_header Connection \"\"; } }"
nginx -p "$w/up" -c nginx.conf
nginx -p "$w/px" -c nginx.conf
cat > "$w/herald.yaml" <<CONF
server: { listen: 127.0.0.1:18093, admin_listen: 127.0.0.1:18094 }
upstream: { url: http://127.0.0.1:18091 }
routes: [ { name: unused, path: /watched-elsewhere, access: public } ]
log: { level: warn }
CONF
"$herald" run -c "$w/herald.yaml" &
hp=$!
sleep 1
ticks() { for p in ${1//,/ }; do awk '{print $14, $15}' "/proc/$p/stat"; done | awk '{u += $1; s += $2} END {print u, s}'; }
for target in "nginx 18092 $(pgrep -P "$(cat "$w/px/nginx.pid")" | paste -sd,)" "herald 18093 $hp"; do
  set -- $target
  read -r u0 s0 <<<"$(ticks "$3")"
  perf stat -e task-clock,context-switches,raw_syscalls:sys_enter -p "$3" -o "$w/stat" -- sleep 8 &
  sp=$!
  out=$(wrk -t1 -c32 -d8s "http://127.0.0.1:$2/api/items")
  wait $sp
  read -r u1 s1 <<<"$(ticks "$3")"
  python3 - "$1" "$out" "$w/stat" "$u0" "$s0" "$u1" "$s1" <<'PY'
import re, sys
name, out, stat = sys.argv[1], sys.argv[2], open(sys.argv[3]).read()
u0, s0, u1, s1 = map(float, sys.argv[4:8])
n = int(re.search(r"(\d+) requests in", out).group(1))
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
num = lambda ev: float(re.search(r"([\d,.]+)\s+(?:msec\s+)?" + ev, stat).group(1).replace(",", ""))
print(f"{name:7} {rps:9.0f} req/s  CPU {num('task-clock') * 1000 / n:5.1f} us/request "
      f"(user {(u1 - u0) * 1e4 / n:4.1f}, kernel {(s1 - s0) * 1e4 / n:4.1f})  "
      f"syscalls {num('raw_syscalls:sys_enter') / n:4.2f}  context switches {num('context-switches') / n:4.2f} per request")
PY
done
