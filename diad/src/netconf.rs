//! Network configuration over rtnetlink: moving a port's net device into a
//! container's network namespace (from diad's namespace), and, inside the
//! container (run by the single-threaded `diad ns-exec` helper after it
//! joined the namespace), naming it, addressing it and routing through the
//! gateway. Each call runs a small current-thread runtime of its own, so it
//! works both in the helper and on diad's blocking pool.

use std::net::{IpAddr, Ipv4Addr};

use anyhow::{anyhow, bail, Context, Result};
use futures::TryStreamExt;
use rtnetlink::{Handle, LinkUnspec, RouteMessageBuilder};

fn run<F, T>(f: impl FnOnce(Handle) -> F) -> Result<T>
where
    F: std::future::Future<Output = Result<T>>,
{
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .context("starting a netlink runtime")?;
    rt.block_on(async {
        let (conn, handle, _) = rtnetlink::new_connection().context("opening rtnetlink")?;
        let task = tokio::spawn(conn);
        let out = f(handle).await;
        task.abort();
        out
    })
}

async fn index_of(handle: &Handle, name: &str) -> Result<u32> {
    let mut links = handle.link().get().match_name(name.to_string()).execute();
    match links.try_next().await {
        Ok(Some(l)) => Ok(l.header.index),
        Ok(None) => bail!("no network interface {name}"),
        Err(e) => Err(anyhow!("no network interface {name}: {e}")),
    }
}

/// Moves `ifname` into the network namespace of `pid`.
pub fn move_link(ifname: &str, pid: u32) -> Result<()> {
    run(|h| async move {
        let index = index_of(&h, ifname).await?;
        h.link()
            .set(LinkUnspec::new_with_index(index).setns_by_pid(pid).build())
            .execute()
            .await
            .with_context(|| format!("moving {ifname} into process {pid}'s network namespace"))
    })
}

/// In the current network namespace: renames `link` to `name`, adds
/// `address` (CIDR), brings it and `lo` up and adds a default route via
/// `gateway`.
pub fn net_up(link: &str, name: &str, address: &str, gateway: &str) -> Result<()> {
    let (ip, prefix) = address
        .split_once('/')
        .ok_or_else(|| anyhow!("address {address} is not a CIDR"))?;
    let ip: Ipv4Addr = ip.parse().with_context(|| format!("address {address}"))?;
    let prefix: u8 = prefix
        .parse()
        .with_context(|| format!("address {address}"))?;
    let gw: Ipv4Addr = gateway
        .parse()
        .with_context(|| format!("gateway {gateway}"))?;
    run(|h| async move {
        let index = index_of(&h, link).await?;
        if link != name {
            h.link()
                .set(
                    LinkUnspec::new_with_index(index)
                        .name(name.to_string())
                        .build(),
                )
                .execute()
                .await
                .with_context(|| format!("renaming {link} to {name}"))?;
        }
        h.address()
            .add(index, IpAddr::V4(ip), prefix)
            .execute()
            .await
            .with_context(|| format!("adding {address} to {name}"))?;
        h.link()
            .set(LinkUnspec::new_with_index(index).up().build())
            .execute()
            .await
            .with_context(|| format!("bringing {name} up"))?;
        if let Ok(lo) = index_of(&h, "lo").await {
            h.link()
                .set(LinkUnspec::new_with_index(lo).up().build())
                .execute()
                .await
                .context("bringing lo up")?;
        }
        let route = RouteMessageBuilder::<Ipv4Addr>::new()
            .gateway(gw)
            .output_interface(index)
            .build();
        h.route()
            .add(route)
            .execute()
            .await
            .with_context(|| format!("adding the default route via {gateway}"))?;
        Ok(())
    })
}
