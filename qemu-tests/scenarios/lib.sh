# Helpers shared by scenario scripts (sourced; runs in the appliance under its /bin/sh, dash).
# A scenario fails as soon as a command fails (set -e) or `fail` is called.
set -e

# log MESSAGE: a step, with the guest's uptime like the kernel's own lines.
log() { echo "[scenario] [$(cut -d" " -f1 /proc/uptime)] $*"; }
fail() { echo "[scenario] FAIL: $*"; exit 1; }

# load_dia / start_diad / stop_diad: the appliance's service script does each
# (modprobe dia and wait for /dev/dia; start diad and wait for its socket;
# SIGTERM diad and wait until it is gone), so scenarios and the boot share
# one way of doing it.
load_dia() { /etc/init.d/dia load-module || fail "loading dia.ko (modprobe dia) failed"; }
start_diad() { /etc/init.d/dia start-diad || fail "diad did not start"; }
stop_diad() { /etc/init.d/dia stop-diad || fail "diad did not stop"; }

# reboot_appliance: reboots this appliance (a scenario with `# state-disk:
# on` keeps /var/lib/dia across it). The harness boots it again with the
# same card and disks, and the scenario runs again from the top with
# $DIA_BOOT one higher.
reboot_appliance() {
    sync
    echo "@@DIA-REBOOT"
    /bin/busybox reboot -f
    sleep 60
    fail "the appliance did not reboot"
}

# power_cut: this appliance loses power, card and all (a scenario of
# several appliances only): the harness kills its QEMU and its card process
# at once and the other appliances go on without it (their barriers wait
# for one node fewer). Nothing is synced first.
power_cut() {
    echo "@@DIA-POWER-CUT"
    sleep 600
    fail "the power was not cut"
}

# expect_contains FILE PATTERN: grep or fail, showing the file.
expect_contains() {
    grep -q -- "$2" "$1" || { cat "$1"; fail "'$1' lacks '$2'"; }
}

# dmesg_clean: no oops, BUG, WARNING or panic since boot.
dmesg_clean() {
    if dmesg | grep -E "BUG:|Oops|WARNING:|Call Trace|kernel panic|UBSAN|KASAN"; then
        fail "kernel log shows a bug"
    fi
}

# within SECONDS CMD...: run CMD; fail if it takes longer than SECONDS. Keeps its exit code in $rc.
within() {
    limit=$1; shift
    t0=$(date +%s)
    rc=0; "$@" || rc=$?
    took=$(( $(date +%s) - t0 ))
    [ "$took" -le "$limit" ] || fail "'$*' took ${took}s (limit ${limit}s)"
    return 0
}

# host_ask REQUEST: sends REQUEST to the harness on the host channel
# (/dev/ttyS1) and reads its one-line answer into $answer. The port stays
# open from the request to the answer: an answer that comes back while no
# one has it open is lost.
host_ask() {
    exec 4<>/dev/ttyS1
    echo "$1" >&4
    answer=""
    read -r answer <&4 || true
    exec 4>&-
}

# host_request CMD: ask the harness on the host to act (card-kill, card-start,
# card-status) and print its one-line answer; fails if the answer is an error.
host_request() {
    host_ask "$1"
    echo "[host] $1 -> $answer"
    case "$answer" in error*) return 1 ;; esac
}

# container_pid NAME: the init pid of a diad container.
container_pid() {
    diaconfig -o value=name,pid container list | while read -r name pid; do
        if [ "$name" = "$1" ]; then echo "$pid"; break; fi
    done
}

# expect_fail CODE PATTERN CMD...: CMD must exit with CODE and print PATTERN
# (on stdout or stderr).
expect_fail() {
    code=$1; pattern=$2; shift 2
    rc=0; "$@" >/tmp/out 2>&1 || rc=$?
    [ "$rc" = "$code" ] || { cat /tmp/out; fail "'$*' exited $rc, expected $code"; }
    grep -q -- "$pattern" /tmp/out || { cat /tmp/out; fail "'$*' did not say '$pattern'"; }
    log "ok: $* -> exit $rc: $(head -c 200 /tmp/out)"
}

# ios_of VOLUME: reads + writes the card completed for a volume.
ios_of() {
    set -- $(diaconfig -o value=reads,writes volume stats "$1")
    echo $(( ${1:-0} + ${2:-0} ))
}

# now_ms: milliseconds since boot.
now_ms() { awk '{ printf "%d\n", $1 * 1000 }' /proc/uptime; }
# iperf_received_bps FILE: bits per second the receiver counted, from
# iperf3 -J output (the guest has no JSON tool; iperf3's layout is fixed).
iperf_received_bps() { awk '/"sum_received"/ { f = 1 } f && /"bits_per_second"/ { gsub(/[^0-9.]/, "", $2); printf "%.0f\n", $2; exit }' "$1"; }

# iops_of VOLUME SECONDS: the volume's I/O rate measured by the card's
# counters over SECONDS.
iops_of() {
    a=$(ios_of "$1"); t0=$(now_ms)
    sleep "$2"
    b=$(ios_of "$1"); t1=$(now_ms)
    echo $(( (b - a) * 1000 / (t1 - t0) ))
}

# within_pct VALUE TARGET PCT: VALUE is within PCT % of TARGET.
within_pct() {
    [ $(( $1 * 100 )) -ge $(( $2 * (100 - $3) )) ] && [ $(( $1 * 100 )) -le $(( $2 * (100 + $3) )) ]
}

# barrier NAME: wait until every appliance of the scenario (`# appliances: N`)
# has reached `barrier NAME` (at once on a single appliance); fails after the
# harness's timeout (120 s) with how many arrived. NAME may be used again for
# a later round; the last node's arrival answers the others at once.
barrier() {
    host_ask "barrier $1"
    log "barrier $1 -> ${answer:-no answer}"
    [ "$answer" = ok ]
}

# The management network of a multi-appliance scenario: node N's mgmt0 has
# 192.168.77.<10+N>/24 (set by the appliance's init from appliance.mgmt_addr=).
# mgmt_addr_of NODE prints node NODE's address; $DIA_MGMT_ADDR is this
# node's own (empty on a single appliance, which has no management network).
mgmt_addr_of() { echo "192.168.77.$((10 + $1))"; }
DIA_MGMT_ADDR=$(sed -n 's/.*appliance\.mgmt_addr=\([^/ ]*\).*/\1/p' /proc/cmdline)

# wait_card_back: after `host_request card-start`, asks for Identify until
# it answers (at most 20 s): the driver's next admin command resets the
# restarted card and recreates its queues and ports. Fails if it never
# comes back or no reset was logged.
wait_card_back() {
    for _ in $(seq 1 20); do
        if dia-guest-check identify >/dev/null 2>&1; then
            dmesg | grep -E "card reset complete" || fail "no reset logged"
            return 0
        fi
        sleep 1
    done
    fail "card did not come back after restart"
}

# form_cluster NAME: appliance 0 creates cluster NAME, then every other
# appliance joins it through appliance 0, one at a time (barriers created,
# joined-1, joined-2, ...). Sets $seed, appliance 0's management address.
form_cluster() {
    seed=$(mgmt_addr_of 0)
    if [ "$DIA_NODE" = 0 ]; then diaconfig cluster create "$1" || fail "cluster create $1"; fi
    barrier created || fail "barrier created"
    n=1
    while [ "$n" -lt "$DIA_NODES" ]; do
        if [ "$DIA_NODE" = "$n" ]; then diaconfig cluster join "$seed" || fail "cluster join $seed"; fi
        barrier "joined-$n" || fail "barrier joined-$n"
        n=$((n + 1))
    done
}

# mirror_plex VOLUME NODE FIELD: a field (state, nsid, behind_bytes,
# resync_bytes, path, ...) of mirrored VOLUME's copy on appliance NODE,
# empty when it has none there.
mirror_plex() {
    diaconfig -o json volume show "$1" | jq -r ".plexes[] | select(.node == \"appliance-$2\") | .$3"
}
# fio_stop PID FILE: ends a fio run started in the background (time-based,
# with a runtime longer than the scenario needs) once what it ran across is
# over, instead of waiting out a fixed runtime. SIGTERM makes fio stop its
# jobs and print its report (exit 128); a run that ended by itself exits 0.
# Any other exit (an I/O error; a verify failure, which --verify_fatal ends
# the run at) or a report without err=0 fails the scenario.
fio_stop() {
    kill -TERM "$1" 2>/dev/null || true
    _rc=0
    wait "$1" || _rc=$?
    case "$_rc" in
        0 | 128) ;;
        *) cat "$2"; fail "fio ($2) exited $_rc" ;;
    esac
    grep -Eq "err= *0" "$2" && ! grep -Eq "err= *[1-9]" "$2" || { cat "$2"; fail "fio ($2) reported errors"; }
}
# wait_mirror_plex VOLUME NODE STATE SECONDS: until that copy is in STATE.
wait_mirror_plex() {
    for _ in $(seq 1 "$4"); do
        [ "$(mirror_plex "$1" "$2" state)" = "$3" ] && return 0
        sleep 1
    done
    diaconfig volume show "$1"
    fail "the copy on appliance-$2 of $1 is not $3 after $4 s"
}

# Benchmarks (qemu-tests/bench/*.sh) run fio jobs on $devices, a list of
# NAME:DEVICE words, $rounds times each ($runtime seconds a run), the
# devices taking turns and the order rotating each round so slow spells of
# the host and order effects fall on all alike; the harness reports medians
# of the @@BENCH lines. $BENCH_NUMJOBS (default 1) fio jobs per run.
#
# bench_prefill: writes every device full, so reads hit allocated data.
bench_prefill() {
    for d in $devices; do
        dev=${d#*:}
        log "prefill $dev"
        fio --name=prefill --filename="$dev" --rw=write --bs=1M --iodepth=8 --ioengine=libaio --direct=1 \
            --size=100% > /dev/null || fail "prefill of $dev failed"
    done
}
# rotate N WORDS...: the words, starting at the N-th (0-based, modulo).
rotate() {
    n=$1; shift; k=$(( n % $# ))
    while [ "$k" -gt 0 ]; do first=$1; shift; set -- "$@" "$first"; k=$((k - 1)); done
    echo "$@"
}
# bench_job NAME RW BS QD [FIO ARGS...]: the extra arguments come last and win.
bench_job() {
    name_=$1 rw_=$2 bs_=$3 qd_=$4; shift 4
    r=0
    while [ "$r" -lt "$rounds" ]; do
        for d in $(rotate "$r" $devices); do
            name=${d%%:*}; dev=${d#*:}
            fio --name="$name_" --filename="$dev" --rw="$rw_" --bs="$bs_" --iodepth="$qd_" \
                --numjobs="${BENCH_NUMJOBS:-1}" --ioengine=libaio --direct=1 --time_based \
                --runtime="$runtime" --ramp_time=2 --group_reporting --output-format=json "$@" \
                > /tmp/out.json || fail "fio $name_ on $dev failed"
            echo "@@BENCH $name $name_ $(tr -d '\n' < /tmp/out.json)"
        done
        r=$((r + 1))
    done
}
# bench_common_jobs: the jobs every device benchmark runs: 4 KiB random
# reads and writes at QD1 and QD32, 1 MiB sequential reads and writes at QD8.
bench_common_jobs() {
    bench_job 4k-randread-qd1 randread 4k 1
    bench_job 4k-randread-qd32 randread 4k 32
    bench_job 4k-randwrite-qd1 randwrite 4k 1
    bench_job 4k-randwrite-qd32 randwrite 4k 32
    bench_job 1m-read-qd8 read 1M 8
    bench_job 1m-write-qd8 write 1M 8
}
