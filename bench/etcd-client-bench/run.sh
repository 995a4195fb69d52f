#!/bin/bash
# Puts and gets against a local 3-member etcd cluster and a local 3-member synod cluster,
# driven by etcd-client-bench (the etcd-client crate, not synod's code), alternating which
# system goes first, with the ratios synod/etcd. See README.md.
#
# Usage: bench/etcd-client-bench/run.sh        (env: KEYS=200000 SECONDS_PER=10 ROUNDS=2)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
KEYS=${KEYS:-200000}
SECONDS_PER=${SECONDS_PER:-10}
ROUNDS=${ROUNDS:-2}
command -v protoc >/dev/null || { echo "etcd-client's build needs protoc: apt-get install protobuf-compiler" >&2; exit 1; }
command -v etcd >/dev/null || { echo "needs etcd: apt-get install etcd-server" >&2; exit 1; }
(cd "$root" && cargo build --release -q -p synod-server)
(cd "$here" && CARGO_TARGET_DIR="$here/target" cargo build --release -q)
bench="$here/target/release/etcd-client-bench"
mkdir -p "$root/bench-out"
work=$(mktemp -d "$root/bench-out/etcd-client-bench-XXXXXX")
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# start_cluster NAME BINARY FIRST_PORT: three members on FIRST_PORT.. (client, peer pairs).
start_cluster() {
  local name=$1 binary=$2 port=$3 cluster="" endpoints="" i
  for i in 0 1 2; do cluster+="${cluster:+,}m$i=http://127.0.0.1:$((port + 2 * i + 1))"; done
  for i in 0 1 2; do
    local client="http://127.0.0.1:$((port + 2 * i))" peer="http://127.0.0.1:$((port + 2 * i + 1))"
    "$binary" --name "m$i" --data-dir "$work/$name-m$i" \
      --listen-client-urls "$client" --advertise-client-urls "$client" \
      --listen-peer-urls "$peer" --initial-advertise-peer-urls "$peer" \
      --initial-cluster "$cluster" --initial-cluster-state new --initial-cluster-token "$name" \
      2> "$work/$name-m$i.log" &
    pids+=($!)
    endpoints+="${endpoints:+,}$client"
  done
  eval "${name}_endpoints=$endpoints"
  local deadline=$((SECONDS + 30))
  until ETCDCTL_API=3 etcdctl --endpoints "$endpoints" endpoint health >/dev/null 2>&1; do
    if ((SECONDS > deadline)); then echo "$name did not become healthy; logs in $work" >&2; exit 1; fi
    sleep 0.2
  done
}

start_cluster etcd "$(command -v etcd)" 32379
start_cluster synod "$root/target/release/synod" 33379
echo "loading $KEYS keys into each" >&2
"$bench" load --endpoints "$etcd_endpoints" --keys "$KEYS" >&2
"$bench" load --endpoints "$synod_endpoints" --keys "$KEYS" >&2

# run SYSTEM WORKLOAD FLAGS...: one line of results into $work/results.
run() {
  local system=$1 workload=$2; shift 2
  local endpoints_var="${system}_endpoints" line
  line=$("$bench" "$workload" --endpoints "${!endpoints_var}" --keys "$KEYS" --seconds "$SECONDS_PER" "$@")
  echo "$system $line ${*:-}" | tee -a "$work/results" >&2
}
for round in $(seq "$ROUNDS"); do
  first=synod second=etcd
  if ((round % 2 == 0)); then first=etcd second=synod; fi
  for spec in "put" "put --clients 1 --conns 1" "get-l" "get-s"; do
    for system in $first $second; do run "$system" $spec; done
  done
done

echo "| workload | round | synod ops/s | etcd ops/s | ratio | synod p50 | etcd p50 | synod p99 | etcd p99 |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
awk '
  { shape = $2 (NF > 8 ? " (1 client)" : ""); n[$1, shape]++; key = shape SUBSEP n[$1, shape]
    ops[$1, key] = $6; p50[$1, key] = $7; p99[$1, key] = $8; if ($1 == "synod") order[++rows] = key }
  END { for (r = 1; r <= rows; r++) { k = order[r]; split(k, part, SUBSEP)
    printf "| %s | %s | %d | %d | %.2f× | %.2f ms | %.2f ms | %.2f ms | %.2f ms |\n", part[1], part[2],
      ops["synod", k], ops["etcd", k], ops["synod", k] / ops["etcd", k],
      p50["synod", k] / 1000, p50["etcd", k] / 1000, p99["synod", k] / 1000, p99["etcd", k] / 1000 } }
' "$work/results"
