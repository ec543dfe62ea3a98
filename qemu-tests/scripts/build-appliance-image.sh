#!/usr/bin/env bash
# Builds the appliance's root file system: Debian 12 (bookworm) from Debian's
# packages (debootstrap --variant=minbase, then the packages listed in
# qemu-tests/appliance/packages.txt), configured for an appliance without an
# init system of its own (podman on cgroupfs, no services started at install),
# with a local container image tarball, written to an ext4 image that the
# guests boot read-only (qemu-tests/appliance/README.md says how).
#
# The project's own binaries are NOT in it: they are laid over it at each boot
# from the initramfs, so a code change never rebuilds Debian. The image lives
# in a cache directory keyed by a hash of its inputs (this script, the package
# list, the files under qemu-tests/appliance/rootfs/), so it is built once per
# machine. Prints the image's path on stdout when done.
#
# Usage: build-appliance-image.sh          (uses $DIA_CACHE or ~/.cache/dia)
# The Debian mirror is the host's own (first URIs/deb line of its apt
# sources), or $DIA_DEBIAN_MIRROR.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cache=${DIA_CACHE:-$HOME/.cache/dia}
suite=bookworm
pkgfile=$here/appliance/packages.txt
overlay=$here/appliance/rootfs
step() { echo "[image] $*" >&2; }

for tool in debootstrap mkfs.ext4 sha256sum; do
    command -v "$tool" >/dev/null || { echo "build-appliance-image: $tool missing (qemu-tests/scripts/setup-host.sh installs it)" >&2; exit 1; }
done

key=$( { echo "$suite"; cat "$0" "$pkgfile"; (cd "$overlay" && find . -type f | LC_ALL=C sort | xargs sha256sum); } | sha256sum | cut -c1-16)
out=$cache/appliance-$key
if [ -f "$out/.done" ]; then echo "$out/rootfs.ext4"; exit 0; fi

mirror=${DIA_DEBIAN_MIRROR:-}
if [ -z "$mirror" ]; then
    mirror=$(cat /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '$1 == "URIs:" && $2 ~ /\/debian\/?$/ { print $2; exit }')
fi
if [ -z "$mirror" ]; then
    mirror=$(cat /etc/apt/sources.list 2>/dev/null | awk '$1 == "deb" && $3 == "'$suite'" { print $2; exit }')
fi
[ -n "$mirror" ] || { echo "build-appliance-image: no Debian mirror in the host's apt sources; set DIA_DEBIAN_MIRROR" >&2; exit 1; }

mapfile -t pkgs < <(sed -e 's/#.*//' -e '/^[[:space:]]*$/d' "$pkgfile" | awk '{ print $1 }')
log=$cache/appliance-$key.log
mkdir -p "$cache"
rm -rf "$out"; mkdir -p "$out"
root=$out/root
: >"$log"
t0=$(date +%s)

# progress LABEL: reads a tool's output, keeps it in the log, and shows one
# line every few seconds so a long step never goes silent.
progress() {
    local label=$1 last=0 n=0 now line
    while IFS= read -r line; do
        echo "$line" >>"$log"
        n=$((n + 1))
        now=$(date +%s)
        if [ $((now - last)) -ge 10 ]; then
            step "  $label: $((now - t0)) s, ${line:0:90}"
            last=$now
        fi
    done
}

step "debootstrap --variant=minbase $suite (about a minute; log: $log)"
debootstrap --variant=minbase "$suite" "$root" "$mirror" 2>&1 | progress debootstrap
[ "${PIPESTATUS[0]}" -eq 0 ] || { tail -30 "$log" >&2; exit 1; }

# No daemon may start inside the chroot while packages install (etcd-server's
# postinst would try): policy-rc.d says no, and there is no systemd to ask.
printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
chmod 755 "$root/usr/sbin/policy-rc.d"
cp /etc/resolv.conf "$root/etc/resolv.conf"
mount -t proc proc "$root/proc"
trap 'umount "$root/proc" 2>/dev/null || true' EXIT
step "apt-get install ${#pkgs[@]} packages into the image"
chroot "$root" apt-get update -q 2>&1 | progress apt-update
[ "${PIPESTATUS[0]}" -eq 0 ] || { tail -30 "$log" >&2; exit 1; }
DEBIAN_FRONTEND=noninteractive chroot "$root" apt-get install -y -q --no-install-recommends "${pkgs[@]}" 2>&1 | progress apt-install
[ "${PIPESTATUS[0]}" -eq 0 ] || { tail -30 "$log" >&2; exit 1; }
chroot "$root" apt-get clean
umount "$root/proc"
trap - EXIT
rm -f "$root/etc/resolv.conf" "$root/usr/sbin/policy-rc.d"
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/log/*.log

step "appliance configuration (qemu-tests/appliance/rootfs/)"
cp -a "$overlay"/. "$root"/
echo dia-appliance >"$root/etc/hostname"
# Every appliance boots with the same machine id; nothing here keys on it.
: >"$root/etc/machine-id"

# The local container image: a static busybox as a minimal root file system,
# imported with `podman import` inside the appliance (no registry is reached).
step "local container image (static busybox) for podman import"
img=$out/tools-image
mkdir -p "$img/bin" "$img/etc" "$img/tmp" "$img/proc" "$img/sys" "$img/dev"
cp "$root/bin/busybox" "$img/bin/busybox"
for applet in $(chroot "$root" /bin/busybox --list); do
    [ "$applet" = busybox ] || ln -sf busybox "$img/bin/$applet"
done
echo "root:x:0:0:root:/:/bin/sh" >"$img/etc/passwd"
mkdir -p "$root/usr/share/dia/images"
tar -C "$img" -cf "$root/usr/share/dia/images/dia-tools.tar" .
rm -rf "$img"

# ext4 image, sparse, with room to spare (the guest mounts it read-only).
mib=$(( $(du -sm "$root" | cut -f1) * 13 / 10 + 256 ))
step "writing the ext4 image ($mib MiB, sparse)"
mkfs.ext4 -q -F -L dia-root -d "$root" "$out/rootfs.ext4" "${mib}M" >>"$log" 2>&1 \
    || { tail -20 "$log" >&2; exit 1; }
rm -rf "$root"
touch "$out/.done"
step "done in $(( $(date +%s) - t0 )) s: $out/rootfs.ext4"
echo "$out/rootfs.ext4"
