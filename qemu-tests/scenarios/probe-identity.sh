# The driver binds the card, logs its identity, and `diaconfig card info`
# (CLI -> diad -> /dev/dia ioctl -> admin Identify -> card) shows it.
. /scenarios/lib.sh
load_dia
dmesg | grep "dia: " 
dmesg | grep -q "dia: .*dia emulated container IO card serial" || fail "probe did not log the identity"
dmesg | grep -q "ready at /dev/dia" || fail "probe did not announce /dev/dia"
start_diad
diaconfig card info | tee /tmp/info.txt
expect_contains /tmp/info.txt "dia emulated container IO card"
expect_contains /tmp/info.txt "DIA-TEST-0001"
diaconfig -o json card info | tee /tmp/info.json
expect_contains /tmp/info.json '"serial": *"DIA-TEST-0001"'
expect_contains /tmp/info.json '"firmware"'
grep -q dia-admin /proc/interrupts || fail "no MSI-X interrupt registered"
dmesg_clean
