# appliances: 3
# timeout: 300
# Three appliances share a management network (mgmt0, 192.168.77.0/24): every node pings every other, nodes 1 and 2 reach a TCP service on node 0, and node 2 is back on it after a reboot.
. /scenarios/lib.sh
[ "$DIA_NODES" = 3 ] || fail "expected DIA_NODES=3, got '$DIA_NODES'"
me=$(mgmt_addr_of "$DIA_NODE")
mac_of() { printf '52:54:00:dd:00:%02x' "$1"; }
[ "$DIA_MGMT_ADDR" = "$me" ] || fail "DIA_MGMT_ADDR is '$DIA_MGMT_ADDR', expected $me"
ip -o addr show dev mgmt0 | tee /tmp/addr
expect_contains /tmp/addr "inet $me/24"
ip -o link show dev mgmt0 | tee /tmp/link
expect_contains /tmp/link "link/ether $(mac_of "$DIA_NODE")"
expect_contains /tmp/link "state UP"

# ping_node N: node N answers on the management network, from its own MAC.
# ping -U: no kernel timestamps (SO_TIMESTAMP). Each ping that asks for them
# switches the receive path's timestamp static key on and off again, i.e.
# patches kernel text while frames arrive on the other vCPU, which
# multi-threaded TCG occasionally turns into an int3 oops in
# netif_receive_skb_list_internal (seen here on node 2's second boot).
ping_node() {
    peer=$(mgmt_addr_of "$1")
    # The first ping also resolves the peer's MAC (ARP).
    ok=0
    for _ in $(seq 1 10); do
        if ping -U -c 1 -W 1 -I mgmt0 "$peer" >/dev/null; then ok=1; break; fi
    done
    [ "$ok" = 1 ] || fail "node $DIA_NODE cannot reach node $1 at $peer"
    ping -U -c 3 -W 2 -I mgmt0 "$peer" || fail "pings to node $1 lost"
    ip neigh show "$peer" dev mgmt0 | tee /tmp/neigh
    expect_contains /tmp/neigh "lladdr $(mac_of "$1")"
}

if [ "$DIA_BOOT" = 1 ]; then
    # Node 0's service: reads one line from the client, keeps it, answers
    # with a greeting and 20000 numbered lines (about 109 KB, many TCP
    # segments).
    port=7070
    if [ "$DIA_NODE" = 0 ]; then
        cat >/tmp/serve.sh <<'EOF'
#!/bin/sh
read -r line
echo "$line" >>/tmp/heard
echo "node 0 heard: $line"
seq 1 20000
EOF
        chmod +x /tmp/serve.sh
        /bin/busybox nc -ll -p "$port" -e /tmp/serve.sh &
    fi
    barrier mgmt-up || fail "not every appliance got its management NIC up"

    for n in $(seq 0 $((DIA_NODES - 1))); do
        [ "$n" = "$DIA_NODE" ] || ping_node "$n"
    done
    barrier pinged || fail "not every appliance reached the others"

    if [ "$DIA_NODE" != 0 ]; then
        hello="hello from node $DIA_NODE at $me"
        within 60 sh -c "echo '$hello' | /bin/busybox nc -w 10 $(mgmt_addr_of 0) $port >/tmp/got"
        [ "$rc" = 0 ] || fail "nc to node 0's port $port exited $rc"
        [ "$(head -n 1 /tmp/got)" = "node 0 heard: $hello" ] || { head -n 3 /tmp/got; fail "node 0's greeting is wrong"; }
        [ "$(tail -n +2 /tmp/got | md5sum)" = "$(seq 1 20000 | md5sum)" ] || { wc -c /tmp/got; fail "node 0's data arrived damaged or short"; }
        log "node 0's service answered over the management network ($(wc -c </tmp/got) bytes)"
    fi
    barrier tcp-done || fail "not every client finished"
    if [ "$DIA_NODE" = 0 ]; then
        cat /tmp/heard
        expect_contains /tmp/heard "hello from node 1 at $(mgmt_addr_of 1)"
        expect_contains /tmp/heard "hello from node 2 at $(mgmt_addr_of 2)"
    fi
    # Node 2 reboots: its new QEMU is back on the segment (the same ports);
    # the others wait for it at the next barrier.
    [ "$DIA_NODE" = 2 ] && reboot_appliance
fi

barrier rebooted || fail "node 2 did not come back from its reboot"
if [ "$DIA_NODE" = 2 ]; then
    [ "$DIA_BOOT" = 2 ] || fail "node 2 is at boot '$DIA_BOOT', expected 2"
    ping_node 0
    ping_node 1
else
    ping_node 2
fi
barrier done || fail "not every appliance reached node 2 again"
dmesg_clean
