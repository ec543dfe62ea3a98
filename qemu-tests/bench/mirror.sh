# appliances: 3
# fabric: on
# timeout: 3600
# Mirror benchmark, run by `qemu-tests/run bench mirror` (not a test): three
# appliances of one cluster. On appliance 0, the same fio jobs against a
# volume with one copy in its own pool (single), one with two copies
# (mirror-2: appliance 0 and 1) and one with three (mirror-3: appliances 0,
# 1 and 2); each mirror's first copy is appliance 0's own, so reads stay
# local as they would for a container placed with its data. Rounds rotate
# the order, as in storage.sh; results go to appliance 0's console as
# @@BENCH lines. Then the resync rate: mirror-3 is flushed, appliance 2's
# card is killed, 256 MiB are written to mirror-3, the card comes back and
# appliance 0 times the copy (an @@MD line).
. /scenarios/lib.sh
load_dia
start_diad
size=512M
form_cluster bench
if [ "$DIA_NODE" = 0 ]; then
    diaconfig volume create single --size $size --node appliance-0
    diaconfig volume create mirror-2 --size $size --mirrors 2 --node appliance-0
    diaconfig volume create mirror-3 --size $size --mirrors 3 --node appliance-0
    diaconfig container create bench
    for v in single mirror-2 mirror-3; do diaconfig volume attach $v --container bench; done
    dev_of() { diaconfig -o json volume show "$1" | jq -r .device; }
    devices="mirror-3:$(dev_of mirror-3) mirror-2:$(dev_of mirror-2) single:$(dev_of single)"
    runtime=${BENCH_RUNTIME:-8}
    rounds=${BENCH_ROUNDS:-3}
    bench_prefill
    bench_common_jobs
    diaconfig volume show mirror-3
    barrier measured || fail "barrier measured"
else
    # The others serve while appliance 0 measures, much longer than one
    # barrier's wait: they wait again until it is done.
    until barrier measured; do :; done
fi
if [ "$DIA_NODE" = 0 ]; then
    dev=$(diaconfig -o json volume show mirror-3 | jq -r .device)
    # A Flush first: what the benchmark wrote is durable on every copy, so
    # only what is written while the card is away is to be copied (the
    # card counts writes not flushed on a copy that fails as missed).
    dd if=/dev/zero of="$dev" bs=4k count=0 conv=fsync 2>/dev/null || fail "flushing mirror-3"
fi
barrier flushed || fail "barrier flushed"
if [ "$DIA_NODE" = 2 ]; then host_request card-kill || fail "card-kill"; fi
barrier card-2-gone || fail "barrier card-2-gone"
if [ "$DIA_NODE" = 0 ]; then
    fio --name=away --filename="$dev" --rw=write --bs=1M --iodepth=8 --ioengine=libaio --direct=1 \
        --size=256M --offset=128M > /dev/null || fail "writing while a copy is away"
    [ "$(mirror_plex mirror-3 2 state)" != in-sync ] || fail "appliance-2's copy is still in sync with its card gone"
    before=$(mirror_plex mirror-3 2 resync_bytes)
    behind=$(mirror_plex mirror-3 2 behind_bytes)
fi
barrier written || fail "barrier written"
if [ "$DIA_NODE" = 2 ]; then
    host_request card-start || fail "card-start"
    wait_card_back
fi
if [ "$DIA_NODE" = 0 ]; then
    # From the first copied byte to in sync, polled every 0.1 s (the
    # reconnect after the card's restart is not counted).
    first=
    for _ in $(seq 1 3000); do
        b=$(mirror_plex mirror-3 2 resync_bytes)
        [ -z "$first" ] && [ "$b" -gt "$before" ] && first=$(now_ms)
        [ "$(mirror_plex mirror-3 2 state)" = in-sync ] && break
        sleep 0.1
    done
    end=$(now_ms)
    [ "$(mirror_plex mirror-3 2 state)" = in-sync ] || fail "appliance-2's copy did not resync"
    [ -n "$first" ] || first=$end
    copied=$(( $(mirror_plex mirror-3 2 resync_bytes) - before ))
    ms=$(( end - first ))
    [ "$ms" -gt 0 ] || ms=100
    echo "@@MD"
    echo "@@MD Resync: $((copied / 1048576)) MiB copied to appliance-2's copy of mirror-3 ($((behind / 1048576)) MiB behind after 256 MiB were written while its card was away; 512 MiB volume) in $ms ms from the first copied byte to in sync (polled every 0.1 s): $(( copied / 1048576 * 1000 / ms )) MiB/s."
    barrier done || fail "barrier done"
else
    until barrier done; do :; done
fi
