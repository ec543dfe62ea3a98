// SPDX-License-Identifier: GPL-2.0
/*
 * Block-layer half of the glue shim (see shim.h): a blk-mq tag set shared by
 * every namespace disk, request accessors, DMA mapping of request data and
 * PRP list pages. It forwards to Rust callbacks and holds no driver logic.
 */
#include <linux/blk-mq.h>
#include <linux/blkdev.h>
#include <linux/dma-mapping.h>
#include <linux/dmapool.h>
#include <linux/interrupt.h>
#include <linux/module.h>
#include <linux/pci.h>
#include <linux/scatterlist.h>
#include <linux/slab.h>
#include "shim.h"

struct dia_shim_tagset {
	struct blk_mq_tag_set set;
	struct pci_dev *pdev;
	struct dma_pool *prp_pool;
	void *set_data;
	struct dia_shim_blk_ops ops;
};

struct dia_shim_disk {
	struct gendisk *disk;
	struct dia_shim_tagset *ts;
};

/* The C part of every request's PDU; the Rust part follows it. */
struct dia_rq_c {
	struct scatterlist sg[DIA_SHIM_MAX_SEGMENTS];
	int nents;	/* entries handed to dma_map_sg, 0 when not mapped */
	unsigned int mapped;	/* entries dma_map_sg returned (segments) */
	int dir;
	unsigned long long *prp_list;
	dma_addr_t prp_dma;
	int status;
};

#define DIA_RUST_PDU_OFFSET ALIGN(sizeof(struct dia_rq_c), 16)

static struct dia_shim_tagset *to_ts(struct blk_mq_hw_ctx *hctx)
{
	return hctx->queue->tag_set->driver_data;
}

static blk_status_t dia_status(int s)
{
	switch (s) {
	case DIA_BLK_OK: return BLK_STS_OK;
	case DIA_BLK_BUSY: return BLK_STS_RESOURCE;
	case DIA_BLK_NOTSUPP: return BLK_STS_NOTSUPP;
	case DIA_BLK_NOSPC: return BLK_STS_NOSPC;
	case DIA_BLK_TIMEOUT: return BLK_STS_TIMEOUT;
	case DIA_BLK_TARGET: return BLK_STS_TARGET;
	default: return BLK_STS_IOERR;
	}
}

static blk_status_t dia_queue_rq(struct blk_mq_hw_ctx *hctx, const struct blk_mq_queue_data *bd)
{
	struct dia_shim_tagset *ts = to_ts(hctx);

	return dia_status(ts->ops.queue_rq(ts->set_data, hctx->queue->queuedata,
					   hctx->queue_num, bd->rq, bd->last));
}

static void dia_commit_rqs(struct blk_mq_hw_ctx *hctx)
{
	struct dia_shim_tagset *ts = to_ts(hctx);

	ts->ops.commit_rqs(ts->set_data, hctx->queue_num);
}

static void dia_complete_rq(struct request *rq)
{
	struct dia_shim_tagset *ts = rq->q->tag_set->driver_data;

	ts->ops.complete(ts->set_data, rq);
}

static enum blk_eh_timer_return dia_timeout(struct request *rq)
{
	struct dia_shim_tagset *ts = rq->q->tag_set->driver_data;

	return ts->ops.timeout(ts->set_data, rq) ? BLK_EH_RESET_TIMER : BLK_EH_DONE;
}

static int dia_init_request(struct blk_mq_tag_set *set, struct request *rq,
			    unsigned int hctx_idx, unsigned int numa_node)
{
	struct dia_rq_c *c = blk_mq_rq_to_pdu(rq);

	memset(c, 0, sizeof(*c));
	sg_init_table(c->sg, DIA_SHIM_MAX_SEGMENTS);
	return 0;
}

static const struct blk_mq_ops dia_mq_ops = {
	.queue_rq = dia_queue_rq,
	.commit_rqs = dia_commit_rqs,
	.complete = dia_complete_rq,
	.timeout = dia_timeout,
	.init_request = dia_init_request,
};

struct dia_shim_tagset *dia_shim_tagset_new(struct pci_dev *pdev, unsigned int nr_hw_queues,
					    unsigned int depth, unsigned int rust_pdu_size,
					    unsigned int timeout_ms, void *set_data,
					    const struct dia_shim_blk_ops *ops, int *err)
{
	struct dia_shim_tagset *ts = kzalloc(sizeof(*ts), GFP_KERNEL);

	if (!ts) {
		*err = -ENOMEM;
		return NULL;
	}
	ts->pdev = pdev;
	ts->set_data = set_data;
	ts->ops = *ops;
	ts->prp_pool = dma_pool_create("dia-prp", &pdev->dev, DIA_SHIM_PRP_PAGE,
				       DIA_SHIM_PRP_PAGE, 0);
	if (!ts->prp_pool) {
		kfree(ts);
		*err = -ENOMEM;
		return NULL;
	}
	ts->set.ops = &dia_mq_ops;
	ts->set.nr_hw_queues = nr_hw_queues;
	ts->set.queue_depth = depth;
	ts->set.numa_node = dev_to_node(&pdev->dev);
	ts->set.cmd_size = DIA_RUST_PDU_OFFSET + rust_pdu_size;
	ts->set.timeout = msecs_to_jiffies(timeout_ms);
	ts->set.driver_data = ts;
	*err = blk_mq_alloc_tag_set(&ts->set);
	if (*err) {
		dma_pool_destroy(ts->prp_pool);
		kfree(ts);
		return NULL;
	}
	return ts;
}

void dia_shim_tagset_free(struct dia_shim_tagset *ts)
{
	blk_mq_free_tag_set(&ts->set);
	dma_pool_destroy(ts->prp_pool);
	kfree(ts);
}

void dia_shim_tagset_quiesce(struct dia_shim_tagset *ts) { blk_mq_quiesce_tagset(&ts->set); }
void dia_shim_tagset_unquiesce(struct dia_shim_tagset *ts) { blk_mq_unquiesce_tagset(&ts->set); }

struct dia_iter_ctx {
	void (*fn)(void *data, struct request *rq);
	void *data;
};

static bool dia_busy_iter(struct request *rq, void *data)
{
	struct dia_iter_ctx *ctx = data;

	ctx->fn(ctx->data, rq);
	return true;
}

void dia_shim_tagset_busy_iter(struct dia_shim_tagset *ts,
			       void (*fn)(void *data, struct request *rq), void *data)
{
	struct dia_iter_ctx ctx = { .fn = fn, .data = data };

	blk_mq_tagset_busy_iter(&ts->set, dia_busy_iter, &ctx);
}

int dia_shim_tagset_steer_irq(struct dia_shim_tagset *ts, unsigned int hctx, unsigned int vector)
{
	struct blk_mq_queue_map *map = &ts->set.map[HCTX_TYPE_DEFAULT];
	cpumask_var_t mask;
	unsigned int cpu;
	int irq, err;

	if (hctx >= ts->set.nr_hw_queues)
		return -EINVAL;
	irq = pci_irq_vector(ts->pdev, vector);
	if (irq < 0)
		return irq;
	if (!zalloc_cpumask_var(&mask, GFP_KERNEL))
		return -ENOMEM;
	for_each_possible_cpu(cpu)
		if (map->mq_map[cpu] == map->queue_offset + hctx)
			cpumask_set_cpu(cpu, mask);
	err = cpumask_empty(mask) ? 0 : irq_set_affinity(irq, mask);
	free_cpumask_var(mask);
	return err;
}

void dia_shim_tagset_kick_requeue(struct dia_shim_tagset *ts)
{
	struct request_queue *q;

	mutex_lock(&ts->set.tag_list_lock);
	list_for_each_entry(q, &ts->set.tag_list, tag_set_list)
		blk_mq_kick_requeue_list(q);
	mutex_unlock(&ts->set.tag_list_lock);
}

/*
 * Called under the disk's open_mutex at every close. private_data is the
 * shim disk until dia_shim_disk_remove clears it under the same mutex, so
 * the tag set and the disk data are live here (a disk removed while open
 * is closed later with private_data NULL).
 */
static void dia_release(struct gendisk *disk)
{
	struct dia_shim_disk *d = disk->private_data;

	if (d && !disk_openers(disk))
		d->ts->ops.last_close(d->ts->set_data, disk->queue->queuedata);
}

/* Opening a disk pins the module; I/O goes through blk-mq. */
static const struct block_device_operations dia_bdev_ops = {
	.owner = THIS_MODULE,
	.release = dia_release,
};

struct dia_shim_disk *dia_shim_disk_new(struct dia_shim_tagset *ts, const char *name,
					const struct dia_shim_disk_params *p, void *disk_data,
					int *err)
{
	struct queue_limits lim = {
		.logical_block_size = p->lba_size,
		.physical_block_size = p->lba_size,
		.io_min = p->lba_size,
		.max_hw_sectors = p->max_hw_sectors,
		.max_segments = DIA_SHIM_MAX_SEGMENTS,
		/*
		 * Segments as long as the guest's pages run on: one sg entry
		 * (and one DMA mapping) for neighbouring pages, where a
		 * one-page limit made a 1 MiB request 256 of them. The virt
		 * boundary keeps every segment but the first page aligned, so
		 * the PRP builder cuts them into page entries. No longer than
		 * the device's DMA segments (DMA-API debug checks it).
		 */
		.max_segment_size = dma_get_max_seg_size(&ts->pdev->dev),
		.virt_boundary_mask = DIA_SHIM_PRP_PAGE - 1,
		.max_hw_discard_sectors = p->max_discard_sectors,
		.max_discard_segments = 1,
		.discard_granularity = p->lba_size,
		.max_write_zeroes_sectors = p->max_write_zeroes_sectors,
		.dma_alignment = 3,
	};
	struct dia_shim_disk *d = kzalloc(sizeof(*d), GFP_KERNEL);

	if (!d) {
		*err = -ENOMEM;
		return NULL;
	}
	if (p->volatile_write_cache)
		lim.features |= BLK_FEAT_WRITE_CACHE;
	if (p->fua)
		lim.features |= BLK_FEAT_FUA;
	d->disk = blk_mq_alloc_disk(&ts->set, &lim, disk_data);
	if (IS_ERR(d->disk)) {
		*err = PTR_ERR(d->disk);
		kfree(d);
		return NULL;
	}
	d->ts = ts;
	d->disk->fops = &dia_bdev_ops;
	d->disk->private_data = d;
	strscpy(d->disk->disk_name, name, DISK_NAME_LEN);
	set_capacity(d->disk, p->capacity_sectors);
	*err = add_disk(d->disk);
	if (*err) {
		put_disk(d->disk);
		kfree(d);
		return NULL;
	}
	return d;
}

void dia_shim_disk_remove(struct dia_shim_disk *d)
{
	/* Closes after this (of a disk removed while open) call back no one. */
	mutex_lock(&d->disk->open_mutex);
	d->disk->private_data = NULL;
	mutex_unlock(&d->disk->open_mutex);
	del_gendisk(d->disk);
	put_disk(d->disk);
	kfree(d);
}

void dia_shim_disk_set_capacity(struct dia_shim_disk *d, unsigned long long sectors)
{
	set_capacity_and_notify(d->disk, sectors);
}

unsigned int dia_shim_disk_openers(struct dia_shim_disk *d)
{
	return disk_openers(d->disk);
}

struct request *dia_shim_tag_to_rq(struct dia_shim_tagset *ts, unsigned int hctx,
				   unsigned int tag)
{
	struct blk_mq_tags *tags;
	struct request *rq;

	if (hctx >= ts->set.nr_hw_queues || tag >= ts->set.queue_depth)
		return NULL;
	tags = ts->set.tags[hctx];
	if (!tags)
		return NULL;
	rq = blk_mq_tag_to_rq(tags, tag);
	/* A completion for a request not in flight is a card bug: ignore it. */
	if (!rq || !blk_mq_request_started(rq))
		return NULL;
	return rq;
}

unsigned int dia_shim_rq_tag(struct request *rq) { return rq->tag; }
unsigned int dia_shim_rq_hctx(struct request *rq) { return rq->mq_hctx->queue_num; }

int dia_shim_rq_op(struct request *rq)
{
	switch (req_op(rq)) {
	case REQ_OP_READ: return DIA_RQ_READ;
	case REQ_OP_WRITE: return DIA_RQ_WRITE;
	case REQ_OP_FLUSH: return DIA_RQ_FLUSH;
	case REQ_OP_DISCARD: return DIA_RQ_DISCARD;
	case REQ_OP_WRITE_ZEROES: return DIA_RQ_WRITE_ZEROES;
	default: return DIA_RQ_UNSUPPORTED;
	}
}

unsigned long long dia_shim_rq_sector(struct request *rq) { return blk_rq_pos(rq); }
unsigned int dia_shim_rq_bytes(struct request *rq) { return blk_rq_bytes(rq); }
int dia_shim_rq_fua(struct request *rq) { return !!(rq->cmd_flags & REQ_FUA); }
void *dia_shim_rq_disk_data(struct request *rq) { return rq->q->queuedata; }
void *dia_shim_rq_pdu(struct request *rq) { return (char *)blk_mq_rq_to_pdu(rq) + DIA_RUST_PDU_OFFSET; }
void dia_shim_rq_start(struct request *rq) { blk_mq_start_request(rq); }

static struct dia_shim_tagset *rq_ts(struct request *rq)
{
	return rq->q->tag_set->driver_data;
}

int dia_shim_rq_map(struct request *rq)
{
	struct dia_shim_tagset *ts = rq_ts(rq);
	struct dia_rq_c *c = blk_mq_rq_to_pdu(rq);
	int n, mapped;

	if (!blk_rq_nr_phys_segments(rq))
		return 0;
	/* Only the entries this request uses: a 4 KiB request clears one. */
	sg_init_table(c->sg, blk_rq_nr_phys_segments(rq));
	n = blk_rq_map_sg(rq->q, rq, c->sg);
	if (n <= 0)
		return -EIO;
	c->dir = rq_dma_dir(rq);
	mapped = dma_map_sg(&ts->pdev->dev, c->sg, n, c->dir);
	if (!mapped)
		return -ENOMEM;
	c->nents = n;
	c->mapped = mapped;
	return mapped;
}

int dia_shim_rq_segment(struct request *rq, unsigned int i, unsigned long long *addr,
			unsigned int *len)
{
	struct dia_rq_c *c = blk_mq_rq_to_pdu(rq);

	/* One flat table (sg_init_table, no chaining): entry i is sg[i]. */
	if (i >= c->mapped)
		return -EINVAL;
	*addr = sg_dma_address(&c->sg[i]);
	*len = sg_dma_len(&c->sg[i]);
	return 0;
}

unsigned long long *dia_shim_rq_prp_list(struct request *rq, unsigned long long *dma)
{
	struct dia_shim_tagset *ts = rq_ts(rq);
	struct dia_rq_c *c = blk_mq_rq_to_pdu(rq);

	if (!c->prp_list)
		c->prp_list = dma_pool_alloc(ts->prp_pool, GFP_ATOMIC, &c->prp_dma);
	*dma = c->prp_dma;
	return c->prp_list;
}

void dia_shim_rq_unmap(struct request *rq)
{
	struct dia_shim_tagset *ts = rq_ts(rq);
	struct dia_rq_c *c = blk_mq_rq_to_pdu(rq);

	if (c->nents) {
		dma_unmap_sg(&ts->pdev->dev, c->sg, c->nents, c->dir);
		c->nents = 0;
		c->mapped = 0;
	}
	if (c->prp_list) {
		dma_pool_free(ts->prp_pool, c->prp_list, c->prp_dma);
		c->prp_list = NULL;
	}
}

void dia_shim_rq_complete(struct request *rq)
{
	if (!blk_mq_complete_request_remote(rq))
		dia_complete_rq(rq);
}

void dia_shim_rq_end(struct request *rq, int status)
{
	if (status == DIA_BLK_REQUEUE) {
		blk_mq_requeue_request(rq, true);
		return;
	}
	blk_mq_end_request(rq, dia_status(status));
}
