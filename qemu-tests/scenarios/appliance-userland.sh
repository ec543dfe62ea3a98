# service: on
# timeout: 420
# The appliance is a real Debian userland: the boot service loaded dia.ko
# with modprobe and started diad; modinfo documents the module; podman runs a
# container from the local image; etcd and nvme-cli run; rmmod dia with a
# volume mounted is refused and the volume keeps working.
. /scenarios/lib.sh

grep -q 'VERSION_ID="12"' /etc/os-release || fail "not Debian 12: $(cat /etc/os-release)"
log "root: $(grep PRETTY_NAME /etc/os-release)"
# The root image is read-only; this boot's writes land in a tmpfs overlay.
grep -q " / overlay " /proc/mounts || fail "the root is not the throwaway overlay"

# The boot service did the bring-up.
[ -c /dev/dia ] || fail "/dev/dia missing after boot"
grep -q "^dia " /proc/modules || fail "dia is not loaded"
/etc/init.d/dia status || fail "diad is not running after boot"
modinfo dia > /tmp/modinfo
expect_contains /tmp/modinfo "filename: *$(echo "/lib/modules/$(uname -r)/extra/dia.ko" | sed 's/\//\\\//g')"
expect_contains /tmp/modinfo "description: *Driver for the dia converged container IO card"
diaconfig card info | tee /tmp/card
expect_contains /tmp/card DIA-TEST-0001

# The tools the cluster and fabric work stands on.
etcd --version | tee /tmp/etcd
expect_contains /tmp/etcd "etcd Version"
nvme version | tee /tmp/nvme
expect_contains /tmp/nvme "nvme version"

# A container made by a real runtime, from the local image (no registry).
podman import --quiet /usr/share/dia/images/dia-tools.tar localhost/dia-tools >/dev/null
out=$(podman run --rm --network none localhost/dia-tools sh -c 'echo "hello from $(hostname) pid $$"')
log "podman: $out"
case "$out" in "hello from "*" pid 1") ;; *) fail "podman run printed '$out'" ;; esac

# rmmod with a mounted volume is refused (busy) and the volume keeps working.
diaconfig volume create keep --size 256M
diaconfig container create keeper
diaconfig volume attach keep --container keeper --fs ext4 --mount /data
pid=$(container_pid keeper)
in_ct() { nsenter -t "$pid" -m sh -c "$1"; }
in_ct 'echo "survives rmmod" > /data/note'
if rmmod dia 2>/tmp/rmmod; then fail "rmmod dia succeeded with a volume mounted"; fi
log "rmmod refused: $(cat /tmp/rmmod)"
grep -qi "in use\|busy" /tmp/rmmod || fail "rmmod did not say the module is busy"
grep -q "^dia " /proc/modules || fail "dia unloaded anyway"
in_ct 'dd if=/dev/urandom of=/data/blob bs=64k count=32 2>/dev/null && sync'
sum=$(in_ct 'sha256sum < /data/blob')
echo 3 > /proc/sys/vm/drop_caches
[ "$(in_ct 'sha256sum < /data/blob')" = "$sum" ] || fail "data changed after the refused rmmod"
[ "$(in_ct 'cat /data/note')" = "survives rmmod" ] || fail "note lost"
diaconfig volume detach keep
dmesg_clean
