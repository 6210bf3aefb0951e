#!/usr/bin/env bash
# Rooms across nodes, measured: 3 ringroom nodes on 3 clustered nats-servers
# on this machine (cluster/run-local.sh), against the same load on one node.
#  1. many rooms: 1,000 rooms of 10 members, each room 1 publish a second,
#     and again at 5 a second;
#  2. fan-out: one room of 3,000 members, 10 publishes a second.
# In the cluster every room has members on every node (loadgen spreads each
# room's members over the targets), publishers spread too.
# For each: delivery latency from the planned publish time (all, same node,
# across nodes), and CPU-seconds per million deliveries of the ringroom
# processes and of the nats-servers (user+sys from /proc, ramp included).
# Usage: bench-results/cluster/run.sh [SECONDS] [OUT_DIR]   (default 30)
# Prints a markdown report on stdout; run folders go to OUT_DIR if given.
set -euo pipefail
cd "$(dirname "$0")/../.."
SECONDS_PER_RUN=${1:-30}
OUT=${2:-}
cargo build --quiet --release -p loadgen -p ringroom-server --bin ringroom-server --bin loadgen
SRV=target/release/ringroom-server
LOADGEN=target/release/loadgen
# shellcheck source=bench-results/lib.sh
. bench-results/lib.sh
for tool in nats-server curl; do
    command -v "$tool" >/dev/null || { echo "needs $tool (apt-get install $tool)" >&2; exit 1; }
done
RUN_DIR=$TMP/cluster
export RUN_DIR SERVER=$SRV
trap 'cluster/run-local.sh stop >/dev/null 2>&1 || true; cleanup' EXIT

sum_ticks() { # pid files -> total user+sys ticks
    local t=0 f
    for f in "$@"; do t=$((t + $(cpu_ticks "$(cat "$f")"))); done
    echo "$t"
}
secs() { echo "scale=2; $1 / $CLK_TCK" | bc; }
per_million() { # cpu seconds, deliveries
    if [ "$2" -gt 0 ]; then echo "scale=2; $1 * 1000000 / $2" | bc; else echo "-"; fi
}

echo "# rooms across nodes: 3 nodes on 3 nats-servers vs one node"
echo
machine_lines
echo "- nats-server $(nats-server --version | awk '{print $2}'), each with max_pending 64 MiB, write_deadline 2 s; nodes with default options (2 shards each: 6 shard threads, 3 link threads and 3 nats-servers share the 2 cores with the load generator)"
echo "- client: \`$LOADGEN --scenario rooms --conns CONNS --rooms ROOMS --publish-rate HZ --payload 64 --duration $SECONDS_PER_RUN --target ...\` (connection i is in room i % ROOMS, the first member of each room publishes; on 3 targets each room's members go round-robin over the nodes)"
echo
echo "| case | setup | published / expected / delivered | late / dup / missing | ringroom CPU-s (per M deliveries) | link messages out / in | nats-server CPU-s (per M deliveries; µs per link message) | loadgen CPU-s | delivery ms p50 / p99 | same node p50 / p99 | across nodes p50 / p99 |"
echo "|---|---|---|---|---|---|---|---|---|---|---|"

k=0
for case in "many-rooms:many rooms (1,000 x 10, 1/s each):10000:1000:1" \
    "many-rooms-5:many rooms (1,000 x 10, 5/s each):10000:1000:5" \
    "fan-out:fan-out (1 x 3,000, 10/s):3000:1:10"; do
    IFS=: read -r short name conns rooms hz <<<"$case"
    for setup in one-node cluster; do
        out=$TMP/run-$k
        k=$((k + 1))
        if [ "$setup" = cluster ]; then
            NODES=3 cluster/run-local.sh start >"$TMP/start.txt"
            targets=(--target 127.0.0.1:7710 --target 127.0.0.1:7720 --target 127.0.0.1:7730)
            ring_pids=("$RUN_DIR"/node-*.pid)
            nats_pids=("$RUN_DIR"/nats-*.pid)
        else
            # shellcheck disable=SC2119 # the server's defaults
            start_server
            echo "$SPID" >"$TMP/one.pid"
            targets=(--target "$ADDR")
            ring_pids=("$TMP/one.pid")
            nats_pids=()
        fi
        r0=$(sum_ticks "${ring_pids[@]}")
        n0=$(sum_ticks "${nats_pids[@]}")
        "$LOADGEN" "${targets[@]}" --scenario rooms --conns "$conns" --rooms "$rooms" \
            --publish-rate "$hz" --payload 64 --duration "$SECONDS_PER_RUN" \
            --out "$out" >"$TMP/run.txt" 2>&1 || true
        r1=$(sum_ticks "${ring_pids[@]}")
        n1=$(sum_ticks "${nats_pids[@]}")
        link_out=0
        link_in=0
        if [ "$setup" = cluster ]; then
            for port in 7712 7722 7732; do
                curl -s "127.0.0.1:$port/metrics" >"$TMP/metrics.txt" || true
                link_out=$((link_out + $(awk '/^ringroom_cluster_messages_out_total/ {print $2}' "$TMP/metrics.txt")))
                link_in=$((link_in + $(awk '/^ringroom_cluster_messages_in_total/ {print $2}' "$TMP/metrics.txt")))
            done
            cluster/run-local.sh stop
        else
            stop_server
            PIDS=()
        fi
        t=$TMP/run.txt
        delivered=$(row_value "$t" 'rooms: published / expected / delivered' | awk -F' / ' '{print $3}')
        delivered=${delivered:-0}
        rcpu=$(secs $((r1 - r0)))
        ncpu=$(secs $((n1 - n0)))
        p() { row_value "$t" "$1" | awk -F' / ' '{print $1 " / " $2}'; }
        if [ "$setup" = cluster ]; then
            link="$link_out / $link_in"
            nats_cell="$ncpu ($(per_million "$ncpu" "$delivered"); $(per_million "$ncpu" $((link_out + link_in))))"
            same=$(p 'delivery, same node ms p50 / p99 / p99.9 / max')
            cross=$(p 'delivery, across nodes ms p50 / p99 / p99.9 / max')
        else
            nats_cell="-"
            link="-"
            same="-"
            cross="-"
        fi
        echo "| $name | $setup | $(row_value "$t" 'rooms: published / expected / delivered') | $(row_value "$t" 'rooms: late / duplicate / missing') | $rcpu (**$(per_million "$rcpu" "$delivered")**) | $link | $nats_cell | $(row_value "$t" 'loadgen CPU-s') | $(p 'delivery ms p50 / p99 / p99.9 / max') | $same | $cross |"
        if [ -n "$OUT" ]; then
            mkdir -p "$OUT"
            cp -r "$out" "$OUT/$short-$setup"
        fi
        sleep 1
    done
done
