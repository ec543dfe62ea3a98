# rmmod/insmod cycles: every load binds the card again and answers Identify;
# every unload releases it (the card sees a clean shutdown each time).
. /scenarios/lib.sh
for i in 1 2 3; do
    log "cycle $i"
    load_dia
    dia-guest-check identify >/tmp/id.txt || fail "identify failed on cycle $i"
    expect_contains /tmp/id.txt "DIA-TEST-0001"
    rmmod dia
    [ ! -e /dev/dia ] || fail "/dev/dia still present after rmmod"
done
load_dia
start_diad
diaconfig card info >/dev/null
stop_diad
rmmod dia
dmesg | grep -c "card 0 removed\|card [0-9]* removed" || true
dmesg_clean
