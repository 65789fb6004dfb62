#!/usr/bin/env bash
# Runs every fuzz target (or those named) for SECONDS each on the nightly toolchain, growing the
# kept corpus in corpus/<target>; stops at the first finding (saved under artifacts/).
# Usage: fuzz/run.sh SECONDS [TARGET...]
set -euo pipefail
cd "$(dirname "$0")"
seconds=${1:?usage: fuzz/run.sh SECONDS [TARGET...]}
shift
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(relay_request_head relay_answer_head relay_chunked_body config diff last_event_id tls_stream)
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t"
    echo "== fuzz $t for ${seconds}s"
    log=$(mktemp)
    status=0
    cargo +nightly fuzz run -O "$t" "corpus/$t" -- -max_total_time="$seconds" -max_len=65536 -print_final_stats=1 \
        >"$log" 2>&1 || status=$?
    # libFuzzer's progress lines are left out; its summary, and any finding, are shown.
    grep -E "^(stat::number_of_executed_units|stat::new_units_added|SUMMARY|Done)|panicked|ERROR" "$log" || true
    if [ "$status" -ne 0 ]; then
        tail -40 "$log"
        echo "fuzz $t failed (exit $status); a finding is saved under fuzz/artifacts/$t"
        exit 1
    fi
    rm -f "$log"
done
