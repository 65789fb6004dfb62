# Shared by the pass-through benchmarks: a static upstream (nginx) on 127.0.0.1:18091, nginx as a
# reverse proxy in front of it on :18092, herald's configuration for :18093. Source it.

# nginx_conf DIR WORKERS HTTP-BLOCK: a loopback nginx of its own under DIR.
nginx_conf() {
  mkdir -p "$1/logs"
  cat > "$1/nginx.conf" <<CONF
worker_processes $2;
pid $1/nginx.pid;
error_log $1/logs/error.log;
events { worker_connections 4096; }
http { access_log off; $3 }
CONF
}

# The upstream: nginx answering a small static body, one worker.
upstream_conf() {
  nginx_conf "$1" 1 "server { listen 127.0.0.1:18091; keepalive_requests 100000;
    location / { default_type application/json; return 200 '{\"ok\":true,\"items\":[1,2,3]}'; } }"
}

# nginx as a reverse proxy in front of it, as it would be deployed (upstream keep-alive on).
proxy_conf() {
  nginx_conf "$1" 2 "upstream legacy { server 127.0.0.1:18091; keepalive 64; }
    server { listen 127.0.0.1:18092; keepalive_requests 100000;
      location / { proxy_pass http://legacy; proxy_http_version 1.1; proxy_set_header Connection \"\"; } }"
}

# herald_conf FILE: herald in front of the same upstream, every request passed through.
herald_conf() {
  cat > "$1" <<CONF
server: { listen: 127.0.0.1:18093, admin_listen: 127.0.0.1:18094 }
upstream: { url: http://127.0.0.1:18091 }
routes: [ { name: unused, path: /watched-elsewhere, access: public } ]
log: { level: warn }
CONF
}
