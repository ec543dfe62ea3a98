# Bad ioctls get errnos, never an oops: unknown request -> ENOTTY, bad or
# short user buffer -> EFAULT, random requests and arguments -> an errno.
. /scenarios/lib.sh
load_dia
dia-guest-check ioctl-errors
dia-guest-check ioctl-fuzz --iterations 2000 --seed 7
dia-guest-check identify >/dev/null
dmesg_clean
