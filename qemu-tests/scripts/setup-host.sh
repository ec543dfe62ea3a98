#!/usr/bin/env bash
# Installs what building and booting the appliance needs on a Debian host,
# skipping whatever is already there: Debian packages, the Rust pieces the
# kernel build needs (rust-src, bindgen >= 0.65) and the musl target for the
# static guest userspace; protoc builds diad's etcd client. Safe to run every time.
set -euo pipefail
step() { echo "==> $*" >&2; }

pkgs=(qemu-system-x86 linux-source-6.12 clang lld llvm libclang-dev flex bison bc
      libelf-dev libssl-dev cpio busybox-static e2fsprogs fio iperf3 python3 musl-tools
      debootstrap kmod protobuf-compiler)
missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    sudo_() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
    step "apt-get update (the package lists, under a minute)"
    sudo_ apt-get update -qq
    step "apt-get install ${#missing[@]} Debian packages (a few minutes on a fresh machine): ${missing[*]}"
    # One line per package as it is set up, so a long install is never silent.
    DEBIAN_FRONTEND=noninteractive sudo_ apt-get install -y -q "${missing[@]}" 2>&1 |
        awk '/^Setting up / { print "    " $3 > "/dev/stderr" } /^E: / { print > "/dev/stderr" }'
    [ "${PIPESTATUS[0]}" -eq 0 ] || { echo "apt-get install failed" >&2; exit 1; }
fi

for c in rust-src rustfmt clippy; do
    if ! rustup component list --installed 2>/dev/null | grep -q "^$c"; then
        step "rustup component add $c"
        rustup component add "$c"
    fi
done
if ! rustup target list --installed 2>/dev/null | grep -q '^x86_64-unknown-linux-musl$'; then
    step "rustup target add x86_64-unknown-linux-musl"
    rustup target add x86_64-unknown-linux-musl
fi
bindgen_ok() {
    command -v bindgen >/dev/null || return 1
    v=$(bindgen --version | awk '{print $2}')
    [ "$(printf '%s\n0.65.1\n' "$v" | sort -V | head -1)" = 0.65.1 ]
}
if ! bindgen_ok; then
    step "cargo install --locked bindgen-cli (a few minutes)"
    cargo install --locked bindgen-cli
fi
