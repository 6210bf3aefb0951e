#!/usr/bin/env bash
# A 3-node ringroom cluster on loopback: three nats-server processes clustered
# by routes, and three ringroom-server nodes, each linked to a different NATS
# server. Everything listens on 127.0.0.1 only.
#
#   cluster/run-local.sh            start, print the addresses, wait; Ctrl-C stops all
#   cluster/run-local.sh start      start in the background and return
#   cluster/run-local.sh stop       stop what `start` started
#   cluster/run-local.sh status     the pids and whether each is running
#
# Environment: NODES (default 3), RUN_DIR (default /tmp/ringroom-cluster: pids,
# logs, NATS configs), SERVER (default: the release build, built if missing),
# NATS_SERVER (default: nats-server on PATH), EXTRA (more ringroom-server options).
#
# Ports: NATS clients 14222+i, NATS routes 16222+i, NATS monitoring 18222+i;
# ringroom node i listens on 127.0.0.1:7710+10*i (discovery +1, metrics +2).
set -euo pipefail
cd "$(dirname "$0")/.."

NODES=${NODES:-3}
RUN_DIR=${RUN_DIR:-/tmp/ringroom-cluster}
NATS_SERVER=${NATS_SERVER:-nats-server}
SERVER=${SERVER:-target/release/ringroom-server}
EXTRA=${EXTRA:-}

nats_port() { echo $((14222 + $1)); }
route_port() { echo $((16222 + $1)); }
node_port() { echo $((7710 + 10 * $1)); }

start() {
    command -v "$NATS_SERVER" >/dev/null || {
        echo "run-local.sh: $NATS_SERVER not found (Debian: apt-get install nats-server)" >&2
        exit 1
    }
    if [ ! -x "$SERVER" ]; then
        echo "run-local.sh: building $SERVER"
        cargo build --release -q -p ringroom-server
    fi
    mkdir -p "$RUN_DIR"
    local routes="" i
    for ((i = 0; i < NODES; i++)); do
        routes="${routes:+$routes, }\"nats://127.0.0.1:$(route_port "$i")\""
    done
    for ((i = 0; i < NODES; i++)); do
        # The slow-consumer limit: a ringroom node that does not read for
        # 2 s, or has 64 MiB pending, is cut by its NATS server; the node
        # then reports a gap to its rooms' members and reconnects.
        cat >"$RUN_DIR/nats-$i.conf" <<CONF
server_name: nats-$i
listen: 127.0.0.1:$(nats_port "$i")
http: 127.0.0.1:$((18222 + i))
max_pending: 67108864
write_deadline: "2s"
cluster {
  name: ringroom-local
  listen: 127.0.0.1:$(route_port "$i")
  routes: [ $routes ]
}
CONF
        "$NATS_SERVER" -c "$RUN_DIR/nats-$i.conf" >"$RUN_DIR/nats-$i.log" 2>&1 &
        echo $! >"$RUN_DIR/nats-$i.pid"
    done
    for ((i = 0; i < NODES; i++)); do
        # Each node lists its own NATS server first, then the others, so
        # that it fails over to them.
        local seeds="" j
        for ((j = 0; j < NODES; j++)); do
            local k=$(((i + j) % NODES))
            seeds="${seeds:+$seeds,}nats://127.0.0.1:$(nats_port "$k")"
        done
        local port
        port=$(node_port "$i")
        # shellcheck disable=SC2086 # EXTRA is a list of options
        "$SERVER" --listen "127.0.0.1:$port" --metrics "127.0.0.1:$((port + 2))" \
            --cluster "$seeds" --node-id $((i + 1)) --stats-interval 0 $EXTRA \
            >"$RUN_DIR/node-$i.log" 2>&1 &
        echo $! >"$RUN_DIR/node-$i.pid"
    done
    for ((i = 0; i < NODES; i++)); do
        local n=0
        until grep -q "ringroom-server ready" "$RUN_DIR/node-$i.log" 2>/dev/null; do
            n=$((n + 1))
            if [ "$n" -gt 100 ] || ! kill -0 "$(cat "$RUN_DIR/node-$i.pid")" 2>/dev/null; then
                echo "run-local.sh: node $i did not start:" >&2
                cat "$RUN_DIR/node-$i.log" >&2
                stop
                exit 1
            fi
            sleep 0.1
        done
        echo "node $((i + 1)): $(grep 'ringroom-server ready' "$RUN_DIR/node-$i.log")"
    done
    echo "logs and pids in $RUN_DIR"
}

stop() {
    local f
    for f in "$RUN_DIR"/node-*.pid "$RUN_DIR"/nats-*.pid; do
        [ -e "$f" ] || continue
        kill "$(cat "$f")" 2>/dev/null || true
    done
    for f in "$RUN_DIR"/node-*.pid "$RUN_DIR"/nats-*.pid; do
        [ -e "$f" ] || continue
        local pid n=0
        pid=$(cat "$f")
        while kill -0 "$pid" 2>/dev/null && [ "$n" -lt 50 ]; do
            sleep 0.1
            n=$((n + 1))
        done
        kill -9 "$pid" 2>/dev/null || true
        rm -f "$f"
    done
}

status() {
    local f
    for f in "$RUN_DIR"/nats-*.pid "$RUN_DIR"/node-*.pid; do
        [ -e "$f" ] || continue
        local pid
        pid=$(cat "$f")
        if kill -0 "$pid" 2>/dev/null; then
            echo "$(basename "$f" .pid): pid $pid running"
        else
            echo "$(basename "$f" .pid): pid $pid gone"
        fi
    done
}

case "${1:-run}" in
run)
    start
    trap 'stop; exit 0' INT TERM
    echo "Ctrl-C stops the cluster"
    while true; do sleep 1; done
    ;;
start) start ;;
stop) stop ;;
status) status ;;
*)
    echo "usage: $0 [run|start|stop|status]" >&2
    exit 2
    ;;
esac
