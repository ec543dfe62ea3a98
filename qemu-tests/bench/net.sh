# timeout: 1500
# Network benchmark, run by `qemu-tests/run bench net` (not a test): the
# same pair of endpoints, each in its own network namespace, once over dia
# (two diad containers, each with a card port on one VLAN network: the
# card switches between them), once over veth pairs in a Linux bridge in
# the guest (what a host without a card does) and once over QEMU's
# virtio-net (two virtio-net-pci NICs the harness joins outside the guest
# with a QEMU hub, each NIC moved into its own namespace). Both device
# paths leave the guest and are switched in a host userspace process (the
# card; QEMU), neither through the host kernel's network stack. The three
# pairs are set up once; then each is measured $rounds times (default 3),
# the setups taking turns and the order rotating each round, so slow
# spells of the host fall on all three alike (the harness reports medians
# and ranges). Per measurement: ping -c 20 -i 0.2, then iperf3 TCP for
# $BENCH_RUNTIME s (default 5) each way (JSON). A pair that cannot be set
# up or measured is reported as an error line (the harness shows it as
# n/a), not a failed bench. Output: @@NETJSON and @@NET lines, one set per
# round.
. /scenarios/lib.sh
runtime=${BENCH_RUNTIME:-5}
rounds=${BENCH_ROUNDS:-3}
# Bound on each step, so a hung path costs a line, not the whole bench.
limit=$((runtime + 60))

# new_netns: a process in a fresh network namespace; its pid in $ns_pid.
new_netns() {
    unshare -n sleep 100000 </dev/null >/dev/null 2>&1 &
    ns_pid=$!
    echo "$ns_pid" >> /tmp/netns.pids
    for _ in $(seq 1 50); do
        [ "$(readlink /proc/$ns_pid/ns/net)" != "$(readlink /proc/self/ns/net)" ] && return 0
        sleep 0.1
    done
    fail "no new network namespace (unshare -n)"
}

# ns PID CMD...: run CMD in the network namespace of PID, time-bounded.
ns() { p=$1; shift; timeout "$limit" nsenter -t "$p" -n "$@"; }

# measure SETUP PID_A PID_B IP_B: ping, then iperf3 a->b and b->a (-R),
# from the client in A's namespace to the server in B's.
measure() {
    setup=$1; a=$2; b=$3; ip_b=$4
    ns "$a" ping -c 20 -i 0.2 "$ip_b" > /tmp/ping.txt 2>&1 || { cat /tmp/ping.txt; fail "ping $ip_b failed"; }
    cat /tmp/ping.txt
    # busybox: "round-trip min/avg/max = ..."; iputils (Debian's, in the
    # appliance): "rtt min/avg/max/mdev = ...". The harness takes the second.
    echo "@@NET $setup ping $(grep -E '^(round-trip|rtt) ' /tmp/ping.txt)"
    nsenter -t "$b" -n iperf3 -s -p 5201 > /tmp/iperf-server.log 2>&1 &
    server=$!
    for _ in $(seq 1 100); do
        ns "$b" netstat -ltn 2>/dev/null | grep -q ':5201 ' && break
        sleep 0.1
    done
    for dir in a-to-b b-to-a; do
        r=""; [ "$dir" = b-to-a ] && r=-R
        rc=0
        ns "$a" iperf3 -c "$ip_b" -p 5201 -t "$runtime" -i 0 -J $r > /tmp/iperf.json 2>&1 || rc=$?
        echo "@@NETJSON $setup $dir $(tr -d '\n' < /tmp/iperf.json)"
        if [ "$rc" != 0 ]; then
            kill "$server" 2>/dev/null || true
            cat /tmp/iperf-server.log
            fail "iperf3 $dir exited $rc"
        fi
    done
    kill "$server" 2>/dev/null || true
    wait "$server" 2>/dev/null || true
}

# The peer: the two virtio-net NICs, each in a namespace of its own.
virtio_half() {
    nics=""
    for d in /sys/class/net/*; do
        drv=$(readlink "$d/device/driver" 2>/dev/null || true)
        [ "${drv##*/}" = virtio_net ] && nics="$nics ${d##*/}"
    done
    set -- $nics
    [ $# -eq 2 ] || fail "expected two virtio-net NICs, found $# ($nics)"
    n0=$1; n1=$2
    new_netns; pa=$ns_pid
    new_netns; pb=$ns_pid
    ip link set "$n0" netns "$pa"
    ip link set "$n1" netns "$pb"
    ns "$pa" ip link set lo up
    ns "$pb" ip link set lo up
    ns "$pa" ip addr add 10.78.0.1/24 dev "$n0"
    ns "$pb" ip addr add 10.78.0.2/24 dev "$n1"
    ns "$pa" ip link set "$n0" up
    ns "$pb" ip link set "$n1" up
    echo "$pa $pb 10.78.0.2" > /tmp/pair.virtio-net
}

# A host without a card: each namespace gets one end of a veth pair whose
# other end is in a Linux bridge in the guest; the guest kernel switches.
bridge_half() {
    ip link add br-bench type bridge
    ip link set br-bench up
    for side in a b; do
        new_netns
        eval "p$side=\$ns_pid"
        ip link add "eth-$side" type veth
        # busybox names the peer itself (vethN): read it from "eth-a@vethN".
        peer=$(ip -o link show "eth-$side" | sed -n "s/.*eth-$side@\([^:]*\):.*/\1/p")
        [ -n "$peer" ] || fail "no veth peer for eth-$side"
        ip link set "$peer" master br-bench
        ip link set "$peer" up
        ip link set "eth-$side" netns "$ns_pid"
    done
    ns "$pa" ip link set lo up
    ns "$pb" ip link set lo up
    ns "$pa" ip addr add 10.79.0.1/24 dev eth-a
    ns "$pb" ip addr add 10.79.0.2/24 dev eth-b
    ns "$pa" ip link set eth-a up
    ns "$pb" ip link set eth-b up
    echo "$pa $pb 10.79.0.2" > /tmp/pair.bridge
}

# dia: two containers, each with a card port on one VLAN network.
dia_half() {
    load_dia
    start_diad
    t=60
    timeout $t diaconfig network create bench --vlan 10 --subnet 10.77.0.0/24 --gateway 10.77.0.1 --range 10.77.0.10-10.77.0.20
    timeout $t diaconfig container create a
    timeout $t diaconfig container create b
    timeout $t diaconfig port attach --container a --network bench --ip 10.77.0.10
    timeout $t diaconfig port attach --container b --network bench --ip 10.77.0.11
    pa=$(container_pid a); pb=$(container_pid b)
    [ -n "$pa" ] && [ -n "$pb" ] || fail "no pids for containers a and b"
    ns "$pa" ip addr show
    echo "$pa $pb 10.77.0.11" > /tmp/pair.dia
}

# measure_pair SETUP: one round of SETUP's pair.
measure_pair() {
    read -r pa pb ip < "/tmp/pair.$1"
    measure "$1" "$pa" "$pb" "$ip"
}

# half SETUP FUNC [ARG...]: run FUNC ARG... in a subshell (set -e applies
# inside), its output streamed to the console; when it fails, say why as
# "@@NET SETUP error ..." and go on (a setup that fails leaves no
# /tmp/pair.SETUP, so it is not measured).
half() {
    name=$1; shift
    log "== $name $*"
    set +e
    { (set -e; "$@"); echo $? > /tmp/half.rc; } 2>&1 | tee /tmp/half.log
    set -e
    rc=$(cat /tmp/half.rc)
    if [ "$rc" != 0 ]; then
        why=$(sed -n 's/^\[scenario\] FAIL: //p' /tmp/half.log | tail -1)
        # Else a command's own error line (diaconfig: "error: ..."), else the last line.
        [ -n "$why" ] || why=$(grep -i '^error' /tmp/half.log | tail -1)
        [ -n "$why" ] || why=$(grep -v '^@@' /tmp/half.log | tail -1)
        [ -n "$why" ] && why="$why (exit $rc)"
        echo "@@NET $name error $why"
    fi
}

# The peers first: they do not depend on the driver.
half virtio-net virtio_half
half bridge bridge_half
half dia dia_half
order="dia virtio-net bridge"
for round in $(seq 1 "$rounds"); do
    for setup in $order; do
        [ -f "/tmp/pair.$setup" ] || continue
        half "$setup" measure_pair "$setup"
    done
    # Rotate: each setup goes first once in three rounds.
    set -- $order
    order="$2 $3 $1"
done
# The card's own counters: the frames went through it.
if [ -f /tmp/pair.dia ]; then
    timeout 60 diaconfig port stats a || true
    timeout 60 diaconfig port stats b || true
fi
[ -f /tmp/netns.pids ] && kill $(cat /tmp/netns.pids) 2>/dev/null || true
exit 0
