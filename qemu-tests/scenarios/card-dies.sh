# card-args: --fault exit-on-admin=0x06:3
# The card's firmware dies while it handles an admin command (the 3rd
# Identify; the probe and diad's start issue the first two). The command fails with a timeout instead
# of hanging, later commands fail fast, a network port's link goes down
# with the card, and the module still unloads.
. /scenarios/lib.sh
load_dia
dia-guest-check port-create 100 1500 | grep -q "port=1 ifname=dia0p1" || fail "no port 1"
ip link set dia0p1 up
for _ in $(seq 1 20); do ip link show dia0p1 | grep -q "LOWER_UP" && break; sleep 0.1; done
ip link show dia0p1 | grep -q "LOWER_UP" || fail "no carrier on the port while the card lives"
start_diad
within 20 diaconfig card info
[ "$rc" -ne 0 ] || fail "card info succeeded although the card died"
diaconfig card info 2>&1 | tee /tmp/err.txt || true
expect_contains /tmp/err.txt "HTTP 50"
expect_contains /tmp/err.txt "card"
dmesg | grep -q "timed out" || fail "driver did not log the admin timeout"
within 10 dia-guest-check identify
[ "$rc" -ne 0 ] || fail "identify succeeded on a dead card"
# The failed recovery took the port's link down: the card forwards nothing.
ip link show dia0p1 | grep -q "NO-CARRIER" || fail "port keeps its carrier on a dead card: $(ip link show dia0p1)"
stop_diad
within 15 rmmod dia
[ "$rc" -eq 0 ] || fail "rmmod failed with $rc"
dmesg_clean
