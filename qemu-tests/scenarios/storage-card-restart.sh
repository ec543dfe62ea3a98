# timeout: 600
# The card dies mid-I/O and comes back on the same pool: I/O in flight ends
# in errors (no hang), the driver resets the card, every write that was
# acknowledged before a flush is intact afterwards, and the loss of the
# unflushed ones is reported: while a user keeps the volume open, every
# write and flush fails; once its last user closed it, writes work again.
. /scenarios/lib.sh
load_dia
n=$(dia-guest-check ns-create 268435456 survivor)
dia-guest-check ns-attach "$n"
dev=/dev/dia0n$n
fio --name=before --filename=$dev --rw=randwrite --bs=4k --size=32M --iodepth=16 --ioengine=libaio \
    --direct=1 --verify=crc32c --do_verify=0 --verify_state_save=1 --end_fsync=1 > /tmp/fio1.txt \
    || { cat /tmp/fio1.txt; fail "initial write failed"; }
sync
# A user that keeps the volume open across the crash (as a mounted file
# system does): it is the one the loss is reported to.
exec 3<"$dev"
# Writes that will be in flight when the card dies.
fio --name=during --filename=$dev --offset=128M --rw=randwrite --bs=4k --size=64M --iodepth=16 \
    --ioengine=libaio --direct=1 --time_based --runtime=60 > /tmp/fio2.txt 2>&1 &
fio_pid=$!
sleep 2
host_request card-kill
within 60 wait $fio_pid
log "fio during the crash ended with $rc"
[ "$rc" -ne 0 ] || fail "I/O against a dead card did not report errors"
host_request card-start
# The next command resets the controller and recreates the I/O queues.
wait_card_back
[ -b "$dev" ] || fail "block device gone after the restart"
fio --name=before --filename=$dev --rw=randwrite --bs=4k --size=32M --iodepth=16 --ioengine=libaio \
    --direct=1 --verify=crc32c --verify_only=1 --verify_state_load=1 --verify_fatal=1 > /tmp/fio3.txt \
    || { cat /tmp/fio3.txt; fail "acknowledged data lost across the card restart"; }
# Writes of the 'during' run that the card had not flushed may be gone with
# its volatile cache: the driver says so, and while the volume stays open
# every write and flush fails (fsync reports it, nothing diverges silently).
dmesg | grep "restarted with writes not yet flushed" || fail "the lost cache was not reported"
for try in 1 2; do
    if dd if=/dev/urandom of=$dev bs=1M count=1 seek=10 oflag=direct conv=fsync 2>/tmp/dd.err; then
        fail "write $try after the card lost unflushed writes succeeded while the volume was open"
    fi
    log "write $try after the restart, volume still open: $(tail -1 /tmp/dd.err)"
done
# Its last user closes it: writes are accepted again.
exec 3<&-
dd if=/dev/urandom of=$dev bs=1M count=1 seek=10 oflag=direct conv=fsync 2>/dev/null || fail "no writes after the last user closed the volume"
dmesg | grep -q "writes and flushes accepted again" || fail "the driver did not log lifting the fence"
dmesg | grep -E "BUG:|Oops|Call Trace" && fail "kernel bug during the restart"
exit 0
