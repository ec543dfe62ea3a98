//! Pins every `/dev/dia` request number against nix's encoding of Linux's
//! `_IOR`/`_IOW`/`_IOWR`, so `ioc()` in the ABI (which the kernel module
//! uses too) cannot drift from what userspace's ioctl macros compute.

use core::mem::size_of;

use dia_abi::ioctl::*;
use nix::{request_code_read, request_code_readwrite, request_code_write};

macro_rules! pin {
    ($request:ident, $encoding:ident, $nr:expr, $arg:ty) => {
        assert_eq!(
            u64::from($request),
            $encoding!(DIA_IOC_MAGIC, $nr, size_of::<$arg>()) as u64,
            stringify!($request)
        )
    };
}

#[test]
fn request_numbers_match_linux_encoding() {
    pin!(DIA_IOC_IDENTIFY, request_code_read, 0x01, DiaIdentity);
    pin!(DIA_IOC_NS_CREATE, request_code_readwrite, 0x10, DiaNsCreate);
    pin!(DIA_IOC_NS_DELETE, request_code_write, 0x11, DiaNsId);
    pin!(DIA_IOC_NS_ATTACH, request_code_write, 0x12, DiaNsId);
    pin!(DIA_IOC_NS_DETACH, request_code_write, 0x13, DiaNsId);
    pin!(DIA_IOC_NS_INFO, request_code_readwrite, 0x14, DiaNsInfo);
    pin!(DIA_IOC_NS_LIST, request_code_read, 0x15, DiaNsList);
    pin!(DIA_IOC_POOL_INFO, request_code_read, 0x16, DiaPoolInfo);
    pin!(DIA_IOC_NS_SET_QOS, request_code_readwrite, 0x17, DiaNsQos);
    pin!(DIA_IOC_NS_STATS, request_code_readwrite, 0x18, DiaNsStats);
    pin!(
        DIA_IOC_NS_CREATE_REMOTE,
        request_code_readwrite,
        0x19,
        DiaNsCreateRemote
    );
    pin!(
        DIA_IOC_NS_CREATE_MIRROR,
        request_code_readwrite,
        0x1a,
        DiaNsCreateMirror
    );
    pin!(
        DIA_IOC_NS_MIRROR_STATUS,
        request_code_readwrite,
        0x1b,
        DiaNsMirrorStatus
    );
    pin!(
        DIA_IOC_NS_SET_MIRROR,
        request_code_readwrite,
        0x1c,
        DiaNsSetMirror
    );
    pin!(
        DIA_IOC_PORT_CREATE,
        request_code_readwrite,
        0x20,
        DiaPortCreate
    );
    pin!(DIA_IOC_PORT_DELETE, request_code_write, 0x21, DiaPortId);
    pin!(DIA_IOC_PORT_SET, request_code_write, 0x22, DiaPortSet);
    pin!(DIA_IOC_PORT_INFO, request_code_readwrite, 0x23, DiaPortInfo);
    pin!(DIA_IOC_PORT_LIST, request_code_read, 0x24, DiaPortList);
}

#[test]
fn identify_number_is_the_documented_one() {
    // docs/ioctl-abi.md quotes it; `ioctl(2)` users compare against it.
    assert_eq!(DIA_IOC_IDENTIFY, 0x80a0_4401);
}
