# shellcheck shell=bash
# Shared by the benchmark scripts under bench-results/: sourced, not run.
# Expects SRV (server binary) and, for "minimal", MINIMAL to be set.

for tool in bc getconf ss; do
    command -v "$tool" >/dev/null || { echo "needs $tool (apt-get install bc libc-bin iproute2)" >&2; exit 1; }
done
TMP=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$TMP"; }
trap cleanup EXIT
export CLK_TCK
CLK_TCK=$(getconf CLK_TCK)

start_server() { # args: extra server options, or "minimal"; sets SPID and ADDR
    if [ "${1:-}" = minimal ]; then
        "$MINIMAL" 127.0.0.1:0 >"$TMP/srv.out" 2>"$TMP/srv.err" &
    else
        "$SRV" --listen 127.0.0.1:0 --metrics off --discovery off --stats-interval 0 "$@" >"$TMP/srv.out" 2>"$TMP/srv.err" &
    fi
    SPID=$!
    PIDS+=("$SPID")
    for _ in $(seq 100); do grep -q ready "$TMP/srv.out" 2>/dev/null && break; sleep 0.1; done
    ADDR=$(grep -o 'listen [0-9.:]*' "$TMP/srv.out" | cut -d' ' -f2)
    [ -n "$ADDR" ] || { cat "$TMP/srv.err" >&2; exit 1; }
}
stop_server() { kill -TERM "$SPID"; wait "$SPID" || true; }
rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
wait_for() { # file pattern
    for _ in $(seq 1200); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.1; done
    echo "timed out waiting for '$2' in $1" >&2; cat "$1" >&2; exit 1
}
sources() { # first last -> comma list 127.0.0.first..last
    seq "$1" "$2" | sed 's/^/127.0.0./' | paste -sd, -
}
field() { # line name -> value of name=value in line
    echo "$1" | tr ' ' '\n' | grep "^$2=" | cut -d= -f2
}
machine_lines() {
    echo "- date: $(date -u +%Y-%m-%dT%H:%MZ), commit $(git rev-parse --short HEAD)"
    echo "- machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB, Linux $(uname -r), fd limit $(ulimit -n)"
}
row_value() { # file label -> the value of loadgen's table row "| label | value |"
    grep -F "| $2 |" "$1" | head -1 | awk -F'|' '{gsub(/^ +| +$/, "", $3); print $3}'
}
