# timeout: 300
# A volume attached to a container with ext4 is mounted in that container
# only (not on the appliance, not in a neighbour), its device node exists in
# that container's /dev only; files written there survive detach, attach to
# another container and a diad restart, byte for byte.
. /scenarios/lib.sh
load_dia
start_diad
diaconfig volume create db --size 64M
diaconfig container create web
diaconfig container create other
diaconfig container list
pw=$(container_pid web)
po=$(container_pid other)
[ -n "$pw" ] && [ -n "$po" ] || fail "no container pids ($pw, $po)"
diaconfig volume attach db --container web --fs ext4 --mount /data | tee /tmp/att
expect_contains /tmp/att "web (ext4 at /data)"
nsenter -t "$pw" -m grep " /data ext4 " /proc/mounts || fail "not mounted in the container"
grep " /data " /proc/mounts && fail "the container's mount leaked to the appliance"
nsenter -t "$po" -m grep " /data " /proc/mounts && fail "the mount leaked to another container"
nsenter -t "$pw" -m test -b /dev/dia0n1 || fail "no device node in the container"
nsenter -t "$po" -m test -e /dev/dia0n1 && fail "the device node leaked to another container"
nsenter -t "$pw" -m sh -c 'dd if=/dev/urandom of=/data/blob bs=1M count=8 2>/dev/null && mkdir -p /data/d && echo hello > /data/d/note && sync'
want=$(nsenter -t "$pw" -m sha256sum /data/blob | cut -d' ' -f1)
expect_fail 1 "attached to container 'web'" diaconfig volume delete db
expect_fail 1 "has volumes attached (db)" diaconfig container delete web
diaconfig volume show db
diaconfig volume detach db
nsenter -t "$pw" -m grep " /data " /proc/mounts && fail "still mounted after detach"
[ -e /dev/dia0n1 ] && fail "block device still present after detach"
diaconfig volume attach db --container other --fs ext4 --mount /srv
got=$(nsenter -t "$po" -m sha256sum /srv/blob | cut -d' ' -f1)
[ "$want" = "$got" ] || fail "data changed across detach/attach ($want vs $got)"
nsenter -t "$po" -m cat /srv/d/note | grep -q hello || fail "small file lost"
# diad restarts: the state file brings the same view back.
stop_diad
start_diad
diaconfig volume show db | tee /tmp/show
expect_contains /tmp/show "other (ext4 at /srv)"
expect_contains /tmp/show "ready"
diaconfig -o json volume show db | grep -q '"device": "/dev/dia0n1"' || fail "json lacks the device"
diaconfig volume delete db --force
diaconfig volume list | tee /tmp/list
grep -q " db " /tmp/list && fail "volume still listed after delete"
diaconfig container delete web
diaconfig container delete other
dmesg_clean
