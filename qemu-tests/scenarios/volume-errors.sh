# timeout: 300
# diaconfig's volume errors: usage mistakes exit 2 and name what is allowed;
# refused requests exit 1 with the reason; nothing changes on the card. diad
# reports a volume whose namespace vanished as missing (not recreated) and
# lists a namespace no volume owns as an orphan.
. /scenarios/lib.sh
load_dia
start_diad
expect_fail 2 "allowed: K, M, G, T, P" diaconfig volume create x --size 20Q
expect_fail 2 "allowed: 512, 1024, 2048, 4096" diaconfig volume create x --size 1G --block-size 8192
expect_fail 2 "unrecognized subcommand" diaconfig volume crate x
expect_fail 1 "not a multiple of the block size" diaconfig volume create x --size 1000
expect_fail 1 "out of range" diaconfig volume create x --size 2P
expect_fail 1 "a-z, 0-9" diaconfig volume create Bad_Name --size 1G
diaconfig volume create keep --size 1G --block-size 512
expect_fail 1 "already exists" diaconfig volume create keep --size 1G
expect_fail 1 "no volume 'ghost' (volumes: keep)" diaconfig volume show ghost
expect_fail 1 "no container 'nowhere'" diaconfig volume attach keep --container nowhere
expect_fail 1 "is not attached" diaconfig volume detach keep
[ "$(diaconfig -o value=block_size volume show keep)" = 512 ] || fail "block size not kept"
# A namespace made below diad is an orphan; one deleted below diad is missing.
dia-guest-check ns-create 1048576 stray
diaconfig volume create doomed --size 16M
n=$(diaconfig -o value=nsid volume show doomed)
dia-guest-check ns-delete "$n"
stop_diad
start_diad
grep "not on the card" /var/log/diad.log || fail "diad did not report the missing volume"
grep "orphan namespace" /var/log/diad.log || fail "diad did not report the orphan"
diaconfig volume list | tee /tmp/list
expect_contains /tmp/list "missing"
expect_contains /tmp/list "no volume owns"
expect_contains /tmp/list "stray"
dia-guest-check ns-list | grep -qw "$n" && fail "diad recreated the missing namespace"
diaconfig volume delete doomed
diaconfig volume delete keep
diaconfig pool info | tee /tmp/pool
expect_contains /tmp/pool "Capacity"
dmesg_clean
