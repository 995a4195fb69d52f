#!/usr/bin/env bash
# Runs an etcd client library's own test suite, python-etcd3 0.12.0 (from PyPI), against
# etcd and then against synod, and fails if a test that passes against etcd fails against
# synod. Needs python3 (with venv), etcd and etcdctl on PATH, and port 2379 free; takes
# about four minutes. Everything it makes lives in target/python-etcd3. It runs a release
# build of synod, or the binary SYNOD_BIN names (CI passes the debug build it has).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
work="$root/target/python-etcd3"
mkdir -p "$work"
cd "$work"

if (exec 3<>/dev/tcp/127.0.0.1/2379) 2>/dev/null; then
  echo "port 2379 is in use; the suite talks to 127.0.0.1:2379 only" >&2
  exit 2
fi

[ -d venv ] || python3 -m venv venv
# shellcheck disable=SC1091
. venv/bin/activate
# The suite's own pins where they still install on today's Python; grpcio and protobuf
# at the newest versions that run its generated code.
pip install -q "grpcio==1.85.3" "protobuf==3.20.3" "six==1.17.0" "tenacity==6.1.0" \
  "hypothesis==4.56.3" "pytest==6.2.5" "mock==5.2.0"
if [ ! -d etcd3-0.12.0 ]; then
  pip download -q --no-deps --no-binary :all: "etcd3==0.12.0"
  tar xzf etcd3-0.12.0.tar.gz
fi
synod=${SYNOD_BIN:-}
if [ -z "$synod" ]; then
  (cd "$root" && cargo build -q --release -p synod-server)
  synod="$root/target/release/synod"
fi
case $synod in /*) ;; *) synod="$root/$synod" ;; esac

server=""
cleanup() {
  if [ -n "$server" ]; then kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; fi
  rm -rf "$work/data"
}
trap cleanup EXIT INT TERM

# Runs the suite against the server started by "$@"; the passing tests go to $name.passed.
run_against() {
  local name=$1
  shift
  rm -rf "$work/data"
  "$@" >"$work/$name.server.log" 2>&1 &
  server=$!
  local deadline=$((SECONDS + 30))
  until ETCDCTL_API=3 etcdctl --endpoints=127.0.0.1:2379 --dial-timeout=1s endpoint health >/dev/null 2>&1; do
    if [ $SECONDS -ge $deadline ]; then echo "$name did not start; see $work/$name.server.log" >&2; exit 1; fi
    sleep 0.2
  done
  (cd etcd3-0.12.0 && PYTHON_ETCD_HTTP_URL=http://127.0.0.1:2379 PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION=python \
    timeout 900 python -m pytest -q -rA -p no:cacheprovider -W ignore tests/test_etcd3.py >"$work/$name.out" 2>&1) || true
  grep '^PASSED ' "$work/$name.out" | sed 's/^PASSED //' | sort >"$work/$name.passed"
  echo "$name: $(tail -1 "$work/$name.out")"
  kill "$server"
  wait "$server" 2>/dev/null || true
  server=""
}

flags=(--data-dir "$work/data" --listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379
  --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380
  --initial-cluster default=http://127.0.0.1:2380)
run_against etcd etcd "${flags[@]}"
run_against synod "$synod" "${flags[@]}"

# 76 of the suite's tests pass against etcd 3.4.23 here; far fewer means the suite itself
# did not run (an install or import failure), which must not pass for agreement.
if [ "$(wc -l <"$work/etcd.passed")" -lt 70 ]; then
  echo "only $(wc -l <"$work/etcd.passed") tests passed against etcd; see $work/etcd.out" >&2
  exit 1
fi
missing=$(comm -23 "$work/etcd.passed" "$work/synod.passed")
if [ -n "$missing" ]; then
  echo "passes against etcd but not against synod:"
  echo "$missing"
  exit 1
fi
echo "every test that passes against etcd passes against synod ($(wc -l <"$work/synod.passed") passed)"
