#!/usr/bin/env bash
# Checks the limits a C10K..C1M run needs against a profile (tuning/profiles/*.conf).
#
#   tuning/limits.sh check [--profile c10k|c100k|c1m] [--pid PID]
#                          [--sysctl-root DIR] [--limits-file FILE]
#
# Prints one table: each setting, its current value, the profile's value, and
# OK, LOW or n/a (not present here), with one line on why each LOW matters.
# Exits 1 if anything is LOW. --pid reads that process's fd limits from
# /proc/PID/limits instead of this shell's; --sysctl-root reads sysctls from a
# tree other than /proc/sys, and --limits-file a limits file in /proc/PID/limits
# format (both for tests).
# `apply` and `revert` come next; this version only checks.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
usage() {
    sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

cmd=${1:-}
[ "$cmd" = check ] || usage
shift
profile=c100k
pid=""
root=/proc/sys
limits_file=""
while [ $# -gt 0 ]; do
    case $1 in
        --profile) profile=${2:?--profile needs a name}; shift 2 ;;
        --pid) pid=${2:?--pid needs a process id}; shift 2 ;;
        --sysctl-root) root=${2:?--sysctl-root needs a directory}; shift 2 ;;
        --limits-file) limits_file=${2:?--limits-file needs a file}; shift 2 ;;
        *) usage ;;
    esac
done
conf="$here/profiles/$profile.conf"
if [ ! -r "$conf" ]; then
    have=$(for f in "$here"/profiles/*.conf; do basename "$f" .conf; done | xargs)
    echo "limits.sh: no profile $profile (have: $have)" >&2
    exit 2
fi
if [ -n "$pid" ]; then
    limits_file=/proc/$pid/limits
    [ -r "$limits_file" ] || { echo "limits.sh: no process $pid" >&2; exit 2; }
fi
page=$(getconf PAGESIZE)

# The value of a sysctl, fields separated by single spaces; empty if absent.
sysctl_value() {
    local path="$root/${1//.//}"
    [ -r "$path" ] || return 0
    tr -s ' \t\n' '   ' < "$path" | sed 's/^ //; s/ $//'
}

# The fd limit, soft or hard: of this shell, or from a limits file.
nofile() {
    if [ -n "$limits_file" ]; then
        awk -v which="$1" '/^Max open files/ { print (which == "soft") ? $4 : $5 }' "$limits_file"
    elif [ "$1" = soft ]; then
        ulimit -Sn
    else
        ulimit -Hn
    fi
}

# Whether `current` meets `rule value`; prints OK or LOW.
judge() {
    local rule=$1 value=$2 current=$3
    local -a f
    read -r -a f <<< "$current"
    case $rule in
        min) [ "$current" = unlimited ] || [ "${f[0]}" -ge "$value" ] ;;
        max) [ "${f[0]}" -le "$value" ] ;;
        eq) [ "${f[0]}" -eq "$value" ] ;;
        span) [ $(( f[1] - f[0] + 1 )) -ge "$value" ] ;;
        mem) [ $(( f[2] * page )) -ge "$value" ] ;;
        *) echo "limits.sh: unknown rule $rule in $conf" >&2; exit 2 ;;
    esac && echo OK || echo LOW
}

low=0
rows=()
whys=()
row() { # setting current recommended status why
    rows+=("$(printf '%-32s %-24s %-20s %s' "$1" "$2" "$3" "$4")")
    if [ "$4" = LOW ]; then
        low=1
        whys+=("$1: $5")
    fi
}

while read -r setting rule value rest; do
    case $setting in ''|'#'*) continue ;; esac
    why=${rest#-- }
    case $rule in
        min) shown=">= $value" ;; max) shown="<= $value" ;; eq) shown="= $value" ;;
        span) shown="$value ports" ;; mem) shown="$value bytes" ;; *) shown=$value ;;
    esac
    if [ "$setting" = nofile ]; then
        who="this shell"
        [ -n "$limits_file" ] && who=$limits_file
        [ -n "$pid" ] && who="process $pid"
        for which in soft hard; do
            current=$(nofile "$which")
            row "nofile $which ($who)" "$current" "$shown" "$(judge "$rule" "$value" "$current")" "$why"
        done
        continue
    fi
    current=$(sysctl_value "$setting")
    if [ -z "$current" ]; then
        row "$setting" "-" "$shown" "n/a" ""
        continue
    fi
    shown_current=$current
    if [ "$rule" = mem ]; then
        read -r -a f <<< "$current"
        shown_current="$(( f[2] * page )) bytes"
    fi
    row "$setting" "$shown_current" "$shown" "$(judge "$rule" "$value" "$current")" "$why"
done < "$conf"

# systemd units inherit DefaultLimitNOFILE unless they set LimitNOFILE.
if [ -z "$limits_file" ] && [ -d /run/systemd/system ] && command -v systemctl >/dev/null; then
    default=$(systemctl show --property DefaultLimitNOFILE --value 2>/dev/null || true)
    want=$(awk '$1 == "nofile" { print $3 }' "$conf")
    if [ -n "$default" ]; then
        row "systemd DefaultLimitNOFILE" "$default" ">= $want" "$(judge min "$want" "$default")" \
            "services started by systemd get this fd limit unless their unit sets LimitNOFILE"
    fi
fi

echo "profile $profile ($conf)"
printf '%-32s %-24s %-20s %s\n' setting current recommended status
printf '%s\n' "${rows[@]}"
if [ "$low" = 1 ]; then
    echo
    echo "Why the LOW ones matter:"
    printf '  %s\n' "${whys[@]}"
    exit 1
fi
