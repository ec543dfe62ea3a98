#!/usr/bin/env bash
# Builds the Rust-enabled guest kernel from Debian's linux-source-6.12 with the
# config fragment in qemu-tests/kernel/dia.config. The result lives in a cache
# directory keyed by a hash of every input, so a rebuild only happens when an
# input changes. Prints the kernel tree path on stdout when done.
#
# Usage: build-kernel.sh [debug]    (uses $DIA_CACHE or ~/.cache/dia)
#   debug: the debug flavour, dia.config plus kernel/debug.config (KASAN,
#   lockdep, ...), a second cached tree beside the plain one.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cache=${DIA_CACHE:-$HOME/.cache/dia}
src_tar=/usr/src/linux-source-6.12.tar.xz
flavour=${1:-plain}
fragments=("$here/kernel/dia.config")
case "$flavour" in
    plain) prefix=kernel ;;
    debug) prefix=kernel-debug; fragments+=("$here/kernel/debug.config") ;;
    *) echo "build-kernel: unknown flavour '$flavour' (plain or debug)" >&2; exit 2 ;;
esac
[ -f "$src_tar" ] || { echo "build-kernel: $src_tar missing (apt-get install linux-source-6.12)" >&2; exit 1; }
command -v bindgen >/dev/null || { echo "build-kernel: bindgen missing (cargo install --locked bindgen-cli)" >&2; exit 1; }

key=$( { dpkg-query -W -f='${Version}' linux-source-6.12; cat "${fragments[@]}" "$0"; rustc --version; bindgen --version; clang --version | head -1; } | sha256sum | cut -c1-16)
out=$cache/$prefix-$key
if [ -f "$out/.done" ]; then echo "$out/linux"; exit 0; fi

log=$cache/$prefix-$key.log
mkdir -p "$cache"
rm -rf "$out"; mkdir -p "$out"
step() { echo "[kernel] $*" >&2; }
step "unpacking linux-source-6.12 into $out (log: $log)"
tar -xf "$src_tar" -C "$out"
mv "$out"/linux-source-6.12 "$out/linux"
cd "$out/linux"
export LLVM=1
step "checking the Rust toolchain"
make rustavailable >"$log" 2>&1 || { cat "$log" >&2; exit 1; }
step "configuring (x86_64_defconfig + kvm_guest.config + ${fragments[*]##*/})"
make x86_64_defconfig >>"$log" 2>&1
make kvm_guest.config >>"$log" 2>&1
scripts/kconfig/merge_config.sh -m .config "${fragments[@]}" >>"$log" 2>&1
make olddefconfig >>"$log" 2>&1
# Every option a fragment asks for must survive olddefconfig: a dependency
# that silently drops one (say NVME_TARGET_TCP) fails here, not in a scenario.
for f in "${fragments[@]}"; do
    grep -E '^CONFIG_[A-Z0-9_]+=' "$f" | while IFS= read -r want; do
        grep -qx "$want" .config || { echo "build-kernel: $want from ${f##*/} did not stick; see $log" >&2; exit 1; }
    done
done
jobs=$(nproc)
step "compiling with -j$jobs (about 20 minutes on 2 cores on a cold cache)"
# Progress: one line per 500 objects built.
make -j"$jobs" bzImage modules 2>&1 | tee -a "$log" | awk '/^  (CC|RUSTC|LD|AR)/ { n++; if (n % 500 == 0) { printf "[kernel]   %d objects built\n", n > "/dev/stderr" } }'
[ "${PIPESTATUS[0]}" -eq 0 ] || { tail -40 "$log" >&2; exit 1; }
touch "$out/.done"
step "done: $out/linux/arch/x86/boot/bzImage"
echo "$out/linux"
