#!/usr/bin/env bash
# Checks, raises and restores the limits a C10K..C1M run needs, against a
# profile (tuning/profiles/*.conf).
#
#   tuning/limits.sh check  [--profile P] [--pid PID] [--unit NAME] [--connections N]
#   tuning/limits.sh apply  [--profile P] [--dry-run] [--unit NAME] [--only PREFIX]
#   tuning/limits.sh revert
#
# check: one table of each setting, its current value, the profile's value and
# OK, LOW or n/a, one line on why each LOW matters; exit 1 if anything is LOW.
# With --connections N, also the plan for N connections with both ends here
# (kernel, server and loadgen memory against MemAvailable, source addresses,
# conntrack); exit 3 if it cannot fit.
# apply (root): saves every value it will change to a state file, then sets the
# sysctls (at once, and in a sysctl.d drop-in), writes a limits.d file for the fd
# limit and, with --unit, a systemd drop-in; never lowers a limit that is higher;
# says what it cannot change and why, and goes on. --only net. limits it to
# settings starting with that prefix. revert: restores exactly the saved values
# and removes the drop-ins. P is c10k, c100k (default) or c1m.
# For tests: --sysctl-root DIR, --limits-file FILE, --etc-root DIR, --state FILE,
# --meminfo FILE.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
usage() {
    sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

cmd=${1:-}
case $cmd in check | apply | revert) ;; *) usage ;; esac
shift
profile=c100k
pid=""
root=/proc/sys
limits_file=""
etc=/etc
state=/var/lib/ringroom/limits.state
dry_run=0
unit=""
only=""
connections=""
meminfo=/proc/meminfo
while [ $# -gt 0 ]; do
    case $1 in
        --profile) profile=${2:?--profile needs a name}; shift 2 ;;
        --pid) pid=${2:?--pid needs a process id}; shift 2 ;;
        --sysctl-root) root=${2:?--sysctl-root needs a directory}; shift 2 ;;
        --limits-file) limits_file=${2:?--limits-file needs a file}; shift 2 ;;
        --etc-root) etc=${2:?--etc-root needs a directory}; shift 2 ;;
        --state) state=${2:?--state needs a file}; shift 2 ;;
        --dry-run) dry_run=1; shift ;;
        --unit) unit=${2:?--unit needs a systemd unit name}; shift 2 ;;
        --only) only=${2:?--only needs a prefix}; shift 2 ;;
        --connections) connections=${2:?--connections needs a number}; shift 2 ;;
        --meminfo) meminfo=${2:?--meminfo needs a file}; shift 2 ;;
        *) usage ;;
    esac
done
case $connections in
    '' | *[!0-9]*) [ -z "$connections" ] || { echo "limits.sh: --connections $connections: not a number" >&2; exit 2; } ;;
esac
sysctl_dropin=$etc/sysctl.d/90-ringroom.conf
limits_dropin=$etc/security/limits.d/90-ringroom.conf

# revert: put back exactly what apply saved, remove what it wrote.
if [ "$cmd" = revert ]; then
    [ -r "$state" ] || { echo "limits.sh: nothing to revert (no $state)" >&2; exit 1; }
    while IFS='=' read -r kind key value; do
        case $kind in
            sysctl)
                if printf '%s\n' "$value" > "$root/${key//.//}" 2>/dev/null; then
                    echo "restored $key = $value"
                else
                    echo "could not restore $key (to $value): not writable here" >&2
                fi ;;
            file) rm -f -- "$key" && echo "removed $key" ;;
        esac
    done < "$state"
    rm -f -- "$state"
    exit 0
fi
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

# The value `rule value` asks for, given `current`; empty if it is met already.
# Limits are only ever raised (or, for `max` rules, lowered to the bound).
target() {
    local rule=$1 value=$2 current=$3
    local -a f
    read -r -a f <<< "$current"
    case $rule in
        min) [ "${f[0]}" -ge "$value" ] || echo "$value" ;;
        max) [ "${f[0]}" -le "$value" ] || echo "$value" ;;
        eq) [ "${f[0]}" -eq "$value" ] || echo "$value" ;;
        span) [ $(( f[1] - f[0] + 1 )) -ge "$value" ] || echo "1024 65535" ;;
        mem)
            local pages=$(( (value + page - 1) / page ))
            if [ $(( f[2] * page )) -lt "$value" ]; then
                local pressure=$(( pages * 3 / 4 ))
                [ "${f[1]}" -gt "$pressure" ] && pressure=${f[1]}
                echo "${f[0]} $pressure $pages"
            fi ;;
    esac
}

if [ "$cmd" = apply ]; then
    if [ "$dry_run" = 0 ] && [ -e "$state" ]; then
        echo "limits.sh: $state exists: an earlier apply was not reverted; run 'limits.sh revert' first" >&2
        exit 1
    fi
    keys=()
    olds=()
    news=()
    nofile_want=""
    while read -r setting rule value _; do
        case $setting in ''|'#'*) continue ;; esac
        [ -z "$only" ] || [[ $setting == "$only"* ]] || continue
        if [ "$setting" = nofile ]; then
            nofile_want=$value
            continue
        fi
        current=$(sysctl_value "$setting")
        [ -n "$current" ] || continue
        new=$(target "$rule" "$value" "$current")
        [ -n "$new" ] || continue
        keys+=("$setting")
        olds+=("$current")
        news+=("$new")
    done < "$conf"
    if [ "$dry_run" = 1 ]; then
        for i in "${!keys[@]}"; do
            echo "would set ${keys[$i]}: ${olds[$i]} -> ${news[$i]}"
        done
        [ -n "$nofile_want" ] && echo "would write $limits_dropin: nofile $nofile_want"
        [ -n "$unit" ] && [ -n "$nofile_want" ] && echo "would write a drop-in for $unit: LimitNOFILE=$nofile_want"
        exit 0
    fi
    # Every old value is saved before anything changes.
    mkdir -p "$(dirname "$state")"
    : > "$state"
    for i in "${!keys[@]}"; do
        echo "sysctl=${keys[$i]}=${olds[$i]}" >> "$state"
    done
    for i in "${!keys[@]}"; do
        if printf '%s\n' "${news[$i]}" > "$root/${keys[$i]//.//}" 2>/dev/null; then
            echo "set ${keys[$i]}: ${olds[$i]} -> ${news[$i]}"
        else
            echo "cannot set ${keys[$i]} (to ${news[$i]}): /proc/sys is read-only here (a container?) or the setting belongs to the host's namespace; skipped" >&2
        fi
    done
    if [ "${#keys[@]}" -gt 0 ]; then
        mkdir -p "$(dirname "$sysctl_dropin")"
        {
            echo "# Written by ringroom tuning/limits.sh apply --profile $profile; removed by revert."
            for i in "${!keys[@]}"; do echo "${keys[$i]} = ${news[$i]}"; done
        } > "$sysctl_dropin"
        echo "file=$sysctl_dropin" >> "$state"
        echo "wrote $sysctl_dropin (applied again at boot)"
    fi
    if [ -n "$nofile_want" ]; then
        mkdir -p "$(dirname "$limits_dropin")"
        printf '# Written by ringroom tuning/limits.sh; removed by revert.\n* soft nofile %s\n* hard nofile %s\nroot soft nofile %s\nroot hard nofile %s\n' \
            "$nofile_want" "$nofile_want" "$nofile_want" "$nofile_want" > "$limits_dropin"
        echo "file=$limits_dropin" >> "$state"
        echo "wrote $limits_dropin: nofile $nofile_want for new login sessions"
        if [ "$(ulimit -Hn)" != unlimited ] && [ "$(ulimit -Hn)" -lt "$nofile_want" ]; then
            echo "note: this shell keeps its hard fd limit ($(ulimit -Hn)): raising a running process's hard limit needs CAP_SYS_RESOURCE; start a new session, or run under a unit with LimitNOFILE" >&2
        fi
        if [ -n "$unit" ]; then
            dropin=$etc/systemd/system/$unit.d/90-ringroom.conf
            mkdir -p "$(dirname "$dropin")"
            printf '[Service]\nLimitNOFILE=%s\n' "$nofile_want" > "$dropin"
            echo "file=$dropin" >> "$state"
            echo "wrote $dropin: run 'systemctl daemon-reload && systemctl restart $unit'"
        fi
    fi
    echo "saved the old values to $state; 'limits.sh revert' restores them"
    exit 0
fi

low=0
rows=()
whys=()
row() { # setting current recommended status why
    rows+=("$(printf '%-36s %-24s %-20s %s' "$1" "$2" "$3" "$4")")
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
    if [ -n "$unit" ]; then
        limit=$(systemctl show "$unit" --property LimitNOFILE --value 2>/dev/null || true)
        [ -n "$limit" ] && row "$unit LimitNOFILE" "$limit" ">= $want" "$(judge min "$want" "$limit")" \
            "the fd limit the server gets when systemd starts it (limits.sh apply --unit $unit)"
    fi
fi

echo "profile $profile ($conf)"
printf '%-36s %-24s %-20s %s\n' setting current recommended status
printf '%s\n' "${rows[@]}"
if [ "$low" = 1 ]; then
    echo
    echo "Why the LOW ones matter:"
    printf '  %s\n' "${whys[@]}"
fi

# The plan for N connections with both ends on this machine (a loopback run),
# from what one cost as measured here at C1M (bench-results/c1m, the most of
# runs 2-13: the slab grew 9,727 B a connection, ringroom-server's RSS at most
# 122 B, loadgen's 515 B since 5602b19). Refused when it does not fit in what
# the kernel says is available, with a tenth kept back.
fits=1
if [ -n "$connections" ]; then
    kernel_each=9727
    server_each=122
    loadgen_each=515
    mib() { echo $(( ($1 + 1048575) / 1048576 )); }
    kernel=$(( connections * kernel_each ))
    server=$(( connections * server_each ))
    loadgen=$(( connections * loadgen_each ))
    need=$(( kernel + server + loadgen ))
    avail_kb=$(awk '$1 == "MemAvailable:" { print $2 }' "$meminfo")
    [ -n "$avail_kb" ] || { echo "limits.sh: no MemAvailable in $meminfo" >&2; exit 2; }
    avail=$(( avail_kb * 1024 ))
    usable=$(( avail * 9 / 10 ))
    echo
    echo "plan for $connections connections, both ends on this machine:"
    printf '  %-58s %8s MiB\n' "kernel: 2 sockets a connection, $kernel_each B (measured)" "$(mib $kernel)"
    printf '  %-58s %8s MiB\n' "ringroom-server: $server_each B a connection (measured)" "$(mib $server)"
    printf '  %-58s %8s MiB\n' "loadgen: $loadgen_each B a connection (measured)" "$(mib $loadgen)"
    printf '  %-58s %8s MiB\n' "total" "$(mib $need)"
    printf '  %-58s %8s MiB\n' "available (MemAvailable, less a tenth kept back)" "$(mib $usable)"
    if [ "$need" -gt "$usable" ]; then
        fits=0
        echo "  DOES NOT FIT: $(mib $need) MiB wanted, $(mib $usable) MiB usable; run fewer connections, or put loadgen on another machine"
    else
        echo "  fits, with $(mib $(( usable - need ))) MiB to spare"
    fi
    range=$(sysctl_value net.ipv4.ip_local_port_range)
    if [ -n "$range" ]; then
        read -r -a f <<< "$range"
        span=$(( f[1] - f[0] + 1 ))
        echo "  source addresses: at least $(( (connections + span - 1) / span )) ($span ephemeral ports each, to one server address; loadgen --source)"
    fi
    ct_max=$(sysctl_value net.netfilter.nf_conntrack_max)
    if [ -n "$ct_max" ] && [ "$ct_max" -lt "$connections" ]; then
        ct_now=$(sysctl_value net.netfilter.nf_conntrack_count)
        echo "  conntrack: the table holds $ct_max entries (${ct_now:-?} in use now); if loopback is tracked, connection $(( ct_max + 1 )) on is dropped: raise net.netfilter.nf_conntrack_max (apply --profile c1m) or exempt loopback from tracking"
    fi
fi
[ "$fits" = 1 ] || exit 3
[ "$low" = 0 ] || exit 1
