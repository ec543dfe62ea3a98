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

/* DMA coherent memory. */
void *dia_shim_dma_alloc(struct pci_dev *pdev, unsigned long size,
			 unsigned long long *dma_handle);
void dia_shim_dma_free(struct pci_dev *pdev, unsigned long size, void *cpu,
		       unsigned long long dma_handle);

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

/* Time. */
void dia_shim_msleep(unsigned int ms);
unsigned long long dia_shim_ktime_ms(void);
unsigned int dia_shim_num_online_cpus(void);

#endif /* DIA_SHIM_H */
