#!/usr/bin/env bash
# io_uring and epoll side by side: the same server code, the same load, one
# sitting, the engines interleaved and each case repeated. On loopback,
# bounded in time:
#  1. server CPU-s per million PING/PONG, 10,000 connections x 3 PINGs/s
#     (open loop), for the minimal io_uring loop (examples/minimal_pong, the
#     floor), ringroom-server --engine uring and --engine epoll; loadgen on
#     io_uring throughout;
#  2. server RSS growth per idle connection at 10,000 and at 17,000 (near
#     epoll's capacity under the fd limit of 20,000), sampled while they are
#     held, each engine;
#  3. fan-out: one room of 10,000, 10 publishes a second: server CPU-s per
#     million deliveries and delivery p99, each engine;
#  4. loadgen CPU-s per million PINGs for each of its engines, against the
#     same io_uring server.
# Usage: bench-results/engines/run.sh [SECONDS] [REPEATS]   (default 20, 3)
#   ONLY=N runs section N alone.
# Prints a markdown report on stdout. Needs 127.0.4.0-127.0.7.255 (loopback).
set -euo pipefail
cd "$(dirname "$0")/../.."
HOLD=${1:-20}
REPEATS=${2:-3}
cargo build --quiet --release -p loadgen -p ringroom-server --bin ringroom-server --bin loadgen --example minimal_pong
SRV=target/release/ringroom-server
LOADGEN=target/release/loadgen
MINIMAL=target/release/examples/minimal_pong
# shellcheck source=bench-results/lib.sh
. bench-results/lib.sh

# A fresh /29 of source addresses per run: no TIME_WAIT carried over.
k=0
next_sources() { SRC="127.0.$((4 + k / 32)).$(((k % 32) * 8))/29"; k=$((k + 1)); }
want() { [ -z "${ONLY:-}" ] || [ "$ONLY" = "$1" ]; }
load() { # loadgen's engine, then its options: one run against the server started, into $TMP/run.txt
    next_sources
    "$LOADGEN" --engine "$1" --target "$ADDR" --server-pid "$SPID" --source "$SRC" "${@:2}" \
        --out "$TMP/run-$k" >"$TMP/run.txt" 2>&1 || true
}
finish() { stop_server; PIDS=(); sleep 1; }
PING_LOAD=(--scenario ping --ping-rate 3 --conns 10000 --connect-rate 10000 --duration "$HOLD")
per_million() { # cpu count -> cpu seconds per million
    echo "scale=2; $1 * 1000000 / $2" | bc
}

echo "# io_uring and epoll, side by side"
echo
machine_lines
echo "- each case ${REPEATS} times, the engines interleaved; ${HOLD} s held per run; server CPU is user+sys from /proc over the run, ramp included"
echo

if want 1; then
echo "## 1. Server CPU per million PING/PONG"
echo
echo "\`$LOADGEN --target ADDR --server-pid PID --scenario ping --ping-rate 3 --conns 10000 --connect-rate 10000 --duration $HOLD\` (loadgen on io_uring)."
echo
echo "| server | run | PINGs / PONGs | server CPU-s | CPU-s per million PONGs | RTT ms p50 / p99 / p99.9 / max |"
echo "|---|---|---|---|---|---|"
for r in $(seq "$REPEATS"); do
    for server in minimal uring epoll; do
        if [ "$server" = minimal ]; then
            start_server minimal
        else
            start_server --engine "$server" --max-conns 10500
        fi
        load uring "${PING_LOAD[@]}"
        t=$TMP/run.txt
        echo "| $server | $r | $(row_value "$t" 'PINGs sent / PONGs') | $(row_value "$t" 'server CPU-s') | **$(row_value "$t" 'server CPU-s per million PONGs')** | $(row_value "$t" 'ping RTT ms p50 / p99 / p99.9 / max') |"
        finish
    done
done
echo
fi

if want 2; then
echo "## 2. Server RSS per idle connection"
echo
echo "\`$LOADGEN --target ADDR --server-pid PID --scenario idle --conns N --connect-rate 2500 --duration 4\` against a fresh server per row: during the ramp and again once all N are up, the server's RSS (VmRSS) and its established connections (ss); the slope between the two samples is the memory one more idle connection costs, on a server past its start-up allocations. (Loadgen's own figure, peak growth over the run from the RSS before it, includes allocations a fresh server makes at its first connections, and varies by a few MB from run to run.)"
echo
echo "| engine | connections | run | sampled at (connections) | RSS at the samples | per connection |"
echo "|---|---|---|---|---|---|"
established() { ss -Htn state established "( sport = :${ADDR##*:} )" | wc -l; }
for n in 10000 17000; do
    for r in $(seq "$REPEATS"); do
        for server in uring epoll; do
            start_server --engine "$server" --max-conns 17900
            next_sources
            "$LOADGEN" --engine uring --target "$ADDR" --server-pid "$SPID" --scenario idle --conns "$n" \
                --connect-rate 2500 --duration 4 --source "$SRC" --out "$TMP/idle-$k" >"$TMP/run.txt" 2>&1 &
            lpid=$!
            sleep 1.5
            c1=$(established)
            m1=$(rss_kib "$SPID")
            sleep "$(echo "$n / 2500 + 0.5" | bc)"
            c2=$(established)
            m2=$(rss_kib "$SPID")
            wait "$lpid" || true
            echo "| $server | $n | $r | $c1 / $c2 | $m1 / $m2 KiB | **$(((m2 - m1) * 1024 / (c2 - c1))) B** |"
            finish
        done
    done
done
echo
fi

if want 3; then
echo "## 3. Fan-out: one room of 10,000, 10 publishes a second"
echo
echo "\`$LOADGEN --target ADDR --server-pid PID --scenario rooms --conns 10000 --rooms 1 --publish-rate 10 --payload 64 --duration $HOLD\` (100,000 deliveries a second; latency from the planned publish time)."
echo
echo "| engine | run | published / expected / delivered | late / duplicate / missing | server CPU-s | CPU-s per million deliveries | delivery ms p50 / p99 / p99.9 / max |"
echo "|---|---|---|---|---|---|---|"
for r in $(seq "$REPEATS"); do
    for server in uring epoll; do
        start_server --engine "$server" --max-conns 10500
        load uring --scenario rooms --conns 10000 --rooms 1 --publish-rate 10 --payload 64 --duration "$HOLD"
        t=$TMP/run.txt
        echo "| $server | $r | $(row_value "$t" 'rooms: published / expected / delivered') | $(row_value "$t" 'rooms: late / duplicate / missing') | $(row_value "$t" 'server CPU-s') | **$(row_value "$t" 'server CPU-s per million room deliveries')** | $(row_value "$t" 'delivery ms p50 / p99 / p99.9 / max') |"
        finish
    done
done
echo
fi

if want 4; then
echo "## 4. loadgen CPU per million PINGs, for each of its engines"
echo
echo "\`$LOADGEN --engine E --target ADDR --scenario ping --ping-rate 3 --conns 10000 --connect-rate 10000 --duration $HOLD\` against \`ringroom-server --engine uring\`; loadgen's own CPU (user+sys) over the run."
echo
echo "| loadgen engine | run | PINGs / PONGs | loadgen CPU-s | loadgen CPU-s per million PINGs | RTT ms p50 / p99 / p99.9 / max |"
echo "|---|---|---|---|---|---|"
for r in $(seq "$REPEATS"); do
    for engine in uring epoll; do
        start_server --engine uring --max-conns 10500
        load "$engine" "${PING_LOAD[@]}"
        t=$TMP/run.txt
        pings=$(row_value "$t" 'PINGs sent / PONGs' | cut -d/ -f1 | tr -d ' ,')
        cpu=$(row_value "$t" 'loadgen CPU-s')
        echo "| $engine | $r | $(row_value "$t" 'PINGs sent / PONGs') | $cpu | **$(per_million "$cpu" "$pings")** | $(row_value "$t" 'ping RTT ms p50 / p99 / p99.9 / max') |"
        finish
    done
done
fi
