#!/bin/bash
# Full benchmark: build, floor, all workloads x 3 runs (backends interleaved), strace on `single`.
# Usage: bench/logbench/run_all.sh [extra logbench flags...]   (results in bench/logbench/results/)
# Data goes to $LOGBENCH_DATA (default bench/logbench/data): keep it on the disk under test.
set -euo pipefail
cd "$(dirname "$0")"
export CARGO_TARGET_DIR="$PWD/target"
cargo build --release 2>&1 | tail -1
B=$CARGO_TARGET_DIR/release/logbench
R="$PWD/results"; mkdir -p "$R"
DATA="${LOGBENCH_DATA:-$PWD/data}"
{ echo "date: $(date -Is)"; uname -r; df -hT "$DATA" 2>/dev/null | tail -1; nproc; cat /proc/loadavg; $B config; } > $R/env.txt
cat $R/env.txt
echo "== floor"; $B floor --runs 3 --data $DATA "$@" | tee $R/floor.txt
echo "== workloads"; rm -f $R/runs.tsv
$B run --runs 3 --data $DATA --out $R/runs.tsv "$@" | tee $R/workloads.txt
echo "== purge variant: raft-engine with 8 MiB files / 16 MiB purge threshold (files actually reclaimed)"
$B run --backend raft-engine --workload purge --runs 3 --data $DATA --out $R/runs-purge-smallfiles.tsv \
  --re-target-file-size 8388608 --re-purge-threshold 16777216 "$@" | tee $R/purge-smallfiles.txt
echo "== strace single"
for b in raft-engine redb synod; do
  strace -f -c -e trace=fdatasync,fsync,pwrite64,write,pwritev,writev,fallocate,ftruncate -o $R/strace-$b.txt \
    $B run --backend $b --workload single --runs 1 --data $DATA "$@" > /dev/null
  cat $R/strace-$b.txt
done
echo "load at end: $(cat /proc/loadavg)" | tee -a $R/env.txt
