/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The C side of dia's glue layer: the few kernel APIs that Linux 6.12's Rust
 * `kernel` crate does not wrap (PCI driver, BAR mapping, MSI-X and IRQs, DMA
 * coherent memory, misc character device, completions), flattened into plain
 * functions over opaque pointers. bindgen turns this header into Rust
 * declarations at build time (see Kbuild); only the Rust glue layer
 * (kmod/glue/) calls them.
 *
 * The header uses no kernel types so bindgen needs no kernel include paths.
 */
#ifndef DIA_SHIM_H
#define DIA_SHIM_H

struct pci_dev;
struct dia_shim_misc;
struct dia_shim_completion;
struct dia_shim_irq;

/* PCI driver: callbacks run in process context. */
typedef int (*dia_shim_probe_fn)(struct pci_dev *pdev);
typedef void (*dia_shim_remove_fn)(struct pci_dev *pdev);
int dia_shim_pci_register(unsigned short vendor, unsigned short device,
			  dia_shim_probe_fn probe, dia_shim_remove_fn remove);
void dia_shim_pci_unregister(void);

void dia_shim_pci_set_drvdata(struct pci_dev *pdev, void *data);
void *dia_shim_pci_get_drvdata(struct pci_dev *pdev);
unsigned short dia_shim_pci_vendor(struct pci_dev *pdev);
unsigned short dia_shim_pci_device(struct pci_dev *pdev);
const char *dia_shim_pci_name(struct pci_dev *pdev);
int dia_shim_pci_enable(struct pci_dev *pdev);
/* Clears bus mastering: the function can no longer reach memory. */
void dia_shim_pci_clear_master(struct pci_dev *pdev);
void dia_shim_pci_disable(struct pci_dev *pdev);
int dia_shim_pci_request_regions(struct pci_dev *pdev);
void dia_shim_pci_release_regions(struct pci_dev *pdev);
unsigned long long dia_shim_pci_bar_len(struct pci_dev *pdev, int bar);
void *dia_shim_pci_iomap(struct pci_dev *pdev, int bar);
void dia_shim_pci_iounmap(struct pci_dev *pdev, void *addr);
int dia_shim_dma_set_mask(struct pci_dev *pdev, unsigned int bits);

/* MMIO (addr comes from dia_shim_pci_iomap). */
unsigned int dia_shim_readl(const void *addr);
void dia_shim_writel(unsigned int value, void *addr);
unsigned long long dia_shim_readq(const void *addr);
void dia_shim_writeq(unsigned long long value, void *addr);

/* MSI-X: returns the number of vectors allocated or a negative errno. */
int dia_shim_alloc_msix(struct pci_dev *pdev, unsigned int min, unsigned int max);
void dia_shim_free_vectors(struct pci_dev *pdev);
/* Hard-IRQ handler; returns 1 when it handled the interrupt. */
typedef int (*dia_shim_irq_fn)(void *data);
/* Returns NULL and sets *err on failure. `name` must outlive the registration. */
struct dia_shim_irq *dia_shim_request_irq(struct pci_dev *pdev, unsigned int vector,
					  dia_shim_irq_fn handler, void *data,
					  const char *name, int *err);
/* Waits for a running handler to finish, then frees the registration. */
void dia_shim_free_irq(struct dia_shim_irq *irq);
/* Masks the IRQ and waits for a running handler to finish (process context). */
void dia_shim_irq_disable(struct dia_shim_irq *irq);
/* Unmasks it again (pairs with dia_shim_irq_disable). */
void dia_shim_irq_enable(struct dia_shim_irq *irq);
/* 1 when the current task has CAP_SYS_ADMIN (in the initial user namespace). */
int dia_shim_capable_sys_admin(void);
/* Cancels a work item (a struct work_struct) and waits for it if it runs. */
void dia_shim_cancel_work_sync(void *work_struct);

/* DMA coherent memory. */
void *dia_shim_dma_alloc(struct pci_dev *pdev, unsigned long size,
			 unsigned long long *dma_handle);
void dia_shim_dma_free(struct pci_dev *pdev, unsigned long size, void *cpu,
		       unsigned long long dma_handle);
/* dma_rmb(): reads after it see what the device wrote before the one before. */
void dia_shim_dma_rmb(void);
/* mb(): a full barrier, also between a register write and a later read. */
void dia_shim_mb(void);

/* Misc character device: open/release/ioctl run in process context. */
typedef int (*dia_shim_open_fn)(void *misc_data, void **file_data);
typedef void (*dia_shim_release_fn)(void *file_data);
typedef long (*dia_shim_ioctl_fn)(void *file_data, unsigned int cmd, unsigned long arg);
struct dia_shim_misc *dia_shim_misc_register(const char *name, void *misc_data,
					     dia_shim_open_fn open,
					     dia_shim_release_fn release,
					     dia_shim_ioctl_fn ioctl, int *err);
void dia_shim_misc_deregister(struct dia_shim_misc *misc);

/* Completions (wait with a timeout in process context, signal from any context). */
struct dia_shim_completion *dia_shim_completion_new(void);
void dia_shim_completion_free(struct dia_shim_completion *c);
void dia_shim_completion_reinit(struct dia_shim_completion *c);
void dia_shim_complete(struct dia_shim_completion *c);
/* Returns 1 if completed, 0 on timeout. */
int dia_shim_wait_timeout(struct dia_shim_completion *c, unsigned int ms);

/*
 * Block layer (blk-mq): one tag set per card, shared by every namespace's
 * disk. Requests carry a C part (DMA mapping, PRP list page) and a Rust part
 * of `rust_pdu_size` bytes (dia_shim_rq_pdu). Callbacks get the tag set's
 * `set_data` and, for queue_rq, the disk's `disk_data`.
 */
struct dia_shim_tagset;
struct dia_shim_disk;
struct request;

/*
 * Largest number of data segments in one request, and of pages
 * (io_path.rs sizes max_hw_sectors by it): 1 MiB, so a 1 MiB write is one
 * command (as virtio-blk takes it), not two. A segment is one page or a
 * run of neighbouring pages.
 */
#define DIA_SHIM_MAX_SEGMENTS 256
/*
 * The card's PRP page (dia_abi::card::PRP_PAGE_BYTES; glue/blk.rs asserts
 * they agree): the PRP list pages and the segment boundary, whatever the
 * host's PAGE_SIZE.
 */
#define DIA_SHIM_PRP_PAGE 4096

/* Request operations as the driver sees them. */
#define DIA_RQ_READ 0
#define DIA_RQ_WRITE 1
#define DIA_RQ_FLUSH 2
#define DIA_RQ_DISCARD 3
#define DIA_RQ_WRITE_ZEROES 4
#define DIA_RQ_UNSUPPORTED 5

/* Statuses for queue_rq results and dia_shim_rq_end. */
#define DIA_BLK_OK 0
#define DIA_BLK_BUSY 1 /* out of resources: the block layer retries */
#define DIA_BLK_IOERR 2
#define DIA_BLK_NOTSUPP 3
#define DIA_BLK_NOSPC 4
#define DIA_BLK_TIMEOUT 5
#define DIA_BLK_TARGET 6 /* media/target error: do not retry */
#define DIA_BLK_REQUEUE 7 /* only for dia_shim_rq_end: put back on the requeue list */

struct dia_shim_blk_ops {
	int (*queue_rq)(void *set_data, void *disk_data, unsigned int hctx,
			struct request *rq, int last);
	void (*commit_rqs)(void *set_data, unsigned int hctx);
	/* Runs after dia_shim_rq_complete, in softirq or the submitting CPU. */
	void (*complete)(void *set_data, struct request *rq);
	/* Returns 1 to re-arm the timer, 0 when the request was dealt with. */
	int (*timeout)(void *set_data, struct request *rq);
	/* The last opener of a disk closed it (not called once it is removed). */
	void (*last_close)(void *set_data, void *disk_data);
};

struct dia_shim_tagset *dia_shim_tagset_new(struct pci_dev *pdev, unsigned int nr_hw_queues,
					    unsigned int depth, unsigned int rust_pdu_size,
					    unsigned int timeout_ms, void *set_data,
					    const struct dia_shim_blk_ops *ops, int *err);
void dia_shim_tagset_free(struct dia_shim_tagset *ts);
void dia_shim_tagset_quiesce(struct dia_shim_tagset *ts);
void dia_shim_tagset_unquiesce(struct dia_shim_tagset *ts);
/* Calls fn for every request the driver has started and not ended. */
void dia_shim_tagset_busy_iter(struct dia_shim_tagset *ts,
			       void (*fn)(void *data, struct request *rq), void *data);
void dia_shim_tagset_kick_requeue(struct dia_shim_tagset *ts);
/*
 * Steers MSI-X vector `vector` of the tag set's device to the CPUs that
 * submit on hardware queue `hctx`, so a queue's completions are handled
 * where its requests were issued (no cross-CPU completion IPI).
 */
int dia_shim_tagset_steer_irq(struct dia_shim_tagset *ts, unsigned int hctx, unsigned int vector);

struct dia_shim_disk_params {
	unsigned int lba_size;
	unsigned long long capacity_sectors; /* 512-byte sectors */
	unsigned int max_hw_sectors;
	unsigned int max_discard_sectors;
	unsigned int max_write_zeroes_sectors;
	int volatile_write_cache;
	int fua;
};
/* Allocates and adds a disk named `name` (e.g. dia0n1). */
struct dia_shim_disk *dia_shim_disk_new(struct dia_shim_tagset *ts, const char *name,
					const struct dia_shim_disk_params *p, void *disk_data,
					int *err);
/* Removes the disk (fails its pending I/O) and frees it. */
void dia_shim_disk_remove(struct dia_shim_disk *d);
void dia_shim_disk_set_capacity(struct dia_shim_disk *d, unsigned long long sectors);
/* How many times the disk is open (mounts count). */
unsigned int dia_shim_disk_openers(struct dia_shim_disk *d);

struct request *dia_shim_tag_to_rq(struct dia_shim_tagset *ts, unsigned int hctx,
				   unsigned int tag);
unsigned int dia_shim_rq_tag(struct request *rq);
unsigned int dia_shim_rq_hctx(struct request *rq);
int dia_shim_rq_op(struct request *rq);
unsigned long long dia_shim_rq_sector(struct request *rq);
unsigned int dia_shim_rq_bytes(struct request *rq);
int dia_shim_rq_fua(struct request *rq);
void *dia_shim_rq_disk_data(struct request *rq);
void *dia_shim_rq_pdu(struct request *rq);
void dia_shim_rq_start(struct request *rq);
/*
 * DMA-maps the request's data; returns how many segments it has (read
 * with dia_shim_rq_segment), or a negative errno. Undone by
 * dia_shim_rq_unmap.
 */
int dia_shim_rq_map(struct request *rq);
/*
 * Mapped segment `i` (below what dia_shim_rq_map returned): its bus
 * address and length. Returns 0, or -EINVAL for a segment not mapped.
 */
int dia_shim_rq_segment(struct request *rq, unsigned int i, unsigned long long *addr,
			unsigned int *len);
/* A PRP list page for the request (freed by dia_shim_rq_unmap), or NULL. */
unsigned long long *dia_shim_rq_prp_list(struct request *rq, unsigned long long *dma);
void dia_shim_rq_unmap(struct request *rq);
/* Hands the request to the complete callback (from the IRQ handler). */
void dia_shim_rq_complete(struct request *rq);
void dia_shim_rq_end(struct request *rq, int status);

/*
 * Network ports: one net_device per card port, with a NAPI context, in the
 * shape of a real NIC driver (SG + HW checksum offload; TX maps the skb's
 * pages for the card; RX buffers are page fragments the stack takes over
 * with napi_build_skb, small frames copied). Callbacks get the `data` given
 * at registration.
 */
struct dia_shim_netdev;
struct sk_buff;

struct dia_shim_net_stats {
	unsigned long long rx_packets;
	unsigned long long tx_packets;
	unsigned long long rx_bytes;
	unsigned long long tx_bytes;
	unsigned long long rx_dropped;
	unsigned long long tx_dropped;
};

/* ndo_start_xmit results. */
#define DIA_TX_OK 0
#define DIA_TX_BUSY 1 /* the skb was not taken; the stack retries it */

struct dia_shim_net_ops {
	int (*open)(void *data);
	void (*stop)(void *data);
	/* BH disabled. On DIA_TX_OK the driver owns the skb, else the stack keeps it. */
	int (*xmit)(void *data, struct sk_buff *skb);
	/* NAPI poll (softirq): returns the RX work done, at most budget. */
	int (*poll)(void *data, int budget);
	void (*stats)(void *data, struct dia_shim_net_stats *out);
};

/* Allocates an Ethernet device (not registered) named `name`, with MTU `mtu`
 * (also the largest allowed) and a NAPI context; with `tso_max` not 0 it
 * offers TSO and TSO6 for frames of up to `tso_max` bytes. */
struct dia_shim_netdev *dia_shim_netdev_new(struct pci_dev *pdev, const char *name,
					    unsigned int mtu, unsigned int tso_max, int *err);
/* Sets the MAC (6 bytes) of a device that is not registered yet. */
void dia_shim_netdev_set_mac(struct dia_shim_netdev *nd, const unsigned char *mac);
/* Frees a device that is not registered (any more). */
void dia_shim_netdev_free(struct dia_shim_netdev *nd);
/* Sets the callbacks and registers the device (takes the RTNL). */
int dia_shim_netdev_register(struct dia_shim_netdev *nd, void *data,
			     const struct dia_shim_net_ops *ops);
/* Unregisters (takes the RTNL; closes it first, wherever it is). */
void dia_shim_netdev_unregister(struct dia_shim_netdev *nd);
int dia_shim_netdev_ifindex(struct dia_shim_netdev *nd);
/* Sets the largest and the current MTU (takes the RTNL). */
int dia_shim_netdev_set_mtu(struct dia_shim_netdev *nd, unsigned int mtu);
void dia_shim_netif_carrier(struct dia_shim_netdev *nd, int on);
void dia_shim_netif_stop_queue(struct dia_shim_netdev *nd);
void dia_shim_netif_wake_queue(struct dia_shim_netdev *nd);
int dia_shim_netif_queue_stopped(struct dia_shim_netdev *nd);
void dia_shim_napi_enable(struct dia_shim_netdev *nd);
void dia_shim_napi_disable(struct dia_shim_netdev *nd);
void dia_shim_napi_schedule(struct dia_shim_netdev *nd);
/* Returns 1 if NAPI is done (interrupts may be re-enabled). */
int dia_shim_napi_complete_done(struct dia_shim_netdev *nd, int done);
/*
 * Receive buffers: a page fragment with NET_SKB_PAD of headroom, then
 * DIA_SHIM_RX_ROOM bytes the card may fill (DMA-mapped from the device),
 * then room for the skb_shared_info, so napi_build_skb can make it an skb
 * without copying the frame.
 */
#define DIA_SHIM_RX_ROOM 9024
/* Allocates and maps one (from NAPI: `napi` 1, else any context with 0);
 * NULL if out of memory. `*dma` is the bus address of its room. */
void *dia_shim_rx_buf_alloc(struct dia_shim_netdev *nd, int napi, unsigned long long *dma);
/* Unmaps and frees a buffer that the card no longer holds. */
void dia_shim_rx_buf_free(struct dia_shim_netdev *nd, void *buf, unsigned long long dma);
/*
 * From the device's NAPI poll: hands the `len`-byte frame the card wrote
 * into `buf` to GRO, as CHECKSUM_UNNECESSARY with `csum_ok` 1 (the card
 * checked its checksums). With `copy` 1 the frame is copied into a small skb and
 * the buffer stays the caller's (returns 1); with 0 it becomes an skb built
 * over the buffer, which the stack then owns (returns 0). On error (-EINVAL
 * for a length beyond the room, -ENOMEM) the frame is dropped and the
 * buffer stays the caller's, still mapped.
 */
int dia_shim_rx_buf_receive(struct dia_shim_netdev *nd, void *buf, unsigned long long dma,
			    unsigned int len, int copy, int csum_ok);
/* Whether more packets follow this one in the current xmit batch. */
int dia_shim_xmit_more(void);

/* skbs (from xmit). */
unsigned int dia_shim_skb_len(struct sk_buff *skb);
/* Returns 1 and the checksum start/offset if the stack left the checksum to the card. */
int dia_shim_skb_csum(struct sk_buff *skb, unsigned short *start, unsigned short *offset);
/* The MSS (gso_size) of a TCP GSO skb the card is to segment, else 0. */
unsigned short dia_shim_skb_tso_mss(struct sk_buff *skb);
/*
 * DMA-maps the skb for the card: the linear part then each page fragment,
 * at most `max` buffers (`pages[i]` = 1 for a fragment). Returns the count,
 * -ENOSPC if more than `max` are needed, or another negative errno; on error
 * nothing stays mapped.
 */
int dia_shim_skb_map(struct dia_shim_netdev *nd, struct sk_buff *skb,
		     unsigned long long *addrs, unsigned int *lens, unsigned char *pages,
		     unsigned int max);
void dia_shim_skb_unmap(struct dia_shim_netdev *nd, unsigned long long addr,
			unsigned int len, int page);
/* Detaches the skb from its socket (skb_orphan, nf_reset_ct): its memory no
 * longer counts against the sender, who need not wait for it to be freed. */
void dia_shim_skb_orphan(struct sk_buff *skb);
/* Frees a sent skb (napi_consume_skb; budget 0 outside NAPI). */
void dia_shim_skb_consume(struct sk_buff *skb, int budget);
/* Frees an skb that was dropped. */
void dia_shim_skb_drop(struct sk_buff *skb);
/* Largest number of buffers one skb needs (MAX_SKB_FRAGS + 1). */
unsigned int dia_shim_skb_max_bufs(void);

/* Bottom halves, for process-context code that shares a lock with NAPI. */
void dia_shim_local_bh_disable(void);
void dia_shim_local_bh_enable(void);

/* Time. */
void dia_shim_msleep(unsigned int ms);
unsigned long long dia_shim_ktime_ms(void);
unsigned int dia_shim_num_online_cpus(void);

#endif /* DIA_SHIM_H */
