# timeout: 400
# Escape attempts from inside a diad container, as root of its user namespace:
# diad's socket is out of reach (not in its root, not through /proc/PID/root)
# and answers only the appliance's root; no device node can be made (/dev/dia,
# a neighbour's disk); devtmpfs, proc and tmpfs cannot be mounted; with
# /dev/dia opened anyway the card's mutating ioctls get EPERM. Every attempt
# fails with EPERM, EACCES or ENOENT, and the card is unchanged.
. /scenarios/lib.sh
load_dia
start_diad

# The socket is root's alone, whatever diad's umask.
[ "$(stat -c %a /run/dia/diad.sock)" = 600 ] || fail "socket mode $(stat -c %a /run/dia/diad.sock)"
[ "$(stat -c %a /run/dia)" = 700 ] || fail "socket directory mode $(stat -c %a /run/dia)"

diaconfig volume create mine --size 64M
diaconfig volume create theirs --size 64M
diaconfig container create evil
diaconfig container create victim
diaconfig volume attach mine --container evil
diaconfig volume attach theirs --container victim --fs ext4 --mount /data
pe=$(container_pid evil)
pv=$(container_pid victim)
[ -n "$pe" ] && [ -n "$pv" ] || fail "no container pids ($pe, $pv)"
mine=$(diaconfig -o value=device volume show mine)
theirs=$(diaconfig -o value=device volume show theirs)
theirs_nsid=$(diaconfig -o value=nsid volume show theirs)
[ -n "$mine" ] && [ -n "$theirs" ] && [ -n "$theirs_nsid" ] || fail "volumes without devices"
nsenter -t "$pv" -m sh -c 'echo victim-secret > /data/secret && sync'
diad_pid=$(cat /run/diad.pid)
dia_major=$(( 0x$(stat -c %t /dev/dia) ))
dia_minor=$(( 0x$(stat -c %T /dev/dia) ))
disk=$(cat "/sys/class/block/${theirs##*/}/dev")
log "/dev/dia is $dia_major:$dia_minor, the victim's disk $theirs is $disk, diad is pid $diad_pid"

# What the card and diad hold before the attempts (compared at the end).
dia-guest-check ns-list >/tmp/ns.before
dia-guest-check port-list >/tmp/ports.before
# diad's volumes: what stays put (the pool use may move: ext4 initialises
# its inode tables in the background).
volumes() { diaconfig -o json volume list | jq -c '[.volumes[] | [.name, .nsid, .size_bytes, .device, .attachment]]'; }
volumes >/tmp/vols.before
cat /tmp/ns.before /tmp/vols.before

# in_evil CMD: CMD (a shell command line) as root of container evil, in all
# of its namespaces, user namespace included.
in_evil() { nsenter -t "$pe" -a sh -c "$1"; }

# attempt WHAT CMD: in_evil CMD must fail, with EPERM, EACCES or ENOENT
# (as the tools word them: "Operation not permitted", "Permission denied",
# "No such file or directory", mount's "permission denied" or "must be
# superuser", dia-guest-check's errno names).
attempt() {
    rc=0
    in_evil "$2" >/tmp/attempt 2>&1 || rc=$?
    [ "$rc" != 0 ] || { cat /tmp/attempt; fail "escape: $1 succeeded"; }
    grep -qiE "operation not permitted|permission denied|no such file|must be superuser|EPERM|EACCES|ENOENT" /tmp/attempt ||
        { cat /tmp/attempt; fail "$1 failed (exit $rc), but not with EPERM, EACCES or ENOENT"; }
    log "refused: $1: $(tr '\n' ' ' </tmp/attempt | head -c 200)"
}

# The container works (so the refusals below are not a broken container):
# root inside is an unprivileged uid outside, its own volume's node is
# readable, /tmp and /dev/null work, diaconfig and dia-guest-check are there.
[ "$(in_evil 'id -u')" = 0 ] || fail "not root inside the container"
outside=$(in_evil 'cat /proc/self/uid_map' | awk '$1 == 0 { print $2 }')
[ "${outside:-0}" -ge 100000 ] || fail "container root is host uid '${outside}'"
[ "$(in_evil "head -c 4096 $mine | wc -c")" = 4096 ] || fail "evil cannot read its own volume $mine"
in_evil 'echo probe > /tmp/probe && cat /tmp/probe >/dev/null && command -v diaconfig && command -v dia-guest-check' ||
    fail "the container's root file system is unusable"

# 1. diad's socket: not in the container's root, not reachable through the
# root of diad, of the appliance's init or of the neighbour, and not through
# the root of any process the container can see.
attempt "the socket by its path" "ls -l /run/dia/diad.sock"
attempt "diaconfig by the default path" "diaconfig card info"
attempt "the socket through diad's /proc/PID/root" "diaconfig --socket /proc/$diad_pid/root/run/dia/diad.sock card info"
attempt "the socket through init's /proc/1/root" "ls -l /proc/1/root/run/dia/diad.sock"
attempt "the neighbour's root" "cat /proc/$pv/root/data/secret"
attempt "the neighbour's mount namespace" "nsenter -t $pv -m cat /data/secret"
in_evil 'for r in /proc/[0-9]*/root; do [ -e "$r/run/dia" ] && echo "$r"; done; true' >/tmp/roots
[ -s /tmp/roots ] && { cat /tmp/roots; fail "a process root visible in the container leads to /run/dia"; }

# 2. The socket itself answers only the appliance's root: a process with a
# container's uid that can reach it (CAP_DAC_OVERRIDE), and root of another
# user namespace, get 403 with the API's error body.
expect_fail 1 "uid 100000 may not use the dia API" \
    setpriv --reuid=100000 --regid=100000 --clear-groups \
    --inh-caps=+dac_override --ambient-caps=+dac_override diaconfig card info
expect_fail 1 "another user namespace may not use the dia API" \
    unshare --user --map-root-user diaconfig container create sneaky
grep -q "API connection refused" /var/log/diad.log || fail "diad did not log the refusals"

# 3. Device nodes: /dev/dia and the neighbour's disk cannot be made (no
# CAP_MKNOD outside the user namespace), neither in /dev nor in /tmp; so
# neither can be opened.
attempt "mknod /dev/dia" "mknod /dev/dia c $dia_major $dia_minor"
attempt "mknod of /dev/dia in /tmp" "mknod /tmp/dia c $dia_major $dia_minor"
attempt "opening /dev/dia" "dia-guest-check ns-list"
attempt "ns-create through /dev/dia" "dia-guest-check ns-create 1048576 escape"
attempt "the neighbour's node" "head -c 512 $theirs"
attempt "mknod of the neighbour's disk" "mknod /tmp/disk b ${disk%:*} ${disk#*:}"
attempt "reading the neighbour's disk" "head -c 512 /tmp/disk"

# 4. Mounts: the mount namespace is the appliance's, so nothing mounts.
attempt "mount devtmpfs" "mount -t devtmpfs devtmpfs /mnt"
attempt "mount proc" "mount -t proc proc /mnt"
attempt "mount tmpfs" "mount -t tmpfs tmpfs /mnt"
attempt "remount /usr read-write" "mount -o remount,rw /usr"
attempt "unmount /proc" "umount /proc"
# Nor in namespaces of its own making (a nested user and mount namespace).
attempt "devtmpfs in a nested namespace" "unshare --user --map-root-user --mount mount -t devtmpfs devtmpfs /mnt"
attempt "mknod in a nested namespace" "unshare --user --map-root-user --mount mknod /tmp/dia c $dia_major $dia_minor"

# 5. /dev/dia handed over anyway (mode 0666 for a moment): root of the
# container opens it and may read, but every request that changes the card
# gets EPERM (it lacks CAP_SYS_ADMIN in the appliance's user namespace).
chmod 666 /dev/dia
rc=0
nsenter -t "$pe" -U dia-guest-check ns-list >/tmp/ns.evil 2>&1 || rc=$?
for req in "ns-create 1048576 escape" "ns-delete $theirs_nsid" "ns-detach $theirs_nsid" \
    "ns-set-qos $theirs_nsid --max-iops 1" "port-create 100 1500"; do
    r=0
    nsenter -t "$pe" -U dia-guest-check $req >/tmp/ioctl 2>&1 || r=$?
    # dia-guest-check names the errnos it knows, others by number (1: EPERM).
    if [ "$r" = 0 ] || ! grep -qE "EPERM|errno 1\$" /tmp/ioctl; then
        chmod 600 /dev/dia
        cat /tmp/ioctl
        fail "escape: dia-guest-check $req from the container's user namespace was not refused with EPERM"
    fi
    log "refused: $req: $(cat /tmp/ioctl)"
done
chmod 600 /dev/dia
[ "$rc" = 0 ] || { cat /tmp/ns.evil; fail "the container's root could not even read the opened node"; }
cmp -s /tmp/ns.evil /tmp/ns.before || fail "the read-only listing differs"

# Nothing changed: the card's namespaces and ports, diad's volumes, the
# neighbour's data.
dia-guest-check ns-list >/tmp/ns.after
dia-guest-check port-list >/tmp/ports.after
volumes >/tmp/vols.after
cmp /tmp/ns.before /tmp/ns.after || fail "the card's namespaces changed"
cmp /tmp/ports.before /tmp/ports.after || fail "the card's ports changed"
cmp /tmp/vols.before /tmp/vols.after || fail "diad's volumes changed"
diaconfig container list | tee /tmp/containers
grep -q sneaky /tmp/containers && fail "a refused caller created a container"
[ "$(nsenter -t "$pv" -m cat /data/secret)" = victim-secret ] || fail "the neighbour's data changed"
dmesg_clean
