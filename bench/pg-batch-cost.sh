#!/usr/bin/env bash
# What one of a cluster node's write transactions costs PostgreSQL, apart from the nodes, the
# bus and the bench (issue 12): `pgbench`, one client, calls the store's own batch function
# (`breeze_write_batch`, schema 9 in store-pg/src/schema.rs) with N messages and N acks per
# transaction, as a node's writer does, under the store's session settings
# (store-pg/src/store.rs), and reads PostgreSQL's CPU from /proc over each run: every process
# named `postgres`, backends that ended included (through their parent's reaped-children time).
# `SELECT 1` and the function with nothing to write are the fixed costs beside it.
#
# The schema is made by the server itself: a breeze-server started on a fresh schema migrates
# it, and is stopped. 200 accounts; messages go from u(a+i) to u(a+100+i), a random, and each
# transaction also acks N seqs of its recipients (most name no waiting message: an index probe
# each, as an ack of a message already acked is).
#
# Usage: bench/pg-batch-cost.sh [--no-build] [--seconds S] [--async] [RESULTS.jsonl]
#   --no-build   use target/release/breeze-server as built
#   --seconds S  each pgbench run (default 8)
#   --async      synchronous_commit = off for the runs: the cost without the WAL flush's wait
#   PostgreSQL from BREEZE_TEST_PG (default postgres://postgres@127.0.0.1:5432/test); needs
#   psql and pgbench on PATH and PostgreSQL on this machine (its CPU is read from /proc).
set -u -o pipefail

build=1
seconds=8
async=0
results=""
while [ $# -gt 0 ]; do
    case "$1" in
        --no-build) build=0 ;;
        --seconds)
            seconds="${2:-}"
            shift
            if ! [[ "$seconds" =~ ^[1-9][0-9]*$ ]]; then
                echo "pg-batch-cost.sh: --seconds needs a positive whole number" >&2
                exit 2
            fi
            ;;
        --async) async=1 ;;
        -h | --help)
            sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'
            exit 0
            ;;
        -*)
            echo "pg-batch-cost.sh: unknown option $1 (see --help)" >&2
            exit 2
            ;;
        *) results="$1" ;;
    esac
    shift
done

cd "$(dirname "$0")/.." || exit 1
for tool in psql pgbench; do
    if ! command -v "$tool" > /dev/null; then
        echo "pg-batch-cost.sh: $tool is not on PATH (Debian: apt-get install postgresql-client; pgbench comes with the server package)" >&2
        exit 2
    fi
done
target="${CARGO_TARGET_DIR:-target}"
server="$target/release/breeze-server"
if [ "$build" = 1 ]; then
    cargo build --release -p breeze-server --bins || exit 1
fi
if [ ! -x "$server" ]; then
    echo "pg-batch-cost.sh: no $server (build it, or leave out --no-build)" >&2
    exit 2
fi
if [ -z "$results" ]; then
    results="$target/pg-batch-cost-$(date -u +%Y%m%dT%H%M%SZ).jsonl"
fi

base="${BREEZE_TEST_PG:-postgres://postgres@127.0.0.1:5432/test}"
schema="breeze_batch_cost_$$"
sql() { psql "$base" -X -q -v ON_ERROR_STOP=1 "$@"; }
if ! sql -c "CREATE SCHEMA $schema"; then
    echo "pg-batch-cost.sh: cannot create a schema in $base (BREEZE_TEST_PG)" >&2
    exit 2
fi
work="$(mktemp -d)"
cleanup() {
    sql -c "DROP SCHEMA IF EXISTS $schema CASCADE" > /dev/null 2>&1
    rm -rf "$work"
}
trap cleanup EXIT

# The server migrates the schema at start, then says it is listening.
case "$base" in *\?*) sep='&' ;; *) sep='?' ;; esac
"$server" --listen 127.0.0.1:0 --http-listen off \
    --store "${base}${sep}options=-c%20search_path%3D${schema}" > "$work/server.log" 2>&1 &
pid=$!
for _ in $(seq 1 100); do
    grep -q "listening on" "$work/server.log" && break
    kill -0 "$pid" 2> /dev/null || break
    sleep 0.1
done
kill "$pid" 2> /dev/null
wait "$pid" 2> /dev/null
if ! grep -q "migrated PostgreSQL schema" "$work/server.log"; then
    echo "pg-batch-cost.sh: the server did not migrate the schema; its log:" >&2
    cat "$work/server.log" >&2
    exit 1
fi
sql -c "INSERT INTO $schema.accounts (name, password_hash, created_at_ms)
        SELECT 'u' || i, 'x', 0 FROM generate_series(1, 200) AS i" || exit 1

# One transaction's call: N messages u(a+i) -> u(a+100+i), and N acks of those recipients.
call() {
    local n=$1 i snd="" rcp="" ids="" bodies="" nulls="" zeros="" seqs=""
    for ((i = 0; i < n; i++)); do
        [ "$i" -gt 0 ] && { snd+=", "; rcp+=", "; ids+=", "; bodies+=", "; nulls+=", "; zeros+=", "; seqs+=", "; }
        snd+="'u' || (:a + $i)"
        rcp+="'u' || (:a + $((100 + i)))"
        ids+=":id::bigint + $i"
        bodies+="'\\x68656c6c6f20776f726c64'::bytea"
        nulls+="NULL"
        zeros+="0"
        seqs+="$((i + 1))"
    done
    echo '\set a random(1, 96)'
    echo '\set id random(1, 9000000000000000)'
    echo "SELECT * FROM breeze_write_batch(ARRAY[$snd]::text[], ARRAY[$rcp]::text[]," \
        "ARRAY[$ids]::bigint[], ARRAY[$bodies]::bytea[], ARRAY[$nulls]::bytea[]," \
        "ARRAY[$nulls]::bytea[], ARRAY[$nulls]::bytea[], ARRAY[$zeros]::bigint[]," \
        "ARRAY[$rcp]::text[], ARRAY[$seqs]::bigint[], true);"
}
echo 'SELECT 1;' > "$work/select1.sql"
for n in 0 1 4 16; do call "$n" > "$work/batch$n.sql"; done

# CPU ticks of every postgres process, its reaped children's included.
pg_ticks() {
    local p total=0
    for p in $(pgrep -x postgres); do
        total=$((total + $(awk '{print $14 + $15 + $16 + $17}' "/proc/$p/stat" 2> /dev/null || echo 0)))
    done
    echo "$total"
}
hz=$(getconf CLK_TCK)
options="-c search_path=$schema -c plan_cache_mode=force_generic_plan -c enable_seqscan=off"
[ "$async" = 1 ] && options+=" -c synchronous_commit=off"

printf '| transaction | per second | latency | PostgreSQL CPU per transaction |\n|---|---|---|---|\n'
for run in select1 batch0 batch1 batch4 batch16; do
    before=$(pg_ticks)
    out=$(PGOPTIONS="$options" pgbench -n -M prepared -c 1 -T "$seconds" -f "$work/$run.sql" "$base" 2>&1)
    # The backend's time reaches its parent's count once the parent has reaped it.
    sleep 0.5
    after=$(pg_ticks)
    tx=$(awk '/actually processed/ {print $NF}' <<< "$out")
    lat=$(awk '/latency average/ {print $4}' <<< "$out")
    if [ -z "$tx" ] || [ "$tx" = 0 ] || grep -qi "error" <<< "$out"; then
        echo "pg-batch-cost.sh: pgbench failed on $run:" >&2
        echo "$out" >&2
        exit 1
    fi
    us=$(((after - before) * 1000000 / hz / tx))
    case "$run" in
        select1) what="SELECT 1" ;;
        batch0) what="batch function, nothing to write" ;;
        batch1) what="batch function, 1 message and 1 ack" ;;
        *) what="batch function, ${run#batch} messages and ${run#batch} acks" ;;
    esac
    printf '| %s | %d | %s ms | %d µs |\n' "$what" "$((tx / seconds))" "$lat" "$us"
    printf '{"run":"%s","messages":%s,"async":%s,"seconds":%s,"transactions":%s,"latency_ms":%s,"postgres_cpu_us_per_tx":%s}\n' \
        "$run" "$([ "$run" = select1 ] && echo null || echo "${run#batch}")" \
        "$([ "$async" = 1 ] && echo true || echo false)" "$seconds" "$tx" "$lat" "$us" >> "$results"
done
echo "JSON lines: $results"
