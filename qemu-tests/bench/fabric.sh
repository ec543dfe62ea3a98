# appliances: 2
# fabric: on
# timeout: 3600
# Fabric benchmark, run by `qemu-tests/run bench fabric` (not a test): two
# appliances of one cluster. On appliance 0, the same fio jobs against a
# local volume (dia-local), a volume whose data is on appliance 1 reached
# through appliance 0's card initiator and appliance 1's card target
# (dia-remote), and another volume of appliance 1 through the guest
# kernel's own NVMe/TCP host connected to appliance 1's card target
# (kernel-tcp). Rounds rotate the order, as in storage.sh; results go to
# appliance 0's console as @@BENCH lines.
. /scenarios/lib.sh
load_dia
start_diad
seed=$(mgmt_addr_of 0)
size=512M
if [ "$DIA_NODE" = 0 ]; then diaconfig cluster create bench; fi
barrier created || fail "barrier created"
if [ "$DIA_NODE" = 1 ]; then
    diaconfig cluster join "$seed"
    diaconfig volume create remote --size $size
    diaconfig volume create ktcp --size $size
fi
barrier made || fail "barrier made"
if [ "$DIA_NODE" = 0 ]; then
    diaconfig volume create local --size $size --node appliance-0
    diaconfig container create bench
    diaconfig volume attach local --container bench
    diaconfig volume attach remote --container bench
    local_dev=$(diaconfig -o json volume show local | jq -r .device)
    remote_dev=$(diaconfig -o json volume show remote | jq -r .device)
    # The kernel's host reaches appliance 1's card target where its card
    # process listens on the host (QEMU's user network: the host is 10.0.2.2).
    member=$(ETCDCTL_API=3 etcdctl --endpoints 127.0.0.1:2379 get /dia/members/appliance-1 --print-value-only)
    port=$(echo "$member" | jq -r .fabric | sed 's/.*://')
    serial=$(echo "$member" | jq -r .serial)
    nsid=$(diaconfig -o json volume show ktcp | jq -r .nsid)
    nqn="nqn.2026-12.io.dia:$serial:ns$nsid"
    nic=$(ip -o link show | awk -F': ' '$2 != "lo" && $2 != "mgmt0" { print $2; exit }')
    ip link set "$nic" up
    ip addr add 10.0.2.15/24 dev "$nic"
    uuid=$(cat /proc/sys/kernel/random/uuid)
    nvme connect -t tcp -a 10.0.2.2 -s "$port" -n "$nqn" -q "nqn.2014-08.org.nvmexpress:uuid:$uuid" -I "$uuid" ||
        fail "nvme connect to $nqn at 10.0.2.2:$port failed"
    kdev=
    for _ in $(seq 60); do
        for c in /sys/class/nvme/nvme*; do
            [ "$(cat "$c/subsysnqn" 2>/dev/null)" = "$nqn" ] || continue
            for b in "$c"/nvme*n*; do [ -e "$b" ] && kdev=/dev/$(basename "$b"); done
        done
        [ -b "$kdev" ] && break
        sleep 0.5
    done
    [ -b "$kdev" ] || fail "no block device for $nqn"
    devices="dia-local:$local_dev dia-remote:$remote_dev kernel-tcp:$kdev"
    runtime=${BENCH_RUNTIME:-8}
    rounds=${BENCH_ROUNDS:-3}
    bench_prefill
    bench_common_jobs
    nvme disconnect -n "$nqn" >/dev/null || true
fi
if [ "$DIA_NODE" = 1 ]; then
    # Appliance 1 serves for the whole run, much longer than one barrier's
    # wait: it waits again until appliance 0 is done.
    until barrier done; do :; done
else
    barrier done || fail "barrier done"
fi
