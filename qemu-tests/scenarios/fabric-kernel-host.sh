# fabric: on
# timeout: 900
# The card serves its volume over NVMe/TCP to the guest kernel's own nvme-tcp host (through QEMU's user network): discovery lists it, connect, fio verifies, bytes cross between /dev/nvmeXnY and /dev/dia0nN both ways, digests on, and a garbage connection gets a C2HTermReq while the target keeps serving.
. /scenarios/lib.sh
load_dia

port=$(sed -n 's/.*appliance\.fabric_port=\([0-9]*\).*/\1/p' /proc/cmdline)
[ -n "$port" ] || fail "no appliance.fabric_port= on the kernel command line"
ns=$(dia-guest-check ns-create 268435456 fabric-vol)
dia-guest-check ns-attach "$ns"
[ -b "/dev/dia0n$ns" ] || fail "/dev/dia0n$ns missing"
nqn="nqn.2026-12.io.dia:DIA-TEST-0001:ns$ns"
log "volume $ns is subsystem $nqn on 10.0.2.2:$port"

# The guest's user-mode NIC: QEMU's slirp answers for 10.0.2.2 (the host).
nic=$(ip -o link show | awk -F': ' '$2 != "lo" { print $2; exit }')
[ -n "$nic" ] || fail "no network interface"
ip link set "$nic" up
ip addr add 10.0.2.15/24 dev "$nic"

uuid=$(cat /proc/sys/kernel/random/uuid)
host="-q nqn.2014-08.org.nvmexpress:uuid:$uuid -I $uuid"

# Discovery: the volume's subsystem is listed.
within 60 nvme discover -t tcp -a 10.0.2.2 -s "$port" $host >/tmp/disc 2>&1
[ "$rc" = 0 ] || { cat /tmp/disc; fail "nvme discover failed ($rc)"; }
cat /tmp/disc
expect_contains /tmp/disc "$nqn"
expect_contains /tmp/disc "trtype: *tcp"

# fabric_dev: the block device of the connected subsystem $nqn (waits up to 30 s).
fabric_dev() {
    for _ in $(seq 60); do
        for c in /sys/class/nvme/nvme*; do
            [ "$(cat "$c/subsysnqn" 2>/dev/null)" = "$nqn" ] || continue
            for b in "$c"/nvme*n*; do
                [ -e "$b" ] && [ -b "/dev/$(basename "$b")" ] && { basename "$b"; return 0; }
            done
        done
        sleep 0.5
    done
    return 1
}

# connect ARGS...: nvme connect to $nqn; sets $dev.
connect() {
    within 60 nvme connect -t tcp -a 10.0.2.2 -s "$port" -n "$nqn" $host "$@" >/tmp/conn 2>&1
    [ "$rc" = 0 ] || { cat /tmp/conn; dmesg | tail -20; fail "nvme connect $* failed ($rc)"; }
    dev=$(fabric_dev) || { dmesg | tail -20; fail "no block device for $nqn"; }
    log "connected $* -> /dev/$dev"
}

disconnect() {
    within 60 nvme disconnect -n "$nqn" >/tmp/disc-out 2>&1
    [ "$rc" = 0 ] || { cat /tmp/disc-out; fail "nvme disconnect failed"; }
    cat /tmp/disc-out
    expect_contains /tmp/disc-out "disconnected 1 controller"
    [ ! -e "/dev/$dev" ] || fail "/dev/$dev still there after disconnect"
}

connect
[ "$(cat /sys/block/$dev/size)" = "$(cat /sys/block/dia0n$ns/size)" ] || fail "fabric and local sizes differ"
[ "$(cat /sys/block/$dev/queue/logical_block_size)" = 4096 ] || fail "wrong block size over the fabric"
grep -q "write back" "/sys/block/$dev/queue/write_cache" || fail "volatile write cache not advertised"
cat /sys/class/nvme/*/transport /sys/class/nvme/*/model 2>/dev/null | sort -u

# fio writes and verifies (crc32c): small random writes (in-capsule data) and
# large sequential ones (R2T/H2CData, several C2HData PDUs per read).
common="--ioengine=libaio --direct=1 --verify=crc32c --verify_fatal=1 --do_verify=1 --group_reporting"
fio --name=rand4k --filename=/dev/$dev --rw=randwrite --bs=4k --iodepth=16 --size=8M $common \
    --name=seq256k --filename=/dev/$dev --offset=64M --rw=write --bs=256k --iodepth=4 --size=16M $common \
    > /tmp/fio.txt 2>&1 || { cat /tmp/fio.txt; dmesg | tail -30; fail "fio verify over the fabric failed"; }
grep -E "err=|IOPS" /tmp/fio.txt | head -4

# Fabric -> local: what the remote host writes is what the card's own driver reads.
dd if=/dev/urandom of=/tmp/p1 bs=1M count=4 2>/dev/null
dd if=/tmp/p1 of=/dev/$dev bs=1M seek=100 oflag=direct conv=fsync 2>/dev/null
want=$(sha256sum < /tmp/p1)
got=$(dd if=/dev/dia0n$ns bs=1M skip=100 count=4 iflag=direct 2>/dev/null | sha256sum)
[ "$want" = "$got" ] || fail "bytes written over the fabric differ on /dev/dia0n$ns"
log "fabric -> local: 4 MiB identical"
# Local -> fabric.
dd if=/dev/urandom of=/tmp/p2 bs=1M count=4 2>/dev/null
dd if=/tmp/p2 of=/dev/dia0n$ns bs=1M seek=150 oflag=direct conv=fsync 2>/dev/null
want2=$(sha256sum < /tmp/p2)
got=$(dd if=/dev/$dev bs=1M skip=150 count=4 iflag=direct 2>/dev/null | sha256sum)
[ "$want2" = "$got" ] || fail "bytes written locally differ over the fabric"
log "local -> fabric: 4 MiB identical"
# Write Zeroes and discard over the fabric read back as zeroes locally.
blkdiscard -o $((150 << 20)) -l $((1 << 20)) /dev/$dev
zero=$(dd if=/dev/zero bs=1M count=1 2>/dev/null | sha256sum)
[ "$(dd if=/dev/dia0n$ns bs=1M skip=150 count=1 iflag=direct 2>/dev/null | sha256sum)" = "$zero" ] \
    || fail "a discard over the fabric did not zero the blocks"
disconnect

# A peer that speaks garbage gets a C2HTermReq (PDU type 03) and the
# connection closed; one that sends half an ICReq and hangs up is dropped.
bash -c "exec 3<>/dev/tcp/10.0.2.2/$port && printf 'GET / HTTP/1.0\r\n\r\n' >&3 && timeout 20 cat <&3" >/tmp/term || true
first=$(od -An -tx1 -N1 /tmp/term | tr -d ' ')
[ "$first" = 03 ] || { od -An -tx1 /tmp/term | head; fail "garbage got no C2HTermReq (first byte '$first')"; }
log "garbage -> C2HTermReq, $(wc -c < /tmp/term) bytes, connection closed"
bash -c "exec 3<>/dev/tcp/10.0.2.2/$port && printf '\000\000\200\000\200\000' >&3" || true

# The target still serves: connect again, now with header and data digests.
connect -g -G
got=$(dd if=/dev/$dev bs=1M skip=100 count=4 iflag=direct 2>/dev/null | sha256sum)
[ "$want" = "$got" ] || fail "data read with digests differs"
fio --name=digests --filename=/dev/$dev --rw=randwrite --bs=64k --iodepth=8 --size=4M --offset=32M $common \
    > /tmp/fio2.txt 2>&1 || { cat /tmp/fio2.txt; dmesg | tail -30; fail "fio verify with digests failed"; }
grep -E "err=" /tmp/fio2.txt | head -2
disconnect

# A volume deleted locally leaves the discovery log.
dia-guest-check ns-detach "$ns"
dia-guest-check ns-delete "$ns"
within 60 nvme discover -t tcp -a 10.0.2.2 -s "$port" $host >/tmp/disc 2>&1
if grep -q "$nqn" /tmp/disc; then cat /tmp/disc; fail "deleted volume still discovered"; fi
log "deleted volume gone from discovery"
dmesg | grep -i "nvme" | tail -20
dmesg_clean
