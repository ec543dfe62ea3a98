# Bad namespace requests get clear errnos and change nothing: bad sizes and
# block sizes, unknown ids, deleting an attached namespace, double attach.
. /scenarios/lib.sh
load_dia
expect_errno() { # expect_errno ERRNO cmd...
    want=$1; shift
    if "$@" 2>/tmp/err; then fail "'$*' succeeded, expected $want"; fi
    expect_contains /tmp/err "$want"
    log "ok: $* -> $want"
}
expect_errno EINVAL dia-guest-check ns-create 0
expect_errno EINVAL dia-guest-check ns-create 1000
expect_errno EINVAL dia-guest-check ns-create 1048576 x --lba-shift 13
expect_errno EINVAL dia-guest-check ns-create 1048576 x --lba-shift 8
expect_errno ENOENT dia-guest-check ns-attach 77
expect_errno ENOENT dia-guest-check ns-delete 77
expect_errno ENOENT dia-guest-check ns-info 77
expect_errno EINVAL dia-guest-check ns-attach 0
n=$(dia-guest-check ns-create 16777216 keep)
dia-guest-check ns-attach "$n"
expect_errno EEXIST dia-guest-check ns-attach "$n"
expect_errno EBUSY dia-guest-check ns-delete "$n"
dia-guest-check ns-info "$n" | tee /tmp/info
expect_contains /tmp/info "label=keep"
expect_contains /tmp/info "disk=dia0n$n"
dia-guest-check ns-list | grep -qw "$n" || fail "ns-list lacks $n"
dia-guest-check ns-detach "$n"
dia-guest-check ns-delete "$n"
expect_errno ENOENT dia-guest-check ns-info "$n"
dmesg_clean
