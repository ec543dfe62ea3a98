// SPDX-License-Identifier: GPL-2.0
/*
 * Network half of the glue shim (see shim.h): a net_device with a NAPI
 * context per card port, its netdev_ops forwarding to Rust callbacks, and
 * the skb helpers the data path needs (DMA mapping, checksum offsets, RX
 * buffers the stack takes over). No driver logic lives here; see
 * kmod/port.rs.
 */
#include <linux/etherdevice.h>
#include <linux/netdevice.h>
#include <linux/pci.h>
#include <linux/rtnetlink.h>
#include <linux/skbuff.h>
#include "shim.h"

struct dia_shim_netdev {
	struct net_device *dev;
	struct pci_dev *pdev;
	struct napi_struct napi;
	void *data;
	struct dia_shim_net_ops ops;
	int registered;
	/*
	 * Carrier changes are allowed (under carrier_lock) only from just
	 * before register_netdev() until just before unregister_netdev(): a
	 * carrier event on a device that finished unregistering would queue
	 * it on the linkwatch list after unregister flushed that list, and
	 * free_netdev() would leave the list pointing at freed memory (found
	 * by the ioctl fuzzer: a card recovery turning carriers off while
	 * PCI remove unregistered the ports).
	 */
	spinlock_t carrier_lock;
	int carrier_live;
};

static struct dia_shim_netdev *to_nd(struct net_device *dev)
{
	return *(struct dia_shim_netdev **)netdev_priv(dev);
}

static int dia_ndo_open(struct net_device *dev)
{
	struct dia_shim_netdev *nd = to_nd(dev);

	return nd->ops.open(nd->data);
}

static int dia_ndo_stop(struct net_device *dev)
{
	struct dia_shim_netdev *nd = to_nd(dev);

	nd->ops.stop(nd->data);
	return 0;
}

static netdev_tx_t dia_ndo_xmit(struct sk_buff *skb, struct net_device *dev)
{
	struct dia_shim_netdev *nd = to_nd(dev);

	return nd->ops.xmit(nd->data, skb) == DIA_TX_OK ? NETDEV_TX_OK : NETDEV_TX_BUSY;
}

static void dia_ndo_stats(struct net_device *dev, struct rtnl_link_stats64 *s)
{
	struct dia_shim_netdev *nd = to_nd(dev);
	struct dia_shim_net_stats st = {};

	nd->ops.stats(nd->data, &st);
	s->rx_packets = st.rx_packets;
	s->tx_packets = st.tx_packets;
	s->rx_bytes = st.rx_bytes;
	s->tx_bytes = st.tx_bytes;
	s->rx_dropped = st.rx_dropped;
	s->tx_dropped = st.tx_dropped;
}

static const struct net_device_ops dia_netdev_ops = {
	.ndo_open = dia_ndo_open,
	.ndo_stop = dia_ndo_stop,
	.ndo_start_xmit = dia_ndo_xmit,
	.ndo_get_stats64 = dia_ndo_stats,
	.ndo_validate_addr = eth_validate_addr,
};

static int dia_napi_poll(struct napi_struct *napi, int budget)
{
	struct dia_shim_netdev *nd = container_of(napi, struct dia_shim_netdev, napi);

	return nd->ops.poll(nd->data, budget);
}

struct dia_shim_netdev *dia_shim_netdev_new(struct pci_dev *pdev, const char *name,
					    unsigned int mtu, unsigned int tso_max, int *err)
{
	struct dia_shim_netdev *nd;
	struct net_device *dev;

	nd = kzalloc(sizeof(*nd), GFP_KERNEL);
	if (!nd) {
		*err = -ENOMEM;
		return NULL;
	}
	dev = alloc_etherdev(sizeof(nd));
	if (!dev) {
		kfree(nd);
		*err = -ENOMEM;
		return NULL;
	}
	*(struct dia_shim_netdev **)netdev_priv(dev) = nd;
	spin_lock_init(&nd->carrier_lock);
	nd->dev = dev;
	nd->pdev = pdev;
	strscpy(dev->name, name, IFNAMSIZ);
	SET_NETDEV_DEV(dev, &pdev->dev);
	dev->netdev_ops = &dia_netdev_ops;
	dev->min_mtu = ETH_MIN_MTU;
	dev->max_mtu = mtu;
	dev->mtu = mtu;
	dev->hw_features = NETIF_F_SG | NETIF_F_HW_CSUM | NETIF_F_RXCSUM;
	if (tso_max) {
		dev->hw_features |= NETIF_F_TSO | NETIF_F_TSO6;
		netif_set_tso_max_size(dev, tso_max);
	}
	dev->features = dev->hw_features;
	netif_carrier_off(dev);
	netif_napi_add(dev, &nd->napi, dia_napi_poll);
	*err = 0;
	return nd;
}

void dia_shim_netdev_set_mac(struct dia_shim_netdev *nd, const unsigned char *mac)
{
	eth_hw_addr_set(nd->dev, mac);
}

void dia_shim_netdev_free(struct dia_shim_netdev *nd)
{
	netif_napi_del(&nd->napi);
	free_netdev(nd->dev);
	kfree(nd);
}

int dia_shim_netdev_register(struct dia_shim_netdev *nd, void *data,
			     const struct dia_shim_net_ops *ops)
{
	int err;

	unsigned long flags;

	nd->data = data;
	nd->ops = *ops;
	spin_lock_irqsave(&nd->carrier_lock, flags);
	nd->carrier_live = 1;
	spin_unlock_irqrestore(&nd->carrier_lock, flags);
	err = register_netdev(nd->dev);
	if (!err) {
		nd->registered = 1;
	} else {
		spin_lock_irqsave(&nd->carrier_lock, flags);
		nd->carrier_live = 0;
		spin_unlock_irqrestore(&nd->carrier_lock, flags);
	}
	return err;
}

void dia_shim_netdev_unregister(struct dia_shim_netdev *nd)
{
	unsigned long flags;

	spin_lock_irqsave(&nd->carrier_lock, flags);
	nd->carrier_live = 0;
	spin_unlock_irqrestore(&nd->carrier_lock, flags);
	if (nd->registered)
		unregister_netdev(nd->dev);
	nd->registered = 0;
}

int dia_shim_netdev_ifindex(struct dia_shim_netdev *nd) { return nd->dev->ifindex; }

int dia_shim_netdev_set_mtu(struct dia_shim_netdev *nd, unsigned int mtu)
{
	int err;

	rtnl_lock();
	/*
	 * Only while registered (reg_state changes under the RTNL): on a device
	 * already unregistered, NETDEV_CHANGEMTU makes IPv4 create a new
	 * in_device with sysctl entries under the device's name that nothing
	 * removes, and the next device of that name fails to register with
	 * "sysctl duplicate entry" (found by the ioctl fuzzer: PORT_SET racing
	 * PORT_DELETE and PCI remove).
	 */
	if (nd->dev->reg_state != NETREG_REGISTERED) {
		rtnl_unlock();
		return -ENODEV;
	}
	nd->dev->max_mtu = mtu;
	err = dev_set_mtu(nd->dev, mtu);
	rtnl_unlock();
	return err;
}

void dia_shim_netif_carrier(struct dia_shim_netdev *nd, int on)
{
	unsigned long flags;

	spin_lock_irqsave(&nd->carrier_lock, flags);
	if (nd->carrier_live) {
		if (on)
			netif_carrier_on(nd->dev);
		else
			netif_carrier_off(nd->dev);
	}
	spin_unlock_irqrestore(&nd->carrier_lock, flags);
}

void dia_shim_netif_stop_queue(struct dia_shim_netdev *nd) { netif_stop_queue(nd->dev); }
void dia_shim_netif_wake_queue(struct dia_shim_netdev *nd) { netif_wake_queue(nd->dev); }
int dia_shim_netif_queue_stopped(struct dia_shim_netdev *nd) { return netif_queue_stopped(nd->dev); }
void dia_shim_napi_enable(struct dia_shim_netdev *nd) { napi_enable(&nd->napi); }
void dia_shim_napi_disable(struct dia_shim_netdev *nd) { napi_disable(&nd->napi); }
void dia_shim_napi_schedule(struct dia_shim_netdev *nd) { napi_schedule(&nd->napi); }
int dia_shim_napi_complete_done(struct dia_shim_netdev *nd, int done)
{
	return napi_complete_done(&nd->napi, done) ? 1 : 0;
}

/* Headroom before the card's bytes, and the whole fragment (see shim.h). */
#define DIA_RX_HEADROOM (NET_SKB_PAD + NET_IP_ALIGN)
#define DIA_RX_FRAG \
	(SKB_DATA_ALIGN(DIA_RX_HEADROOM + DIA_SHIM_RX_ROOM) + \
	 SKB_DATA_ALIGN(sizeof(struct skb_shared_info)))

static void dia_rx_deliver(struct dia_shim_netdev *nd, struct sk_buff *skb, int csum_ok)
{
	skb->protocol = eth_type_trans(skb, nd->dev);
	if (csum_ok && (nd->dev->features & NETIF_F_RXCSUM))
		skb->ip_summed = CHECKSUM_UNNECESSARY;
	napi_gro_receive(&nd->napi, skb);
}

void *dia_shim_rx_buf_alloc(struct dia_shim_netdev *nd, int napi, unsigned long long *dma)
{
	struct device *d = &nd->pdev->dev;
	void *buf = napi ? napi_alloc_frag(DIA_RX_FRAG) : netdev_alloc_frag(DIA_RX_FRAG);
	dma_addr_t a;

	if (!buf)
		return NULL;
	a = dma_map_single(d, buf + DIA_RX_HEADROOM, DIA_SHIM_RX_ROOM, DMA_FROM_DEVICE);
	if (dma_mapping_error(d, a)) {
		skb_free_frag(buf);
		return NULL;
	}
	*dma = a;
	return buf;
}

void dia_shim_rx_buf_free(struct dia_shim_netdev *nd, void *buf, unsigned long long dma)
{
	dma_unmap_single(&nd->pdev->dev, dma, DIA_SHIM_RX_ROOM, DMA_FROM_DEVICE);
	skb_free_frag(buf);
}

int dia_shim_rx_buf_receive(struct dia_shim_netdev *nd, void *buf, unsigned long long dma,
			    unsigned int len, int copy, int csum_ok)
{
	struct device *d = &nd->pdev->dev;
	struct sk_buff *skb;

	if (len > DIA_SHIM_RX_ROOM)
		return -EINVAL;
	if (copy) {
		dma_sync_single_for_cpu(d, dma, len, DMA_FROM_DEVICE);
		skb = napi_alloc_skb(&nd->napi, len);
		if (skb)
			skb_put_data(skb, buf + DIA_RX_HEADROOM, len);
		dma_sync_single_for_device(d, dma, len, DMA_FROM_DEVICE);
		if (!skb)
			return -ENOMEM;
		dia_rx_deliver(nd, skb, csum_ok);
		return 1;
	}
	/* The shared info lies beyond the mapped room: build before unmapping,
	 * so a failure leaves the buffer as it was. */
	skb = napi_build_skb(buf, DIA_RX_FRAG);
	if (!skb)
		return -ENOMEM;
	dma_unmap_single(d, dma, DIA_SHIM_RX_ROOM, DMA_FROM_DEVICE);
	skb_reserve(skb, DIA_RX_HEADROOM);
	skb_put(skb, len);
	dia_rx_deliver(nd, skb, csum_ok);
	return 0;
}

int dia_shim_xmit_more(void) { return netdev_xmit_more() ? 1 : 0; }

unsigned int dia_shim_skb_len(struct sk_buff *skb) { return skb->len; }

int dia_shim_skb_csum(struct sk_buff *skb, unsigned short *start, unsigned short *offset)
{
	if (skb->ip_summed != CHECKSUM_PARTIAL)
		return 0;
	*start = skb_checksum_start_offset(skb);
	*offset = skb->csum_offset;
	return 1;
}

unsigned short dia_shim_skb_tso_mss(struct sk_buff *skb)
{
	if (!skb_is_gso(skb) || !(skb_shinfo(skb)->gso_type & (SKB_GSO_TCPV4 | SKB_GSO_TCPV6)))
		return 0;
	return skb_shinfo(skb)->gso_size;
}

int dia_shim_skb_map(struct dia_shim_netdev *nd, struct sk_buff *skb,
		     unsigned long long *addrs, unsigned int *lens, unsigned char *pages,
		     unsigned int max)
{
	struct device *d = &nd->pdev->dev;
	unsigned int n = 0, i, nfrags = skb_shinfo(skb)->nr_frags;
	dma_addr_t a;

	if (nfrags + (skb_headlen(skb) ? 1 : 0) > max)
		return -ENOSPC;
	if (skb_headlen(skb)) {
		a = dma_map_single(d, skb->data, skb_headlen(skb), DMA_TO_DEVICE);
		if (dma_mapping_error(d, a))
			return -ENOMEM;
		addrs[n] = a;
		lens[n] = skb_headlen(skb);
		pages[n] = 0;
		n++;
	}
	for (i = 0; i < nfrags; i++) {
		skb_frag_t *f = &skb_shinfo(skb)->frags[i];

		a = skb_frag_dma_map(d, f, 0, skb_frag_size(f), DMA_TO_DEVICE);
		if (dma_mapping_error(d, a))
			goto unwind;
		addrs[n] = a;
		lens[n] = skb_frag_size(f);
		pages[n] = 1;
		n++;
	}
	return n;
unwind:
	while (n--)
		dia_shim_skb_unmap(nd, addrs[n], lens[n], pages[n]);
	return -ENOMEM;
}

void dia_shim_skb_unmap(struct dia_shim_netdev *nd, unsigned long long addr,
			unsigned int len, int page)
{
	struct device *d = &nd->pdev->dev;

	if (page)
		dma_unmap_page(d, addr, len, DMA_TO_DEVICE);
	else
		dma_unmap_single(d, addr, len, DMA_TO_DEVICE);
}

void dia_shim_skb_orphan(struct sk_buff *skb)
{
	skb_orphan(skb);
	nf_reset_ct(skb);
}

void dia_shim_skb_consume(struct sk_buff *skb, int budget) { napi_consume_skb(skb, budget); }
void dia_shim_skb_drop(struct sk_buff *skb) { dev_kfree_skb_any(skb); }
unsigned int dia_shim_skb_max_bufs(void) { return MAX_SKB_FRAGS + 1; }

void dia_shim_local_bh_disable(void) { local_bh_disable(); }
void dia_shim_local_bh_enable(void) { local_bh_enable(); }
