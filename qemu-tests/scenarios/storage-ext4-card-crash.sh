# timeout: 600
# ext4 on a volume while the card's firmware crashes and restarts: files
# synced before the crash read back byte for byte, and the writes the crash
# took are never lost silently: either the file system checks clean, or the
# loss was reported (a failed sync/fsync, ext4 aborting its journal).
. /scenarios/lib.sh
load_dia
n=$(dia-guest-check ns-create 268435456 fs)
dia-guest-check ns-attach "$n"
dev=/dev/dia0n$n
mkfs.ext4 -q -F "$dev"
mkdir -p /mnt/v
mount -t ext4 "$dev" /mnt/v
dd if=/dev/urandom of=/mnt/v/synced bs=64k count=64 2>/dev/null
sync
sum=$(sha256sum < /mnt/v/synced)
# Unsynced work in flight when the card dies: direct writes reach the
# card's volatile cache at once, the metadata waits for the journal.
(for i in $(seq 1 200); do dd if=/dev/urandom of=/mnt/v/late$i bs=16k count=4 oflag=direct 2>/dev/null || break; done) &
writer=$!
sleep 1
host_request card-kill
sleep 2
host_request card-start
wait_card_back
wait "$writer" 2>/dev/null || true
reported=no
sync 2>/tmp/sync.err || reported=yes
if dmesg | grep -qE "Aborting journal|EXT4-fs error|EXT4-fs \(.*\): .*I/O error|failing this flush"; then reported=yes; fi
log "loss reported: $reported ($(cat /tmp/sync.err))"
umount /mnt/v 2>/dev/null || umount -l /mnt/v
if e2fsck -f -n "$dev" > /tmp/fsck.txt 2>&1; then
    log "file system checks clean"
else
    [ "$reported" = yes ] || { cat /tmp/fsck.txt; fail "the file system is damaged and nothing reported a loss"; }
    log "fsck found what the reported loss explains; repairing"
    e2fsck -f -y "$dev" > /tmp/fsck2.txt 2>&1 || true
fi
mount -t ext4 "$dev" /mnt/v
[ "$(sha256sum < /mnt/v/synced)" = "$sum" ] || fail "a file synced before the crash changed"
umount /mnt/v
dmesg | grep -E "BUG:|Oops|Call Trace" && fail "kernel bug during the crash"
exit 0
