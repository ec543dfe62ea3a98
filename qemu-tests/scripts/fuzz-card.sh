#!/usr/bin/env bash
# Runs each cargo-fuzz target of the emulated card (qemu-tests/card/fuzz)
# for a bounded time, starting from the committed seeds, and prints one line
# per target: executions, seconds, and "ok" or where the crashing input was
# saved. Installs cargo-fuzz from crates.io when it is missing. cargo-fuzz
# passes nightly-only compiler flags (sanitizer, coverage); on a stable
# toolchain RUSTC_BOOTSTRAP=1 lets them through, so no nightly is needed.
#
# The targets (`cargo fuzz list`, from card/fuzz/Cargo.toml): admin, nvm_io,
# prp, port_tx, pool_meta, and fabric_pdu (the NVMe/TCP target's PDU parser
# and connection state machine).
#
# Usage: fuzz-card.sh [SECONDS]    (per target; default 20)
#   FUZZ_TARGETS="prp nvm_io" runs only those targets.
# What a run adds to a corpus stays in card/fuzz/work/TARGET (not
# committed; the next run starts from it too); crashes go to
# card/fuzz/artifacts/TARGET/, and `cargo fuzz run TARGET FILE` replays one.
# Exit status: 0 if no target crashed, 1 if one did, 2 on a usage error.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
secs=${1:-20}
if ! [[ $secs =~ ^[1-9][0-9]*$ ]]; then
    echo "fuzz-card: SECONDS must be a positive whole number, not '$secs'" >&2
    exit 2
fi
export RUSTC_BOOTSTRAP=1
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "[fuzz] installing cargo-fuzz" >&2
    cargo install --locked cargo-fuzz >&2
fi
cd "$here/card"
targets=${FUZZ_TARGETS:-$(cargo fuzz list)}
echo "[fuzz] building: $(echo $targets)" >&2
for t in $targets; do
    cargo fuzz build "$t" >&2
done
crashed=0
for t in $targets; do
    work=fuzz/work/$t
    log=fuzz/work/$t.log
    mkdir -p "$work" "fuzz/corpus/$t"
    start=$(date +%s)
    if cargo fuzz run "$t" "$work" "fuzz/corpus/$t" -- \
        -max_total_time="$secs" -timeout=10 -print_final_stats=1 >"$log" 2>&1; then
        result=ok
    else
        artifact=$(grep -o 'fuzz/artifacts/[^ ]*' "$log" | tail -1 || true)
        result="CRASH ${artifact:-(see $log)}"
        crashed=1
    fi
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    printf '%-10s %10s executions %5s s  %s\n' "$t" "${execs:-?}" "$(($(date +%s) - start))" "$result"
done
exit "$crashed"
