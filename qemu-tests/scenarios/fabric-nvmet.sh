# fabric: on
# timeout: 900
# The card's NVMe/TCP initiator against Linux's own target (issue 14): the guest exports a loop device with nvmet over TCP; the card makes it a remote namespace, the driver attaches it as /dev/dia0nN, fio verifies on it, bytes cross both ways between /dev/dia0nN and nvmet's device; a closed port, an unknown subsystem or namespace and a malformed address get their errnos; a target that goes away gives errors (never a hang) and I/O works again when it returns.
. /scenarios/lib.sh
load_dia
hp=$(sed -n 's/.*appliance\.guest_fabric_port=\([0-9]*\).*/\1/p' /proc/cmdline)
[ -n "$hp" ] || fail "no appliance.guest_fabric_port= on the kernel command line"

# The guest's user-mode NIC; QEMU forwards the host's 127.0.0.1:$hp to 10.0.2.15:4420.
nic=$(ip -o link show | awk -F': ' '$2 != "lo" { print $2; exit }')
[ -n "$nic" ] || fail "no network interface"
ip link set "$nic" up
ip addr add 10.0.2.15/24 dev "$nic"

# nvmet: a 64 MiB loop device as namespace 1 of $nqn on 10.0.2.15:4420.
nqn="nqn.2026-12.io.dia:nvmet-peer"
truncate -s 64M /tmp/backing.img
loop=$(losetup -f --show /tmp/backing.img) || fail "losetup"
mountpoint -q /sys/kernel/config || mount -t configfs none /sys/kernel/config
cfg=/sys/kernel/config/nvmet
sub=$cfg/subsystems/$nqn
mkdir "$sub" && echo 1 > "$sub/attr_allow_any_host"
mkdir "$sub/namespaces/1"
printf %s "$loop" > "$sub/namespaces/1/device_path"
echo 1 > "$sub/namespaces/1/enable"
mkdir $cfg/ports/1
echo tcp > $cfg/ports/1/addr_trtype
echo ipv4 > $cfg/ports/1/addr_adrfam
echo 10.0.2.15 > $cfg/ports/1/addr_traddr
echo 4420 > $cfg/ports/1/addr_trsvcid
target_up() { ln -s "$sub" "$cfg/ports/1/subsystems/$nqn"; }
target_down() { rm "$cfg/ports/1/subsystems/$nqn"; }
target_up
log "nvmet exports $loop as $nqn namespace 1 (host port $hp)"

# What the card refuses, and how the driver says it.
expect_fail 1 EHOSTUNREACH dia-guest-check ns-create-remote 127.0.0.1 1 "$nqn" 1 closed-port
expect_fail 1 ECONNREFUSED dia-guest-check ns-create-remote 127.0.0.1 "$hp" nqn.2026-12.io.dia:nobody 1 no-subsystem
expect_fail 1 ECONNREFUSED dia-guest-check ns-create-remote 127.0.0.1 "$hp" "$nqn" 9 no-namespace
expect_fail 1 EINVAL dia-guest-check ns-create-remote not-an-ip "$hp" "$nqn" 1 bad-address
expect_fail 1 EINVAL dia-guest-check ns-create-remote 127.0.0.1 0 "$nqn" 1 port-zero

n=$(dia-guest-check ns-create-remote 127.0.0.1 "$hp" "$nqn" 1 remote) || fail "creating the remote namespace"
dia-guest-check ns-info "$n" | tee /tmp/info
expect_contains /tmp/info "label=remote"
expect_contains /tmp/info "block=512 blocks=131072"
dia-guest-check ns-attach "$n" >/dev/null || fail "attaching the remote namespace"
dev=/dev/dia0n$n
[ -b "$dev" ] || fail "$dev missing"
[ "$(cat /sys/block/dia0n$n/size)" = 131072 ] || fail "wrong size for $dev"

# fio writes and verifies through driver, card, NVMe/TCP, nvmet, loop.
common="--ioengine=libaio --direct=1 --verify=crc32c --verify_fatal=1 --do_verify=1 --group_reporting"
fio --name=rand4k --filename=$dev --rw=randwrite --bs=4k --iodepth=16 --size=8M $common \
    --name=seq256k --filename=$dev --offset=16M --rw=write --bs=256k --iodepth=4 --size=16M $common \
    > /tmp/fio.txt 2>&1 || { cat /tmp/fio.txt; dmesg | tail -30; fail "fio verify on the remote namespace failed"; }
grep -E "err=|IOPS" /tmp/fio.txt | head -4

# dia -> nvmet: what the card wrote is on nvmet's device.
dd if=/dev/urandom of=/tmp/p1 bs=1M count=4 2>/dev/null
dd if=/tmp/p1 of=$dev bs=1M seek=40 oflag=direct conv=fsync 2>/dev/null || fail "writing $dev"
[ "$(sha256sum < /tmp/p1)" = "$(dd if=$loop bs=1M skip=40 count=4 iflag=direct 2>/dev/null | sha256sum)" ] \
    || fail "bytes written to $dev differ on nvmet's device"
log "dia -> nvmet: 4 MiB identical"
# nvmet -> dia.
dd if=/dev/urandom of=/tmp/p2 bs=1M count=4 2>/dev/null
dd if=/tmp/p2 of=$loop bs=1M seek=50 oflag=direct conv=fsync 2>/dev/null || fail "writing $loop"
[ "$(sha256sum < /tmp/p2)" = "$(dd if=$dev bs=1M skip=50 count=4 iflag=direct 2>/dev/null | sha256sum)" ] \
    || fail "bytes on nvmet's device differ through $dev"
log "nvmet -> dia: 4 MiB identical"
# Never-written blocks read as zeroes.
zero=$(dd if=/dev/zero bs=1M count=1 2>/dev/null | sha256sum)
[ "$(dd if=$dev bs=1M skip=60 count=1 iflag=direct 2>/dev/null | sha256sum)" = "$zero" ] \
    || fail "unwritten blocks of the remote namespace are not zero"

# The target goes away: I/O fails within bounded time, no hang.
target_down
log "nvmet port closed"
within 120 dd if=/tmp/p1 of=$dev bs=1M seek=30 count=1 oflag=direct conv=fsync 2>/tmp/dd.err
[ "$rc" != 0 ] || fail "a write succeeded with the target gone"
log "write with the target gone: $(tail -1 /tmp/dd.err)"
# It comes back: I/O works again (the card reconnects), with the old bytes.
target_up
ok=no
for _ in $(seq 1 30); do
    if dd if=$dev of=/tmp/back bs=1M skip=40 count=4 iflag=direct 2>/dev/null \
        && [ "$(sha256sum < /tmp/back)" = "$(sha256sum < /tmp/p1)" ]; then ok=yes; break; fi
    sleep 1
done
[ "$ok" = yes ] || { dmesg | tail -20; fail "the remote namespace did not come back with its bytes"; }
dd if=/tmp/p2 of=$dev bs=1M seek=30 oflag=direct conv=fsync 2>/dev/null || fail "no writes after the target returned"
log "target back: reads and writes work again"

dia-guest-check ns-detach "$n" >/dev/null || fail "detaching"
dia-guest-check ns-delete "$n" >/dev/null || fail "deleting"
target_down
# Deleting the card's namespace left nvmet's data alone.
[ "$(sha256sum < /tmp/p2)" = "$(dd if=$loop bs=1M skip=30 count=4 iflag=direct 2>/dev/null | sha256sum)" ] \
    || fail "nvmet's device changed after the remote namespace was deleted"
dmesg_clean
log "pass"
