# service: on
# state-disk: on
# timeout: 480
# An appliance reboots and comes back as it was: its state disk keeps diad's
# desired state, the boot service loads the driver and starts diad, which
# reconciles the card; volumes, tiers and networks are all there, and a
# file written before the reboot reads back in a new container.
. /scenarios/lib.sh
grep -q " /var/lib/dia ext4 " /proc/mounts || fail "the state disk is not mounted at /var/lib/dia"
if [ "$DIA_BOOT" = 1 ]; then
    diaconfig tier create slow --max-iops 500
    diaconfig volume create keep --size 128M --tier slow
    diaconfig network create blue --vlan 100 --subnet 10.50.0.0/24 --gateway 10.50.0.1 \
        --range 10.50.0.10-10.50.0.20
    diaconfig container create web
    diaconfig volume attach keep --container web --fs ext4 --mount /data
    nsenter -t "$(container_pid web)" -m sh -c 'echo "written before the reboot" > /data/note && sync'
    diaconfig volume detach keep
    log "boot 1 done; rebooting"
    reboot_appliance
fi
[ "$DIA_BOOT" = 2 ] || fail "unexpected boot $DIA_BOOT"
/etc/init.d/dia status || fail "diad not running after the reboot"
diaconfig -o json volume list > /tmp/volumes
[ "$(jq -r '.volumes[].name' /tmp/volumes)" = keep ] || { cat /tmp/volumes; fail "volume keep lost"; }
diaconfig -o json volume show keep | tee /tmp/keep | jq -e '.tier == "slow"' >/dev/null ||
    { cat /tmp/keep; fail "the volume's tier was lost"; }
diaconfig -o json tier list | jq -r '.. | .name? // empty' | grep -qx slow || fail "tier slow lost"
diaconfig -o json network list | jq -r '.. | .name? // empty' | grep -qx blue || fail "network blue lost"
diaconfig container create web2
diaconfig volume attach keep --container web2 --fs ext4 --mount /data
note=$(nsenter -t "$(container_pid web2)" -m cat /data/note)
[ "$note" = "written before the reboot" ] || fail "the volume's data did not survive: '$note'"
diaconfig volume detach keep
dmesg_clean
