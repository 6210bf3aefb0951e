#!/usr/bin/env bash
# Server-core benchmarks, on loopback, bounded in time:
#  1. server RSS growth per idle connection at 20,000 and 100,000 connections;
#  2. server CPU-seconds per million PING/PONG, 10,000 connections pinging
#     3 times a second, for each --ring-mode.
# Usage: bench-results/server-core/run.sh [PING_SECONDS] [CONFIGS]
#   PING_SECONDS: length of each ping run (default 40)
#   CONFIGS: ring-mode:batch-wait-us[:shards] (default below); "minimal:0" runs
#            examples/minimal_pong, the baseline loop, instead of the server
# Prints a markdown report on stdout. Needs 127.0.0.2..127.0.0.41 (loopback).
set -euo pipefail
cd "$(dirname "$0")/../.."
PING_SECONDS=${1:-40}
CONFIGS=${2-"minimal:0 defer:0:1 defer:0 coop:0 plain:0 defer:250 defer:1000"}
cargo build --quiet --release -p ringroom-server --bin ringroom-server --example bench_client --example minimal_pong
SRV=target/release/ringroom-server
CLI=target/release/examples/bench_client
MINIMAL=target/release/examples/minimal_pong
# shellcheck source=bench-results/lib.sh
. bench-results/lib.sh

echo "# server-core benchmarks"
echo
machine_lines
echo

# 1. Idle RSS.
if [ -z "${SKIP_IDLE:-}" ]; then
start_server --max-conns 110000
sleep 1
RSS0=$(rss_kib "$SPID")
echo "## RSS per idle connection"
echo
echo "Command: \`$SRV --max-conns 110000\` ($(grep -o 'shards [0-9]*' "$TMP/srv.out")), clients: \`$CLI ADDR 10000 SOURCES 0 600\` x N (idle: HELLO, then nothing)."
echo
echo "| connections | server RSS | per connection, from the empty server | per connection, from the previous row |"
echo "|---|---|---|---|"
echo "| 0 | $RSS0 KiB | | |"
n=0
PREV_RSS=$RSS0
PREV_N=0
for step in 10000 20000 100000; do
    while [ "$n" -lt "$step" ]; do
        i=$((n / 10000))
        "$CLI" "$ADDR" 10000 "$(sources $((2 + i * 4)) $((5 + i * 4)))" 0 600 >"$TMP/idle$i.out" 2>&1 &
        PIDS+=($!)
        wait_for "$TMP/idle$i.out" '^UP'
        n=$((n + 10000))
    done
    sleep 3
    RSS=$(rss_kib "$SPID")
    echo "| $n | $RSS KiB | $(( (RSS - RSS0) * 1024 / n )) B | $(( (RSS - PREV_RSS) * 1024 / (n - PREV_N) )) B |"
    PREV_RSS=$RSS
    PREV_N=$n
done
stop_server
for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
PIDS=()
sleep 2
echo
fi

# 2. CPU per million PING/PONG, per ring mode.
echo "## CPU per million PING/PONG"
echo
echo "10,000 connections, each pinging 3 times a second on an open-loop schedule, ${PING_SECONDS} s; server CPU time (user+sys from /proc/PID/stat) over the run, divided by PONGs received. Client: \`$CLI ADDR 10000 SOURCES 3 ${PING_SECONDS}\`; RTT measured from each PING's planned send time."
echo
echo "| ring mode | batch wait | shards | PONGs | missing | server CPU-s | CPU-s per million | client CPU-s | RTT p50 | p99 | p99.9 |"
echo "|---|---|---|---|---|---|---|---|---|---|---|"
k=0
for config in $CONFIGS; do
    IFS=: read -r mode batch shards <<<"$config"
    shards=${shards:-$(nproc)}
    if [ "$mode" = minimal ]; then
        start_server minimal
    else
        start_server --ring-mode "$mode" --batch-wait-us "$batch" --shards "$shards"
    fi
    # Fresh source addresses per run: no TIME_WAIT left by the previous one.
    "$CLI" "$ADDR" 10000 "$(sources $((50 + k * 4)) $((53 + k * 4)))" 3 "$PING_SECONDS" >"$TMP/ping.out" 2>&1 &
    k=$((k + 1))
    CPID=$!
    PIDS+=("$CPID")
    wait_for "$TMP/ping.out" '^UP'
    T0=$(cpu_ticks "$SPID")
    C0=$(cpu_ticks "$CPID")
    sleep $((PING_SECONDS - 1))
    C1=$(cpu_ticks "$CPID")
    wait "$CPID" || true
    T1=$(cpu_ticks "$SPID")
    DONE=$(grep '^DONE' "$TMP/ping.out")
    get() { field "$DONE" "$1"; }
    RECV=$(get received)
    CPU=$(echo "scale=2; ($T1 - $T0) / $CLK_TCK" | bc)
    PER=$(echo "scale=2; $CPU * 1000000 / $RECV" | bc)
    CCPU=$(echo "scale=2; ($C1 - $C0) / $CLK_TCK" | bc)
    [ "$mode" = minimal ] && shards=1
    echo "| $mode | $batch us | $shards | $RECV | $(get missing) | $CPU | **$PER** | $CCPU | $(get p50_us) us | $(get p99_us) us | $(get p999_us) us |"
    stop_server
    PIDS=()
    sleep 1
done
