# Shared by the pass-through benchmarks. Sourced from the repository's root, it makes `$work`, a
# folder of its own, and stops on exit whatever was started: a static upstream (nginx) on
# 127.0.0.1:18091, nginx as a reverse proxy in front of it on :18092, herald on :18093.

# needs TOOL...: stops with a clear message when one is missing.
needs() {
  for tool in "$@"; do
    command -v "$tool" >/dev/null || { echo "needs $* (from Debian's packages)"; exit 1; }
  done
}

work=$(mktemp -d)
stop_all() {
  kill $(jobs -p) 2>/dev/null || true
  for dir in "$work"/*/; do
    [ -f "$dir/nginx.pid" ] && nginx -p "$dir" -c nginx.conf -s stop 2>/dev/null
  done
  rm -rf "$work"
}
trap stop_all EXIT

# nginx_start NAME WORKERS HTTP-BLOCK: a loopback nginx of its own under $work/NAME.
nginx_start() {
  mkdir -p "$work/$1/logs"
  cat > "$work/$1/nginx.conf" <<CONF
worker_processes $2;
pid $work/$1/nginx.pid;
error_log $work/$1/logs/error.log;
events { worker_connections 4096; }
http { access_log off; $3 }
CONF
  nginx -p "$work/$1" -c nginx.conf
}

# The upstream: nginx answering a small static body, one worker; /files/ has larger ones
# (64k.json, 1m.json).
upstream_start() {
  mkdir -p "$work/up/files"
  head -c 65536 /dev/zero | tr '\0' 'x' > "$work/up/files/64k.json"
  head -c 1048576 /dev/zero | tr '\0' 'x' > "$work/up/files/1m.json"
  chmod -R a+rX "$work"   # nginx's workers run as another user
  nginx_start up 1 "server { listen 127.0.0.1:18091; keepalive_requests 100000;
    location /files/ { root $work/up; }
    location / { default_type application/json; return 200 '{\"ok\":true,\"items\":[1,2,3]}'; } }"
}

# nginx as a reverse proxy in front of it, as it would be deployed (upstream keep-alive on).
proxy_start() {
  nginx_start px 2 "upstream legacy { server 127.0.0.1:18091; keepalive 64; }
    server { listen 127.0.0.1:18092; keepalive_requests 100000;
      location / { proxy_pass http://legacy; proxy_http_version 1.1; proxy_set_header Connection \"\"; } }"
}

# herald's configuration in front of the same upstream, every request passed through.
herald_yaml="$work/herald.yaml"
cat > "$herald_yaml" <<CONF
server: { listen: 127.0.0.1:18093, admin_listen: 127.0.0.1:18094 }
upstream: { url: http://127.0.0.1:18091 }
routes: [ { name: unused, path: /watched-elsewhere, access: public } ]
log: { level: warn }
CONF
