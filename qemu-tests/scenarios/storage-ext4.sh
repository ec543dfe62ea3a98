# timeout: 600
# ext4 on a namespace: mkfs, mount, write files, sync, unmount, detach,
# reattach, fsck clean, read back identical checksums.
. /scenarios/lib.sh
load_dia
n=$(dia-guest-check ns-create 536870912 ext4vol)
dia-guest-check ns-attach "$n"
dev=/dev/dia0n$n
mkfs.ext4 -q -F "$dev"
mkdir -p /mnt/v
mount -t ext4 "$dev" /mnt/v
for i in 1 2 3 4 5; do dd if=/dev/urandom of=/mnt/v/f$i bs=64k count=$((i * 16)) 2>/dev/null; done
mkdir -p /mnt/v/dir && echo "hello from dia" > /mnt/v/dir/note
(cd /mnt/v && sha256sum f1 f2 f3 f4 f5 dir/note) > /tmp/sums
sync
# A mounted volume cannot be detached.
if dia-guest-check ns-detach "$n" 2>/tmp/err; then fail "detached a mounted namespace"; fi
expect_contains /tmp/err EBUSY
umount /mnt/v
dia-guest-check ns-detach "$n"
dia-guest-check ns-attach "$n"
e2fsck -f -n "$dev" > /tmp/fsck.txt 2>&1 || { cat /tmp/fsck.txt; fail "fsck found problems"; }
mount -t ext4 "$dev" /mnt/v
(cd /mnt/v && sha256sum -c /tmp/sums) || fail "checksums differ after reattach"
umount /mnt/v
dmesg_clean
