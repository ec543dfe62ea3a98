# appliances: 3
# fabric: on
# timeout: 1800
# A volume with three copies on three appliances keeps serving a container through the loss of a copy: `volume create --mirrors 3` puts a copy on each appliance (and --mirrors 4 is refused with each appliance's room), fio --verify runs in a container on appliance 0 while appliance 1's card is killed (its link gone) and, later, while appliance 2 loses its power; the container sees no I/O error and no verify failure. While appliance 1's copy is away 16 MiB are written; when its card is back the card copies about what changed (its resync counter), not the volume, and the copies compare equal byte for byte. The lost appliance's copy is then removed by hand (`volume plex remove`).
. /scenarios/lib.sh
load_dia
start_diad
form_cluster lab

# verify_io NAME SECONDS: fio --verify in the container on the first 64 MiB.
verify_io() {
    nsenter -t "$pa" -m fio --name="$1" --filename="$dev" --direct=1 --rw=randrw --bs=4k --size=64M \
        --iodepth=4 --ioengine=libaio --time_based --runtime="$2" --verify=crc32c --verify_fatal=1 \
        --verify_backlog=256 --eta=never >"/tmp/$1.txt" 2>&1
}
# verify_io_bg NAME: the same in the background until fio_stop ($fio_pid is
# fio itself: nsenter execs it).
verify_io_bg() {
    nsenter -t "$pa" -m fio --name="$1" --filename="$dev" --direct=1 --rw=randrw --bs=4k --size=64M \
        --iodepth=4 --ioengine=libaio --time_based --runtime=600 --verify=crc32c --verify_fatal=1 \
        --verify_backlog=256 --eta=never >"/tmp/$1.txt" 2>&1 &
    fio_pid=$!
}
fio_clean() {
    grep -E "err= *0" "/tmp/$1.txt" >/dev/null || { cat "/tmp/$1.txt"; fail "fio $1 reported errors"; }
    log "fio $1: no I/O error, no verify failure"
}
pattern() { yes "dia mirror $1" | head -c 16777216; }
MiB=1048576

if [ "$DIA_NODE" = 0 ]; then
    expect_fail 1 "needs 4 different appliances" diaconfig volume create too-many --size 64M --mirrors 4
    diaconfig volume create db --size 256M --mirrors 3 | tee /tmp/create
    expect_contains /tmp/create "Health: healthy (3 copies;"
    for n in 0 1 2; do expect_contains /tmp/create "appliance-$n"; done
    diaconfig container create app
    pa=$(container_pid app)
    diaconfig volume attach db --container app
    dev=$(diaconfig -o json volume show db | jq -r .device)
    [ -b "$dev" ] || fail "no device for the mirrored volume"
    [ "$(mirror_plex db 0 path)" = local ] || fail "the copy on appliance-0 is not served from its own pool"
    verify_io warm 5 || { cat /tmp/warm.txt; fail "fio on the mirrored volume failed"; }
    fio_clean warm
    diaconfig volume show db
    verify_io_bg cut
fi
barrier io-running || fail "barrier io-running"

# Appliance 1's card dies (its guest stays): its copy goes out of sync.
if [ "$DIA_NODE" = 1 ]; then host_request card-kill || fail "card-kill"; fi
barrier card-1-gone || fail "barrier card-1-gone"
if [ "$DIA_NODE" = 0 ]; then
    wait_mirror_plex db 1 out-of-sync 30
    diaconfig volume show db | tee /tmp/degraded
    expect_contains /tmp/degraded "Health: degraded"
    # 16 MiB at 200 MiB, written while the copy is away.
    pattern away | nsenter -t "$pa" -m dd of="$dev" bs=1M seek=200 iflag=fullblock oflag=direct conv=fsync 2>/dev/null ||
        fail "writing while a copy is away"
    behind=$(mirror_plex db 1 behind_bytes)
    log "appliance-1's copy is $behind bytes behind"
    [ "$behind" -ge $((16 * MiB)) ] || fail "the copy on appliance-1 is only $behind bytes behind after 16 MiB were written"
fi
barrier written-away || fail "barrier written-away"
if [ "$DIA_NODE" = 1 ]; then
    host_request card-start || fail "card-start"
    wait_card_back
fi
barrier card-1-back || fail "barrier card-1-back"
if [ "$DIA_NODE" = 0 ]; then
    wait_mirror_plex db 1 in-sync 180
    copied=$(mirror_plex db 1 resync_bytes)
    log "resync copied $copied bytes to appliance-1 (16 MiB written at 200 MiB, fio on the first 64 MiB while it was away)"
    # What changed: the 16 MiB, plus at most the 64 MiB fio works on; not
    # the 256 MiB volume.
    [ "$copied" -ge $((16 * MiB)) ] || fail "resync copied $copied bytes, less than the 16 MiB written"
    [ "$copied" -le $((96 * MiB)) ] || fail "resync copied $copied bytes: more than what changed"
    # Some I/O with all three copies in sync again, then the verdict.
    sleep 5
    fio_stop "$fio_pid" /tmp/cut.txt
    log "fio cut: no I/O error, no verify failure"
    verify_io_bg power
    sleep 5
fi
barrier io-running-2 || fail "barrier io-running-2"

# Appliance 2 loses its power while the container writes and verifies.
if [ "$DIA_NODE" = 2 ]; then power_cut; fi
barrier two-gone || fail "barrier two-gone"
if [ "$DIA_NODE" = 0 ]; then
    wait_mirror_plex db 2 out-of-sync 30
    # Some I/O on the two copies left, then the verdict.
    sleep 5
    fio_stop "$fio_pid" /tmp/power.txt
    log "fio power: no I/O error, no verify failure"
    [ "$(mirror_plex db 1 state)" = in-sync ] || fail "appliance-1's copy left the sync"
    diaconfig volume show db
    # The bytes: the volume as the container sees it, and each copy left.
    sync
    want=$(dd if="$dev" bs=1M iflag=direct 2>/dev/null | sha256sum | cut -d' ' -f1)
    got=$(dd if="/dev/dia0n$(mirror_plex db 0 nsid)" bs=1M iflag=direct 2>/dev/null | sha256sum | cut -d' ' -f1)
    [ "$got" = "$want" ] || fail "appliance-0's copy ($got) differs from the volume ($want)"
    away=$(pattern away | sha256sum | cut -d' ' -f1)
    got=$(dd if="$dev" bs=1M skip=200 count=16 iflag=direct 2>/dev/null | sha256sum | cut -d' ' -f1)
    [ "$got" = "$away" ] || fail "the 16 MiB written while a copy was away read back wrong"
    etcdctl --endpoints "http://$seed:2379" put /scenario/db-sha256 "$want" >/dev/null || fail "etcdctl put"
    echo "$(mirror_plex db 1 nsid)" >/tmp/nsid1
    etcdctl --endpoints "http://$seed:2379" put /scenario/db-nsid-1 "$(cat /tmp/nsid1)" >/dev/null || fail "etcdctl put"
fi
barrier hashed || fail "barrier hashed"
if [ "$DIA_NODE" = 1 ]; then
    want=$(etcdctl --endpoints "http://$seed:2379" get --print-value-only /scenario/db-sha256)
    nsid=$(etcdctl --endpoints "http://$seed:2379" get --print-value-only /scenario/db-nsid-1)
    [ -b "/dev/dia0n$nsid" ] || fail "appliance-1's copy has no device here"
    got=$(dd if="/dev/dia0n$nsid" bs=1M iflag=direct 2>/dev/null | sha256sum | cut -d' ' -f1)
    [ "$got" = "$want" ] || fail "appliance-1's copy ($got) differs from the volume ($want) after the resync"
    log "appliance-1's copy equals the volume: $got"
fi
barrier compared || fail "barrier compared"
# The lost appliance's copy is removed by hand (no --rebuild-after here):
# two copies left, both in sync, and the volume goes on.
if [ "$DIA_NODE" = 0 ]; then
    expect_fail 1 "no copy on appliance 'appliance-9'" diaconfig volume plex remove db appliance-9
    diaconfig volume plex remove db appliance-2 | tee /tmp/removed
    expect_contains /tmp/removed "Health: healthy (2 copies"
    grep -q "appliance-2" /tmp/removed && fail "the removed copy is still listed"
    pattern after | nsenter -t "$pa" -m dd of="$dev" bs=1M seek=120 iflag=fullblock oflag=direct conv=fsync 2>/dev/null ||
        fail "writing after the copy was removed"
fi
barrier removed || fail "barrier removed"
dmesg_clean
