#!/usr/bin/env bash
# Server-core benchmarks under loadgen, on loopback, bounded in time:
#  1. server RSS growth per idle connection at 10,000, 20,000 and 100,000
#     connections (loadgen --scenario idle, 10 s held, one server for all);
#  2. server CPU-seconds per million PING/PONG, 10,000 connections pinging
#     3 times a second (open loop), for each configuration.
# Usage: bench-results/server-core/run.sh [PING_SECONDS] [CONFIGS]
#   PING_SECONDS: hold of each ping run (default 40)
#   CONFIGS: ring-mode:batch-wait-us[:shards] (default below); "minimal:0" runs
#            examples/minimal_pong, the baseline loop, instead of the server
# Prints a markdown report on stdout. Needs 127.0.1.0-127.0.2.255 (loopback).
set -euo pipefail
cd "$(dirname "$0")/../.."
PING_SECONDS=${1:-40}
CONFIGS=${2-"minimal:0 defer:0:1 defer:0 coop:0 plain:0 defer:250 defer:1000"}
cargo build --quiet --release -p loadgen -p ringroom-server --bin ringroom-server --bin loadgen --example minimal_pong
SRV=target/release/ringroom-server
LOADGEN=target/release/loadgen
MINIMAL=target/release/examples/minimal_pong
# shellcheck source=bench-results/lib.sh
. bench-results/lib.sh

echo "# server-core benchmarks"
echo
machine_lines
echo

# 1. Idle RSS.
if [ -z "${SKIP_IDLE:-}" ]; then
echo "## RSS per idle connection"
echo
echo "Server: \`$SRV --max-conns 110000\`; for each row \`$LOADGEN --target ADDR --server-pid PID --scenario idle --conns N --connect-rate 20000 --duration 10 --source 127.0.1.0/26\` (HELLO, then heartbeats only); the server's peak RSS growth over the run, per connection."
echo
echo "| connections | server RSS at the end | peak growth per connection | loadgen RSS / growth per connection |"
echo "|---|---|---|---|"
start_server --max-conns 110000
for n in 10000 20000 100000; do
    "$LOADGEN" --target "$ADDR" --server-pid "$SPID" --scenario idle --conns "$n" \
        --connect-rate 20000 --duration 10 --source 127.0.1.0/26 --out "$TMP/idle-$n" >"$TMP/idle.txt" 2>&1 || true
    echo "| $n | $(row_value "$TMP/idle.txt" 'server RSS / peak growth per connection') | $(row_value "$TMP/idle.txt" 'loadgen RSS / peak growth per connection') |" \
        | sed 's# / #| #'
    sleep 2
done
stop_server
PIDS=()
echo
fi

# 2. CPU per million PING/PONG, per configuration.
echo "## CPU per million PING/PONG"
echo
echo "10,000 connections, each pinging 3 times a second on an open-loop schedule, ${PING_SECONDS} s held; \`$LOADGEN --target ADDR --server-pid PID --scenario ping --ping-rate 3 --conns 10000 --connect-rate 10000 --duration ${PING_SECONDS}\`: server CPU time (user+sys from /proc/PID/stat) over the run (ramp included) per million PONGs; RTT from each PING's planned send time."
echo
echo "| ring mode | batch wait | shards | PINGs / PONGs | server CPU-s | CPU-s per million PONGs | loadgen CPU-s | RTT ms p50 / p99 / p99.9 / max |"
echo "|---|---|---|---|---|---|---|---|"
k=0
for config in $CONFIGS; do
    IFS=: read -r mode batch shards <<<"$config"
    shards=${shards:-$(nproc)}
    if [ "$mode" = minimal ]; then
        start_server minimal
        shards=1
    else
        start_server --ring-mode "$mode" --batch-wait-us "$batch" --shards "$shards"
    fi
    # Fresh source addresses per run: no TIME_WAIT left by the previous one.
    "$LOADGEN" --target "$ADDR" --server-pid "$SPID" --scenario ping --ping-rate 3 \
        --conns 10000 --connect-rate 10000 --duration "$PING_SECONDS" \
        --source "127.0.2.$((k * 8))/29" --out "$TMP/ping-$k" >"$TMP/ping.txt" 2>&1 || true
    k=$((k + 1))
    t=$TMP/ping.txt
    echo "| $mode | $batch us | $shards | $(row_value "$t" 'PINGs sent / PONGs') | $(row_value "$t" 'server CPU-s') | **$(row_value "$t" 'server CPU-s per million PONGs')** | $(row_value "$t" 'loadgen CPU-s') | $(row_value "$t" 'ping RTT ms p50 / p99 / p99.9 / max') |"
    stop_server
    PIDS=()
    sleep 1
done
