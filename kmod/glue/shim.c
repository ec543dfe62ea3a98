// SPDX-License-Identifier: GPL-2.0
/*
 * Implementation of shim.h: thin forwarding to kernel APIs (many of which are
 * static inline or macros, so Rust cannot call them directly on 6.12). No
 * driver logic lives here; the safe Rust wrappers are in kmod/glue/.
 */
#include <linux/capability.h>
#include <linux/completion.h>
#include <linux/delay.h>
#include <linux/dma-mapping.h>
#include <linux/interrupt.h>
#include <linux/io.h>
#include <linux/io-64-nonatomic-lo-hi.h>
#include <linux/miscdevice.h>
#include <linux/module.h>
#include <linux/pci.h>
#include <linux/slab.h>
#include <linux/timekeeping.h>
#include <linux/workqueue.h>
#include "shim.h"

static dia_shim_probe_fn dia_probe_cb;
static dia_shim_remove_fn dia_remove_cb;
/* Filled at registration from the Rust side's single id definition. */
static struct pci_device_id dia_pci_ids[2];

static int dia_pci_probe(struct pci_dev *pdev, const struct pci_device_id *id)
{
	return dia_probe_cb(pdev);
}

static void dia_pci_remove(struct pci_dev *pdev)
{
	dia_remove_cb(pdev);
}

static struct pci_driver dia_pci_driver = {
	.name = KBUILD_MODNAME,
	.id_table = dia_pci_ids,
	.probe = dia_pci_probe,
	.remove = dia_pci_remove,
};

int dia_shim_pci_register(unsigned short vendor, unsigned short device,
			  dia_shim_probe_fn probe, dia_shim_remove_fn remove)
{
	dia_pci_ids[0].vendor = vendor;
	dia_pci_ids[0].device = device;
	dia_pci_ids[0].subvendor = PCI_ANY_ID;
	dia_pci_ids[0].subdevice = PCI_ANY_ID;
	dia_probe_cb = probe;
	dia_remove_cb = remove;
	return pci_register_driver(&dia_pci_driver);
}

void dia_shim_pci_unregister(void)
{
	pci_unregister_driver(&dia_pci_driver);
}

void dia_shim_pci_set_drvdata(struct pci_dev *pdev, void *data) { pci_set_drvdata(pdev, data); }
void *dia_shim_pci_get_drvdata(struct pci_dev *pdev) { return pci_get_drvdata(pdev); }
unsigned short dia_shim_pci_vendor(struct pci_dev *pdev) { return pdev->vendor; }
unsigned short dia_shim_pci_device(struct pci_dev *pdev) { return pdev->device; }
const char *dia_shim_pci_name(struct pci_dev *pdev) { return pci_name(pdev); }
int dia_shim_pci_enable(struct pci_dev *pdev)
{
	int err = pci_enable_device_mem(pdev);

	if (!err)
		pci_set_master(pdev);
	return err;
}
void dia_shim_pci_clear_master(struct pci_dev *pdev) { pci_clear_master(pdev); }
void dia_shim_pci_disable(struct pci_dev *pdev)
{
	pci_clear_master(pdev);
	pci_disable_device(pdev);
}
int dia_shim_pci_request_regions(struct pci_dev *pdev) { return pci_request_regions(pdev, KBUILD_MODNAME); }
void dia_shim_pci_release_regions(struct pci_dev *pdev) { pci_release_regions(pdev); }
unsigned long long dia_shim_pci_bar_len(struct pci_dev *pdev, int bar) { return pci_resource_len(pdev, bar); }
void *dia_shim_pci_iomap(struct pci_dev *pdev, int bar)
{
	/* BAR2 of the card is RAM-like shared memory: map it write-back. */
	if (pci_resource_flags(pdev, bar) & IORESOURCE_PREFETCH)
		return (void __force *)pci_iomap_wc(pdev, bar, 0);
	return (void __force *)pci_iomap(pdev, bar, 0);
}
void dia_shim_pci_iounmap(struct pci_dev *pdev, void *addr) { pci_iounmap(pdev, (void __iomem *)addr); }
int dia_shim_dma_set_mask(struct pci_dev *pdev, unsigned int bits)
{
	return dma_set_mask_and_coherent(&pdev->dev, DMA_BIT_MASK(bits));
}

unsigned int dia_shim_readl(const void *addr) { return readl((const void __iomem *)addr); }
void dia_shim_writel(unsigned int value, void *addr) { writel(value, (void __iomem *)addr); }
unsigned long long dia_shim_readq(const void *addr) { return readq((const void __iomem *)addr); }
void dia_shim_writeq(unsigned long long value, void *addr) { writeq(value, (void __iomem *)addr); }

int dia_shim_alloc_msix(struct pci_dev *pdev, unsigned int min, unsigned int max)
{
	return pci_alloc_irq_vectors(pdev, min, max, PCI_IRQ_MSIX);
}
void dia_shim_free_vectors(struct pci_dev *pdev) { pci_free_irq_vectors(pdev); }

struct dia_shim_irq {
	int irq;
	dia_shim_irq_fn handler;
	void *data;
};

static irqreturn_t dia_irq_trampoline(int irq, void *ctx)
{
	struct dia_shim_irq *c = ctx;

	return c->handler(c->data) ? IRQ_HANDLED : IRQ_NONE;
}

struct dia_shim_irq *dia_shim_request_irq(struct pci_dev *pdev, unsigned int vector,
					  dia_shim_irq_fn handler, void *data,
					  const char *name, int *err)
{
	struct dia_shim_irq *c;
	int irq = pci_irq_vector(pdev, vector);

	if (irq < 0) {
		*err = irq;
		return NULL;
	}
	c = kzalloc(sizeof(*c), GFP_KERNEL);
	if (!c) {
		*err = -ENOMEM;
		return NULL;
	}
	c->irq = irq;
	c->handler = handler;
	c->data = data;
	*err = request_irq(irq, dia_irq_trampoline, 0, name, c);
	if (*err) {
		kfree(c);
		return NULL;
	}
	return c;
}

void dia_shim_free_irq(struct dia_shim_irq *c)
{
	/* free_irq waits for a handler running on another CPU to return. */
	free_irq(c->irq, c);
	kfree(c);
}

void dia_shim_irq_disable(struct dia_shim_irq *c) { disable_irq(c->irq); }
void dia_shim_irq_enable(struct dia_shim_irq *c) { enable_irq(c->irq); }
void dia_shim_cancel_work_sync(void *work) { cancel_work_sync(work); }
int dia_shim_capable_sys_admin(void) { return capable(CAP_SYS_ADMIN); }

void *dia_shim_dma_alloc(struct pci_dev *pdev, unsigned long size,
			 unsigned long long *dma_handle)
{
	dma_addr_t handle = 0;
	void *cpu = dma_alloc_coherent(&pdev->dev, size, &handle, GFP_KERNEL);

	*dma_handle = handle;
	return cpu;
}

void dia_shim_dma_rmb(void)
{
	dma_rmb();
}

void dia_shim_mb(void)
{
	mb();
}

void dia_shim_dma_free(struct pci_dev *pdev, unsigned long size, void *cpu,
		       unsigned long long dma_handle)
{
	dma_free_coherent(&pdev->dev, size, cpu, dma_handle);
}

struct dia_shim_misc {
	struct miscdevice misc;
	char name[32];
	void *misc_data;
	dia_shim_open_fn open;
	dia_shim_release_fn release;
	dia_shim_ioctl_fn ioctl;
};

/*
 * Per open file. It copies the callbacks so that it stays valid after the
 * misc device is deregistered (the module itself stays loaded while a file is
 * open, through fops.owner).
 */
struct dia_misc_file {
	void *data;
	dia_shim_release_fn release;
	dia_shim_ioctl_fn ioctl;
};

static int dia_misc_open(struct inode *inode, struct file *file)
{
	/* misc_open stored our struct miscdevice in private_data. */
	struct dia_shim_misc *m = container_of(file->private_data, struct dia_shim_misc, misc);
	struct dia_misc_file *f = kzalloc(sizeof(*f), GFP_KERNEL);
	int err;

	if (!f)
		return -ENOMEM;
	f->release = m->release;
	f->ioctl = m->ioctl;
	err = m->open(m->misc_data, &f->data);
	if (err) {
		kfree(f);
		return err;
	}
	file->private_data = f;
	return 0;
}

static int dia_misc_release(struct inode *inode, struct file *file)
{
	struct dia_misc_file *f = file->private_data;

	f->release(f->data);
	kfree(f);
	return 0;
}

static long dia_misc_ioctl(struct file *file, unsigned int cmd, unsigned long arg)
{
	struct dia_misc_file *f = file->private_data;

	return f->ioctl(f->data, cmd, arg);
}

static const struct file_operations dia_misc_fops = {
	.owner = THIS_MODULE,
	.open = dia_misc_open,
	.release = dia_misc_release,
	.unlocked_ioctl = dia_misc_ioctl,
	.compat_ioctl = compat_ptr_ioctl,
	.llseek = noop_llseek,
};

struct dia_shim_misc *dia_shim_misc_register(const char *name, void *misc_data,
					     dia_shim_open_fn open,
					     dia_shim_release_fn release,
					     dia_shim_ioctl_fn ioctl, int *err)
{
	struct dia_shim_misc *m = kzalloc(sizeof(*m), GFP_KERNEL);

	if (!m) {
		*err = -ENOMEM;
		return NULL;
	}
	strscpy(m->name, name, sizeof(m->name));
	m->misc.minor = MISC_DYNAMIC_MINOR;
	m->misc.name = m->name;
	m->misc.fops = &dia_misc_fops;
	m->misc.mode = 0600;
	m->misc_data = misc_data;
	m->open = open;
	m->release = release;
	m->ioctl = ioctl;
	*err = misc_register(&m->misc);
	if (*err) {
		kfree(m);
		return NULL;
	}
	return m;
}

void dia_shim_misc_deregister(struct dia_shim_misc *m)
{
	misc_deregister(&m->misc);
	kfree(m);
}

struct dia_shim_completion {
	struct completion done;
};

struct dia_shim_completion *dia_shim_completion_new(void)
{
	struct dia_shim_completion *c = kzalloc(sizeof(*c), GFP_KERNEL);

	if (c)
		init_completion(&c->done);
	return c;
}

void dia_shim_completion_free(struct dia_shim_completion *c) { kfree(c); }
void dia_shim_completion_reinit(struct dia_shim_completion *c) { reinit_completion(&c->done); }
void dia_shim_complete(struct dia_shim_completion *c) { complete(&c->done); }
int dia_shim_wait_timeout(struct dia_shim_completion *c, unsigned int ms)
{
	return wait_for_completion_timeout(&c->done, msecs_to_jiffies(ms)) ? 1 : 0;
}

void dia_shim_msleep(unsigned int ms) { msleep(ms); }
unsigned long long dia_shim_ktime_ms(void) { return ktime_get_ns() / NSEC_PER_MSEC; }
unsigned int dia_shim_num_online_cpus(void) { return num_online_cpus(); }
