#!/usr/bin/env bash
# Server CPU per million PING/PONG under loadgen (10,000 connections x 3 PINGs/s,
# open loop, 30 s, ramp included), for: the minimal io_uring loop
# (examples/minimal_pong, one ring, no protocol logic), ringroom-server
# --shards 1, and ringroom-server with its default shards (one per core).
# The same load bench-results/peers.sh gives the peer servers.
# Usage: bench-results/server-core/loadgen-cpu.sh [SECONDS]   (default 30)
set -euo pipefail
cd "$(dirname "$0")/../.."
HOLD=${1:-30}
cargo build --quiet --release -p loadgen -p ringroom-server
cargo build --quiet --release -p ringroom-server --example minimal_pong
TMP=$(mktemp -d)
SPID=
trap '[ -z "$SPID" ] || kill "$SPID" 2>/dev/null; rm -rf "$TMP"' EXIT
echo "| server | CPU-s | CPU-s per million PONGs | RTT p50 / p99 / p99.9 ms |"
echo "|---|---|---|---|"
k=0
for server in minimal shards-1 default; do
    case "$server" in
    minimal) target/release/examples/minimal_pong 127.0.0.1:17703 >"$TMP/srv" 2>&1 & ;;
    shards-1) target/release/ringroom-server --listen 127.0.0.1:17703 --shards 1 --max-conns 10500 \
        --metrics off --discovery off --stats-interval 0 >"$TMP/srv" 2>&1 & ;;
    default) target/release/ringroom-server --listen 127.0.0.1:17703 --max-conns 10500 \
        --metrics off --discovery off --stats-interval 0 >"$TMP/srv" 2>&1 & ;;
    esac
    SPID=$!
    for _ in $(seq 100); do grep -q ready "$TMP/srv" && break; sleep 0.1; done
    target/release/loadgen --target 127.0.0.1:17703 --server-pid "$SPID" --scenario ping \
        --ping-rate 3 --conns 10000 --connect-rate 10000 --duration "$HOLD" \
        --source "127.0.$((80 + k)).0/29" --out "$TMP/run-$server" >"$TMP/run.txt" 2>&1 || true
    k=$((k + 1))
    kill "$SPID"
    wait "$SPID" 2>/dev/null || true
    SPID=
    cpu=$(grep -o 'server CPU-s | [0-9.]*' "$TMP/run.txt" | awk '{print $NF}')
    per=$(grep -o 'per million PONGs | [0-9.]*' "$TMP/run.txt" | awk '{print $NF}')
    rtt=$(grep 'ping RTT' "$TMP/run.txt" | cut -d'|' -f3 | awk '{print $1 " / " $3 " / " $5}')
    echo "| $server | $cpu | $per | $rtt |"
    sleep 1
done
