//! The `/dev/dia` ioctls: decode the request number, validate the argument,
//! call the card, copy the result out. Numbers and structs come from the
//! shared ABI file; unknown requests get `ENOTTY`, bad pointers `EFAULT`.
//! Requests that change the card need `CAP_SYS_ADMIN` (`EPERM` without it),
//! whatever the file's mode: a container handed the node cannot reshape the
//! card. A create whose result cannot be copied out is undone, so an
//! unwritable buffer never leaves an object nobody knows about.

use kernel::error::code::{EINVAL, ENOTTY, EPERM};
use kernel::prelude::*;
use kernel::sync::ArcBorrow;
use kernel::uaccess::UserSlice;

use crate::abi::ioctl::{
    self, DiaIdentity, DiaNsCreate, DiaNsCreateMirror, DiaNsCreateRemote, DiaNsId, DiaNsInfo,
    DiaNsList, DiaNsMirrorStatus, DiaNsQos, DiaNsSetMirror, DiaNsStats, DiaPoolInfo, DiaPortCreate,
    DiaPortId, DiaPortInfo, DiaPortList, DiaPortSet,
};
use crate::card::Card;
use crate::glue::cred;
use crate::glue::miscdev::MiscDevice;
use crate::glue::uaccess::read_boxed;

/// Requests that change the card (the rest only read it).
fn mutates(cmd: u32) -> bool {
    matches!(
        cmd,
        ioctl::DIA_IOC_NS_CREATE
            | ioctl::DIA_IOC_NS_CREATE_REMOTE
            | ioctl::DIA_IOC_NS_CREATE_MIRROR
            | ioctl::DIA_IOC_NS_SET_MIRROR
            | ioctl::DIA_IOC_NS_DELETE
            | ioctl::DIA_IOC_NS_ATTACH
            | ioctl::DIA_IOC_NS_DETACH
            | ioctl::DIA_IOC_NS_SET_QOS
            | ioctl::DIA_IOC_PORT_CREATE
            | ioctl::DIA_IOC_PORT_DELETE
            | ioctl::DIA_IOC_PORT_SET
    )
}

/// Reads a namespace id argument; reserved flags must be zero.
fn ns_id(arg: usize) -> Result<u32> {
    let id: DiaNsId = read_in(arg)?;
    if id.flags != 0 {
        return Err(EINVAL);
    }
    Ok(id.nsid)
}

/// Reads the argument struct from userspace (`EFAULT` if unreadable).
fn read_in<T: kernel::types::FromBytes>(arg: usize) -> Result<T> {
    UserSlice::new(arg, core::mem::size_of::<T>())
        .reader()
        .read()
}

fn write_out<T: kernel::types::AsBytes>(arg: usize, value: &T) -> Result<isize> {
    UserSlice::new(arg, core::mem::size_of::<T>())
        .writer()
        .write(value)?;
    Ok(0)
}

impl MiscDevice for Card {
    fn ioctl(this: ArcBorrow<'_, Self>, cmd: u32, arg: usize) -> Result<isize> {
        if mutates(cmd) && !cred::capable_sys_admin() {
            return Err(EPERM);
        }
        match cmd {
            ioctl::DIA_IOC_IDENTIFY => {
                let id: DiaIdentity = this.identify()?;
                write_out(arg, &id)
            }
            ioctl::DIA_IOC_NS_CREATE => {
                let mut req: DiaNsCreate = read_in(arg)?;
                if req.nsid != 0 {
                    return Err(EINVAL);
                }
                req.nsid = this
                    .with_controller(|c| c.ns_create(req.size_bytes, req.lba_shift, &req.label))?;
                write_out(arg, &req).inspect_err(|_| {
                    let _ = this.with_controller_uninterruptible(|c| c.ns_delete(req.nsid));
                })
            }
            ioctl::DIA_IOC_NS_CREATE_REMOTE => {
                let mut req: DiaNsCreateRemote = read_in(arg)?;
                if req.nsid != 0 || req.reserved != 0 || req.create.validate().is_err() {
                    return Err(EINVAL);
                }
                req.nsid = this.with_controller(|c| c.ns_create_remote(&req.create))?;
                write_out(arg, &req).inspect_err(|_| {
                    let _ = this.with_controller_uninterruptible(|c| c.ns_delete(req.nsid));
                })
            }
            ioctl::DIA_IOC_NS_CREATE_MIRROR => {
                // 1.5 KiB: kept off the kernel stack.
                let mut req: KBox<DiaNsCreateMirror> = read_boxed(arg)?;
                if req.nsid != 0 || req.reserved != 0 || req.create.validate().is_err() {
                    return Err(EINVAL);
                }
                req.nsid = this.with_controller(|c| c.ns_create_mirror(&req.create))?;
                write_out(arg, &*req).inspect_err(|_| {
                    let _ = this.with_controller_uninterruptible(|c| c.ns_delete(req.nsid));
                })
            }
            ioctl::DIA_IOC_NS_SET_MIRROR => {
                // 1.5 KiB: kept off the kernel stack.
                let req: KBox<DiaNsSetMirror> = read_boxed(arg)?;
                if req.reserved != 0 || req.plexes.validate().is_err() {
                    return Err(EINVAL);
                }
                this.with_controller(|c| c.ns_set_mirror(req.nsid, &req.plexes))?;
                Ok(0)
            }
            ioctl::DIA_IOC_NS_MIRROR_STATUS => {
                let mut req: DiaNsMirrorStatus = read_in(arg)?;
                if req.reserved != 0 {
                    return Err(EINVAL);
                }
                req.status = this.with_controller(|c| c.ns_mirror_status(req.nsid))?;
                write_out(arg, &req)
            }
            ioctl::DIA_IOC_NS_DELETE => {
                let nsid = ns_id(arg)?;
                this.with_controller(|c| c.ns_delete(nsid))?;
                Ok(0)
            }
            ioctl::DIA_IOC_NS_ATTACH => {
                let nsid = ns_id(arg)?;
                this.attach_namespace(nsid)?;
                Ok(0)
            }
            ioctl::DIA_IOC_NS_DETACH => {
                let nsid = ns_id(arg)?;
                this.detach_namespace(nsid)?;
                Ok(0)
            }
            ioctl::DIA_IOC_NS_INFO => {
                let req: DiaNsInfo = read_in(arg)?;
                if req.reserved != 0 {
                    return Err(EINVAL);
                }
                let info = this.with_controller(|c| c.ns_info(req.nsid))?;
                write_out(arg, &info)
            }
            ioctl::DIA_IOC_NS_LIST => {
                let mut list = KBox::new(DiaNsList::default(), GFP_KERNEL)?;
                this.with_controller(|c| c.ns_list(&mut list))?;
                write_out(arg, &*list)
            }
            ioctl::DIA_IOC_POOL_INFO => {
                let pool: DiaPoolInfo = this.with_controller(|c| c.pool_info())?;
                write_out(arg, &pool)
            }
            ioctl::DIA_IOC_NS_SET_QOS => {
                let mut req: DiaNsQos = read_in(arg)?;
                if req.excess_iops != 0 {
                    return Err(EINVAL);
                }
                let done = this.with_controller(|c| c.ns_set_qos(&mut req));
                if req.excess_iops != 0 {
                    // The caller learns by how much the floors were over.
                    write_out(arg, &req)?;
                }
                done.map(|()| 0)
            }
            ioctl::DIA_IOC_NS_STATS => {
                let mut req: DiaNsStats = read_in(arg)?;
                if req.reserved != 0 {
                    return Err(EINVAL);
                }
                req.stats = this.with_controller(|c| c.ns_stats(req.nsid))?;
                write_out(arg, &req)
            }
            ioctl::DIA_IOC_PORT_CREATE => {
                let mut req: DiaPortCreate = read_in(arg)?;
                // Out fields must come in zeroed: a caller that fills them
                // misunderstands the call.
                if req.port != 0
                    || req.mac != [0; 6]
                    || req.reserved != [0; 2]
                    || req.ifname[0] != 0
                {
                    return Err(EINVAL);
                }
                let created = this.create_port(&req.config)?;
                req.port = u32::from(created.port);
                req.mac = created.mac;
                req.ifname = created.ifname;
                write_out(arg, &req).inspect_err(|_| {
                    let _ = this.delete_port(u32::from(created.port));
                })
            }
            ioctl::DIA_IOC_PORT_DELETE => {
                let id: DiaPortId = read_in(arg)?;
                if id.flags != 0 {
                    return Err(EINVAL);
                }
                this.delete_port(id.port)?;
                Ok(0)
            }
            ioctl::DIA_IOC_PORT_SET => {
                let req: DiaPortSet = read_in(arg)?;
                if req.flags != 0 {
                    return Err(EINVAL);
                }
                this.set_port(req.port, &req.config)?;
                Ok(0)
            }
            ioctl::DIA_IOC_PORT_INFO => {
                let req: DiaPortInfo = read_in(arg)?;
                if req.reserved != 0 || req.reserved2 != [0; 2] {
                    return Err(EINVAL);
                }
                let info = this.with_controller(|c| c.port_info(req.port))?;
                write_out(arg, &info)
            }
            ioctl::DIA_IOC_PORT_LIST => {
                let mut list = KBox::new(DiaPortList::default(), GFP_KERNEL)?;
                let n = this.with_controller(|c| Ok(c.port_ids(&mut list.ports)))?;
                list.count = n as u32;
                write_out(arg, &*list)
            }
            _ => Err(ENOTTY),
        }
    }
}
