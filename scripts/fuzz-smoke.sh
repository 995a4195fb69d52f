#!/usr/bin/env bash
# Smoke-runs every fuzz target in fuzz/ for a short time, starting from the committed seed
# corpus, and fails if any target crashes (a panic, a failed assertion, an AddressSanitizer
# report, a timeout or running out of memory). See fuzz/README.md.
#
#   scripts/fuzz-smoke.sh                 # every target, 20 s each
#   FUZZ_SECONDS=60 scripts/fuzz-smoke.sh # longer
#   scripts/fuzz-smoke.sh etcd_request    # some targets only
#
# Needs only a stable Rust toolchain and a C++ compiler (libFuzzer is built from source).
# By default the targets are built without a sanitizer (`--sanitizer none`), which uses
# only flags stable rustc accepts: the crates fuzzed have no unsafe code, panics and failed
# assertions are caught without one, and it runs 5-7 times more inputs per second than
# AddressSanitizer. `FUZZ_SANITIZER=address` adds AddressSanitizer (for the unsafe code in
# dependencies): cargo-fuzz asks for it with `-Zsanitizer=address`, a nightly flag, so the
# script then sets RUSTC_BOOTSTRAP=1, which lets the stable compiler take it (stable ships
# the sanitizer runtimes).
#
# A crashing input is left in fuzz/artifacts/<target>/; reproduce it with
#   cargo fuzz run --sanitizer none <target> fuzz/artifacts/<target>/<file>
set -euo pipefail

seconds="${FUZZ_SECONDS:-20}"
sanitizer="${FUZZ_SANITIZER:-none}"
cargo_fuzz_version="${CARGO_FUZZ_VERSION:-0.13.2}"

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
if [ "$sanitizer" != none ]; then
    export RUSTC_BOOTSTRAP=1
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz-smoke: installing cargo-fuzz $cargo_fuzz_version"
    cargo install cargo-fuzz --locked --version "$cargo_fuzz_version"
fi

# cargo caches what rustc answered for a set of flags without keying it on RUSTC_BOOTSTRAP,
# so a sanitizer build once tried without it keeps failing on `-Z` even with it; the cache
# is rebuilt on the next build.
rm -f fuzz/target/.rustc_info.json

if [ "$#" -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo fuzz list)
fi
if [ "${#targets[@]}" -eq 0 ]; then
    echo "fuzz-smoke: no fuzz targets found" >&2
    exit 1
fi

start=$SECONDS
echo "fuzz-smoke: building ${targets[*]} (sanitizer: $sanitizer)"
cargo fuzz build --sanitizer "$sanitizer"
echo "fuzz-smoke: built in $((SECONDS - start)) s"

# New inputs go to a scratch directory, listed first, so that the committed corpus stays
# as it is; the committed seeds are read from the second directory.
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT

failed=()
for target in "${targets[@]}"; do
    if [ ! -d "fuzz/corpus/$target" ]; then
        echo "fuzz-smoke: $target has no seed corpus in fuzz/corpus/$target" >&2
        failed+=("$target")
        continue
    fi
    mkdir -p "$scratch/$target"
    echo "fuzz-smoke: fuzzing $target for $seconds s"
    log="$scratch/$target.log"
    options=(-max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1)
    if [ -f "fuzz/dicts/$target.dict" ]; then
        options+=(-dict="$root/fuzz/dicts/$target.dict")
    fi
    if cargo fuzz run --sanitizer "$sanitizer" "$target" "$scratch/$target" "$root/fuzz/corpus/$target" -- \
        "${options[@]}" >"$log" 2>&1; then
        grep -E '^(stat::number_of_executed_units|stat::average_exec_per_sec|Done)' "$log" | sed "s/^/  $target: /"
    else
        echo "fuzz-smoke: $target FAILED:" >&2
        # The panic and libFuzzer's verdict, then the end of the log (the stack trace is
        # long enough to push the panic message out of a plain tail).
        grep -E -A2 'panicked at|ERROR: (libFuzzer|AddressSanitizer)|^SUMMARY|Test unit written|^error' "$log" >&2 || true
        tail -n 40 "$log" >&2
        failed+=("$target")
    fi
done

echo "fuzz-smoke: done in $((SECONDS - start)) s"
if [ "${#failed[@]}" -gt 0 ]; then
    echo "fuzz-smoke: failing targets: ${failed[*]} (inputs in fuzz/artifacts/)" >&2
    exit 1
fi
echo "fuzz-smoke: all ${#targets[@]} targets passed"
