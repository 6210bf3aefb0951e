#!/usr/bin/env bash
# Small rooms over many shards: 10,000 connections in 5,000 rooms of 2, each
# room 2 publishes a second, against a server with --shards 4 (on any number
# of cores). A room then has members on at most 2 of the 4 shards, so sending
# each message only to the shards with members (the registry's shard mask)
# saves most cross-core traffic. Prints the cross-core counters from /metrics
# and loadgen's CPU-per-million and latency lines.
# Usage: bench-results/rooms/small-rooms.sh [SERVER_BINARY] [SECONDS] (default: this build, 20)
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --quiet --release -p ringroom-server -p loadgen
SRV=${1:-target/release/ringroom-server}
HOLD=${2:-20}
TMP=$(mktemp -d)
SPID=
trap '[ -z "$SPID" ] || kill "$SPID" 2>/dev/null; rm -rf "$TMP"' EXIT
"$SRV" --listen 127.0.0.1:0 --shards 4 --metrics 127.0.0.1:0 --discovery off \
    --stats-interval 0 --max-conns 20000 >"$TMP/srv.out" 2>&1 &
SPID=$!
for _ in $(seq 100); do grep -q ready "$TMP/srv.out" && break; sleep 0.1; done
ADDR=$(grep -o 'listen [0-9.:]*' "$TMP/srv.out" | cut -d' ' -f2)
MET=$(grep -o 'metrics [0-9.:]*' "$TMP/srv.out" | cut -d' ' -f2)
target/release/loadgen --target "$ADDR" --server-pid "$SPID" --scenario rooms \
    --conns 10000 --rooms 5000 --publish-rate 2 --duration "$HOLD" \
    --source 127.0.50.0/29 --out "$TMP/run" >"$TMP/run.txt" 2>&1 || true
curl -s "http://$MET/metrics" | grep -E '^ringroom_cross_core_(sent|wakeups)' |
    awk '{split($1, a, "{"); s[a[1]] += $2} END {for (k in s) print k, s[k]}' | sort
grep -E 'server CPU-s per million|rooms: |delivery ms' "$TMP/run.txt"
