# card-args: --fault exit-on-admin=0x06:3
# The card's firmware dies while it handles an admin command (the 3rd
# Identify; the probe and diad's start issue the first two). The command fails with a timeout instead
# of hanging, later commands fail fast, and the module still unloads.
. /scenarios/lib.sh
load_dia
start_diad
within 20 diaconfig card info
[ "$rc" -ne 0 ] || fail "card info succeeded although the card died"
diaconfig card info 2>&1 | tee /tmp/err.txt || true
expect_contains /tmp/err.txt "HTTP 50"
expect_contains /tmp/err.txt "card"
dmesg | grep -q "timed out" || fail "driver did not log the admin timeout"
within 10 dia-guest-check identify
[ "$rc" -ne 0 ] || fail "identify succeeded on a dead card"
stop_diad
within 15 rmmod dia
[ "$rc" -eq 0 ] || fail "rmmod failed with $rc"
dmesg_clean
