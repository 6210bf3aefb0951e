#!/usr/bin/env bash
# Rooms benchmarks, on loopback, bounded in time:
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
cargo build --quiet --release -p ringroom-server --bin ringroom-server --example room_bench
SRV=target/release/ringroom-server
CLI=target/release/examples/room_bench
# shellcheck source=bench-results/lib.sh
. bench-results/lib.sh

echo "# rooms benchmarks"
echo
machine_lines
echo "- server options: ${*:-(defaults)}"
echo
echo "Client: \`$CLI ADDR CONNS SOURCES ROOMS PUB_HZ ${SECONDS_PER_RUN} 64\` (64-byte bodies; one publisher per room, the room's first member; latency from the planned publish time; deliveries exclude the publisher itself). Server CPU: user+sys from /proc/PID/stat over the run."
echo
us_to_ms() { echo "scale=2; $1 / 1000" | bc; }
echo "| case | publishes | deliveries | lost | server CPU-s | CPU-s per million deliveries | client CPU-s | p50 | p99 | p99.9 | max |"
echo "|---|---|---|---|---|---|---|---|---|---|---|"
k=0
for case in "fan-out:10000:1:10" "many-rooms:10000:1000:2"; do
    IFS=: read -r name conns rooms hz <<<"$case"
    start_server "$@"
    "$CLI" "$ADDR" "$conns" "$(sources $((60 + k * 4)) $((63 + k * 4)))" "$rooms" "$hz" "$SECONDS_PER_RUN" 64 >"$TMP/rooms.out" 2>&1 &
    CPID=$!
    PIDS+=("$CPID")
    k=$((k + 1))
    wait_for "$TMP/rooms.out" '^UP'
    T0=$(cpu_ticks "$SPID")
    wait "$CPID" || true
    T1=$(cpu_ticks "$SPID")
    DONE=$(grep '^DONE' "$TMP/rooms.out")
    DELIVERED=$(field "$DONE" deliveries)
    CPU=$(echo "scale=2; ($T1 - $T0) / $CLK_TCK" | bc)
    PER=$(echo "scale=2; $CPU * 1000000 / $DELIVERED" | bc)
    echo "| $name ($rooms x $((conns / rooms)) members, $hz/s per room) | $(field "$DONE" publishes) | $DELIVERED | $(field "$DONE" lost) | $CPU | **$PER** | $(field "$DONE" cpu_s) | $(us_to_ms "$(field "$DONE" p50_us)") ms | $(us_to_ms "$(field "$DONE" p99_us)") ms | $(us_to_ms "$(field "$DONE" p999_us)") ms | $(us_to_ms "$(field "$DONE" max_us)") ms |"
    stop_server
    PIDS=()
    sleep 1
done
