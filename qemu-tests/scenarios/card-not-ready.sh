# card-args: --fault never-ready
# A card whose firmware never reports running is refused after the ready
# timeout with a clear log line, and loading the module does not hang.
. /scenarios/lib.sh
within 20 modprobe dia
dmesg | grep "firmware not running" || fail "driver did not log the ready timeout"
[ ! -e /dev/dia ] || fail "/dev/dia exists for a card that never became ready"
rmmod dia
dmesg_clean
