//! The `/dev/dia` ioctls: decode the request number, validate the argument,
//! call the card, copy the result out. Numbers and structs come from the
//! shared ABI file; unknown requests get `ENOTTY`, bad pointers `EFAULT`.

use kernel::error::code::ENOTTY;
use kernel::prelude::*;
use kernel::sync::ArcBorrow;
use kernel::uaccess::UserSlice;

use crate::abi::ioctl::{self, DiaIdentity};
use crate::card::Card;
use crate::glue::miscdev::MiscDevice;

impl MiscDevice for Card {
    fn ioctl(this: ArcBorrow<'_, Self>, cmd: u32, arg: usize) -> Result<isize> {
        match cmd {
            ioctl::DIA_IOC_IDENTIFY => {
                let id = this.identify()?;
                UserSlice::new(arg, core::mem::size_of::<DiaIdentity>())
                    .writer()
                    .write(&id)?;
                Ok(0)
            }
            _ => Err(ENOTTY),
        }
    }
}
