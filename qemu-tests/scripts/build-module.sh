#!/usr/bin/env bash
# Builds dia.ko by hand, the way the harness does: against the cached guest
# kernel tree (built first if missing, see build-kernel.sh) or against the
# kernel tree in $KSRC, after checking the formatting with the kernel's
# rustfmt settings, with clippy as the compiler driver (warnings fail).
#
# Usage: qemu-tests/scripts/build-module.sh [extra make args]
#        KSRC=/path/to/linux qemu-tests/scripts/build-module.sh
# Output: dia.ko at the top of the repository.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
ksrc=${KSRC:-}
if [ -z "$ksrc" ]; then
    echo "==> guest kernel tree (cached; built first if missing, 20-30 min)" >&2
    ksrc=$("$repo/qemu-tests/scripts/build-kernel.sh")
fi
[ -f "$ksrc/Makefile" ] || { echo "build-module: $ksrc is not a kernel tree" >&2; exit 1; }
echo "==> rustfmt --check kmod/ (kernel settings)" >&2
rustfmt --check --edition 2021 --config-path "$ksrc/.rustfmt.toml" "$repo/kmod/dia_main.rs"
echo "==> make -C $ksrc M=$repo LLVM=1 CLIPPY=1 modules" >&2
make -C "$ksrc" M="$repo" LLVM=1 CLIPPY=1 modules -j"$(nproc)" "$@"
echo "==> $repo/dia.ko" >&2
