# timeout: 400
# A port on a 100 Mbit/s tier is held to it while an unlimited port on the
# same card runs beside it: iperf3 through the limited port measures within
# 5 % of the tier, so do the card's counters of the frames it sent, and the
# unlimited port goes well past the limit. At the standard MTU the card's
# counters show the same rate. Moving the port to best-effort lifts it.
#
# The tier limits Ethernet frame bits. The side-by-side part runs on a
# 9000-byte network: there TCP/IP headers are under 1 % of a frame (so
# iperf3's goodput is the frame rate), and the emulated guest's CPUs, not
# the card, would otherwise decide how fast two flows at 1500 bytes go.
#
# On the debug kernel (KASAN and friends: the guest's network stack is
# several times slower, an unlimited port reaches about 60 Mbit/s) the tier
# is 20 Mbit/s, so the card's limit, not the guest, is what is measured.
. /scenarios/lib.sh
mbit=100
grep -q "kasan.fault=panic" /proc/cmdline && mbit=20
kbit=$(( mbit * 1000 ))
past=$(( mbit * 1500000 ))
load_dia
start_diad
diaconfig tier create net100 --net-max-bw ${mbit}M
diaconfig network create jumbo --vlan 100 --subnet 10.10.0.0/24 --gateway 10.10.0.1 --range 10.10.0.10-10.10.0.200 --mtu 9000
diaconfig network create std --vlan 200 --subnet 10.20.0.0/24 --gateway 10.20.0.1 --range 10.20.0.10-10.20.0.200
for c in lim sink free sink2 lim2 sink3; do diaconfig container create $c; done
diaconfig port attach --container lim --network jumbo --tier net100 --ip 10.10.0.10
diaconfig port attach --container sink --network jumbo --ip 10.10.0.11
diaconfig port attach --container free --network jumbo --ip 10.10.0.12
diaconfig port attach --container sink2 --network jumbo --ip 10.10.0.13
diaconfig port attach --container lim2 --network std --tier net100 --ip 10.20.0.10
diaconfig port attach --container sink3 --network std --ip 10.20.0.11
diaconfig port show lim | tee /tmp/lim
expect_contains /tmp/lim "net100"
tx_bytes() { diaconfig -o value=counters.tx_bytes port stats "$1"; }
# card_rate PORT: frame bits per second the card sent for PORT over 8 s
# (long enough that a reading's round trip through diad is noise).
card_rate() {
    b0=$(tx_bytes "$1"); t0=$(now_ms)
    sleep 8
    b1=$(tx_bytes "$1"); t1=$(now_ms)
    echo $(( (b1 - b0) * 8 * 1000 / (t1 - t0) ))
}
in_ns() { pid=$(container_pid "$1"); shift; nsenter -t "$pid" -n "$@"; }
in_ns sink iperf3 -s -D -1 -p 5201
in_ns sink2 iperf3 -s -D -1 -p 5202
in_ns sink3 iperf3 -s -D -1 -p 5203
sleep 0.5
in_ns lim iperf3 -c 10.10.0.11 -p 5201 -t 14 -O 2 -J > /tmp/lim.json &
jl=$!
in_ns free iperf3 -c 10.10.0.13 -p 5202 -t 14 -O 2 -J > /tmp/free.json &
jf=$!
sleep 4
card=$(card_rate lim)
wait $jl || { cat /tmp/lim.json; fail "iperf3 on the limited port failed"; }
wait $jf || { cat /tmp/free.json; fail "iperf3 on the unlimited port failed"; }
lim=$(iperf_received_bps /tmp/lim.json); free=$(iperf_received_bps /tmp/free.json)
log "MTU 9000: limited port: iperf3 $lim bit/s, card $card bit/s; unlimited neighbour at the same time: $free bit/s"
diaconfig port stats lim
within_pct $(( lim / 1000 )) $kbit 5 || fail "iperf3 through a $mbit Mbit/s port measured $lim bit/s"
within_pct $(( card / 1000 )) $kbit 5 || fail "the card sent $card bit/s on a $mbit Mbit/s port"
[ "$free" -gt $past ] || fail "the unlimited port only reached $free bit/s beside the limited one"
thr=$(diaconfig -o value=counters.throttled_ns port stats lim)
[ "${thr:-0}" -gt 0 ] || fail "the card reports no time throttled"
# Standard MTU, one flow: the card's frame rate is the tier's.
in_ns lim2 iperf3 -c 10.20.0.11 -p 5203 -t 14 -O 2 -J > /tmp/lim2.json &
j2=$!
sleep 4
card2=$(card_rate lim2)
wait $j2 || { cat /tmp/lim2.json; fail "iperf3 on the standard-MTU limited port failed"; }
lim2=$(iperf_received_bps /tmp/lim2.json)
log "MTU 1500: limited port: card $card2 bit/s of frames, iperf3 goodput $lim2 bit/s (TCP/IP/Ethernet headers are 4.4 % of a 1514-byte frame)"
within_pct $(( card2 / 1000 )) $kbit 5 || fail "the card sent $card2 bit/s on a $mbit Mbit/s port at MTU 1500"
# The tier changes at run time: best-effort lifts the limit.
diaconfig port set-tier lim best-effort
in_ns sink iperf3 -s -D -1 -p 5201
sleep 0.5
in_ns lim iperf3 -c 10.10.0.11 -p 5201 -t 4 -O 1 -J > /tmp/lim3.json
lim3=$(iperf_received_bps /tmp/lim3.json)
log "after set-tier best-effort: $lim3 bit/s"
[ "$lim3" -gt $past ] || fail "limit still applied after the tier change ($lim3 bit/s)"
dmesg_clean
