//! Opening a pool: its devices opened (and sized, for new files), their
//! labels checked, blank devices formatted, the devices put in order and
//! the newest valid metadata slot recovered.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{Mutex, RwLock};

use tracing::{info, warn};

use super::error::{invalid, io_err};
use super::format::{
    align_up, encode_meta, new_slot_bytes, read_slot, slot_bytes_for, write_slot, Label,
    LABEL_BYTES,
};
use super::{Device, Namespace, OpenError, Pool, PoolSpec, State, CHUNK_BYTES};

fn open_device(path: &Path, create_bytes: Option<u64>) -> Result<(File, u64), OpenError> {
    let exists = path.exists();
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(create_bytes.is_some())
        .truncate(false)
        .open(path)
        .map_err(io_err(path))?;
    let mut size = file.seek(SeekFrom::End(0)).map_err(io_err(path))?;
    if size == 0 {
        match create_bytes {
            Some(bytes) => {
                file.set_len(bytes).map_err(io_err(path))?;
                size = bytes;
                info!(path = %path.display(), bytes, created = !exists, "pool device sized (sparse)");
            }
            None => {
                return Err(invalid(format!(
                    "{} is empty; give --pool-size to size it",
                    path.display()
                )))
            }
        }
    }
    Ok((file, size))
}

impl Pool {
    /// Opens the pool on `spec`'s devices, formatting them if they are all
    /// blank, and recovers the last committed metadata.
    pub fn open(spec: &PoolSpec) -> Result<Self, OpenError> {
        if spec.paths.is_empty() {
            return Err(invalid("a pool needs at least one device".into()));
        }
        let mut opened = Vec::new();
        for path in &spec.paths {
            let (file, size) = open_device(path, spec.create_bytes)?;
            let mut raw = vec![0u8; LABEL_BYTES as usize];
            if size >= LABEL_BYTES {
                file.read_exact_at(&mut raw, 0).map_err(io_err(path))?;
            }
            let label =
                Label::decode(&raw).map_err(|why| invalid(format!("{}: {why}", path.display())))?;
            opened.push((path.clone(), file, size, label));
        }
        let blank = opened.iter().filter(|d| d.3.is_none()).count();
        if blank == opened.len() {
            Self::format(&mut opened)?;
        } else if blank > 0 {
            return Err(invalid(
                "some pool devices are blank and some are labelled: give exactly the devices of one pool".into(),
            ));
        }
        Self::assemble(opened)
    }

    fn format(devs: &mut [(PathBuf, File, u64, Option<Label>)]) -> Result<(), OpenError> {
        let pool_id = {
            let mut b = [0u8; 8];
            // A random id tells pools apart; time and pid are a fallback.
            let random = File::open("/dev/urandom")
                .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b));
            if random.is_err() || b == [0; 8] {
                let t = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(1);
                b = (t ^ u64::from(std::process::id())).to_le_bytes();
            }
            u64::from_le_bytes(b)
        };
        // Chunks per device first (device 0 also holds the metadata slots,
        // whose size depends on the total chunk count: iterate once).
        let rough: u64 = devs.iter().map(|d| d.2 / CHUNK_BYTES).sum();
        let slot_bytes = new_slot_bytes(rough);
        let count = devs.len() as u32;
        let mut total = 0u64;
        for (i, d) in devs.iter_mut().enumerate() {
            let meta = if i == 0 { 2 * slot_bytes } else { 0 };
            let data_offset = align_up(LABEL_BYTES + meta, CHUNK_BYTES);
            let chunks = d.2.saturating_sub(data_offset) / CHUNK_BYTES;
            if chunks == 0 {
                return Err(invalid(format!(
                    "{} ({} bytes) is too small for a pool device: it needs at least {} bytes",
                    d.0.display(),
                    d.2,
                    data_offset + CHUNK_BYTES
                )));
            }
            total += chunks;
            d.3 = Some(Label {
                pool_id,
                index: i as u32,
                count,
                device_bytes: d.2,
                data_offset,
                chunks: u32::try_from(chunks).map_err(|_| invalid("device too large".into()))?,
                slot_bytes,
            });
        }
        if total > u64::from(u32::MAX) {
            return Err(invalid("pool too large".into()));
        }
        // Empty metadata in both slots (generation 0 and 1), then labels.
        let empty = encode_meta(&BTreeMap::new());
        let (path0, file0) = (&devs[0].0, &devs[0].1);
        for generation in 0..2u64 {
            write_slot(file0, slot_bytes, generation, &empty).map_err(io_err(path0))?;
        }
        for d in devs.iter() {
            if let Some(label) = &d.3 {
                d.1.write_all_at(&label.encode(), 0).map_err(io_err(&d.0))?;
                d.1.sync_all().map_err(io_err(&d.0))?;
            }
        }
        info!(
            devices = count,
            chunks = total,
            pool_id = format!("{pool_id:016x}"),
            "pool formatted"
        );
        Ok(())
    }

    fn assemble(opened: Vec<(PathBuf, File, u64, Option<Label>)>) -> Result<Self, OpenError> {
        let mut devs: Vec<(PathBuf, File, u64, Label)> = opened
            .into_iter()
            .filter_map(|(p, f, s, l)| l.map(|l| (p, f, s, l)))
            .collect();
        devs.sort_by_key(|d| d.3.index);
        let first = devs[0].3;
        for (i, d) in devs.iter().enumerate() {
            let l = &d.3;
            if l.pool_id != first.pool_id {
                return Err(invalid(format!(
                    "{} belongs to another pool ({:016x}, not {:016x})",
                    d.0.display(),
                    l.pool_id,
                    first.pool_id
                )));
            }
            if l.count as usize != devs.len() || l.index as usize != i {
                return Err(invalid(format!(
                    "the pool has {} devices; {} given (device {} of the pool is missing or repeated)",
                    l.count,
                    devs.len(),
                    i
                )));
            }
            if d.2 < l.device_bytes {
                return Err(invalid(format!(
                    "{} shrank from {} to {} bytes",
                    d.0.display(),
                    l.device_bytes,
                    d.2
                )));
            }
        }
        let mut devices = Vec::new();
        let mut next = 0u32;
        for (path, file, _, l) in devs {
            devices.push(Device {
                path,
                file,
                data_offset: l.data_offset,
                first_chunk: next,
                chunks: l.chunks,
            });
            next += l.chunks;
        }
        let total_chunks = next;
        let slot_bytes = first.slot_bytes;
        if slot_bytes < slot_bytes_for(u64::from(total_chunks)) {
            return Err(invalid("pool label: metadata slots too small".into()));
        }
        // The newest valid metadata slot.
        let mut best: Option<(u64, BTreeMap<u32, Namespace>)> = None;
        for slot in 0..2u64 {
            let mut raw = vec![0u8; slot_bytes as usize];
            let dev0 = &devices[0];
            dev0.file
                .read_exact_at(&mut raw, LABEL_BYTES + slot * slot_bytes)
                .map_err(io_err(&dev0.path))?;
            match read_slot(&raw, slot, total_chunks) {
                Ok((generation, ns)) => {
                    if best.as_ref().is_none_or(|b| generation > b.0) {
                        best = Some((generation, ns));
                    }
                }
                Err(why) => warn!(slot, "metadata slot not usable: {why}"),
            }
        }
        let (generation, namespaces) =
            best.ok_or_else(|| invalid("both metadata slots of the pool are damaged".into()))?;
        let mut used = vec![false; total_chunks as usize];
        for ns in namespaces.values() {
            for p in ns.map.values() {
                used[p as usize] = true;
            }
        }
        // Lowest chunks first: `free` is popped from its end.
        let free: Vec<u32> = (0..total_chunks)
            .rev()
            .filter(|&c| !used[c as usize])
            .collect();
        info!(
            generation,
            namespaces = namespaces.len(),
            chunks = total_chunks,
            free = free.len(),
            "pool opened"
        );
        Ok(Self {
            devices,
            total_chunks,
            slot_bytes,
            state: RwLock::new(State {
                namespaces,
                free,
                pending_free: Vec::new(),
                clean: vec![false; total_chunks as usize],
                dirty: false,
            }),
            commit: Mutex::new(generation),
            written: AtomicU64::new(0),
            synced: AtomicU64::new(0),
            syncs: AtomicU64::new(0),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::fs::OpenOptions;

    use super::*;
    use crate::pool::format::{encode_meta, slot_image};
    use crate::pool::testing::*;

    #[test]
    fn multi_device_pool_spans_devices_and_checks_membership() {
        let d = tmp("multi");
        let s = spec(&d, &["a.img", "b.img"], 8 << 20);
        let m = mem();
        {
            let pool = Pool::open(&s).unwrap();
            assert_eq!(pool.usage().total_bytes, (7 + 7) * CHUNK_BYTES);
            let n = pool.create_namespace(1 << 16, 12, label("wide")).unwrap();
            pool.set_attached(n, true).unwrap();
            for c in 0..12u64 {
                write(&pool, &m, n, c * 256, &[c as u8 + 1; 4096]).unwrap();
            }
            pool.flush().unwrap();
        }
        // Order of the devices does not matter.
        let rev = PoolSpec {
            paths: vec![d.join("b.img"), d.join("a.img")],
            create_bytes: None,
        };
        let pool = Pool::open(&rev).unwrap();
        for c in 0..12u64 {
            assert_eq!(read(&pool, &m, 1, c * 256, 4096), vec![c as u8 + 1; 4096]);
        }
        drop(pool);
        let missing = PoolSpec {
            paths: vec![d.join("b.img")],
            create_bytes: None,
        };
        let e = Pool::open(&missing).unwrap_err().to_string();
        assert!(e.contains("missing"), "{e}");
        let _ = std::fs::remove_dir_all(&d);
    }

    /// Found by the pool_meta fuzz target: a slot claiming generation
    /// u64::MAX (the header had no CRC then) won at open and the next commit
    /// overflowed (in a release build: wrapped to 0 and lost every later
    /// commit at the next open). Such a slot, and one whose generation has
    /// the other slot's parity, are damage: the other slot is used.
    #[test]
    fn a_slot_with_an_impossible_generation_is_refused() {
        let d = tmp("generation");
        let s = spec(&d, &["a.img"], 16 << 20);
        let slot_bytes = {
            let pool = Pool::open(&s).unwrap();
            // Generation 2, in slot 0.
            pool.create_namespace(64, 12, label("one")).unwrap();
            pool.slot_bytes
        };
        let f = OpenOptions::new()
            .write(true)
            .open(d.join("a.img"))
            .unwrap();
        let empty = encode_meta(&BTreeMap::new());
        for (slot, generation) in [(1, u64::MAX), (1, 8)] {
            let forged = slot_image(generation, &empty);
            f.write_all_at(&forged, LABEL_BYTES + slot * slot_bytes)
                .unwrap();
            let pool = Pool::open(&s).unwrap();
            assert_eq!(pool.namespace_ids(0, false), vec![1], "slot {slot}");
            assert_eq!(*pool.commit.lock().unwrap(), 2);
        }
        // Commits go on from the newest real generation and survive.
        {
            let pool = Pool::open(&s).unwrap();
            pool.create_namespace(64, 12, label("two")).unwrap();
        }
        let pool = Pool::open(&s).unwrap();
        assert_eq!(pool.namespace_ids(0, false), vec![1, 2]);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn torn_metadata_falls_back_to_the_previous_commit() {
        let d = tmp("torn");
        let s = spec(&d, &["a.img"], 16 << 20);
        let slot_bytes;
        let generation;
        {
            let pool = Pool::open(&s).unwrap();
            pool.create_namespace(64, 12, label("one")).unwrap();
            pool.create_namespace(64, 12, label("two")).unwrap();
            slot_bytes = pool.slot_bytes;
            generation = *pool.commit.lock().unwrap();
        }
        // Damage the newest slot's payload.
        let f = OpenOptions::new()
            .write(true)
            .open(d.join("a.img"))
            .unwrap();
        f.write_all_at(
            &[0xff; 16],
            LABEL_BYTES + (generation % 2) * slot_bytes + 40,
        )
        .unwrap();
        let pool = Pool::open(&s).unwrap();
        assert_eq!(pool.namespace_ids(0, false), vec![1]);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_foreign_file_is_not_formatted() {
        let d = tmp("foreign");
        std::fs::write(d.join("x.img"), vec![0x55u8; 8 << 20]).unwrap();
        let e = Pool::open(&spec(&d, &["x.img"], 8 << 20))
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a dia pool"), "{e}");
        let _ = std::fs::remove_dir_all(&d);
    }

    /// A damaged header byte must not roll the pool back: the older slot's
    /// generation raised by 2 (same parity) once made it the newest, and
    /// the newer commit's namespaces were lost. The CRC covers the header:
    /// the damaged slot is refused and the newest real commit is used.
    #[test]
    fn a_slot_with_a_damaged_header_is_refused() {
        let d = tmp("header");
        let s = spec(&d, &["a.img"], 16 << 20);
        {
            let pool = Pool::open(&s).unwrap();
            // Generation 2 in slot 0, then generation 3 in slot 1.
            pool.create_namespace(64, 12, label("one")).unwrap();
            pool.create_namespace(64, 12, label("two")).unwrap();
            assert_eq!(*pool.commit.lock().unwrap(), 3);
        }
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .open(d.join("a.img"))
            .unwrap();
        // Slot 0's generation, low byte: 2 -> 4.
        let mut byte = [0u8];
        f.read_exact_at(&mut byte, LABEL_BYTES + 8).unwrap();
        assert_eq!(byte[0], 2);
        f.write_all_at(&[4], LABEL_BYTES + 8).unwrap();
        let pool = Pool::open(&s).unwrap();
        assert_eq!(pool.namespace_ids(0, false), vec![1, 2]);
        assert_eq!(*pool.commit.lock().unwrap(), 3);
        let _ = std::fs::remove_dir_all(&d);
    }
}
