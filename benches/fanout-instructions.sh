#!/usr/bin/env bash
# User-space instructions herald executes per SSE delivery, counted by valgrind's callgrind
# (repeatable whatever else the machine does): N subscribers, 10 changes; the counters are zeroed
# when the first change is made and dumped after the last is delivered.
#
# Usage: benches/fanout-instructions.sh [herald binary] [subscribers]   (default
#        target/release/herald, 2000). Needs valgrind (Debian's package).
set -euo pipefail
cd "$(dirname "$0")/.."
herald=$(realpath "${1:-target/release/herald}")
subs=${2:-2000}
command -v valgrind >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -q valgrind >/dev/null
cargo build --release -q -p herald-bench
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# herald-bench starts "herald run -c ..." from --herald: this wrapper runs it under callgrind.
cat > "$work/herald" <<WRAP
#!/bin/sh
exec valgrind --tool=callgrind --callgrind-out-file=$work/out.%p "$herald" "\$@"
WRAP
chmod +x "$work/herald"
target/release/herald-bench --herald "$work/herald" fanout --target herald --subs "$subs" --changes 10 --every 3s \
  >"$work/bench.json" 2>"$work/bench.err" &
bench=$!
until grep -q "change 1/" "$work/bench.err"; do sleep 0.2; done
pid=$(pgrep -f "callgrind.*$work" | head -1)
callgrind_control -z "$pid" >/dev/null 2>&1
until grep -q "change 10/" "$work/bench.err"; do sleep 0.2; done
sleep 2.5
callgrind_control -d "$pid" >/dev/null 2>&1
wait $bench
delivered=$(tail -1 "$work/bench.json" | python3 -c "import json,sys; print(json.load(sys.stdin)['delivered'])")
total=$(grep -m1 "^summary:" "$work"/out.*.1 | awk '{print $2}')
echo "$delivered deliveries, $total instructions, $((total / delivered)) per delivery"
# The largest costs, without the frames every one runs under (thread start, tokio's worker loop).
callgrind_annotate --threshold=100 "$work"/out.*.1 2>/dev/null | grep -E "^ *[0-9,]+ \(" \
  | grep -vE "\((100\.0|99\.[0-9]+)%\)" | head -15 | sed -E 's#/root/.cargo/registry/src/[^/]+/##; s#/rustc/[0-9a-f]+/##'
