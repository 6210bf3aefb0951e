#!/usr/bin/env bash
# File relay through the server, on loopback, bounded in size:
#  one publisher streams a file as fast as its socket takes it to 1, 10 and
#  100 readers that read as fast as they can; MB/s per reader and server
#  CPU-seconds per GB delivered; the same bytes through redis PUBLISH (60 KB
#  bodies to a channel); and the delay of chat lines (one every 50 ms) to a
#  reader while a file streams to it, against the same without the file.
# Usage: bench-results/streams/run.sh [SERVER_OPTIONS...]
# Prints a markdown report on stdout.
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --quiet --release -p ringroom-server --bin ringroom-server --example file_relay
SRV=target/release/ringroom-server
CLI=target/release/examples/file_relay
# shellcheck source=bench-results/lib.sh
. bench-results/lib.sh

echo "# file relay"
echo
machine_lines
echo "- server options: ${*:-(defaults)}"
echo
echo "Client: \`$CLI ADDR PROTOCOL READERS MB SERVER_PID [chat]\` (fragments or bodies of 60,000 bytes; a reader's MB/s from the publisher's first write to its last byte; server CPU user+sys from /proc over the same span)."
echo
echo "| server | readers | MB each | wall s | MB/s per reader (min / median / max) | server CPU-s | CPU-s per GB delivered |"
echo "|---|---|---|---|---|---|---|"
row() { # server-label protocol readers mb line
    local d=$5
    echo "| $1 | $3 | $(field "$d" mb_each) | $(field "$d" wall_s) | $(field "$d" min_mbps) / $(field "$d" median_mbps) / $(field "$d" max_mbps) | $(field "$d" server_cpu_s) | **$(field "$d" cpu_s_per_gb)** |"
}
for case in 1:1000 10:200 100:40; do
    IFS=: read -r readers mb <<<"$case"
    start_server "$@"
    DONE=$("$CLI" "$ADDR" ringroom "$readers" "$mb" "$SPID" | grep '^DONE')
    row "ringroom-server" ringroom "$readers" "$mb" "$DONE"
    stop_server
    PIDS=()
done
if command -v redis-server >/dev/null; then
    for case in 1:1000 10:200 100:40; do
        IFS=: read -r readers mb <<<"$case"
        port=$((20000 + RANDOM % 20000))
        redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no >"$TMP/redis.out" 2>&1 &
        RPID=$!
        PIDS+=("$RPID")
        for _ in $(seq 100); do grep -q "Ready to accept" "$TMP/redis.out" && break; sleep 0.1; done
        DONE=$("$CLI" "127.0.0.1:$port" redis "$readers" "$mb" "$RPID" | grep '^DONE')
        row "redis-server $(redis-server --version | grep -o 'v=[0-9.]*' | cut -d= -f2) (defaults)" redis "$readers" "$mb" "$DONE"
        kill "$RPID"; wait "$RPID" || true
        PIDS=()
    done
else
    echo
    echo "(redis-server not installed: no redis rows)"
fi
echo
echo "Chat lines under a file load: one member publishes a line every 50 ms to a room that a reader is in, while (second row) a file streams to that reader as fast as it reads."
echo
echo "| case | lines | p50 ms | p99 ms | max ms |"
echo "|---|---|---|---|---|"
for mb in 0 2000; do
    start_server "$@"
    if [ "$mb" = 0 ]; then
        DONE=$("$CLI" "$ADDR" ringroom 1 0 "$SPID" chat | grep '^DONE')
        label="chat alone"
    else
        DONE=$("$CLI" "$ADDR" ringroom 1 "$mb" "$SPID" chat | grep '^DONE')
        label="chat while a $mb MB file streams to the same reader"
    fi
    us() { echo "scale=3; $1 / 1000" | bc; }
    echo "| $label | $(field "$DONE" chat_lines) | $(us "$(field "$DONE" chat_p50_us)") | $(us "$(field "$DONE" chat_p99_us)") | $(us "$(field "$DONE" chat_max_us)") |"
    stop_server
    PIDS=()
done
