//! One dia card bound by the PCI core: probe brings the controller up and
//! creates its `/dev/dia` node; remove tears both down. Open files keep the
//! `Card` alive after remove and then get `ENODEV`.

use core::sync::atomic::{AtomicU32, Ordering};

use kernel::error::code::ENODEV;
use kernel::prelude::*;
use kernel::str::CString;
use kernel::sync::{Arc, Mutex};

use crate::abi::ioctl::DiaIdentity;
use crate::controller::{ascii, Controller, Hardware};
use crate::glue::{miscdev, pci};

/// Next card index (`/dev/dia` for card 0, `/dev/dia1` for card 1, ...).
static NEXT_INDEX: AtomicU32 = AtomicU32::new(0);

/// State shared by the PCI binding and open `/dev/dia` files.
#[pin_data]
pub(crate) struct Card {
    /// Card number, used in device names.
    pub(crate) index: u32,
    /// The controller; `None` once the card was removed.
    #[pin]
    ctrl: Mutex<Option<Controller>>,
}

impl Card {
    /// Runs `f` on the controller, or fails with `ENODEV` after removal.
    pub(crate) fn with_controller<R>(
        &self,
        f: impl FnOnce(&mut Controller) -> Result<R>,
    ) -> Result<R> {
        let mut guard = self.ctrl.lock();
        let ctrl = guard.as_mut().ok_or(ENODEV)?;
        f(ctrl)
    }

    /// Asks the card for its identity.
    pub(crate) fn identify(&self) -> Result<DiaIdentity> {
        self.with_controller(|c| c.identify())
    }
}

/// What the PCI core keeps for a bound card.
pub(crate) struct BoundCard {
    // Field order is drop order: the device node goes before the card state.
    misc: Option<miscdev::Registration<Card>>,
    card: Arc<Card>,
}

/// The PCI driver for dia cards.
pub(crate) struct CardDriver;

impl pci::Driver for CardDriver {
    type Data = BoundCard;

    fn probe(dev: pci::Device) -> Result<KBox<BoundCard>> {
        pr_info!(
            "{}: probing {:04x}:{:04x}\n",
            dev.name(),
            dev.vendor_id(),
            dev.device_id()
        );
        let hw = Hardware::probe(dev)?;
        let index = NEXT_INDEX.fetch_add(1, Ordering::Relaxed);
        let mut ctrl = Controller::new(hw, index)?;
        let id = ctrl.identify()?;
        ctrl.setup_io()?;
        ctrl.discover_namespaces()?;
        pr_info!(
            "{}: {} serial {} firmware {} interface {}.{}, up to {} I/O queues of {} entries, {} MSI-X vectors, guest peer {}\n",
            dev.name(),
            ascii(&id.model),
            ascii(&id.serial),
            ascii(&id.firmware),
            id.interface_version >> 16,
            id.interface_version & 0xffff,
            id.max_io_queues,
            id.max_queue_entries,
            ctrl.msix_vectors(),
            ctrl.guest_peer()
        );
        let card = Arc::pin_init(
            pin_init!(Card {
                index,
                ctrl <- kernel::new_mutex!(Some(ctrl), "dia:card"),
            }),
            GFP_KERNEL,
        )?;
        let name = if index == 0 {
            CString::try_from_fmt(kernel::fmt!("dia"))?
        } else {
            CString::try_from_fmt(kernel::fmt!("dia{}", index))?
        };
        let misc = miscdev::Registration::new(&name, card.clone())?;
        pr_info!("{}: card {} ready at /dev/{}\n", dev.name(), index, &*name);
        Ok(KBox::new(
            BoundCard {
                misc: Some(misc),
                card,
            },
            GFP_KERNEL,
        )?)
    }

    fn remove(dev: pci::Device, mut data: KBox<BoundCard>) {
        // No new opens from here on; open files keep `card` alive.
        drop(data.misc.take());
        // Waits for an ioctl in flight, then stops and frees the hardware.
        let ctrl = data.card.ctrl.lock().take();
        drop(ctrl);
        pr_info!("{}: card {} removed\n", dev.name(), data.card.index);
    }
}
