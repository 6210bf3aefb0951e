#!/usr/bin/env bash
# Rooms benchmarks under loadgen, on loopback, bounded in time:
#  1. fan-out: one room of 10,000 members, 10 publishes a second
#     (100,000 deliveries a second);
#  2. many rooms: 1,000 rooms of 10 members, each room 2 publishes a second.
# For each: server CPU-seconds per million deliveries, and delivery latency
# from each PUBLISH's planned send time (p50, p99, p99.9, max).
# Usage: bench-results/rooms/run.sh [SECONDS] [SERVER_OPTIONS...]   (default 30)
# Prints a markdown report on stdout.
set -euo pipefail
cd "$(dirname "$0")/../.."
SECONDS_PER_RUN=${1:-30}
shift || true
cargo build --quiet --release -p loadgen -p ringroom-server --bin ringroom-server --bin loadgen
SRV=target/release/ringroom-server
LOADGEN=target/release/loadgen
# shellcheck source=bench-results/lib.sh
. bench-results/lib.sh

echo "# rooms benchmarks"
echo
machine_lines
echo "- server options: ${*:-(defaults)}"
echo
echo "Client: \`$LOADGEN --target ADDR --server-pid PID --scenario rooms --conns 10000 --rooms ROOMS --publish-rate HZ --payload 64 --duration ${SECONDS_PER_RUN}\` (connection i joins room i % ROOMS; the first member of each room publishes; latency from the planned publish time; deliveries exclude the publisher itself). Server CPU: user+sys from /proc over the run, ramp included."
echo
echo "| case | published / expected / delivered | late / duplicate / missing | server CPU-s | CPU-s per million deliveries | loadgen CPU-s | delivery ms p50 / p99 / p99.9 / max |"
echo "|---|---|---|---|---|---|---|"
k=0
for case in "fan-out:1:10" "many-rooms:1000:2"; do
    IFS=: read -r name rooms hz <<<"$case"
    start_server "$@"
    "$LOADGEN" --target "$ADDR" --server-pid "$SPID" --scenario rooms --conns 10000 \
        --rooms "$rooms" --publish-rate "$hz" --payload 64 --duration "$SECONDS_PER_RUN" \
        --source "127.0.3.$((k * 8))/29" --out "$TMP/rooms-$k" >"$TMP/rooms.txt" 2>&1 || true
    k=$((k + 1))
    t=$TMP/rooms.txt
    echo "| $name ($rooms x $((10000 / rooms)) members, $hz/s per room) | $(row_value "$t" 'rooms: published / expected / delivered') | $(row_value "$t" 'rooms: late / duplicate / missing') | $(row_value "$t" 'server CPU-s') | **$(row_value "$t" 'server CPU-s per million room deliveries')** | $(row_value "$t" 'loadgen CPU-s') | $(row_value "$t" 'delivery ms p50 / p99 / p99.9 / max') |"
    stop_server
    PIDS=()
    sleep 1
done
