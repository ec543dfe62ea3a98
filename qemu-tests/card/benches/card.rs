//! Criterion benchmarks of the card's hot paths, each through the card's
//! own code in-process (`dia_card_model::bench`): a 4 KiB read and write
//! from submission entry to completion on a pool in memory, the PRP walk of
//! a 128 KiB transfer, one frame switched from port to port (and the
//! switch's lookup alone), and one QoS scheduler decision. Run with
//! `cargo bench -p dia-card-model --bench card`; instruction counts, which
//! do not depend on the machine's load, come from
//! `qemu-tests/scripts/card-costs.sh`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use dia_abi::card as abi;
use dia_card_model::bench::{FrameBench, IoBench, PrpBench, QosBench, SwitchBench};

/// The command path: 4 KiB reads and writes spread over a 32 MiB namespace
/// (a stride prime to its 8192 blocks: every block in turn), the engine
/// run one pass per command on this thread.
fn io(c: &mut Criterion) {
    let mut b = IoBench::new(64, 32);
    let blocks = b.blocks();
    let mut g = c.benchmark_group("io");
    let mut lba = 0u64;
    g.bench_function("read_4k", |t| {
        t.iter(|| {
            lba = (lba + 97) % blocks;
            assert_eq!(b.read(black_box(lba), 1), abi::STATUS_SUCCESS);
        })
    });
    g.bench_function("write_4k", |t| {
        t.iter(|| {
            lba = (lba + 97) % blocks;
            assert_eq!(b.write(black_box(lba), 1), abi::STATUS_SUCCESS);
        })
    });
    // The same, with the queue's engine on its own thread as in the card:
    // a doorbell eventfd wakes it, the interrupt eventfd wakes the driver.
    let mut b = IoBench::threaded(64, 32);
    g.bench_function("read_4k_threaded", |t| {
        t.iter(|| {
            lba = (lba + 97) % blocks;
            assert_eq!(b.read(black_box(lba), 1), abi::STATUS_SUCCESS);
        })
    });
    g.finish();
}

/// A 128 KiB transfer: PRP1 and a list of 31 entries.
fn prp(c: &mut Criterion) {
    let p = PrpBench::new(32);
    c.bench_function("prp_walk_128k", |t| t.iter(|| p.walk()));
}

/// One 1514-byte frame from port 1 to port 2, and the switch's lookup
/// alone (8 ports on the VLAN).
fn net(c: &mut Criterion) {
    let mut g = c.benchmark_group("net");
    let mut f = FrameBench::new(1514);
    g.bench_function("switch_frame_1514", |t| t.iter(|| assert!(f.switch_one())));
    let mut s = SwitchBench::new(8);
    g.bench_function("switch_lookup", |t| {
        t.iter(|| assert_eq!(s.forward(black_box(1), black_box(5)), 1))
    });
    g.finish();
}

/// One decision among 8 namespaces with 32 commands queued each.
fn qos(c: &mut Criterion) {
    let mut q = QosBench::new(8, 32);
    c.bench_function("qos_decision", |t| t.iter(|| q.decide()));
}

criterion_group!(benches, io, prp, net, qos);
criterion_main!(benches);
