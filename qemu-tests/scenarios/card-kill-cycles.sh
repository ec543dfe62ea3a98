# timeout: 3600
# The card's firmware process is killed with SIGKILL (a real crash: no
# flush, no commit, no destructor) and started again, cycle after cycle,
# while fio writes with FUA (O_SYNC) and verifies on a raw volume and a
# writer fsyncs files on ext4 on another (issue 11). Each cycle:
# - fio on the raw volume sees no error and every block it wrote, before
#   and after the crash, verifies (a FUA write acknowledged is durable; the
#   commands the dead firmware held are retried after the driver's reset);
# - I/O comes back with no one issuing an ioctl (the driver's recovery work
#   notices the restarted card by itself);
# - ext4 either checks clean or the loss of unflushed writes was reported;
#   every file whose fsync succeeded reads back byte for byte;
# - a volume created after the crash reads as zeroes, and no block of a
#   deleted volume's data (a marker) ever appears in any volume.
# CI runs 6 cycles; DIA_GUEST_APPEND=appliance.kill_cycles=50 on the host
# runs the 50 recorded in docs/reliability.md.
. /scenarios/lib.sh
cycles=$(sed -n 's/.*appliance\.kill_cycles=\([0-9]*\).*/\1/p' /proc/cmdline)
cycles=${cycles:-6}
slot_mib=4
load_dia

# A volume full of a marker, then deleted: its chunks go back to the pool.
marker="DIA-SECRET-OF-A-DELETED-VOLUME."
s=$(dia-guest-check ns-create 33554432 secret) || fail "creating the secret volume"
dia-guest-check ns-attach "$s" >/dev/null || fail "attaching the secret volume"
yes "$marker" | tr -d '\n' | head -c 33554432 > /tmp/secret.bin
dd if=/tmp/secret.bin of=/dev/dia0n$s bs=1M oflag=direct conv=fsync 2>/dev/null || fail "writing the secret"
rm /tmp/secret.bin
dia-guest-check ns-detach "$s" >/dev/null && dia-guest-check ns-delete "$s" >/dev/null \
    || fail "deleting the secret volume"

raw_mib=$(( (cycles + 2) * slot_mib ))
r=$(dia-guest-check ns-create $(( raw_mib << 20 )) raw) || fail "creating the raw volume"
dia-guest-check ns-attach "$r" >/dev/null || fail "attaching the raw volume"
e=$(dia-guest-check ns-create 134217728 fs) || fail "creating the ext4 volume"
dia-guest-check ns-attach "$e" >/dev/null || fail "attaching the ext4 volume"
R=/dev/dia0n$r
E=/dev/dia0n$e
mkfs.ext4 -q -F "$E"
mkdir -p /mnt/e
mount -t ext4 "$E" /mnt/e || fail "mounting ext4"
: > /tmp/committed.txt

fio_slot() { # NAME SLOT EXTRA...: the slot's 4k FUA random writes, verified
    name=$1 slot=$2; shift 2
    fio --name="$name" --filename=$R --offset=$(( slot * slot_mib ))M --size=${slot_mib}M \
        --rw=randwrite --bs=4k --iodepth=8 --ioengine=libaio --direct=1 --sync=1 \
        --verify=crc32c --verify_fatal=1 --randseed=$(( 1000 + slot )) "$@"
}

# ext4 writer: 64 KiB files, each fsynced; a file's checksum is recorded
# only after its fsync succeeded (acknowledged after a completed flush).
ext4_writer() { # CYCLE
    i=0
    while [ ! -e /tmp/stop-writer ]; do
        i=$((i + 1))
        f=/mnt/e/c$1-$i
        dd if=/dev/urandom of=/tmp/w.bin bs=64k count=1 2>/dev/null
        dd if=/tmp/w.bin of="$f" bs=64k conv=fsync 2>/dev/null || break
        echo "$(sha256sum < /tmp/w.bin | cut -c1-64) $f" >> /tmp/committed.txt
    done
}

verify_committed() {
    while read -r sum f; do
        [ "$(sha256sum < "$f" 2>/dev/null | cut -c1-64)" = "$sum" ] \
            || fail "$f changed or vanished although its fsync succeeded"
    done < /tmp/committed.txt
}

resets_before=$(dmesg | grep -c "card reset complete" || true)
for k in $(seq 1 "$cycles"); do
    log_lines=$(dmesg | wc -l)
    rm -f /tmp/stop-writer
    fio_slot slot$k "$k" --rate_iops=400 > /tmp/fio$k.txt 2>&1 &
    fio_pid=$!
    ext4_writer "$k" &
    writer=$!
    # Kill somewhere in the first two seconds of the writes.
    sleep "0.$(( (k * 37) % 9 + 1 ))"
    sleep $(( k % 2 ))
    host_request card-kill || fail "cycle $k: card-kill"
    sleep 1
    host_request card-start || fail "cycle $k: card-start"
    # No ioctl from here: the driver's recovery brings I/O back by itself.
    wait $fio_pid || { cat /tmp/fio$k.txt; fail "cycle $k: fio saw an error or a verify failure"; }
    grep -q "err= 0" /tmp/fio$k.txt || { cat /tmp/fio$k.txt; fail "cycle $k: fio reported errors"; }
    touch /tmp/stop-writer
    wait $writer 2>/dev/null || true
    resets=$(dmesg | grep -c "card reset complete" || true)
    [ "$resets" -gt "$resets_before" ] || fail "cycle $k: the driver did not reset the restarted card"
    resets_before=$resets

    # ext4: clean, or the loss was reported; then back to a clean state.
    reported=no
    sync 2>/dev/null || reported=yes
    # Only this cycle's kernel messages count.
    if dmesg | tail -n +$((log_lines + 1)) \
        | grep -qE "Aborting journal|EXT4-fs error|failing this flush|${E#/dev/}: .*writes not yet flushed"; then
        reported=yes
    fi
    umount /mnt/e 2>/dev/null || umount -l /mnt/e
    if ! e2fsck -f -n "$E" > /tmp/fsck.txt 2>&1; then
        [ "$reported" = yes ] || { cat /tmp/fsck.txt; fail "cycle $k: ext4 damaged and no loss reported"; }
        e2fsck -f -y "$E" > /tmp/fsck2.txt 2>&1 || true
        e2fsck -f -n "$E" > /tmp/fsck3.txt 2>&1 || { cat /tmp/fsck3.txt; fail "cycle $k: ext4 not repairable"; }
    fi
    mount -t ext4 "$E" /mnt/e || fail "cycle $k: ext4 does not mount after the crash"
    verify_committed

    # A volume made after the crash reads as zeroes.
    z=$(dia-guest-check ns-create 4194304 zero$k) || fail "cycle $k: creating a fresh volume"
    dia-guest-check ns-attach "$z" >/dev/null || fail "cycle $k: attaching the fresh volume"
    cmp -n 4194304 /dev/zero /dev/dia0n$z || fail "cycle $k: a fresh volume holds data"
    dia-guest-check ns-detach "$z" >/dev/null && dia-guest-check ns-delete "$z" >/dev/null \
        || fail "cycle $k: deleting the fresh volume"
    log "cycle $k: fio clean, ext4 loss reported: $reported, $(wc -l < /tmp/committed.txt) files committed so far"
done

# Every slot written in every cycle still verifies after all later crashes.
for k in $(seq 1 "$cycles"); do
    fio_slot slot$k "$k" --verify_only=1 > /tmp/vo$k.txt 2>&1 \
        || { cat /tmp/vo$k.txt; fail "slot $k no longer verifies after later crashes"; }
done
verify_committed
umount /mnt/e
# The raw volume's never-written tail reads as zeroes; no volume shows the
# deleted volume's marker anywhere.
tail_off=$(( (cycles + 1) * slot_mib ))
dd if=$R of=/tmp/tail.bin bs=1M skip=$tail_off count=$slot_mib 2>/dev/null
cmp -n $(( slot_mib << 20 )) /dev/zero /tmp/tail.bin || fail "the raw volume's unwritten tail is not zero"
for dev in "$R" "$E"; do
    if grep -c -a "$marker" "$dev" > /tmp/hits.txt; then
        fail "$dev shows the deleted volume's data ($(cat /tmp/hits.txt) lines)"
    fi
done
dmesg | grep -E "BUG:|Oops|Call Trace|KASAN" && fail "kernel bug during the crash cycles"
log "$cycles kill -9 cycles: no acknowledged write lost, no foreign data, I/O back without an ioctl"
exit 0
