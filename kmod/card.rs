//! One dia card bound by the PCI core: probe brings the controller up and
//! creates its `/dev/dia` node; remove tears both down. Open files keep the
//! `Card` alive after remove and then get `ENODEV`.

use core::sync::atomic::{AtomicU64, Ordering};

use kernel::error::code::{ENODEV, ENOENT, ENOSPC, ERESTARTSYS};
use kernel::prelude::*;
use kernel::str::CString;
use kernel::sync::{Arc, CondVar, Mutex};
use kernel::workqueue::{self, impl_has_work, new_work, Work, WorkItem};

use crate::abi::card::PortConfig;
use crate::abi::ioctl::{DiaIdentity, DIA_IFNAME_LEN};
use crate::controller::{ascii, Controller, Hardware};
use crate::glue::{miscdev, net, pci};
use crate::port::PortPath;
use crate::slots;

/// Card indices in use, one bit each (`/dev/dia` for card 0, `/dev/dia1`
/// for card 1, ...): a card removed and found again (PCI remove and rescan,
/// a hot-plugged card) gets the lowest free index, so the appliance's one
/// card is `/dev/dia` again, as `nvme0` is for nvme's instance allocator.
static INDICES: AtomicU64 = AtomicU64::new(0);

/// A card index held from probe to the end of remove, when every name made
/// from it (`/dev/dia`, `dia0n1`, `dia0p1`) is gone.
///
/// # Invariants
///
/// `self.0 < 64` and its bit is set in [`INDICES`] for as long as `self`
/// lives.
struct CardIndex(u32);

impl CardIndex {
    /// The lowest free index; `ENOSPC` with 64 cards bound.
    fn take() -> Result<Self> {
        let mut used = INDICES.load(Ordering::Relaxed);
        loop {
            let index = (!used).trailing_zeros();
            if index >= 64 {
                return Err(ENOSPC);
            }
            match INDICES.compare_exchange_weak(
                used,
                used | 1 << index,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                // INVARIANT: index < 64 and this thread just set its bit.
                Ok(_) => return Ok(Self(index)),
                Err(now) => used = now,
            }
        }
    }
}

impl Drop for CardIndex {
    fn drop(&mut self) {
        INDICES.fetch_and(!(1 << self.0), Ordering::AcqRel);
    }
}

/// State shared by the PCI binding and open `/dev/dia` files.
///
/// # Invariants
///
/// `ctrl` is only locked by the holder of the gate (`busy` set by it), so
/// the mutex is never contended and nobody sleeps uninterruptibly on it
/// while the recovery work resets the card (which can take seconds): a
/// request from user space waits at the gate interruptibly instead.
#[pin_data]
pub(crate) struct Card {
    /// Card number, used in device names.
    pub(crate) index: u32,
    /// The controller; `None` once the card was removed.
    #[pin]
    ctrl: Mutex<Option<Controller>>,
    /// The gate in front of `ctrl`: someone works on the controller.
    #[pin]
    busy: Mutex<bool>,
    /// Signalled when `busy` clears.
    #[pin]
    idle: CondVar,
    /// Registered net devices of the ports. Kept apart from the controller:
    /// registering and unregistering take the RTNL, which is never taken
    /// while the controller is locked (lock order: `netdevs`, then the gate
    /// or the RTNL; nothing holding either takes `netdevs`).
    #[pin]
    netdevs: Mutex<NetDevs>,
    /// The recovery work: checks timed-out I/O with the card and resets a
    /// card that lost commands, without waiting for anyone's ioctl.
    #[pin]
    recovery: Work<Card>,
}

impl_has_work! {
    impl HasWork<Self> for Card { self.recovery }
}

impl WorkItem for Card {
    type Pointer = Arc<Card>;

    fn run(this: Arc<Card>) {
        // ENODEV after remove: nothing left to recover.
        let _ = this.with_controller_uninterruptible(|c| {
            c.check_timeouts();
            Ok(())
        });
    }
}

/// The ports' registered net devices.
struct NetDevs {
    list: KVec<Option<NetSlot>>,
    /// The card is being removed: no new net devices.
    closed: bool,
}

/// A port's registered net device.
struct NetSlot {
    port: u16,
    _reg: net::Registration<PortPath>,
}

/// A port just created, as `DIA_IOC_PORT_CREATE` reports it.
pub(crate) struct CreatedPort {
    pub(crate) port: u16,
    pub(crate) mac: [u8; 6],
    pub(crate) ifname: [u8; DIA_IFNAME_LEN],
}

/// Passage through [`Card`]'s gate; leaving it lets the next one in.
struct GatePass<'a>(&'a Card);

impl Drop for GatePass<'_> {
    fn drop(&mut self) {
        *self.0.busy.lock() = false;
        // All: a woken waiter may leave on a signal without passing.
        self.0.idle.notify_all();
    }
}

impl Card {
    /// Waits for the gate; with `interruptible`, a signal ends the wait
    /// with `ERESTARTSYS` (the system call is restarted or fails EINTR).
    fn pass_gate(&self, interruptible: bool) -> Result<GatePass<'_>> {
        let mut busy = self.busy.lock();
        while *busy {
            if interruptible {
                if self.idle.wait_interruptible(&mut busy) {
                    return Err(ERESTARTSYS);
                }
            } else {
                self.idle.wait(&mut busy);
            }
        }
        *busy = true;
        Ok(GatePass(self))
    }

    /// Runs `f` on the controller for a request from user space, or fails
    /// with `ENODEV` after removal. While someone else (a reset by the
    /// recovery work) has the controller, waits interruptibly.
    pub(crate) fn with_controller<R>(
        &self,
        f: impl FnOnce(&mut Controller) -> Result<R>,
    ) -> Result<R> {
        self.through_gate(true, f)
    }

    /// As [`Self::with_controller`], but not ended by a signal: for the
    /// recovery work, probe and remove, and for undoing half-done requests
    /// (an undo that a pending signal skipped would leave an orphan).
    pub(crate) fn with_controller_uninterruptible<R>(
        &self,
        f: impl FnOnce(&mut Controller) -> Result<R>,
    ) -> Result<R> {
        self.through_gate(false, f)
    }

    /// Passes the gate, then runs `f` on the controller (`ENODEV` once
    /// removed).
    fn through_gate<R>(
        &self,
        interruptible: bool,
        f: impl FnOnce(&mut Controller) -> Result<R>,
    ) -> Result<R> {
        let _pass = self.pass_gate(interruptible)?;
        let mut guard = self.ctrl.lock();
        let ctrl = guard.as_mut().ok_or(ENODEV)?;
        f(ctrl)
    }

    /// Queues the recovery work (once: a queued one covers later calls).
    pub(crate) fn check_timeouts(self: Arc<Self>) {
        // Already queued: that run sees this request too.
        let _ = workqueue::system().enqueue(self);
    }

    /// Asks the card for its identity.
    pub(crate) fn identify(&self) -> Result<DiaIdentity> {
        self.with_controller(|c| c.identify())
    }

    /// Creates a port on the card and registers its net device (in the
    /// initial network namespace, down).
    pub(crate) fn create_port(&self, config: &PortConfig) -> Result<CreatedPort> {
        // Held throughout: remove cannot unregister the ports between this
        // port's registration and its filing (it would outlive the card).
        let mut netdevs = self.netdevs.lock();
        if netdevs.closed {
            return Err(ENODEV);
        }
        let new = self.with_controller(|c| c.port_create(config))?;
        let id = new.id;
        let undo = |e| {
            let _ = self.with_controller_uninterruptible(|c| c.port_delete(u32::from(id)));
            e
        };
        let reg =
            net::Registration::register(new.path.nd.clone(), new.path.clone()).map_err(undo)?;
        let slot = NetSlot {
            port: id,
            _reg: reg,
        };
        // On allocation failure the slot (and so the registration) is
        // dropped under `netdevs`, which nothing holding the RTNL takes.
        let inserted = slots::insert(&mut netdevs.list, slot);
        inserted.map_err(|e| undo(e.into()))?;
        Ok(CreatedPort {
            port: id,
            mac: new.mac,
            ifname: new.ifname,
        })
    }

    /// Unregisters a port's net device (wherever it is), then deletes the
    /// port on the card.
    pub(crate) fn delete_port(&self, port: u32) -> Result {
        {
            let mut netdevs = self.netdevs.lock();
            let slot = netdevs
                .list
                .iter_mut()
                .find(|s| s.as_ref().is_some_and(|s| u32::from(s.port) == port))
                .ok_or(ENOENT)?;
            // Unregistering takes the RTNL; the controller is not locked.
            drop(slot.take());
        }
        // The net device is gone: finish, even with a signal pending.
        self.with_controller_uninterruptible(|c| c.port_delete(port))
    }

    /// Changes a port's VLAN, MTU and limits (the net device's MTU too).
    pub(crate) fn set_port(&self, port: u32, config: &PortConfig) -> Result {
        // Held throughout, so the net device is not unregistered between the
        // card's change and the MTU's (see `dia_shim_netdev_set_mtu`).
        let netdevs = self.netdevs.lock();
        if netdevs.closed {
            return Err(ENODEV);
        }
        let nd = self.with_controller(|c| c.port_set(port, config))?;
        let registered = netdevs
            .list
            .iter()
            .flatten()
            .any(|s| u32::from(s.port) == port);
        if !registered {
            // Being deleted: its net device is already gone.
            return Err(ENOENT);
        }
        nd.set_mtu(config.mtu)
    }

    /// Attaches a namespace and adds its block device. The device is added
    /// with the gate open: reading its partition table is I/O, and I/O the
    /// card loses is only ended by the recovery work, which needs the gate.
    pub(crate) fn attach_namespace(&self, nsid: u32) -> Result {
        let planned = self.with_controller(|c| c.ns_attach_begin(nsid))?;
        let added = planned.add();
        self.with_controller_uninterruptible(|c| c.ns_attach_end(nsid, added, true))
    }

    /// Adds block devices for the namespaces the card already has attached
    /// (after a reload or a host reboot), each as an attach does: with the
    /// gate open, so a card that dies while a partition table is read is
    /// reset by the recovery work instead of hanging the probe.
    fn add_found_disks(&self) -> Result {
        let ids = self.with_controller_uninterruptible(|c| c.attached_namespaces())?;
        for &nsid in ids.iter() {
            let added = self
                .with_controller_uninterruptible(|c| c.found_disk_begin(nsid))
                .and_then(|planned| {
                    let added = planned.add();
                    self.with_controller_uninterruptible(|c| c.ns_attach_end(nsid, added, false))
                });
            if let Err(e) = added {
                pr_warn!(
                    "dia{}: namespace {}: no block device ({:?})\n",
                    self.index,
                    nsid,
                    e
                );
            }
        }
        Ok(())
    }

    /// Removes a namespace's block device (refused while it is open), with
    /// the gate open for the same reason, then detaches it on the card.
    pub(crate) fn detach_namespace(&self, nsid: u32) -> Result {
        let mut detaching = self.with_controller(|c| c.ns_detach_begin(nsid))?;
        detaching.remove();
        self.with_controller_uninterruptible(|c| c.ns_detach_end(detaching))
    }

    /// Removes every block device before the card goes away, with the gate
    /// open so that the recovery work can still reset a card that lost
    /// their last I/O, and waits for attaches and detaches under way.
    fn remove_disks(&self) {
        loop {
            let Ok((disks, outside)) = self.with_controller_uninterruptible(|c| c.close_disks())
            else {
                // Out of memory: `Controller`'s drop removes what is left.
                return;
            };
            let none = disks.is_empty();
            drop(disks);
            if none && outside == 0 {
                return;
            }
            if none {
                // Someone adds or removes one outside the gate: it finishes
                // through the gate within an I/O timeout or a reset.
                crate::glue::time::msleep(10);
            }
        }
    }

    /// Takes the card down (remove, or a probe that failed after the card
    /// was set up): net devices, then disks (while the recovery work can
    /// still reach the card), then the controller, which stops the card.
    fn shut_down(&self) {
        // Net devices go before the controller (they use its rings).
        self.unregister_ports();
        self.remove_disks();
        // Timeouts no longer reach the recovery work (and the card no
        // longer keeps itself alive through its I/O path).
        let _ = self.with_controller_uninterruptible(|c| {
            c.attach_card(None);
            Ok(())
        });
        // Waits for an ioctl in flight, then stops and frees the hardware;
        // with the disks and the tag set gone no timeout fires any more.
        let ctrl = match self.pass_gate(false) {
            Ok(_pass) => self.ctrl.lock().take(),
            // Not interruptible: cannot fail.
            Err(_) => None,
        };
        drop(ctrl);
        // A recovery run queued before that finds no controller; wait for
        // it before this module's code can go away (not under the lock).
        crate::glue::work::cancel_sync(&self.recovery);
    }

    /// Unregisters every port's net device (before the card goes away);
    /// no new ones after this. Nothing holding the RTNL takes `netdevs`, so
    /// unregistering under it is fine; only the controller must be free.
    fn unregister_ports(&self) {
        let mut netdevs = self.netdevs.lock();
        netdevs.closed = true;
        for s in netdevs.list.iter_mut() {
            drop(s.take());
        }
    }
}

/// What the PCI core keeps for a bound card.
pub(crate) struct BoundCard {
    // Field order is drop order: the device node goes before the card state.
    misc: Option<miscdev::Registration<Card>>,
    card: Arc<Card>,
    /// Freed last, after the names made from it are gone.
    index: CardIndex,
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
        let held = CardIndex::take()?;
        let index = held.0;
        let mut ctrl = Controller::new(hw, index)?;
        let id = ctrl.identify()?;
        ctrl.setup_io()?;
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
                busy <- kernel::new_mutex!(false, "dia:card_gate"),
                idle <- kernel::new_condvar!("dia:card_idle"),
                netdevs <- kernel::new_mutex!(
                    NetDevs {
                        list: KVec::new(),
                        closed: false,
                    },
                    "dia:netdevs"
                ),
                recovery <- new_work!("dia:recovery"),
            }),
            GFP_KERNEL,
        )?;

        let name = if index == 0 {
            CString::try_from_fmt(kernel::fmt!("dia"))?
        } else {
            CString::try_from_fmt(kernel::fmt!("dia{}", index))?
        };
        let misc = miscdev::Registration::new(&name, card.clone())?;
        // Timeouts reach the recovery work from here on (undone in remove).
        card.with_controller_uninterruptible(|c| {
            c.attach_card(Some(card.clone()));
            Ok(())
        })?;
        let bound = card.add_found_disks().and_then(|()| {
            Ok(KBox::new(
                BoundCard {
                    misc: Some(misc),
                    card: card.clone(),
                    index: held,
                },
                GFP_KERNEL,
            )?)
        });
        if bound.is_err() {
            // The device node went with the failed closure's `misc`.
            card.shut_down();
        } else {
            pr_info!("{}: card {} ready at /dev/{}\n", dev.name(), index, &*name);
        }
        bound
    }

    fn remove(dev: pci::Device, mut data: KBox<BoundCard>) {
        // No new opens from here on; open files keep `card` alive.
        drop(data.misc.take());
        data.card.shut_down();
        pr_info!("{}: card {} removed\n", dev.name(), data.index.0);
    }
}
