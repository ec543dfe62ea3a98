#!/usr/bin/env bash
# Builds the Rust-enabled guest kernel from Debian's linux-source-6.12 with the
# config fragment in qemu-tests/kernel/dia.config. The result lives in a cache
# directory keyed by a hash of every input, so a rebuild only happens when an
# input changes. Prints the kernel tree path on stdout when done.
#
# Usage: build-kernel.sh            (uses $DIA_CACHE or ~/.cache/dia)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cache=${DIA_CACHE:-$HOME/.cache/dia}
src_tar=/usr/src/linux-source-6.12.tar.xz
fragment=$here/kernel/dia.config
[ -f "$src_tar" ] || { echo "build-kernel: $src_tar missing (apt-get install linux-source-6.12)" >&2; exit 1; }
command -v bindgen >/dev/null || { echo "build-kernel: bindgen missing (cargo install --locked bindgen-cli)" >&2; exit 1; }

key=$( { dpkg-query -W -f='${Version}' linux-source-6.12; cat "$fragment" "$0"; rustc --version; bindgen --version; clang --version | head -1; } | sha256sum | cut -c1-16)
out=$cache/kernel-$key
if [ -f "$out/.done" ]; then echo "$out/linux"; exit 0; fi

log=$cache/kernel-$key.log
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
step "configuring (x86_64_defconfig + kvm_guest.config + dia.config)"
make x86_64_defconfig >>"$log" 2>&1
make kvm_guest.config >>"$log" 2>&1
scripts/kconfig/merge_config.sh -m .config "$fragment" >>"$log" 2>&1
make olddefconfig >>"$log" 2>&1
grep -q '^CONFIG_RUST=y' .config || { echo "build-kernel: CONFIG_RUST did not stick; see $log" >&2; exit 1; }
jobs=$(nproc)
step "compiling with -j$jobs (about 20 minutes on 2 cores on a cold cache)"
# Progress: one line per 500 objects built.
make -j"$jobs" bzImage modules 2>&1 | tee -a "$log" | awk '/^  (CC|RUSTC|LD|AR)/ { n++; if (n % 500 == 0) { printf "[kernel]   %d objects built\n", n > "/dev/stderr" } }'
[ "${PIPESTATUS[0]}" -eq 0 ] || { tail -40 "$log" >&2; exit 1; }
touch "$out/.done"
step "done: $out/linux/arch/x86/boot/bzImage"
echo "$out/linux"
