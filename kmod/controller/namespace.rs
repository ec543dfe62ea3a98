//! Namespaces on the controller: create/delete (Namespace Management),
//! attach/detach (Namespace Attachment) with the block device that follows
//! an attached namespace, Identify Namespace and namespace lists, and the
//! pool log page. Arguments are validated before the card sees them.

use core::mem::offset_of;
use core::mem::size_of;

use kernel::error::code::{EBUSY, EEXIST, EINVAL, ENODEV};
use kernel::prelude::*;
use kernel::str::CString;
use kernel::sync::Arc;

use super::{Controller, DetachingDisk, NsDisk, PlannedDisk};
use crate::abi::card::{
    self as regs, IdentifyNamespace, MirrorNamespaceCreate, MirrorStatus, NamespaceCreate,
    NamespaceStats, PoolStatus, QosSettings, RemoteNamespaceCreate, SubmissionEntry,
};
use crate::abi::ioctl::{DiaNsInfo, DiaNsList, DiaNsQos, DiaPoolInfo, DIA_NS_LIST_MAX};
use crate::glue::blk::Disk;
use crate::glue::errno;
use crate::io_path::{disk_params, IoPath, NsData};

/// What Identify Namespace says about one namespace.
struct NsFacts {
    size_blocks: u64,
    used_blocks: u64,
    lba_shift: u8,
    attached: bool,
    label: [u8; regs::LABEL_LEN],
}

impl Controller {
    /// The slot of `nsid`'s block device, also while it is being added or
    /// removed outside the gate.
    fn disk(&self, nsid: u32) -> Option<&NsDisk> {
        self.disks.iter().flatten().find(|d| d.nsid == nsid)
    }

    fn disk_mut(&mut self, nsid: u32) -> Option<&mut Option<NsDisk>> {
        self.disks
            .iter_mut()
            .find(|slot| slot.as_ref().is_some_and(|d| d.nsid == nsid))
    }

    fn identify_namespace(&mut self, nsid: u32) -> Result<NsFacts> {
        if nsid == 0 || nsid == u32::MAX {
            return Err(EINVAL);
        }
        self.buf.zero();
        self.admin_command(SubmissionEntry {
            opcode: regs::ADMIN_IDENTIFY,
            nsid,
            prp1: self.buf.dma_handle(),
            cdw10: regs::IdentifyCns::Namespace.cdw10(),
            ..SubmissionEntry::default()
        })?;
        let b = &self.buf;
        let lbaf0: u32 = b.read(offset_of!(IdentifyNamespace, lbaf0))?;
        let lba_shift = (lbaf0 >> 16) as u8;
        if !(regs::LBA_SHIFT_MIN..=regs::LBA_SHIFT_MAX).contains(&lba_shift) {
            pr_err!(
                "{}: namespace {} reports block shift {}\n",
                self.name(),
                nsid,
                lba_shift
            );
            return Err(EIO);
        }
        Ok(NsFacts {
            size_blocks: b.read(offset_of!(IdentifyNamespace, nsze))?,
            used_blocks: b.read(offset_of!(IdentifyNamespace, nuse))?,
            lba_shift,
            attached: b.read::<u8>(offset_of!(IdentifyNamespace, attached))? != 0,
            label: b.read(offset_of!(IdentifyNamespace, label))?,
        })
    }

    /// Namespace ids (all allocated ones, or only attached ones).
    fn namespace_ids(&mut self, attached_only: bool, out: &mut KVec<u32>) -> Result {
        self.buf.zero();
        let cns = if attached_only {
            regs::IdentifyCns::ActiveNsList
        } else {
            regs::IdentifyCns::AllocatedNsList
        };
        self.admin_command(SubmissionEntry {
            opcode: regs::ADMIN_IDENTIFY,
            nsid: 0,
            prp1: self.buf.dma_handle(),
            cdw10: cns.cdw10(),
            ..SubmissionEntry::default()
        })?;
        for i in 0..regs::IDENTIFY_SIZE / 4 {
            let id: u32 = self.buf.read(i * 4)?;
            if id == 0 {
                break;
            }
            out.push(id, GFP_KERNEL)?;
        }
        Ok(())
    }

    /// Creates a thin namespace; returns its id.
    pub(crate) fn ns_create(
        &mut self,
        size_bytes: u64,
        lba_shift: u32,
        label: &[u8; regs::LABEL_LEN],
    ) -> Result<u32> {
        let shift = u8::try_from(lba_shift).map_err(|_| EINVAL)?;
        if !(regs::LBA_SHIFT_MIN..=regs::LBA_SHIFT_MAX).contains(&shift)
            || size_bytes == 0
            || size_bytes % (1u64 << shift) != 0
        {
            return Err(EINVAL);
        }
        let create = NamespaceCreate {
            size_blocks: size_bytes >> shift,
            lba_shift: shift,
            reserved: [0; 7],
            label: *label,
        };
        self.buf.zero();
        self.buf.write(0, &create)?;
        let cqe = self.admin_command(SubmissionEntry {
            opcode: regs::ADMIN_NS_MANAGEMENT,
            prp1: self.buf.dma_handle(),
            cdw10: regs::NsManagement::Create.cdw10(),
            ..SubmissionEntry::default()
        })?;
        pr_info!(
            "{}: namespace {} created ({} bytes)\n",
            self.name(),
            cqe.result,
            size_bytes
        );
        Ok(cqe.result)
    }

    /// Creates a namespace whose data is on an NVMe/TCP target (validated
    /// by the caller; the card checks again); returns its id.
    pub(crate) fn ns_create_remote(&mut self, create: &RemoteNamespaceCreate) -> Result<u32> {
        self.buf.zero();
        self.buf.write(0, create)?;
        let cqe = self.admin_command(SubmissionEntry {
            opcode: regs::ADMIN_CREATE_REMOTE_NS,
            prp1: self.buf.dma_handle(),
            ..SubmissionEntry::default()
        })?;
        pr_info!(
            "{}: namespace {} created on NVMe/TCP target port {}\n",
            self.name(),
            cqe.result,
            create.target.port
        );
        Ok(cqe.result)
    }

    /// Creates a mirrored namespace over the plexes of `create` (validated
    /// by the caller; the card checks again and looks at each plex it can
    /// reach); returns its id. Plexes that differ in size or block size are
    /// `EMEDIUMTYPE`, plex records saying a newer copy than any reachable
    /// one exists `ESTALE`; `EOPNOTSUPP` on a card before interface 1.5.
    pub(crate) fn ns_create_mirror(&mut self, create: &MirrorNamespaceCreate) -> Result<u32> {
        if !self.mirrors {
            return Err(errno::EOPNOTSUPP());
        }
        self.buf.zero();
        self.buf.write(0, create)?;
        let cqe = self.admin_command_with(
            SubmissionEntry {
                opcode: regs::ADMIN_CREATE_MIRROR_NS,
                prp1: self.buf.dma_handle(),
                ..SubmissionEntry::default()
            },
            |status| match status {
                // For this command the one Invalid Format is unlike plexes.
                regs::STATUS_INVALID_FORMAT => errno::EMEDIUMTYPE(),
                regs::STATUS_MIRROR_STALE => errno::ESTALE(),
                other => super::status_errno(other),
            },
        )?;
        pr_info!(
            "{}: namespace {} created, mirrored on {} plexes (generation {})\n",
            self.name(),
            cqe.result,
            create.plex_count,
            create.generation
        );
        Ok(cqe.result)
    }

    /// Gives mirrored namespace `nsid` the plex table of `plexes` (validated
    /// by the caller; the card checks again; label and generation ignored),
    /// live: Set Mirror Plexes. `EINVAL` for nsid 0 or 0xffffffff, a new
    /// plex given in sync or a namespace that is not mirrored (Invalid
    /// Field), `ENOENT` for no such namespace, `EBUSY` when no plex in sync
    /// now would be left (Mirror Last Copy), `EOPNOTSUPP` on a card before
    /// interface 1.5 (not asked) or without a pool (Invalid Opcode).
    pub(crate) fn ns_set_mirror(&mut self, nsid: u32, plexes: &MirrorNamespaceCreate) -> Result {
        if nsid == 0 || nsid == u32::MAX {
            return Err(EINVAL);
        }
        if !self.mirrors {
            return Err(errno::EOPNOTSUPP());
        }
        self.buf.zero();
        self.buf.write(0, plexes)?;
        self.admin_command_with(
            SubmissionEntry {
                opcode: regs::ADMIN_SET_MIRROR_PLEXES,
                nsid,
                prp1: self.buf.dma_handle(),
                ..SubmissionEntry::default()
            },
            |status| match status {
                // For this command alone: the change would leave no copy.
                regs::STATUS_MIRROR_LAST_COPY => EBUSY,
                other => super::status_errno(other),
            },
        )?;
        pr_info!(
            "{}: namespace {} now mirrored on {} plexes\n",
            self.name(),
            nsid,
            plexes.plex_count
        );
        Ok(())
    }

    /// A mirrored namespace's plexes as the card sees them: `ENOENT` for no
    /// such namespace, `EINVAL` for one that is not mirrored (the card
    /// answers Invalid Field), `EOPNOTSUPP` on a card before interface 1.5.
    pub(crate) fn ns_mirror_status(&mut self, nsid: u32) -> Result<MirrorStatus> {
        if nsid == 0 || nsid == u32::MAX {
            return Err(EINVAL);
        }
        if !self.mirrors {
            return Err(errno::EOPNOTSUPP());
        }
        self.buf.zero();
        self.admin_command(SubmissionEntry {
            opcode: regs::ADMIN_GET_LOG_PAGE,
            nsid,
            prp1: self.buf.dma_handle(),
            cdw10: regs::LogPage::of_bytes(regs::LogId::MirrorStatus, size_of::<MirrorStatus>())
                .cdw10(),
            ..SubmissionEntry::default()
        })?;
        self.buf.read(0)
    }

    /// Deletes a namespace that is not attached.
    pub(crate) fn ns_delete(&mut self, nsid: u32) -> Result {
        if nsid == 0 || nsid == u32::MAX {
            return Err(EINVAL);
        }
        if self.disk(nsid).is_some() {
            return Err(EBUSY);
        }
        self.admin_command(SubmissionEntry {
            opcode: regs::ADMIN_NS_MANAGEMENT,
            nsid,
            cdw10: regs::NsManagement::Delete.cdw10(),
            ..SubmissionEntry::default()
        })?;
        pr_info!("{}: namespace {} deleted\n", self.name(), nsid);
        Ok(())
    }

    /// What it takes to add the block device of attached namespace `nsid`.
    fn plan_disk(&mut self, nsid: u32) -> Result<PlannedDisk> {
        let facts = self.identify_namespace(nsid)?;
        let set = self.io.as_ref().ok_or(ENODEV)?.set.clone();
        Ok(PlannedDisk {
            name: self.disk_name(nsid)?,
            params: disk_params(
                facts.lba_shift,
                facts.size_blocks,
                self.max_transfer,
                self.vwc,
            ),
            data: Arc::new(NsData::new(nsid, facts.lba_shift), GFP_KERNEL)?,
            set,
        })
    }

    fn disk_name(&self, nsid: u32) -> Result<CString> {
        CString::try_from_fmt(kernel::fmt!("dia{}n{}", self.index, nsid))
    }

    /// First half of an attach: attaches the namespace on the card and
    /// reserves its disk slot. The block device is added by the caller
    /// with the gate open (adding it reads the partition table, and a read
    /// the card loses needs the recovery work, which passes the gate);
    /// [`Self::ns_attach_end`] finishes.
    pub(crate) fn ns_attach_begin(&mut self, nsid: u32) -> Result<PlannedDisk> {
        self.reserve_disk(nsid, true)
    }

    /// As [`Self::ns_attach_begin`] for a namespace the card already has
    /// attached (found when the driver binds): no Namespace Attachment.
    pub(crate) fn found_disk_begin(&mut self, nsid: u32) -> Result<PlannedDisk> {
        self.reserve_disk(nsid, false)
    }

    fn reserve_disk(&mut self, nsid: u32, attach: bool) -> Result<PlannedDisk> {
        if nsid == 0 || nsid == u32::MAX {
            return Err(EINVAL);
        }
        if self.closing {
            return Err(ENODEV);
        }
        if self.disk(nsid).is_some() {
            return Err(EEXIST);
        }
        let reserved = NsDisk {
            nsid,
            name: self.disk_name(nsid)?,
            disk: None,
        };
        // Reserved before the card is asked, so no undo can fail for memory.
        crate::slots::insert(&mut self.disks, reserved)?;
        let attached = if attach {
            self.admin_command(SubmissionEntry {
                opcode: regs::ADMIN_NS_ATTACHMENT,
                nsid,
                cdw10: regs::NsAttachment::Attach.cdw10(),
                ..SubmissionEntry::default()
            })
            .map(|_| ())
        } else {
            Ok(())
        };
        let planned = attached.and_then(|()| {
            self.plan_disk(nsid).inspect_err(|_| {
                if attach {
                    // Leave the card as we found it.
                    let _ = self.detach_on_card(nsid);
                }
            })
        });
        match planned {
            Ok(_) => self.outside += 1,
            Err(_) => {
                if let Some(slot) = self.disk_mut(nsid) {
                    *slot = None;
                }
            }
        }
        planned
    }

    /// Second half of an attach: files the block device in its slot, or,
    /// when adding it failed, frees the slot and detaches on the card.
    /// `undo_attach`: detach on the card when adding failed (an attach; not
    /// for a namespace found attached).
    pub(crate) fn ns_attach_end(
        &mut self,
        nsid: u32,
        added: Result<Disk<IoPath>>,
        undo_attach: bool,
    ) -> Result {
        self.outside -= 1;
        let slot = self.disk_mut(nsid).ok_or(ENODEV)?;
        match added {
            Ok(disk) => {
                if let Some(d) = slot.as_mut() {
                    pr_info!("/dev/{} is namespace {}\n", &*d.name, nsid);
                    d.disk = Some(disk);
                }
                Ok(())
            }
            Err(e) => {
                *slot = None;
                if undo_attach {
                    let _ = self.detach_on_card(nsid);
                }
                Err(e)
            }
        }
    }

    /// First half of a detach: takes the block device out of its slot
    /// (refused while it is open) and leaves the slot reserved. The caller
    /// drops the device with the gate open (its last I/O may need the
    /// recovery work), then [`Self::ns_detach_end`] detaches on the card.
    pub(crate) fn ns_detach_begin(&mut self, nsid: u32) -> Result<DetachingDisk> {
        if nsid == 0 || nsid == u32::MAX {
            return Err(EINVAL);
        }
        if self.closing {
            return Err(ENODEV);
        }
        let Some(Some(d)) = self.disk_mut(nsid) else {
            // No block device: the card may still have it attached.
            return Ok(DetachingDisk {
                nsid,
                reserved: false,
                disk: None,
            });
        };
        match &d.disk {
            // Being added or removed by someone else.
            None => return Err(EBUSY),
            Some(disk) if disk.openers() > 0 => return Err(EBUSY),
            Some(_) => {}
        }
        let disk = d.disk.take();
        pr_info!("/dev/{} removed\n", &*d.name);
        self.outside += 1;
        Ok(DetachingDisk {
            nsid,
            reserved: true,
            disk,
        })
    }

    /// Second half of a detach, once the block device is gone.
    pub(crate) fn ns_detach_end(&mut self, detaching: DetachingDisk) -> Result {
        let nsid = detaching.nsid;
        if detaching.reserved {
            self.outside -= 1;
            if let Some(slot) = self.disk_mut(nsid) {
                *slot = None;
            }
        }
        // Normally gone already; dropped here if the caller did not.
        drop(detaching.disk);
        self.detach_on_card(nsid)
    }

    fn detach_on_card(&mut self, nsid: u32) -> Result {
        self.admin_command(SubmissionEntry {
            opcode: regs::ADMIN_NS_ATTACHMENT,
            nsid,
            cdw10: regs::NsAttachment::Detach.cdw10(),
            ..SubmissionEntry::default()
        })?;
        Ok(())
    }

    /// For removal: no new block devices from here on; hands out the ones
    /// there are (to be dropped with the gate open) and how many attaches
    /// and detaches are still under way outside the gate.
    pub(crate) fn close_disks(&mut self) -> Result<(KVec<Disk<IoPath>>, u32)> {
        self.closing = true;
        let mut out = KVec::new();
        for slot in self.disks.iter_mut() {
            if let Some(d) = slot {
                if d.disk.is_some() {
                    out.reserve(1, GFP_KERNEL)?;
                    if let Some(disk) = d.disk.take() {
                        // Reserved just above: does not allocate.
                        let _ = out.push(disk, GFP_KERNEL);
                    }
                    *slot = None;
                }
            }
        }
        Ok((out, self.outside))
    }

    /// One namespace's facts.
    pub(crate) fn ns_info(&mut self, nsid: u32) -> Result<DiaNsInfo> {
        let f = self.identify_namespace(nsid)?;
        let mut info = DiaNsInfo {
            nsid,
            lba_shift: u32::from(f.lba_shift),
            size_blocks: f.size_blocks,
            used_blocks: f.used_blocks,
            attached: u32::from(f.attached),
            label: f.label,
            ..DiaNsInfo::default()
        };
        if let Some(d) = self.disk(nsid).filter(|d| d.disk.is_some()) {
            let name = d.name.as_bytes();
            let n = name.len().min(info.disk_name.len() - 1);
            info.disk_name[..n].copy_from_slice(&name[..n]);
        }
        Ok(info)
    }

    /// Every namespace id on the card.
    pub(crate) fn ns_list(&mut self, out: &mut DiaNsList) -> Result {
        let mut ids = KVec::new();
        self.namespace_ids(false, &mut ids)?;
        let n = ids.len().min(DIA_NS_LIST_MAX);
        out.nsids[..n].copy_from_slice(&ids[..n]);
        out.count = n as u32;
        Ok(())
    }

    /// The pool's capacity and use.
    pub(crate) fn pool_info(&mut self) -> Result<DiaPoolInfo> {
        self.buf.zero();
        self.admin_command(SubmissionEntry {
            opcode: regs::ADMIN_GET_LOG_PAGE,
            prp1: self.buf.dma_handle(),
            cdw10: regs::LogPage::of_bytes(regs::LogId::PoolStatus, size_of::<PoolStatus>())
                .cdw10(),
            ..SubmissionEntry::default()
        })?;
        let b = &self.buf;
        Ok(DiaPoolInfo {
            total_bytes: b.read(offset_of!(PoolStatus, total_bytes))?,
            used_bytes: b.read(offset_of!(PoolStatus, used_bytes))?,
            namespaces: b.read(offset_of!(PoolStatus, namespaces))?,
            max_namespaces: b.read(offset_of!(PoolStatus, max_namespaces))?,
            chunk_bytes: b.read(offset_of!(PoolStatus, chunk_bytes))?,
            reserved: 0,
        })
    }

    /// Sets a namespace's QoS. On `EDQUOT` (floors over the card's
    /// capacity) `req.excess_iops` says by how many I/Os per second.
    pub(crate) fn ns_set_qos(&mut self, req: &mut DiaNsQos) -> Result {
        if req.nsid == 0 || req.nsid == u32::MAX || req.excess_iops != 0 {
            return Err(EINVAL);
        }
        let q: QosSettings = req.qos;
        if (q.max_iops != 0 && q.min_iops > q.max_iops)
            || (q.max_bytes_per_s != 0 && q.min_bytes_per_s > q.max_bytes_per_s)
        {
            return Err(EINVAL);
        }
        self.buf.zero();
        self.buf.write(0, &q)?;
        let done = self.admin_command(SubmissionEntry {
            opcode: regs::ADMIN_SET_QOS,
            nsid: req.nsid,
            prp1: self.buf.dma_handle(),
            ..SubmissionEntry::default()
        });
        if let Err(e) = done {
            if e == crate::glue::errno::EDQUOT() {
                req.excess_iops = self.last_error_result;
            }
            return Err(e);
        }
        Ok(())
    }

    /// A namespace's counters.
    pub(crate) fn ns_stats(&mut self, nsid: u32) -> Result<NamespaceStats> {
        if nsid == 0 || nsid == u32::MAX {
            return Err(EINVAL);
        }
        self.buf.zero();
        self.admin_command(SubmissionEntry {
            opcode: regs::ADMIN_GET_LOG_PAGE,
            nsid,
            prp1: self.buf.dma_handle(),
            cdw10: regs::LogPage::of_bytes(regs::LogId::NsStats, size_of::<NamespaceStats>())
                .cdw10(),
            ..SubmissionEntry::default()
        })?;
        self.buf.read(0)
    }

    /// The namespaces the card has attached (none without storage).
    pub(crate) fn attached_namespaces(&mut self) -> Result<KVec<u32>> {
        let mut ids = KVec::new();
        if self.io.is_none() || self.namespace_ids(true, &mut ids).is_err() {
            // No storage (a card without it answers Invalid Field/Opcode).
            return Ok(KVec::new());
        }
        Ok(ids)
    }
}
