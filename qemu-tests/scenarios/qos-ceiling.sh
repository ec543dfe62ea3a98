# timeout: 400
# A tier's ceiling holds within 5 % while fio pushes harder, and moving the
# volume to another tier at run time takes effect within a second. Rates
# are the card's own counters over a measured window.
# On the debug kernel the guest's own rate is low and moves with the host's
# load (737-1200 IOPS seen), so there the tiers are set from the rate fio
# reaches with no ceiling: 30 % and 70 % of it (each ceiling must be below
# what fio can push, or the test measures the guest, not the card).
. /scenarios/lib.sh
cap=1000 room=3000
debug=
grep -q "kasan.fault=panic" /proc/cmdline && debug=1
load_dia
start_diad
diaconfig volume create v --size 256M
diaconfig container create c
diaconfig volume attach v --container c
dev=$(diaconfig -o value=device volume show v)
[ -b "$dev" ] || fail "no device for the volume ($dev)"
dd if=/dev/zero of="$dev" bs=1M count=64 oflag=direct 2>/dev/null
fio --name=push --filename="$dev" --rw=randread --bs=4k --iodepth=32 --ioengine=libaio --direct=1 \
    --size=64M --time_based --runtime=40 > /tmp/fio.txt 2>&1 &
fio_pid=$!
sleep 3
if [ -n "$debug" ]; then
    full=$(iops_of v 4)
    cap=$((full * 3 / 10)) room=$((full * 7 / 10))
    log "debug kernel: fio pushes $full IOPS with no ceiling; tiers at $cap and $room"
    [ "$cap" -ge 50 ] || fail "fio pushes only $full IOPS: too few to test a ceiling"
fi
diaconfig tier create capped --max-iops $cap
diaconfig tier create roomy --max-iops $room
diaconfig tier list
diaconfig volume set-tier v capped
sleep 1
r=$(iops_of v 4)
log "capped at $cap: measured $r IOPS"
within_pct "$r" $cap 5 || fail "ceiling $cap IOPS not held: $r"
diaconfig volume set-tier v roomy
sleep 1
r=$(iops_of v 4)
log "after set-tier roomy ($room): measured $r IOPS"
within_pct "$r" $room 5 || fail "new ceiling $room not in effect within a second: $r"
diaconfig volume stats v | tee /tmp/stats
expect_contains /tmp/stats "Throttled I/Os"
thr=$(diaconfig -o value=throttled volume stats v)
[ "$thr" -gt 0 ] || fail "no throttled I/Os counted"
kill "$fio_pid" 2>/dev/null || true
wait "$fio_pid" 2>/dev/null || true
expect_fail 1 "in use by v" diaconfig tier delete roomy
expect_fail 1 "built in" diaconfig tier delete gold
expect_fail 2 "1..=1000\|1 to 1000\|not in" diaconfig tier create w --weight 0
expect_fail 1 "above max-iops" diaconfig tier create odd --min-iops 10 --max-iops 5
dmesg_clean
