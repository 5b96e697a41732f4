#!/usr/bin/env bash
# Starts a 3-node Breeze cluster on this machine (README, "Running a cluster"):
#   node 1: Breeze 127.0.0.1:7881, web http://127.0.0.1:8081/
#   node 2: Breeze 127.0.0.1:7882, web http://127.0.0.1:8082/
#   node 3: Breeze 127.0.0.1:7883, web http://127.0.0.1:8083/
# sharing presence over NATS and accounts and messages in PostgreSQL. Ctrl-C stops all three
# (each leaves the cluster cleanly); `kill -9` one of them to watch its users go offline on
# the others within the node timeout.
#
# Settings (environment): BREEZE_CLUSTER (default nats://127.0.0.1:4222), BREEZE_STORE
# (default postgres://postgres@127.0.0.1:5432/test), BREEZE_CLUSTER_NAME (default `local`),
# BREEZE_BIN (default: builds and runs target/debug/breeze-server), LOGS (default a fresh
# temporary folder; one file per node), BREEZE_WORKER_THREADS (default: this machine's CPUs
# shared out, at least one per node). Further arguments go to every node.
set -euo pipefail

nats=${BREEZE_CLUSTER:-nats://127.0.0.1:4222}
store=${BREEZE_STORE:-postgres://postgres@127.0.0.1:5432/test}
name=${BREEZE_CLUSTER_NAME:-local}
logs=${LOGS:-$(mktemp -d -t breeze-cluster.XXXXXX)}
# Three nodes on one machine: each its share of the CPUs, not a runtime thread per CPU each
# (on two cores, one each spent 5-24 % less CPU per message; BENCHMARKS.md, cluster).
workers=${BREEZE_WORKER_THREADS:-$(( $(nproc) / 3 > 0 ? $(nproc) / 3 : 1 ))}
mkdir -p "$logs"

if [[ -z ${BREEZE_BIN:-} ]]; then
    cd "$(dirname "$0")/.."
    cargo build -p breeze-server
    BREEZE_BIN=$PWD/target/debug/breeze-server
fi

# The nodes take their settings from the flags below, not from a BREEZE_* of this shell.
unset BREEZE_CLUSTER BREEZE_STORE BREEZE_CLUSTER_NAME BREEZE_NODE_ID BREEZE_LISTEN \
    BREEZE_HTTP_LISTEN BREEZE_DB

pids=()
stop() {
    trap - INT TERM EXIT
    echo "stopping nodes ${pids[*]:-}"
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    wait
}
trap stop INT TERM EXIT

for n in 1 2 3; do
    RUST_LOG=${RUST_LOG:-info} BREEZE_WORKER_THREADS=$workers "$BREEZE_BIN" \
        --listen "127.0.0.1:788$n" --http-listen "127.0.0.1:808$n" \
        --store "$store" --cluster "$nats" --cluster-name "$name" --node-id "$n" \
        "$@" 2>"$logs/node$n.log" &
    pids+=("$!")
    echo "node $n: pid $!, Breeze 127.0.0.1:788$n, web http://127.0.0.1:808$n/, log $logs/node$n.log"
done

# Any node that exits (a bad flag, NATS or PostgreSQL unreachable) ends the cluster, with
# its last words.
wait -n "${pids[@]}" || true
for n in 1 2 3; do
    if ! kill -0 "${pids[$((n - 1))]}" 2>/dev/null; then
        echo "node $n exited:" >&2
        tail -n 5 "$logs/node$n.log" >&2
    fi
done
exit 1
