# appliances: 2
# timeout: 600
# Two appliances boot side by side, each sees its own card (its own serial) and they meet at a barrier.
. /scenarios/lib.sh
log "node $DIA_NODE of $DIA_NODES"
[ "$DIA_NODES" = 2 ] || fail "expected DIA_NODES=2, got '$DIA_NODES'"
case "$DIA_NODE" in
    0) serial=DIA-TEST-0001; other=DIA-TEST-0002 ;;
    1) serial=DIA-TEST-0002; other=DIA-TEST-0001 ;;
    *) fail "unexpected DIA_NODE '$DIA_NODE'" ;;
esac
load_dia
start_diad
diaconfig card info | tee /tmp/info.txt
expect_contains /tmp/info.txt "$serial"
if grep -q -- "$other" /tmp/info.txt; then fail "node $DIA_NODE sees the other node's card"; fi
barrier ready
# The same name again is a new round: both nodes must arrive again.
barrier ready
dmesg_clean
