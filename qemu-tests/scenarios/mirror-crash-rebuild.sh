# appliances: 3
# fabric: on
# timeout: 1800
# Mirrored volumes through a crash of every card and the loss of an appliance. Crash: a 2-copy volume on appliances 0 and 1; appliance 1's card is killed, a writer on appliance 0 writes numbered 4 KiB blocks with O_DSYNC, appliance 0's own card is killed under it (SIGKILL, no flush) and both cards start again: every block whose write was acknowledged reads back, the copy that missed them resyncs from the newest one and the copies compare equal. Rebuild: a 2-copy volume on appliances 0 and 2 with --rebuild-after 5; appliance 2 loses its power while fio --verify runs on it; after 5 s its copy is replaced by a new one on appliance 1, filled while the volume is in use; fio sees no error and the new copy compares equal.
. /scenarios/lib.sh
load_dia
start_diad
form_cluster lab
# The volume the mirror_plex calls look at: db, then rb.
vol=db

# share KEY VALUE / shared KEY: a value for the other appliances (etcd).
share() { etcdctl --endpoints "http://$seed:2379" put "/scenario/$1" "$2" >/dev/null || fail "etcdctl put $1"; }
shared() { etcdctl --endpoints "http://$seed:2379" get --print-value-only "/scenario/$1"; }
sha_of() { dd if="$1" bs=1M iflag=direct 2>/dev/null | sha256sum | cut -d' ' -f1; }
block() { printf '%-4095s\n' "dia acknowledged block $1"; }

if [ "$DIA_NODE" = 0 ]; then
    diaconfig volume create db --size 64M --mirrors 2 --node appliance-0 | tee /tmp/create
    expect_contains /tmp/create "appliance-1"
    expect_contains /tmp/create "replaced by .volume plex replace."
    diaconfig container create app
    pa=$(container_pid app)
    diaconfig volume attach db --container app
    dev=$(diaconfig -o json volume show db | jq -r .device)
    [ -b "$dev" ] || fail "no device for the mirrored volume"
fi
barrier ready || fail "barrier ready"

# Crash of every card: appliance 1's first, then appliance 0's own under a
# writer whose writes are acknowledged one by one (O_DSYNC).
if [ "$DIA_NODE" = 1 ]; then host_request card-kill || fail "card-kill"; fi
barrier card-1-killed || fail "barrier card-1-killed"
if [ "$DIA_NODE" = 0 ]; then
    rm -f /tmp/stop /tmp/acked
    (
        i=0
        while [ ! -e /tmp/stop ] && [ "$i" -lt 4000 ]; do
            block "$i" | nsenter -t "$pa" -m dd of="$dev" bs=4096 seek="$i" count=1 oflag=direct,dsync conv=notrunc 2>/dev/null &&
                echo "$i" > /tmp/acked
            i=$((i + 1))
        done
    ) &
    writer=$!
    # The card learns of the lost copy from the first write it sends there.
    wait_mirror_plex "$vol" 1 out-of-sync 30
    sleep 2
    host_request card-kill || fail "card-kill on appliance 0"
    sleep 1
    host_request card-start || fail "card-start on appliance 0"
    wait_card_back
    sleep 3
    touch /tmp/stop
    wait "$writer" 2>/dev/null || true
    acked=$(cat /tmp/acked)
    log "the writer's last acknowledged block: $acked"
    [ "$acked" -gt 10 ] || fail "the writer got only $acked blocks acknowledged"
    j=0
    while [ "$j" -le "$acked" ]; do
        got=$(dd if="$dev" bs=4096 skip="$j" count=1 iflag=direct 2>/dev/null | sha256sum | cut -d' ' -f1)
        [ "$got" = "$(block "$j" | sha256sum | cut -d' ' -f1)" ] || fail "acknowledged block $j lost after the crash of every card"
        j=$((j + 1))
    done
    log "all $((acked + 1)) acknowledged blocks read back after both cards crashed"
    [ "$(mirror_plex "$vol" 1 state)" != in-sync ] || fail "appliance-1's copy is in sync although its card is down"
fi
barrier crashed || fail "barrier crashed"
if [ "$DIA_NODE" = 1 ]; then
    host_request card-start || fail "card-start"
    wait_card_back
fi
barrier card-1-back || fail "barrier card-1-back"
if [ "$DIA_NODE" = 0 ]; then
    wait_mirror_plex "$vol" 1 in-sync 120
    log "appliance-1's copy resynced: $(mirror_plex "$vol" 1 resync_bytes) bytes copied"
    sync
    share sha "$(sha_of "$dev")"
    share nsid-1 "$(mirror_plex "$vol" 1 nsid)"
    [ "$(sha_of "/dev/dia0n$(mirror_plex "$vol" 0 nsid)")" = "$(shared sha)" ] || fail "appliance-0's copy differs from the volume"
fi
barrier hashed || fail "barrier hashed"
if [ "$DIA_NODE" = 1 ]; then
    [ "$(sha_of "/dev/dia0n$(shared nsid-1)")" = "$(shared sha)" ] || fail "appliance-1's copy differs from the volume after its resync"
    log "appliance-1's copy equals the volume"
fi
barrier compared || fail "barrier compared"

# Rebuild: a second volume, rb, whose copies are on appliances 0 and 2
# (appliance 1 holds db's: less room) and which is rebuilt after 5 s;
# appliance 2 loses its power under fio --verify on rb, and rb's copy is
# rebuilt on appliance 1 while fio goes on.
if [ "$DIA_NODE" = 0 ]; then
    vol=rb
    diaconfig volume create rb --size 128M --mirrors 2 --rebuild-after 5 --node appliance-0 | tee /tmp/create
    expect_contains /tmp/create "rebuilt elsewhere"
    [ "$(mirror_plex "$vol" 2 state)" = in-sync ] || fail "rb has no copy on appliance-2"
    diaconfig volume attach rb --container app
    rdev=$(diaconfig -o json volume show rb | jq -r .device)
    nsenter -t "$pa" -m fio --name=rebuild --filename="$rdev" --direct=1 --rw=randrw --bs=4k --size=64M \
        --iodepth=4 --ioengine=libaio --time_based --runtime=600 --verify=crc32c --verify_fatal=1 \
        --verify_backlog=256 --eta=never >/tmp/rebuild.txt 2>&1 &
    fio_pid=$!
    sleep 3
fi
barrier io-running || fail "barrier io-running"
if [ "$DIA_NODE" = 2 ]; then power_cut; fi
barrier one-gone || fail "barrier one-gone"
if [ "$DIA_NODE" = 0 ]; then
    wait_mirror_plex "$vol" 1 in-sync 240
    diaconfig volume show rb | tee /tmp/rebuilt
    grep -q "appliance-2" /tmp/rebuilt && fail "the lost copy on appliance-2 is still listed"
    expect_contains /tmp/rebuilt "Health: healthy (2 copies"
    log "rebuilt on appliance-1: $(mirror_plex "$vol" 1 resync_bytes) bytes copied"
    # Some I/O on the rebuilt pair, then the verdict.
    sleep 5
    fio_stop "$fio_pid" /tmp/rebuild.txt
    sync
    share sha2 "$(sha_of "$rdev")"
    share nsid-rb "$(mirror_plex "$vol" 1 nsid)"
    [ "$(sha_of "/dev/dia0n$(mirror_plex "$vol" 0 nsid)")" = "$(shared sha2)" ] || fail "appliance-0's copy of rb differs after the rebuild"
fi
barrier rebuilt || fail "barrier rebuilt"
if [ "$DIA_NODE" = 1 ]; then
    [ "$(sha_of "/dev/dia0n$(shared nsid-rb)")" = "$(shared sha2)" ] || fail "the rebuilt copy on appliance-1 differs from the volume"
    log "the rebuilt copy of rb on appliance-1 equals the volume"
fi
barrier done || fail "barrier done"
dmesg_clean
