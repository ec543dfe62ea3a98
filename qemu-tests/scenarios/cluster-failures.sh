# appliances: 3
# fabric: on
# timeout: 1500
# A cluster of three loses an appliance, then its etcd quorum, while a container writes and verifies a volume: appliance 2 loses its power (its QEMU and card killed) and `cluster status` shows it down within seconds while the store stays healthy, and it cannot be removed while it holds the only copy of a volume; then appliance 1's etcd stops too: changes are refused with a clear error on appliance 0 while fio --verify goes on there with no error; when appliance 1's etcd is back, changes work again and nothing was applied twice.
. /scenarios/lib.sh
load_dia
start_diad
form_cluster lab

# Appliance 0 writes and verifies its own volume throughout.
if [ "$DIA_NODE" = 0 ]; then
    diaconfig volume create busy --size 256M
    diaconfig container create app
    pa=$(container_pid app)
    diaconfig volume attach busy --container app
    dev=$(diaconfig -o json volume show busy | jq -r .device)
    nsenter -t "$pa" -m fio --name=busy --filename="$dev" --direct=1 --rw=randrw --bs=4k --size=128M \
        --iodepth=4 --ioengine=libaio --time_based --runtime=600 --verify=crc32c --verify_fatal=1 \
        --verify_backlog=256 --eta=never >/tmp/fio.txt 2>&1 &
    fio_pid=$!
fi
barrier io-running || fail "barrier io-running"

# Appliance 2 holds a volume, then loses its power (QEMU and card killed).
if [ "$DIA_NODE" = 2 ]; then
    diaconfig volume create stranded --size 16M
fi
barrier stranded || fail "barrier stranded"
if [ "$DIA_NODE" = 2 ]; then power_cut; fi
barrier two-gone || fail "barrier two-gone"
if [ "$DIA_NODE" = 0 ]; then
    start=$(now_ms)
    down=""
    for _ in $(seq 1 60); do
        diaconfig cluster status >/tmp/status 2>&1
        if grep -Eq "appliance-2 .* down " /tmp/status; then down=$(( $(now_ms) - start )); break; fi
        sleep 0.5
    done
    cat /tmp/status
    [ -n "$down" ] || fail "appliance-2 never showed down"
    log "appliance-2 shown down $down ms after its power was cut"
    [ "$down" -lt 15000 ] || fail "appliance-2 took $down ms to show down"
    expect_contains /tmp/status "state store: healthy"
    expect_fail 1 "holds the only copy of volumes stranded" diaconfig cluster remove appliance-2
    diaconfig volume create while-one-down --size 16M
fi
barrier saw-down || fail "barrier saw-down"

# Appliance 1's etcd stops: one member of three left, no quorum.
if [ "$DIA_NODE" = 1 ]; then pkill -x etcd; fi
barrier quorum-lost || fail "barrier quorum-lost"
if [ "$DIA_NODE" = 0 ]; then
    expect_fail 1 "cluster state store is unavailable" diaconfig volume create refused --size 16M
    expect_fail 1 "cluster state store is unavailable" diaconfig network create late --vlan 400 --subnet 10.40.0.0/24 --gateway 10.40.0.1 --range 10.40.0.10-10.40.0.20
    diaconfig cluster status >/tmp/status 2>&1 || true
    cat /tmp/status
    expect_contains /tmp/status "state store: no-quorum"
    # Nothing half-done on the card: the refused volume left no namespace.
    [ "$(diaconfig -o json volume list | jq '.orphans | length')" = 0 ] || fail "a refused change left a namespace"
    kill -0 "$fio_pid" 2>/dev/null || { cat /tmp/fio.txt; fail "fio stopped while quorum was lost"; }
fi
barrier refused || fail "barrier refused"
if [ "$DIA_NODE" = 1 ]; then
    # diad starts its etcd member again (cluster.toml) when it restarts.
    stop_diad
    start_diad
fi
barrier quorum-back || fail "barrier quorum-back"
if [ "$DIA_NODE" = 0 ]; then
    ok=0
    for _ in $(seq 1 60); do
        if diaconfig volume create after --size 16M >/tmp/out 2>&1; then ok=1; break; fi
        sleep 1
    done
    [ "$ok" = 1 ] || { cat /tmp/out; fail "changes still refused after quorum returned"; }
    diaconfig -o json volume list >/tmp/vols.json
    for v in busy while-one-down after; do
        [ "$(jq --arg v "$v" '[.volumes[] | select(.name == $v)] | length' /tmp/vols.json)" = 1 ] || fail "volume $v is not there exactly once"
    done
    [ "$(jq '[.volumes[] | select(.name == "refused")] | length' /tmp/vols.json)" = 0 ] || fail "a refused volume appeared"
    [ "$(diaconfig -o value=namespaces pool info)" = 3 ] || fail "the card holds other than the 3 volumes' namespaces"
    fio_stop "$fio_pid" /tmp/fio.txt
    log "fio: $(grep -E 'READ:|WRITE:' /tmp/fio.txt | tr -s ' ' | tr '\n' ' ')"
fi
barrier done || fail "barrier done"
dmesg_clean
