//! The `/dev/dia` ioctls: decode the request number, validate the argument,
//! call the card, copy the result out. Numbers and structs come from the
//! shared ABI file; unknown requests get `ENOTTY`, bad pointers `EFAULT`.

use kernel::error::code::{EINVAL, ENOTTY};
use kernel::prelude::*;
use kernel::sync::ArcBorrow;
use kernel::uaccess::UserSlice;

use crate::abi::ioctl::{
    self, DiaIdentity, DiaNsCreate, DiaNsId, DiaNsInfo, DiaNsList, DiaNsQos, DiaNsStats,
    DiaPoolInfo, DiaPortCreate, DiaPortId, DiaPortInfo, DiaPortList, DiaPortSet,
};
use crate::card::Card;
use crate::glue::miscdev::MiscDevice;

/// Reads a namespace id argument; reserved flags must be zero.
fn ns_id(arg: usize) -> Result<u32> {
    let id: DiaNsId = UserSlice::new(arg, core::mem::size_of::<DiaNsId>())
        .reader()
        .read()?;
    if id.flags != 0 {
        return Err(EINVAL);
    }
    Ok(id.nsid)
}

fn write_out<T: kernel::types::AsBytes>(arg: usize, value: &T) -> Result<isize> {
    UserSlice::new(arg, core::mem::size_of::<T>())
        .writer()
        .write(value)?;
    Ok(0)
}

impl MiscDevice for Card {
    fn ioctl(this: ArcBorrow<'_, Self>, cmd: u32, arg: usize) -> Result<isize> {
        match cmd {
            ioctl::DIA_IOC_IDENTIFY => {
                let id: DiaIdentity = this.identify()?;
                write_out(arg, &id)
            }
            ioctl::DIA_IOC_NS_CREATE => {
                let size = core::mem::size_of::<DiaNsCreate>();
                let mut req: DiaNsCreate = UserSlice::new(arg, size).reader().read()?;
                if req.nsid != 0 {
                    return Err(EINVAL);
                }
                req.nsid = this
                    .with_controller(|c| c.ns_create(req.size_bytes, req.lba_shift, &req.label))?;
                write_out(arg, &req)
            }
            ioctl::DIA_IOC_NS_DELETE => {
                let nsid = ns_id(arg)?;
                this.with_controller(|c| c.ns_delete(nsid))?;
                Ok(0)
            }
            ioctl::DIA_IOC_NS_ATTACH => {
                let nsid = ns_id(arg)?;
                this.with_controller(|c| c.ns_attach(nsid))?;
                Ok(0)
            }
            ioctl::DIA_IOC_NS_DETACH => {
                let nsid = ns_id(arg)?;
                this.with_controller(|c| c.ns_detach(nsid))?;
                Ok(0)
            }
            ioctl::DIA_IOC_NS_INFO => {
                let size = core::mem::size_of::<DiaNsInfo>();
                let req: DiaNsInfo = UserSlice::new(arg, size).reader().read()?;
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
                let size = core::mem::size_of::<DiaNsQos>();
                let mut req: DiaNsQos = UserSlice::new(arg, size).reader().read()?;
                let done = this.with_controller(|c| c.ns_set_qos(&mut req));
                if req.excess_iops != 0 {
                    // The caller learns by how much the floors were over.
                    write_out(arg, &req)?;
                }
                done.map(|()| 0)
            }
            ioctl::DIA_IOC_NS_STATS => {
                let size = core::mem::size_of::<DiaNsStats>();
                let mut req: DiaNsStats = UserSlice::new(arg, size).reader().read()?;
                if req.reserved != 0 {
                    return Err(EINVAL);
                }
                req.stats = this.with_controller(|c| c.ns_stats(req.nsid))?;
                write_out(arg, &req)
            }
            ioctl::DIA_IOC_PORT_CREATE => {
                let size = core::mem::size_of::<DiaPortCreate>();
                let mut req: DiaPortCreate = UserSlice::new(arg, size).reader().read()?;
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
                write_out(arg, &req)
            }
            ioctl::DIA_IOC_PORT_DELETE => {
                let id: DiaPortId = UserSlice::new(arg, core::mem::size_of::<DiaPortId>())
                    .reader()
                    .read()?;
                if id.flags != 0 {
                    return Err(EINVAL);
                }
                this.delete_port(id.port)?;
                Ok(0)
            }
            ioctl::DIA_IOC_PORT_SET => {
                let req: DiaPortSet = UserSlice::new(arg, core::mem::size_of::<DiaPortSet>())
                    .reader()
                    .read()?;
                if req.flags != 0 {
                    return Err(EINVAL);
                }
                this.set_port(req.port, &req.config)?;
                Ok(0)
            }
            ioctl::DIA_IOC_PORT_INFO => {
                let size = core::mem::size_of::<DiaPortInfo>();
                let req: DiaPortInfo = UserSlice::new(arg, size).reader().read()?;
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
