#!/usr/bin/env bash
# Runs examples/python/counter.py (the counter session protocol on grpcio, with stubs
# generated from synod's protos) against a local 3-member cluster, kills the leader with
# SIGKILL while it adds, throws away the reply to every 7th add (which is then retried),
# and checks that every add was applied exactly once: the values it
# got back are exactly 1..N and the counter ends at N. Needs python3 (with venv) and
# etcdctl; everything it makes lives in target/python-counter. It runs the release build of
# synod, or the binary SYNOD_BIN names (CI passes its debug build).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
work="$root/target/python-counter"
adds=${ADDS:-300}
mkdir -p "$work"
cd "$work"

[ -d venv ] || python3 -m venv venv
# shellcheck disable=SC1091
. venv/bin/activate
pip install -q "grpcio==1.85.4" "grpcio-tools==1.85.4"
rm -rf gen && mkdir gen
python -m grpc_tools.protoc -I "$root/crates/synod-api/proto" --python_out=gen --grpc_python_out=gen \
  etcdserverpb/rpc.proto mvccpb/kv.proto authpb/auth.proto synod/v1/counter.proto

synod=${SYNOD_BIN:-}
if [ -z "$synod" ]; then
  (cd "$root" && cargo build -q --release -p synod-server)
  synod="$root/target/release/synod"
fi
case $synod in /*) ;; *) synod="$root/$synod" ;; esac

base=$((40000 + $$ % 5000))
pids=()
example=""
cleanup() {
  for pid in "${pids[@]}" $example; do kill -9 "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
  rm -rf "$work/data"
}
trap cleanup EXIT
rm -rf data && mkdir data
cluster=""
for i in 0 1 2; do cluster+="${cluster:+,}m$i=http://127.0.0.1:$((base + 10 * i + 1))"; done
endpoints=""
for i in 0 1 2; do
  client="http://127.0.0.1:$((base + 10 * i))"
  endpoints+="${endpoints:+,}127.0.0.1:$((base + 10 * i))"
  "$synod" --name "m$i" --data-dir "data/m$i" --initial-cluster "$cluster" \
    --listen-client-urls "$client" --advertise-client-urls "$client" \
    --listen-peer-urls "http://127.0.0.1:$((base + 10 * i + 1))" \
    --initial-advertise-peer-urls "http://127.0.0.1:$((base + 10 * i + 1))" >"data/m$i.log" 2>&1 &
  pids+=($!)
  disown
done
ctl() { ETCDCTL_API=3 etcdctl --endpoints="$endpoints" --dial-timeout=1s --command-timeout=3s "$@"; }
for _ in $(seq 1 60); do ctl endpoint health >/dev/null 2>&1 && break; sleep 0.5; done
ctl endpoint health >/dev/null 2>&1 || { echo "python-counter: the cluster did not start" >&2; tail -n 5 data/m*.log >&2; exit 1; }

PYTHONPATH=gen python "$root/examples/python/counter.py" "$endpoints" hits "$adds" 7 >out.txt 2>err.txt &
example=$!
for _ in $(seq 1 200); do [ "$(wc -l <out.txt)" -ge $((adds / 5)) ] && break; sleep 0.1; done
# The endpoint whose member is the leader, in the order of $endpoints (m0, m1, m2).
leader=$(ctl endpoint status -w json | python3 -c '
import json, sys
statuses = json.load(sys.stdin)
leader = statuses[0]["Status"]["leader"]
print([s["Status"]["header"]["member_id"] for s in statuses].index(leader))')
echo "python-counter: killing the leader (m$leader) after $(wc -l <out.txt) adds"
kill -9 "${pids[$leader]}"
status=0
wait "$example" || status=$?
example=""
if [ "$status" -ne 0 ]; then
  echo "python-counter: the example failed ($status):" >&2
  tail -n 20 err.txt >&2
  exit 1
fi
python3 - "$adds" <<'PY'
import sys
adds = int(sys.argv[1])
lines = open("out.txt").read().split("\n")
values = sorted(int(line.split()[1]) for line in lines if line and not line.startswith("final"))
final = [int(line.split()[1]) for line in lines if line.startswith("final")]
assert values == list(range(1, adds + 1)), f"values are not exactly 1..{adds}: {len(values)} values, {len(set(values))} distinct"
assert final == [adds], f"the counter ended at {final}, not {adds}"
print(f"python-counter: {adds} adds through a leader kill, each applied exactly once")
PY
