#!/usr/bin/env bash
# Samples what a C1M run costs the kernel and both processes, every N seconds,
# until stopped (or after 20 minutes): the time, /proc/meminfo's Slab,
# /proc/net/sockstat's TCP line, and VmHWM/VmRSS of every loadgen and
# ringroom-server process. The kernel.txt of the runs in this folder.
#
#   bench-results/c1m/sample.sh OUT [SECONDS]
set -euo pipefail
out=${1:?usage: sample.sh OUT [SECONDS]}
every=${2:-5}
end=$((SECONDS + 1200))
: > "$out"
while [ "$SECONDS" -lt "$end" ]; do
    {
        date +%s
        grep '^Slab:' /proc/meminfo
        grep '^TCP:' /proc/net/sockstat
        for pid in $(pgrep -x loadgen; pgrep -x ringroom-server); do
            mem=$(grep -E '^(VmHWM|VmRSS):' "/proc/$pid/status" 2>/dev/null | tr -s ' \t' ' ' | tr '\n' ' ') || continue
            echo "pid $pid [$(tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | cut -c1-18)] $mem"
        done
    } >> "$out"
    sleep "$every"
done
