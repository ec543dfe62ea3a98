#!/usr/bin/env bash
# The emulated card's own cost per operation, in instructions: runs N and
# N/2 operations of each hot path (qemu-tests/card/examples/card_costs.rs,
# the same operations as the criterion benchmarks in card/benches/card.rs)
# under `valgrind --tool=callgrind` and prints a Markdown table of
# (instructions(N) - instructions(N/2)) / (N/2): setup (a pool written
# full, queues, ports) cancels out. Instruction counts do not depend on the
# machine's load or speed, so a regression shows in them where a timing
# would drown in noise; they count the card's user-space instructions only
# (the kernel's side of preadv/pwritev and eventfd writes is not in them).
#
# Usage: card-costs.sh [SCALE]    (multiplies every N; default 1)
# Needs valgrind (apt-get install valgrind). Takes about a minute.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
scale=${1:-1}
if ! [[ $scale =~ ^[1-9][0-9]*$ ]]; then
    echo "card-costs: SCALE must be a positive whole number, not '$scale'" >&2
    exit 2
fi
command -v valgrind >/dev/null || {
    echo "card-costs: valgrind is not installed" >&2
    exit 2
}
cd "$root"
echo "[card-costs] building the example (release)" >&2
cargo build --quiet --release -p dia-card-model --example card_costs >&2
bin=$root/target/release/examples/card_costs
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

# Instructions of one run: callgrind's total (the "totals:" line).
count() {
    local op=$1 n=$2 file=$out/$1.$2
    valgrind --tool=callgrind --callgrind-out-file="$file" --log-file="$file.log" \
        "$bin" "$op" "$n" ||
        {
            cat "$file.log" >&2
            exit 1
        }
    awk '/^totals:/ {print $2}' "$file"
}

echo "| operation | N | instructions per operation |"
echo "|---|---:|---:|"
# op, N, what the row measures.
while IFS='|' read -r op n what; do
    n=$((n * scale))
    half=$((n / 2))
    echo "[card-costs] $op: $half and $n operations" >&2
    a=$(count "$op" "$half")
    b=$(count "$op" "$n")
    per=$(awk -v a="$a" -v b="$b" -v h="$half" 'BEGIN {printf "%.0f", (b - a) / h}')
    echo "| $what | $n | $per |"
done <<'OPS'
read|20000|4 KiB read, submission entry to completion
write|20000|4 KiB write, submission entry to completion
read-threaded|20000|4 KiB read, engine on its thread (+ doorbell and interrupt wake-ups)
prp|100000|PRP walk of a 128 KiB transfer (32 pages)
frame|20000|1514-byte frame switched port to port
tso|2000|TSO frame of 30 x 1460 payload bytes cut and switched port to port (30 segments)
lookup|200000|switch lookup alone (unicast, 8 ports)
qos|200000|QoS decision (push + pick, 8 namespaces x 32 queued)
OPS
