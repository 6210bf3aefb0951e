#!/usr/bin/env bash
# ringroom side by side with the servers users would use instead: redis-server
# (RESP), nats-server and mosquitto (MQTT 3.1.1), from the distribution's
# packages, each on loopback with limits fitted to the run, driven one at a
# time by the same loadgen scenario (`--protocol`), with the server's CPU and
# memory sampled from /proc (`--server-pid`).
#
# Usage: bench-results/peers.sh [RELEASE] [CONNS] [SECONDS] [SCENARIO...]
#   defaults: the workspace version, 10000, 30, idle ping rooms
#   idle:  CONNS connections, a PING every 10 s each (ringroom's default heartbeat)
#   ping:  CONNS connections, 3 PINGs a second each
#   rooms: CONNS connections in 1,000 rooms, each room 2 publishes a second
#          (64-byte bodies; the publisher does not count as a receiver)
# idle and ping also run against the baseline: server/examples/minimal_pong, the
# smallest io_uring loop that answers PINGs (one ring, no protocol logic).
# ringroom runs twice: on io_uring ("ringroom") and on epoll ("epoll").
# Writes bench-results/RELEASE/peers/SCENARIO-SERVER/ (loadgen's result
# folders) and the table bench-results/RELEASE/peers.md. Needs root for
# apt-get when a server is missing. Bounded: every run ends after SECONDS.
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
RELEASE=${1:-$VERSION}
CONNS=${2:-10000}
HOLD=${3:-30}
shift $(($# < 3 ? $# : 3))
SCENARIOS=("$@")
[ ${#SCENARIOS[@]} -gt 0 ] || SCENARIOS=(idle ping rooms)

missing=()
command -v redis-server >/dev/null || missing+=(redis-server)
command -v nats-server >/dev/null || missing+=(nats-server)
command -v mosquitto >/dev/null || missing+=(mosquitto)
if [ ${#missing[@]} -gt 0 ]; then
    echo "installing ${missing[*]}" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
cargo build --quiet --release -p loadgen -p ringroom-server
cargo build --quiet --release -p ringroom-server --example minimal_pong
LOADGEN=target/release/loadgen
OUT=bench-results/$RELEASE/peers
mkdir -p "$OUT"
TMP=$(mktemp -d)
SPID=
cleanup() { [ -z "$SPID" ] || kill "$SPID" 2>/dev/null || true; rm -rf "$TMP"; }
trap cleanup EXIT
ulimit -n "$(ulimit -Hn)"
# Connections a server may hold: the run's, plus room for stragglers.
MAXC=$((CONNS + 500))

start() { # server -> sets SPID and PORT
    case "$1" in
    minimal)
        PORT=17701
        target/release/examples/minimal_pong 127.0.0.1:$PORT >"$TMP/srv.log" 2>&1 &
        ;;
    ringroom | epoll)
        PORT=17700
        engine=uring
        [ "$1" = ringroom ] || engine=epoll
        target/release/ringroom-server --listen 127.0.0.1:$PORT --max-conns "$MAXC" \
            --engine "$engine" --metrics off --discovery off --stats-interval 0 >"$TMP/srv.log" 2>&1 &
        ;;
    redis)
        PORT=16379
        redis-server --port $PORT --bind 127.0.0.1 --save "" --appendonly no \
            --maxclients "$MAXC" --protected-mode no >"$TMP/srv.log" 2>&1 &
        ;;
    nats)
        PORT=14222
        printf 'listen: 127.0.0.1:%s\nmax_connections: %s\n' $PORT "$MAXC" >"$TMP/nats.conf"
        nats-server -c "$TMP/nats.conf" >"$TMP/srv.log" 2>&1 &
        ;;
    mqtt)
        PORT=11883
        printf 'listener %s 127.0.0.1\nallow_anonymous true\nmax_connections %s\npersistence false\nlog_dest none\n' \
            $PORT "$MAXC" >"$TMP/mosquitto.conf"
        mosquitto -c "$TMP/mosquitto.conf" >"$TMP/srv.log" 2>&1 &
        ;;
    esac
    SPID=$!
    for _ in $(seq 100); do
        ss -ltn "sport = :$PORT" | grep -q LISTEN && return 0
        sleep 0.1
    done
    echo "$1 did not start:" >&2
    cat "$TMP/srv.log" >&2
    exit 1
}
stop() { kill -TERM "$SPID"; wait "$SPID" 2>/dev/null || true; SPID=; sleep 1; }

k=0
for scenario in "${SCENARIOS[@]}"; do
    case "$scenario" in
    idle) args=(--scenario idle) ;;
    ping) args=(--scenario ping --ping-rate 3) ;;
    rooms) args=(--scenario rooms --rooms 1000 --publish-rate 2 --payload 64) ;;
    *) echo "unknown scenario $scenario: idle, ping or rooms" >&2; exit 2 ;;
    esac
    servers=(ringroom epoll minimal redis nats mqtt)
    [ "$scenario" != rooms ] || servers=(ringroom epoll redis nats mqtt)
    for server in "${servers[@]}"; do
        case "$server" in
        minimal | epoll) protocol=ringroom ;;
        *) protocol=$server ;;
        esac
        start "$server"
        # A fresh /29 of source addresses per run: no TIME_WAIT carried over.
        src="127.0.$((20 + k)).0/29"
        k=$((k + 1))
        echo "== $scenario / $server (pid $SPID, sources $src)" >&2
        "$LOADGEN" --protocol "$protocol" --target "127.0.0.1:$PORT" --server-pid "$SPID" \
            --conns "$CONNS" --connect-rate 10000 --duration "$HOLD" --source "$src" \
            "${args[@]}" --out "$OUT/$scenario-$server" >"$TMP/run.txt" 2>&1 || true
        cp "$TMP/run.txt" "$OUT/$scenario-$server/run.txt" 2>/dev/null || cat "$TMP/run.txt" >&2
        stop
    done
done

{
    echo "# $RELEASE: ringroom side by side with redis, nats and mosquitto"
    echo
    echo "Written by \`bench-results/peers.sh $RELEASE $CONNS $HOLD ${SCENARIOS[*]}\` on $(date -u +%Y-%m-%d), commit $(git rev-parse --short HEAD)."
    echo "Machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB, Linux $(uname -r), fd limit $(ulimit -n)."
    echo "Servers: ringroom-server $VERSION (release build), $(redis-server --version | cut -d' ' -f1-3), nats-server $(nats-server --version | awk '{print $NF}'), mosquitto $(mosquitto -h 2>&1 | head -1 | awk '{print $3}')."
    echo "Every server and the load generator share the same cores on loopback; one server runs at a time."
    echo
    echo "Scenarios: idle = $CONNS connections, one PING each every 10 s; ping = $CONNS x 3 PINGs/s;"
    echo "rooms = $CONNS connections in 1,000 rooms, 2 publishes/s per room, 64-byte bodies."
    echo "Latency: PING round trip (idle, ping) or delivery (rooms), from the planned send time."
    echo "Server CPU per million PONGs or deliveries, ramp included; B/conn: the server's peak RSS growth per connection."
    echo "The baseline (idle, ping) is server/examples/minimal_pong: one io_uring ring answering PINGs with no protocol logic; ringroom-server runs its default shards (one per core), on io_uring, and again on epoll (--engine epoll: the same server code)."
    echo "Each run's folder (peers/SCENARIO-SERVER/) has its summary.json, machine.json, histograms and run.txt."
    echo
    "$LOADGEN" report --peers "$OUT"
} >"bench-results/$RELEASE/peers.md"
echo "wrote bench-results/$RELEASE/peers.md" >&2
