#!/usr/bin/env bash
# CPU per request of nginx as a reverse proxy and of herald's pass-through, in front of the same
# static upstream under the same wrk load: task clock, system calls and context switches (perf
# stat), user and system time (/proc/<pid>/stat).
#
# Usage: [CONNS=32] [TARGET=/api/items] benches/passthrough-cpu.sh [herald binary]   (default target/release/herald)
# Needs nginx, wrk and perf (Debian: apt-get install nginx wrk linux-perf).
set -euo pipefail
cd "$(dirname "$0")/.."
herald=$(realpath "${1:-target/release/herald}")
. benches/common.sh
needs nginx wrk perf
upstream_start
proxy_start
"$herald" run -c "$herald_yaml" &
hp=$!
sleep 1
ticks() { for p in ${1//,/ }; do awk '{print $14, $15}' "/proc/$p/stat"; done | awk '{u += $1; s += $2} END {print u, s}'; }
for target in "nginx 18092 $(pgrep -P "$(cat "$work/px/nginx.pid")" | paste -sd,)" "herald 18093 $hp"; do
  set -- $target
  read -r u0 s0 <<<"$(ticks "$3")"
  perf stat -e task-clock,context-switches,raw_syscalls:sys_enter -p "$3" -o "$work/stat" -- sleep 8 &
  sp=$!
  out=$(wrk -t1 -c"${CONNS:-32}" -d8s "http://127.0.0.1:$2${TARGET:-/api/items}")
  wait $sp
  read -r u1 s1 <<<"$(ticks "$3")"
  python3 - "$1" "$out" "$work/stat" "$u0" "$s0" "$u1" "$s1" <<'PY'
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
