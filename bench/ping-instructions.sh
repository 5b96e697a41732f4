#!/usr/bin/env bash
# Issue 15's idle profile in instructions rather than seconds: the user-space instructions a
# server executes per idle heartbeat ping, counted by callgrind, for Breeze, Mosquitto and the
# tokio yardstick `ping_floor` (in place, and with Breeze's two task hops). Instructions do not
# depend on how often this machine's host stops it, so two builds compare to the percent here
# where CPU seconds need alternated runs; the kernel's share of a ping (recv, send, epoll) is
# not counted, and is about the same for every server.
#
# Each server runs under callgrind while `hold` (Breeze) or `mosquitto-hold` (the others) logs
# in CLIENTS clients that ping every second; once all are connected and 15 s have passed, the
# counts are zeroed, and WINDOW seconds later dumped. Pings in the window = the bench's ping
# rate over its idle window × WINDOW.
#
# Usage: bench/ping-instructions.sh [--no-build] [--clients N] [--window SECONDS]
#                                   [--server-bin PATH] [SERVER...]
#   SERVER      breeze, mosquitto, floor, floor-hop (default: all four; mosquitto is skipped
#               with a note where /usr/sbin/mosquitto is missing)
#   --no-build  use the release binaries already built
#   --clients   default 300 (under callgrind a server runs ~50x slower; 300 pings a second
#               leave it idle between pings, as 19,900 clients pinging every 30 s do natively)
#   --window    default 20
#   --server-bin  the breeze-server to profile (default target/release/breeze-server)
# Needs valgrind (apt-get install valgrind). Prints a table; the callgrind files stay in a
# temporary directory it names, for `callgrind_annotate --inclusive=yes`.
set -u -o pipefail

build=1
clients=300
window=20
server_bin=""
servers=()
while [ $# -gt 0 ]; do
    case "$1" in
        --no-build) build=0 ;;
        --clients | --window)
            if ! [[ "${2:-}" =~ ^[1-9][0-9]*$ ]]; then
                echo "ping-instructions.sh: $1 needs a positive whole number" >&2
                exit 2
            fi
            if [ "$1" = --clients ]; then clients="$2"; else window="$2"; fi
            shift
            ;;
        --server-bin)
            server_bin="${2:-}"
            if [ -z "$server_bin" ]; then
                echo "ping-instructions.sh: --server-bin needs a path" >&2
                exit 2
            fi
            shift
            ;;
        -h | --help)
            sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//'
            exit 0
            ;;
        breeze | mosquitto | floor | floor-hop) servers+=("$1") ;;
        *)
            echo "ping-instructions.sh: unknown argument $1 (see --help)" >&2
            exit 2
            ;;
    esac
    shift
done
[ ${#servers[@]} -gt 0 ] || servers=(breeze mosquitto floor floor-hop)

cd "$(dirname "$0")/.." || exit 1
target="${CARGO_TARGET_DIR:-target}"
bench="$target/release/breeze-bench"
floor="$target/release/examples/ping_floor"
server_bin="${server_bin:-$target/release/breeze-server}"
for tool in valgrind callgrind_control callgrind_annotate ss python3; do
    if ! command -v "$tool" >/dev/null; then
        echo "ping-instructions.sh: $tool not found (valgrind: apt-get install valgrind)" >&2
        exit 1
    fi
done
if [ "$build" = 1 ]; then
    cargo build --release -p breeze-bench -p breeze-server --bins --example ping_floor || exit 1
fi
needed=("$bench" "$server_bin")
case " ${servers[*]} " in *" floor"*) needed+=("$floor") ;; esac
for bin in "${needed[@]}"; do
    if [ ! -x "$bin" ]; then
        echo "ping-instructions.sh: no $bin; build it (drop --no-build)" >&2
        exit 1
    fi
done

dir="$(mktemp -d -t ping-instructions.XXXXXX)"
# The bench starts the server through this, so that it runs under callgrind. Mosquitto's
# `-h` (its version) runs as is; Mosquitto started as root drops to its own user, which could
# then not write the profile, so its (temporary) configuration keeps it root.
cat >"$dir/under-callgrind" <<EOF
#!/bin/sh
[ "\$1" = "-h" ] && exec "\$PROFILED" -h
[ "\$1" = "-c" ] && [ "\$(basename "\$PROFILED")" = mosquitto ] && echo "user root" >>"\$2"
exec valgrind --tool=callgrind --callgrind-out-file="$dir/callgrind.%p" \\
    --log-file="$dir/valgrind.%p.log" "\$PROFILED" "\$@"
EOF
chmod +x "$dir/under-callgrind"

# One server: prints "name instructions pings".
profile() {
    local name="$1" bin="$2" scenario="$3"
    shift 3
    local out="$dir/$name.jsonl"
    local args=(--clients "$clients" --contacts 0 --idle "$((window + 25))s" --settle 10s
        --heartbeat-interval 1s)
    if [ "$scenario" = hold ]; then
        args+=(--server-bin "$dir/under-callgrind" --scope contacts --no-restart
            --heartbeat-timeout 3s)
    else
        args+=(--mosquitto-bin "$dir/under-callgrind")
    fi
    PROFILED="$bin" "$@" "$bench" "$scenario" "${args[@]}" >"$out" 2>"$dir/$name.log" &
    local run=$! pid="" waited=0
    # The process serving the idle clients: the last one started under callgrind (hold's setup
    # runs on a first server process) once it holds every client's connection.
    while [ -z "$pid" ]; do
        sleep 1
        waited=$((waited + 1))
        if ! kill -0 "$run" 2>/dev/null || [ "$waited" -gt 600 ]; then
            echo "ping-instructions.sh: $name: the bench ended or took over 10 min before all" \
                "$clients clients connected; see $dir/$name.log" >&2
            return 1
        fi
        local p
        p="$(pgrep -n -f "valgrind.*$(basename "$bin")")" || continue
        [ "$(ss -tnp state established 2>/dev/null | grep -c "pid=$p,")" -ge "$clients" ] && pid="$p"
    done
    sleep 15
    callgrind_control -z "$pid" >/dev/null 2>&1
    sleep "$window"
    callgrind_control -d "$pid" >/dev/null 2>&1
    wait "$run" || {
        echo "ping-instructions.sh: $name: the bench failed; see $dir/$name.log" >&2
        return 1
    }
    local file="$dir/callgrind.$pid.1"
    mv "$file" "$dir/$name.callgrind"
    local ir
    ir="$(callgrind_annotate "$dir/$name.callgrind" 2>/dev/null | awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1 }')"
    python3 - "$name" "$ir" "$window" "$out" <<'PY'
import json, sys
name, ir, window, out = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
d = json.loads(open(out).read().strip().splitlines()[-1])
pings = d["idle_pings"] / d["idle_seconds"] * window
print(json.dumps({"server": name, "instructions": ir, "pings": round(pings),
                  "instructions_per_ping": round(ir / pings)}))
PY
}

results="$dir/results.jsonl"
for s in "${servers[@]}"; do
    case "$s" in
        breeze) profile breeze "$server_bin" hold env ;;
        mosquitto)
            if [ -x /usr/sbin/mosquitto ]; then
                profile mosquitto /usr/sbin/mosquitto mosquitto-hold env
            else
                echo "ping-instructions.sh: /usr/sbin/mosquitto not found; mosquitto skipped" >&2
            fi
            ;;
        floor) profile floor "$floor" mosquitto-hold env PING_FLOOR_HOP= ;;
        floor-hop) profile floor-hop "$floor" mosquitto-hold env PING_FLOOR_HOP=1 ;;
    esac
done | tee "$results"

echo
echo "| server | user-space instructions per idle ping | pings counted |"
echo "|---|---|---|"
python3 - "$results" <<'PY'
import json, sys
for line in open(sys.argv[1]):
    d = json.loads(line)
    print(f"| {d['server']} | {d['instructions_per_ping']:,} | {d['pings']:,} |")
PY
echo
echo "callgrind files: $dir (callgrind_annotate --inclusive=yes FILE)"
