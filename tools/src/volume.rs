//! `diaconfig volume ...`: thin volumes on the card, attached to containers.

use anyhow::Result;
use clap::{Args, Subcommand};
use dia::api::{
    block_sizes_allowed, format_size, parse_size, AddPlex, Attachment, CreateVolume, PlexView,
    SetTier, Volume, VolumeList, DEFAULT_BLOCK_SIZE, MAX_MIRRORS, NAME_MAX_LEN,
};
use dia::Stats;
use dia_abi::card::lba_shift_of;

use crate::client::Client;
use crate::output::{self, Format};

/// Volume subcommands.
#[derive(Subcommand, Debug)]
pub enum VolumeCommand {
    /// Create a thin volume (space is allocated as it is written).
    Create(CreateArgs),
    /// List volumes, and namespaces on the card no volume owns.
    List,
    /// Show one volume: size, use, device, attachment.
    Show {
        /// Volume name.
        name: String,
    },
    /// Delete a volume and its data (refused while attached, unless --force).
    Delete {
        /// Volume name.
        name: String,
        /// Detach it first if attached.
        #[arg(long)]
        force: bool,
    },
    /// Attach a volume to a container: its device, or a filesystem on it,
    /// appears in that container only.
    Attach(AttachArgs),
    /// Detach a volume from its container.
    Detach {
        /// Volume name.
        name: String,
    },
    /// Move a volume to another performance tier (applies to its next I/O).
    SetTier {
        /// Volume name.
        name: String,
        /// Tier name (see `diaconfig tier list`).
        tier: String,
    },
    /// The card's counters for a volume: I/Os, bytes, latency, throttling.
    Stats {
        /// Volume name.
        name: String,
    },
    /// A mirrored volume's copies: add one, remove one, or replace one
    /// (the new copy is filled while the volume stays in use).
    #[command(subcommand)]
    Plex(PlexCommand),
}

/// `volume plex ...`.
#[derive(Subcommand, Debug)]
pub enum PlexCommand {
    /// One more copy, on an appliance without one (a volume with one copy
    /// becomes mirrored this way while it is detached).
    Add {
        /// Volume name.
        name: String,
        /// The appliance for the new copy (default: most room).
        #[arg(long)]
        node: Option<String>,
        /// Only appliances with this label.
        #[arg(long)]
        label: Option<String>,
    },
    /// Remove the copy on an appliance (refused if no copy in sync would
    /// be left).
    Remove {
        /// Volume name.
        name: String,
        /// The appliance whose copy goes.
        node: String,
    },
    /// Replace the copy on an appliance (lost, or to move it) by a new one
    /// elsewhere, copied in full.
    Replace {
        /// Volume name.
        name: String,
        /// The appliance whose copy goes.
        node: String,
        /// The appliance for the new copy (default: most room).
        #[arg(long)]
        to: Option<String>,
    },
}

/// `volume create`.
#[derive(Args, Debug)]
pub struct CreateArgs {
    #[arg(help = format!("Volume name (a-z, 0-9, '-', '_', '.'; up to {NAME_MAX_LEN} characters)"))]
    pub name: String,
    /// Size, with K/M/G/T/P suffixes (powers of 1024), e.g. 20G.
    #[arg(long, value_parser = parse_size)]
    pub size: u64,
    /// Logical block size in bytes.
    #[arg(long, default_value_t = DEFAULT_BLOCK_SIZE, value_parser = parse_block_size)]
    pub block_size: u32,
    /// Performance tier (see `diaconfig tier list`); default best-effort.
    #[arg(long)]
    pub tier: Option<String>,
    /// In a cluster: the appliance to keep the data on (default: this one
    /// if it has room, else the one with the most room).
    #[arg(long)]
    pub node: Option<String>,
    /// In a cluster: only an appliance with this label.
    #[arg(long)]
    pub label: Option<String>,
    /// In a cluster: keep this many copies, each on a different appliance
    /// (writes go to every copy; the volume keeps working while one is
    /// lost). With --node, the first copy goes there.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_MIRRORS)))]
    pub mirrors: Option<u32>,
    /// With --mirrors: rebuild a copy elsewhere once its appliance has been
    /// unreachable this many seconds (default: never; `volume plex
    /// replace` is the operator's decision).
    #[arg(long, requires = "mirrors")]
    pub rebuild_after: Option<u64>,
}

fn parse_block_size(s: &str) -> Result<u32, String> {
    s.parse::<u32>()
        .ok()
        .filter(|&b| lba_shift_of(b).is_some())
        .ok_or_else(|| {
            format!(
                "block size '{s}' is not allowed (allowed: {})",
                block_sizes_allowed()
            )
        })
}

/// `volume attach`.
#[derive(Args, Debug)]
pub struct AttachArgs {
    /// Volume name.
    pub name: String,
    /// Container: a name from `diaconfig container list`, or pid:N.
    #[arg(long)]
    pub container: String,
    /// Make (if blank) and mount this filesystem in the container.
    #[arg(long, value_parser = ["ext4"], requires = "mount")]
    pub fs: Option<String>,
    /// Mount point inside the container (with --fs).
    #[arg(long, requires = "fs")]
    pub mount: Option<String>,
}

/// Runs a volume subcommand.
pub fn run(client: &Client, format: &Format, cmd: VolumeCommand) -> Result<()> {
    match cmd {
        VolumeCommand::Create(a) => {
            let v: Volume = client.post(
                "/v1/volumes",
                &CreateVolume {
                    name: a.name,
                    size_bytes: a.size,
                    block_size: a.block_size,
                    tier: a.tier,
                    node: a.node,
                    label: a.label,
                    mirrors: a.mirrors,
                    rebuild_after: a.rebuild_after,
                },
            )?;
            println!("{}", render_one(&v, format)?);
        }
        VolumeCommand::List => {
            let list: VolumeList = client.get("/v1/volumes")?;
            println!("{}", render_list(&list, format)?);
        }
        VolumeCommand::Show { name } => {
            let v: Volume = client.get(&format!("/v1/volumes/{name}"))?;
            println!("{}", render_one(&v, format)?);
        }
        VolumeCommand::Delete { name, force } => {
            client.delete(&format!("/v1/volumes/{name}?force={force}"))?;
            println!(
                "{}",
                output::done(format, "deleted", &name, format!("volume {name} deleted"))?
            );
        }
        VolumeCommand::Attach(a) => {
            let v: Volume = client.post(
                &format!("/v1/volumes/{}/attach", a.name),
                &Attachment {
                    container: a.container,
                    fs: a.fs,
                    mount: a.mount,
                },
            )?;
            println!("{}", render_one(&v, format)?);
        }
        VolumeCommand::SetTier { name, tier } => {
            let v: Volume = client.post(&format!("/v1/volumes/{name}/tier"), &SetTier { tier })?;
            println!("{}", render_one(&v, format)?);
        }
        VolumeCommand::Stats { name } => {
            let s: Stats = client.get(&format!("/v1/volumes/{name}/stats"))?;
            println!("{}", render_stats(&s, format)?);
        }
        VolumeCommand::Plex(p) => {
            let v: Volume = match p {
                PlexCommand::Add { name, node, label } => client.post(
                    &format!("/v1/volumes/{name}/plexes"),
                    &AddPlex {
                        node,
                        label,
                        replace: None,
                    },
                )?,
                PlexCommand::Replace { name, node, to } => client.post(
                    &format!("/v1/volumes/{name}/plexes"),
                    &AddPlex {
                        node: to,
                        label: None,
                        replace: Some(node),
                    },
                )?,
                PlexCommand::Remove { name, node } => {
                    client.delete_for(&format!("/v1/volumes/{name}/plexes/{node}"))?
                }
            };
            println!("{}", render_one(&v, format)?);
        }
        VolumeCommand::Detach { name } => {
            let v: Volume = client.post(
                &format!("/v1/volumes/{name}/detach"),
                &serde_json::json!({}),
            )?;
            println!("{}", render_one(&v, format)?);
        }
    }
    Ok(())
}

fn attachment(v: &Volume) -> String {
    match &v.attachment {
        None => "-".into(),
        Some(a) => match &a.mount {
            Some(m) => format!(
                "{} ({} at {m})",
                a.container,
                a.fs.as_deref().unwrap_or("?")
            ),
            None => a.container.clone(),
        },
    }
}

fn used(v: &Volume) -> String {
    v.used_bytes.map_or("-".into(), format_size)
}

/// A plex's progress in words: how far behind, and the resync's rate and
/// time left.
fn plex_progress(p: &PlexView) -> String {
    let mut parts = Vec::new();
    if let Some(b) = p.behind_bytes {
        parts.push(format!("{} behind", format_size(b)));
    }
    if let Some(r) = p.resync_rate.filter(|&r| r > 0) {
        parts.push(format!("{}/s", format_size(r)));
    }
    if let Some(s) = p.eta_seconds {
        parts.push(format!("~{s} s left"));
    }
    if parts.is_empty() {
        "-".into()
    } else {
        parts.join(", ")
    }
}

fn render_plexes(v: &Volume) -> String {
    output::table(
        &[
            "Copy on",
            "Namespace",
            "State",
            "Progress",
            "Resynced",
            "Path",
            "Faults",
        ],
        v.plexes
            .iter()
            .map(|p| {
                vec![
                    p.node.clone(),
                    p.nsid.to_string(),
                    p.state.clone(),
                    plex_progress(p),
                    p.resync_bytes.map_or("-".into(), format_size),
                    p.path.clone().unwrap_or_else(|| "-".into()),
                    p.faults.map_or("-".into(), |f| f.to_string()),
                ]
            })
            .collect(),
    )
}

fn render_one(v: &Volume, format: &Format) -> Result<String> {
    if format.is_table() && !v.plexes.is_empty() {
        let mut out = render_fields(v);
        out.push_str(&format!(
            "\nHealth: {} ({} copies; {})\n",
            v.health.as_deref().unwrap_or("-"),
            v.plexes.len(),
            match v.rebuild_after {
                Some(s) => format!("a copy unreachable for {s} s is rebuilt elsewhere"),
                None => "a lost copy is replaced by `volume plex replace`".into(),
            }
        ));
        out.push_str(&render_plexes(v));
        return Ok(out);
    }
    Ok(match format {
        Format::Json | Format::Value(_) => output::data(v, format)?,
        Format::Table => render_fields(v),
    })
}

fn render_fields(v: &Volume) -> String {
    output::key_values(&[
        ("Name", v.name.clone()),
        ("Status", v.status.clone()),
        (
            "Size",
            format!("{} ({} bytes)", format_size(v.size_bytes), v.size_bytes),
        ),
        ("Used", used(v)),
        ("Block size", v.block_size.to_string()),
        ("Namespace", v.nsid.to_string()),
        ("Tier", v.tier.clone()),
        ("Device", v.device.clone().unwrap_or_else(|| "-".into())),
        ("Attached to", attachment(v)),
        (
            "Data on",
            v.node.clone().unwrap_or_else(|| "this appliance".into()),
        ),
        (
            "Attached on",
            v.attached_on.clone().unwrap_or_else(|| "-".into()),
        ),
    ])
}

fn render_stats(s: &Stats, format: &Format) -> Result<String> {
    if !format.is_table() {
        return output::data(s, format);
    }
    let pct = |q| {
        s.latency_percentile_us(q)
            .map_or("-".into(), |us| format!("< {us} µs"))
    };
    Ok(output::key_values(&[
        ("Reads", s.reads.to_string()),
        ("Writes", s.writes.to_string()),
        ("Read", format_size(s.read_bytes)),
        ("Written", format_size(s.write_bytes)),
        ("Other commands", s.other.to_string()),
        ("Errors", s.errors.to_string()),
        ("Latency p50", pct(0.5)),
        ("Latency p99", pct(0.99)),
        ("Throttled I/Os", s.throttled.to_string()),
        (
            "Time throttled",
            format!("{:.3} s", s.throttled_ns as f64 / 1e9),
        ),
    ]))
}

fn render_list(list: &VolumeList, format: &Format) -> Result<String> {
    if !format.is_table() {
        return output::data(list, format);
    }
    let mut out = output::table(
        &[
            "Name",
            "Size",
            "Used",
            "Tier",
            "Status",
            "Device",
            "Attached to",
            "Data on",
        ],
        list.volumes
            .iter()
            .map(|v| {
                vec![
                    v.name.clone(),
                    format_size(v.size_bytes),
                    used(v),
                    v.tier.clone(),
                    v.status.clone(),
                    v.device.clone().unwrap_or_else(|| "-".into()),
                    attachment(v),
                    v.node.clone().unwrap_or_else(|| "-".into()),
                ]
            })
            .collect(),
    );
    if !list.orphans.is_empty() {
        out.push_str("\nNamespaces on the card that no volume owns:\n");
        out.push_str(&output::table(
            &["Namespace", "Label", "Size", "Attached"],
            list.orphans
                .iter()
                .map(|n| {
                    vec![
                        n.nsid.to_string(),
                        n.label.clone(),
                        format_size(n.size_bytes),
                        if n.attached { "yes" } else { "no" }.into(),
                    ]
                })
                .collect(),
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vol() -> Volume {
        Volume {
            name: "db".into(),
            nsid: 2,
            size_bytes: 20 << 30,
            block_size: 4096,
            used_bytes: Some(3 << 20),
            device: Some("/dev/dia0n2".into()),
            status: "ready".into(),
            attachment: Some(Attachment {
                container: "web".into(),
                fs: Some("ext4".into()),
                mount: Some("/data".into()),
            }),
            tier: "gold".into(),
            node: None,
            attached_on: None,
            plexes: Vec::new(),
            health: None,
            rebuild_after: None,
        }
    }

    #[test]
    fn tables_show_what_matters() {
        let t = render_one(&vol(), &Format::Table).unwrap();
        for want in ["20 GiB", "3 MiB", "/dev/dia0n2", "web (ext4 at /data)"] {
            assert!(t.contains(want), "missing {want} in\n{t}");
        }
        let list = VolumeList {
            volumes: vec![vol()],
            orphans: vec![],
        };
        let t = render_list(&list, &Format::Table).unwrap();
        assert!(t.contains("db") && !t.contains("no volume owns"), "{t}");
    }

    #[test]
    fn a_mirrored_volume_shows_each_copy() {
        let mut v = vol();
        v.health = Some("degraded".into());
        v.plexes = vec![
            PlexView {
                node: "appliance-0".into(),
                nsid: 2,
                state: "in-sync".into(),
                behind_bytes: None,
                resync_bytes: Some(0),
                resync_rate: None,
                eta_seconds: None,
                path: Some("local".into()),
                faults: Some(0),
            },
            PlexView {
                node: "appliance-2".into(),
                nsid: 5,
                state: "resyncing".into(),
                behind_bytes: Some(40 << 20),
                resync_bytes: Some(8 << 20),
                resync_rate: Some(20 << 20),
                eta_seconds: Some(2),
                path: Some("live".into()),
                faults: Some(1),
            },
        ];
        let t = render_one(&v, &Format::Table).unwrap();
        for want in [
            "Health: degraded (2 copies;",
            "appliance-2",
            "resyncing",
            "40 MiB behind, 20 MiB/s, ~2 s left",
            "8 MiB",
        ] {
            assert!(t.contains(want), "missing {want} in\n{t}");
        }
    }
}
