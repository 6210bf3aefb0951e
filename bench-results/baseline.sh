#!/usr/bin/env bash
# A release's load-generator results: c10k and c100k for idle, ping and rooms,
# each against a server loadgen starts itself (sized for the run) on loopback.
# Writes bench-results/RELEASE/SCENARIO/ (summary.json, machine.json, .hlog,
# .hgrm, plot.svg, run.txt), bench-results/RELEASE/runs.md (commands, commit),
# and regenerates the index, bench-results/README.md.
# Usage: bench-results/baseline.sh [RELEASE] [SCENARIO...]
#   default: the workspace version; c10k-idle c10k-ping c10k-rooms c100k-idle c100k-ping c100k-rooms
# Check the machine first: tuning/limits.sh check --profile c100k.
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
RELEASE=${1:-$VERSION}
shift || true
RUNS=("$@")
[ ${#RUNS[@]} -gt 0 ] || RUNS=(c10k-idle c10k-ping c10k-rooms c100k-idle c100k-ping c100k-rooms)
cargo build --quiet --release -p loadgen
LOADGEN=target/release/loadgen
C10K=(--conns 10000 --connect-rate 10000 --duration 30)
C100K=(--conns 100000 --connect-rate 20000 --duration 60)
runs_md="bench-results/$RELEASE/runs.md"
mkdir -p "bench-results/$RELEASE"
{
    echo "# $RELEASE: how these runs were made"
    echo
    echo "By \`bench-results/baseline.sh $RELEASE ${RUNS[*]}\` on $(date -u +%Y-%m-%d), commit $(git rev-parse --short HEAD), release build."
    echo "Server and load generator on loopback, sharing the machine's cores; each folder's machine.json says which."
    echo "No --target: loadgen starts the server itself (the same binary, --internal-server) and samples its CPU and memory."
    echo
    echo '```sh'
} >"$runs_md"
k=0
for run in "${RUNS[@]}"; do
    case "$run" in
    c10k-idle) args=(--scenario idle "${C10K[@]}") ;;
    c10k-ping) args=(--scenario ping --ping-rate 3 "${C10K[@]}") ;;
    c10k-rooms) args=(--scenario rooms --rooms 1000 --publish-rate 2 "${C10K[@]}") ;;
    c100k-idle) args=(--scenario idle "${C100K[@]}") ;;
    c100k-ping) args=(--scenario ping --ping-rate 0.3 "${C100K[@]}") ;;
    c100k-rooms) args=(--scenario rooms --rooms 10000 --publish-rate 0.2 "${C100K[@]}") ;;
    *) echo "unknown run $run" >&2; exit 2 ;;
    esac
    # Fresh source addresses per run (a /26: 64 x 28,000 ports), so no TIME_WAIT carries over.
    args+=(--source "127.0.$((60 + k)).0/26")
    k=$((k + 1))
    out="bench-results/$RELEASE/$run"
    echo "== $run" >&2
    echo "loadgen ${args[*]}" >>"$runs_md"
    "$LOADGEN" "${args[@]}" --out "$out" >"$out.txt" 2>&1 || echo "$run: loadgen exited non-zero (see $out/run.txt)" >&2
    mkdir -p "$out"
    mv "$out.txt" "$out/run.txt"
done
{
    echo '```'
    echo
    echo "run.txt and summary.json's ping_rtt give percentiles over the whole run, ramp included: in the"
    echo "C100K runs the first seconds (100,000 connects at 20,000/s on cores shared with the load generator)"
    echo "hold the tail. The index shows PING round trips over the hold only (ping_rtt_hold: the"
    echo "per-second intervals from a second after the last connect), and 'loadgen compare' tests"
    echo "the per-second p99s of ping-rtt.hlog."
} >>"$runs_md"
"$LOADGEN" report bench-results
