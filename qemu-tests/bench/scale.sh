# timeout: 3000
# card-args: --pool-size 4G
# Scale benchmark, run by `qemu-tests/run bench scale` (not a test): one
# card with its advertised maxima in use at once, through the raw ioctls
# (dia-guest-check; no diad, so nothing but the driver and the card holds
# memory per object).
#   1. Namespaces created and attached in steps up to the card's
#      max_namespaces (16, 32, 64, ...): per step the time per create, per
#      attach and until /dev/dia0nN exists (dia-guest-check times each
#      ioctl), the guest's memory (after sync and drop_caches: MemFree, so
#      DMA buffers count too, and Slab + Percpu) and the card's (its firmware
#      process's anonymous RSS, from the harness: `card-memory`) per object.
#   2. Ports the same way up to max_ports, the namespaces still attached.
#   3. Storage fairness: one fio, a job per namespace (4k random reads,
#      QD4, on a prefilled 4 MiB of each), over the first 16, 32, ... and
#      then all namespaces: per namespace the I/O rate the card counted
#      over one window while all were busy (`dia-guest-check rates`), the
#      total, min/max and Jain's index.
#   4. Port fairness: the ports in pairs on a VLAN of their own, each port
#      in a network namespace; iperf3 TCP --bidir in 1, 4, 16 and then all
#      pairs at once; per port the bytes the card delivered to it over one
#      window, and the frames it dropped for want of an RX buffer. The
#      control: as many veth pairs in the guest, its kernel alone.
# Prints Markdown as @@MD lines for the harness.
. /scenarios/lib.sh
runtime=${BENCH_RUNTIME:-10}
ns_bytes=$((16 << 20))
fill_mib=4

load_dia
dia-guest-check identify | tee /tmp/id
max_ns=$(sed -n 's/^max_namespaces: //p' /tmp/id)
max_ports=$(sed -n 's/^max_ports: //p' /tmp/id)
[ -n "$max_ns" ] && [ "$max_ns" -gt 0 ] || fail "the card advertises no namespaces"
[ -n "$max_ports" ] && [ "$max_ports" -gt 0 ] || fail "the card advertises no ports"
log "card maxima: $max_ns namespaces, $max_ports ports"

# steps MAX: 16, 32, 64, ... up to MAX (MAX itself last).
steps() {
    s=16
    while [ "$s" -lt "$1" ]; do echo "$s"; s=$((s * 2)); done
    echo "$1"
}
# meminfo FIELD: a /proc/meminfo field in KiB.
meminfo() { awk -v f="$1:" '$1 == f { print $2 }' /proc/meminfo; }
# guest_mem: "MEMFREE SLAB_AND_PERCPU" in KiB, caches dropped first.
# MemFree counts everything the driver allocates (DMA rings and buffers
# come from the page allocator, not slab) but moves by a few MiB with the
# rest of the guest; Slab + Percpu (blk-mq's per-CPU contexts) is the
# steadier measure of a small kernel object.
guest_mem() {
    sync
    echo 3 > /proc/sys/vm/drop_caches
    sleep 1
    echo "$(meminfo MemFree) $(( $(meminfo Slab) + $(meminfo Percpu) ))"
}
# card_mem: $card, the card firmware's anonymous RSS in KiB (the harness
# reads the card processes' /proc/PID/status on the host).
card_mem() {
    host_ask card-memory
    echo "[host] card-memory -> $answer"
    case "$answer" in *fw_anon=*) ;; *) fail "card-memory: $answer" ;; esac
    for w in $answer; do case "$w" in fw_anon=*) card=${w#fw_anon=} ;; esac; done
}
# per DELTA_KIB N: KiB per object with one decimal.
per() { awk -v d="$1" -v n="$2" 'BEGIN { printf "%.1f", d / n }'; }
# per_ms TOTAL_US N: milliseconds per object with two decimals.
per_ms() { awk -v d="$1" -v n="$2" 'BEGIN { printf "%.2f", d / n / 1000 }'; }
# total_of FILE KEY: the total of KEY=... on the `total` line.
total_of() { sed -n "s/^total .*$2=\([0-9]*\).*/\1/p" "$1"; }

# --- 1. namespaces -------------------------------------------------------
set -- $(guest_mem); free0=$1 slab0=$2
card_mem; card0=$card
echo "@@MD ### Namespaces: creation, attach and memory per namespace"
echo "@@MD"
echo "@@MD | namespaces | create ms/ns | attach ms/ns | device appears ms/ns | guest MemFree KiB/ns | guest Slab+Percpu KiB/ns | card anon KiB/ns | card anon total MiB |"
echo "@@MD |---:|---:|---:|---:|---:|---:|---:|---:|"
have=0 free_prev=$free0 slab_prev=$slab0 card_prev=$card0
for n in $(steps "$max_ns"); do
    add=$((n - have))
    dia-guest-check ns-create-many "$add" "$ns_bytes" > /tmp/ns-$n.txt || { tail -3 /tmp/ns-$n.txt; fail "creating namespaces $((have + 1))..$n"; }
    c=$(total_of /tmp/ns-$n.txt create_us) a=$(total_of /tmp/ns-$n.txt attach_us) s=$(total_of /tmp/ns-$n.txt appear_us)
    echo "@@SCALE ns-create-us $have→$n $(sed -n 's/^nsid.* create_us=\([0-9]*\).*/\1/p' /tmp/ns-$n.txt | tr '\n' ' ')"
    echo "@@SCALE ns-attach-us $have→$n $(sed -n 's/^nsid.* attach_us=\([0-9]*\).*/\1/p' /tmp/ns-$n.txt | tr '\n' ' ')"
    set -- $(guest_mem); free=$1 slab=$2
    card_mem
    echo "@@MD | $have→$n | $(per_ms "$c" $add) | $(per_ms "$a" $add) | $(per_ms "$s" $add) | $(per $((free_prev - free)) $add) | $(per $((slab - slab_prev)) $add) | $(per $((card - card_prev)) $add) | $(per "$card" 1024) |"
    have=$n free_prev=$free slab_prev=$slab card_prev=$card
done
[ "$(ls /dev/dia0n* | wc -l)" -eq "$max_ns" ] || fail "expected $max_ns block devices, found $(ls /dev/dia0n* | wc -l)"
echo "@@MD"
echo "@@MD All $max_ns: guest MemFree $(( (free0 - free_prev) / 1024 )) MiB less, Slab+Percpu $(( (slab_prev - slab0) / 1024 )) MiB more, card firmware anon RSS $(( card_prev - card0 )) KiB more (16 MiB namespaces, nothing written yet)."
dmesg_clean

# --- 2. ports ------------------------------------------------------------
echo "@@MD"
echo "@@MD ### Ports: creation and memory per port ($max_ns namespaces attached)"
echo "@@MD"
echo "@@MD | ports | create ms/port | net device appears ms/port | guest MemFree KiB/port | guest Slab+Percpu KiB/port | card anon KiB/port | card anon total MiB |"
echo "@@MD |---:|---:|---:|---:|---:|---:|---:|"
set -- $(guest_mem); pfree0=$1 pslab0=$2
card_mem; pcard0=$card
have=0 free_prev=$pfree0 slab_prev=$pslab0 card_prev=$pcard0
for n in $(steps "$max_ports"); do
    add=$((n - have))
    # Pairs on VLANs 100+: port 2k-1 and 2k share VLAN 100+k-1.
    dia-guest-check port-create-many "$add" $((100 + have / 2)) 1500 > /tmp/ports-$n.txt || { tail -3 /tmp/ports-$n.txt; fail "creating ports $((have + 1))..$n"; }
    c=$(total_of /tmp/ports-$n.txt create_us) s=$(total_of /tmp/ports-$n.txt appear_us)
    echo "@@SCALE port-create-us $have→$n $(sed -n 's/^port.* create_us=\([0-9]*\).*/\1/p' /tmp/ports-$n.txt | tr '\n' ' ')"
    set -- $(guest_mem); free=$1 slab=$2
    card_mem
    echo "@@MD | $have→$n | $(per_ms "$c" $add) | $(per_ms "$s" $add) | $(per $((free_prev - free)) $add) | $(per $((slab - slab_prev)) $add) | $(per $((card - card_prev)) $add) | $(per "$card" 1024) |"
    have=$n free_prev=$free slab_prev=$slab card_prev=$card
done
cat /tmp/ports-*.txt | grep -c '^port=' | grep -qx "$max_ports" || fail "expected $max_ports ports"
echo "@@MD"
echo "@@MD All $max_ports: guest MemFree $(( (pfree0 - free_prev) / 1024 )) MiB less, Slab+Percpu $(( (slab_prev - pslab0) / 1024 )) MiB more, card firmware anon RSS $(( card_prev - pcard0 )) KiB more."
dmesg_clean

# rates SECONDS: every object's rate over one window (dia-guest-check
# rates) into /tmp/rates.txt. Real-time priority: beside 128 busy fio
# threads on 2 vCPUs an ordinary process gets a 1/129 share, and its two
# passes over the objects would take longer than the window.
if command -v chrt > /dev/null; then prio="chrt -f 50"; else prio="nice -n -20"; fi
rates() {
    $prio dia-guest-check rates "$1" > /tmp/rates.txt || fail "reading the card's counters"
    echo "@@SCALE rates-timing $(grep '^window_s' /tmp/rates.txt)"
}
# stats FILE: "N TOTAL MIN MAX JAIN" of the numbers in FILE, one a line.
stats() {
    awk '{ n++; s += $1; q += $1 * $1; if (n == 1 || $1 < lo) lo = $1; if ($1 > hi) hi = $1 }
         END { printf "%d %.0f %.0f %.0f %.3f\n", n, s, lo, hi, (q > 0 ? s * s / (n * q) : 0) }' "$1"
}

# --- 3. storage fairness ---------------------------------------------------
log "prefill $fill_mib MiB of each namespace"
for d in /dev/dia0n*; do
    dd if=/dev/zero of="$d" bs=1M count=$fill_mib oflag=direct 2>/dev/null || fail "prefill $d"
done
echo "@@MD"
echo "@@MD ### Storage fairness: a fio job per namespace, all at once (4k random reads, QD4, equal tiers, ${runtime} s)"
echo "@@MD"
echo "@@MD | namespaces busy | total IOPS | per-namespace min | max | max/min | Jain's index |"
echo "@@MD |---:|---:|---:|---:|---:|---:|"
for n in $(steps "$max_ns"); do
    : > /tmp/fio.job
    # Long enough that every job runs through the whole window: fio starts
    # its jobs one after the other (seconds apart for 128 on this guest),
    # so its own per-job results cover different windows.
    # Starting the jobs takes longer the more there are (the first ones
    # already load the 2 vCPUs): the window opens $settle s after the start.
    settle=$((10 + n / 4))
    printf '[global]\nioengine=libaio\ndirect=1\nrw=randread\nbs=4k\niodepth=4\nsize=%dM\ntime_based\nruntime=%d\nthread\n' \
        "$fill_mib" $((settle + runtime + 10)) >> /tmp/fio.job
    for i in $(seq 1 "$n"); do printf '[ns%d]\nfilename=/dev/dia0n%d\n' "$i" "$i" >> /tmp/fio.job; done
    fio --output-format=json /tmp/fio.job > /tmp/fio.json &
    fio_pid=$!
    sleep "$settle"
    rates "$runtime"
    wait "$fio_pid" || fail "fio over $n namespaces"
    awk -v n="$n" '$1 == "ns" && $2 <= n { print $3 }' /tmp/rates.txt > /tmp/iops.txt
    set -- $(stats /tmp/iops.txt)
    [ "$1" -eq "$n" ] || fail "the card counted $1 namespaces, expected $n"
    echo "@@MD | $n | $2 | $3 | $4 | $(awk -v a="$4" -v b="$3" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }') | $5 |"
    echo "@@SCALE ns-iops $n $(tr '\n' ' ' < /tmp/iops.txt)"
    # fio's own per-job IOPS (each over its own window), for comparison.
    jq -r '.jobs[].read.iops' /tmp/fio.json > /tmp/fio-iops.txt
    set -- $(stats /tmp/fio-iops.txt)
    echo "@@SCALE fio-per-job-iops $n min $3 max $4 jain $5"
done
dmesg_clean

# --- 4. port fairness --------------------------------------------------------
# Each port into a network namespace of its own: pair k (ports 2k-1, 2k)
# gets 10.90.k.1 and 10.90.k.2.
: > /tmp/netns.pids
p=1
while [ "$p" -le "$max_ports" ]; do
    unshare -n sleep 100000 </dev/null >/dev/null 2>&1 &
    echo "$!" >> /tmp/netns.pids
    eval "ns_$p=$!"
    p=$((p + 1))
done
sleep 1
pairs=$((max_ports / 2))
k=1
while [ "$k" -le "$pairs" ]; do
    for side in 1 2; do
        p=$((2 * k - 2 + side))
        eval "pid=\$ns_$p"
        [ "$(readlink /proc/$pid/ns/net)" != "$(readlink /proc/self/ns/net)" ] || fail "no network namespace for port $p"
        ip link set "dia0p$p" netns "$pid"
        nsenter -t "$pid" -n ip link set lo up
        nsenter -t "$pid" -n ip addr add "10.90.$k.$side/24" dev "dia0p$p"
        nsenter -t "$pid" -n ip link set "dia0p$p" up
    done
    k=$((k + 1))
done
# Every pair can reach its peer first (ARP, carrier).
k=1
while [ "$k" -le "$pairs" ]; do
    eval "pid=\$ns_$((2 * k - 1))"
    ok=0
    for _ in $(seq 1 20); do
        nsenter -t "$pid" -n ping -c 1 -W 1 "10.90.$k.2" > /dev/null 2>&1 && { ok=1; break; }
    done
    [ "$ok" = 1 ] || fail "pair $k (ports $((2 * k - 1)), $((2 * k))) cannot ping"
    k=$((k + 1))
done
# The control: as many veth pairs, each end in a namespace of its own
# (vns_1..), the guest's kernel alone carrying the same traffic, so the
# guest's own limit with that many flows is known. Pair k: 10.91.k.1/2.
k=1
while [ "$k" -le "$pairs" ]; do
    ip link add "va$k" type veth
    # busybox names the peer itself (vethN): read it from "vaK@vethN".
    peer=$(ip -o link show "va$k" | sed -n "s/.*va$k@\([^:]*\):.*/\1/p")
    [ -n "$peer" ] || fail "no veth peer for va$k"
    for side in 1 2; do
        p=$((2 * k - 2 + side))
        unshare -n sleep 100000 </dev/null >/dev/null 2>&1 &
        echo "$!" >> /tmp/netns.pids
        eval "vns_$p=$!"
        pid=$!
        for _ in $(seq 1 50); do
            [ "$(readlink /proc/$pid/ns/net)" != "$(readlink /proc/self/ns/net)" ] && break
            sleep 0.1
        done
        dev="va$k"; [ "$side" = 2 ] && dev=$peer
        eval "vdev_$p=$dev"
        ip link set "$dev" netns "$pid"
        nsenter -t "$pid" -n ip link set lo up
        nsenter -t "$pid" -n ip addr add "10.91.$k.$side/24" dev "$dev"
        nsenter -t "$pid" -n ip link set "$dev" up
    done
    k=$((k + 1))
done
# veth_rx PORTS: bytes received by the first PORTS veth ends, one a line
# (a script, so that it runs at the same real-time priority as `rates`).
p=1
while [ "$p" -le "$max_ports" ]; do eval "echo \"\$vns_$p \$vdev_$p\""; p=$((p + 1)); done > /tmp/veth.list
cat > /tmp/veth_rx.sh <<'SCRIPT'
head -n "$1" /tmp/veth.list | while read -r pid dev; do
    nsenter -t "$pid" -n cat /proc/net/dev | awk -v d="$dev:" '$1 == d { print $2 }'
done
SCRIPT
veth_rx() { $prio sh /tmp/veth_rx.sh "$1"; }
servers=""
k=1
while [ "$k" -le "$pairs" ]; do
    for setup in ns vns; do
        eval "pid=\$${setup}_$((2 * k))"
        nsenter -t "$pid" -n iperf3 -s -p 5201 > /dev/null 2>&1 &
        servers="$servers $!"
    done
    k=$((k + 1))
done
sleep 2
echo "@@MD"
echo "@@MD ### Port fairness: iperf3 TCP --bidir in every pair at once (each pair on its own VLAN, ${runtime} s)"
echo "@@MD"
echo "@@MD Beside each, the control: as many veth pairs in the guest (its kernel alone, no card)."
echo "@@MD"
echo "@@MD | ports busy | total Mbit/s (received) | per-port min Mbit/s | max | max/min | Jain's index | RX drops at the card | veth control: total Mbit/s | min | max | Jain's index |"
echo "@@MD |---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
# clients SETUP NP: iperf3 clients in the first NP pairs of SETUP (ns: dia
# ports, net 10.90; vns: veth, net 10.91), long enough to outlast the
# window; their pids in $clients.
clients() {
    clients=""
    net=10.90; [ "$1" = vns ] && net=10.91
    k=1
    while [ "$k" -le "$2" ]; do
        eval "pid=\$${1}_$((2 * k - 1))"
        nsenter -t "$pid" -n iperf3 -c "$net.$k.2" -p 5201 -t $((runtime + 20)) --bidir -i 0 > /tmp/iperf-$1-$k.txt 2>&1 &
        clients="$clients $!"
        k=$((k + 1))
    done
}
for np in 1 4 16 $pairs; do
    [ "$np" -le "$pairs" ] || continue
    ports=$((2 * np))
    clients ns "$np"
    # Every client connected and sending before the window opens.
    sleep 10
    rates "$runtime"
    for c in $clients; do wait "$c" || true; done
    awk -v n="$ports" '$1 == "port" && $2 <= n { print $3 }' /tmp/rates.txt > /tmp/mbit.txt
    drops=$(awk -v n="$ports" '$1 == "port" && $2 <= n { d += $4 } END { print d + 0 }' /tmp/rates.txt)
    set -- $(stats /tmp/mbit.txt)
    row="| $ports | $2 | $3 | $4 | $(awk -v a="$4" -v b="$3" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }') | $5 | $drops |"
    echo "@@SCALE port-mbit $ports $(tr '\n' ' ' < /tmp/mbit.txt)"
    grep -l "error" /tmp/iperf-ns-*.txt 2>/dev/null | head -3 | while read -r f; do log "$f: $(grep error "$f" | head -1)"; done
    # The control, the same way (its counters: /proc/net/dev in each namespace).
    clients vns "$np"
    sleep 10
    # Each end read twice, the two passes started t1 - t0 apart.
    t0=$(now_ms)
    veth_rx "$ports" > /tmp/v0.txt
    sleep "$runtime"
    t1=$(now_ms)
    veth_rx "$ports" > /tmp/v1.txt
    for c in $clients; do wait "$c" || true; done
    paste /tmp/v0.txt /tmp/v1.txt | awk -v ms=$((t1 - t0)) '{ printf "%.1f\n", ($2 - $1) * 8 / ms / 1000 }' > /tmp/vmbit.txt
    set -- $(stats /tmp/vmbit.txt)
    echo "@@MD $row $2 | $3 | $4 | $5 |"
    echo "@@SCALE veth-mbit $ports $(tr '\n' ' ' < /tmp/vmbit.txt)"
done
kill $servers $(cat /tmp/netns.pids) 2>/dev/null || true
echo "@@MD"
echo "@@MD Rates are the card's own counters (namespace reads + writes; bytes a port received), read for every object twice $runtime s apart while all were busy; the veth control's are the bytes each end received (/proc/net/dev in its namespace) over the same length of window."
dmesg_clean
