//! Runs N operations of one of the card's hot paths, for counting their
//! instructions under `valgrind --tool=callgrind`:
//!
//! ```sh
//! card_costs <read|write|read-threaded|frame|tso|lookup|qos|prp> <N>
//! ```
//!
//! Setup (a pool in memory written full, ports, queues) costs the same
//! whatever N is, so the instructions of one operation are the difference
//! between a run of N and one of N/2, divided by N/2
//! (`qemu-tests/scripts/card-costs.sh` does that). The operations are the
//! criterion benchmarks' (`benches/card.rs`), from `dia_card_model::bench`;
//! `read-threaded` runs the queue's engine on its own thread (the card's
//! way), so its count adds the engine's wake-up loop (poll, doorbell) and
//! the driver's wait for the interrupt.

use std::hint::black_box;

use dia_abi::card as abi;
use dia_card_model::bench::{FrameBench, IoBench, PrpBench, QosBench, SwitchBench};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(op), Some(Ok(n))) = (args.get(1), args.get(2).map(|n| n.parse::<u64>())) else {
        eprintln!("usage: card_costs <read|write|read-threaded|frame|tso|lookup|qos|prp> <N>");
        std::process::exit(2);
    };
    match op.as_str() {
        "read" | "write" | "read-threaded" => {
            let mut b = if op == "read-threaded" {
                IoBench::threaded(64, 32)
            } else {
                IoBench::new(64, 32)
            };
            let blocks = b.blocks();
            let mut lba = 0u64;
            for _ in 0..n {
                lba = (lba + 97) % blocks;
                let status = if op == "write" {
                    b.write(black_box(lba), 1)
                } else {
                    b.read(black_box(lba), 1)
                };
                assert_eq!(status, abi::STATUS_SUCCESS);
            }
        }
        "frame" => {
            let mut f = FrameBench::new(1514);
            for _ in 0..n {
                assert!(f.switch_one());
            }
        }
        "tso" => {
            // A 64 KiB-class TSO frame: 30 segments of MSS 1460.
            let mut f = FrameBench::tso(30 * 1460);
            for _ in 0..n {
                assert!(f.switch_one());
            }
        }
        "lookup" => {
            let mut s = SwitchBench::new(8);
            for _ in 0..n {
                assert_eq!(s.forward(black_box(1), black_box(5)), 1);
            }
        }
        "qos" => {
            let mut q = QosBench::new(8, 32);
            for _ in 0..n {
                black_box(q.decide());
            }
        }
        "prp" => {
            let p = PrpBench::new(32);
            for _ in 0..n {
                black_box(p.walk());
            }
        }
        other => {
            eprintln!("unknown operation {other}");
            std::process::exit(2);
        }
    }
}
