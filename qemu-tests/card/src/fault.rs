//! Fault injection for tests (`--fault SPEC`), so timeout and failure paths of
//! the driver can be exercised on purpose:
//! - `exit-on-admin=OPCODE:N`: the firmware process exits (code 86) when it
//!   receives the N-th admin command with OPCODE (hex `0x06` or decimal),
//!   before completing it: firmware dying mid-command.
//! - `never-ready`: the firmware never reports running (FW_STATUS stays OFF).
//! - `lose-io=NSID:N`: the N-th I/O command of namespace NSID is executed but
//!   its completion is never posted: a command the card lost.
//! - `duplicate-completion=NSID:N`: the N-th I/O command of namespace NSID
//!   has its completion posted twice.

use thiserror::Error;

/// Exit code of a firmware death injected by `exit-on-admin`.
pub const FAULT_EXIT_CODE: i32 = 86;

/// A parsed fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Exit on the `nth` admin command with `opcode`.
    ExitOnAdmin {
        /// Admin opcode.
        opcode: u8,
        /// 1-based occurrence.
        nth: u32,
    },
    /// Never set FW_STATUS to running.
    NeverReady,
    /// Never post the completion of the `nth` I/O command of `nsid`.
    LoseIo {
        /// Namespace.
        nsid: u32,
        /// 1-based occurrence.
        nth: u32,
    },
    /// Post the completion of the `nth` I/O command of `nsid` twice.
    DuplicateCompletion {
        /// Namespace.
        nsid: u32,
        /// 1-based occurrence.
        nth: u32,
    },
}

/// A `--fault` value that does not parse.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("bad fault '{spec}': {why} (allowed: exit-on-admin=OPCODE:N, never-ready, lose-io=NSID:N, duplicate-completion=NSID:N)")]
pub struct FaultError {
    spec: String,
    why: &'static str,
}

fn parse_u8(s: &str) -> Option<u8> {
    match s.strip_prefix("0x") {
        Some(hex) => u8::from_str_radix(hex, 16).ok(),
        None => s.parse().ok(),
    }
}

impl std::str::FromStr for Fault {
    type Err = FaultError;

    fn from_str(spec: &str) -> Result<Self, FaultError> {
        let err = |why| FaultError {
            spec: spec.to_string(),
            why,
        };
        if spec == "never-ready" {
            return Ok(Fault::NeverReady);
        }
        let io_fault = |arg: &str| -> Result<(u32, u32), FaultError> {
            let (ns, n) = arg.split_once(':').ok_or_else(|| err("expected NSID:N"))?;
            let nsid: u32 = ns.parse().map_err(|_| err("NSID must be a number"))?;
            let nth: u32 = n.parse().map_err(|_| err("N must be a positive number"))?;
            if nth == 0 || nsid == 0 {
                return Err(err("NSID and N must be positive"));
            }
            Ok((nsid, nth))
        };
        if let Some(arg) = spec.strip_prefix("lose-io=") {
            let (nsid, nth) = io_fault(arg)?;
            return Ok(Fault::LoseIo { nsid, nth });
        }
        if let Some(arg) = spec.strip_prefix("duplicate-completion=") {
            let (nsid, nth) = io_fault(arg)?;
            return Ok(Fault::DuplicateCompletion { nsid, nth });
        }
        let Some(arg) = spec.strip_prefix("exit-on-admin=") else {
            return Err(err("unknown fault"));
        };
        let (op, n) = arg
            .split_once(':')
            .ok_or_else(|| err("expected OPCODE:N"))?;
        let opcode = parse_u8(op).ok_or_else(|| err("OPCODE must be 0..=255"))?;
        let nth: u32 = n.parse().map_err(|_| err("N must be a positive number"))?;
        if nth == 0 {
            return Err(err("N must be a positive number"));
        }
        Ok(Fault::ExitOnAdmin { opcode, nth })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses() {
        assert_eq!("never-ready".parse(), Ok(Fault::NeverReady));
        assert_eq!(
            "lose-io=2:40".parse(),
            Ok(Fault::LoseIo { nsid: 2, nth: 40 })
        );
        assert_eq!(
            "duplicate-completion=1:5".parse(),
            Ok(Fault::DuplicateCompletion { nsid: 1, nth: 5 })
        );
        assert!("lose-io=0:1".parse::<Fault>().is_err());
        assert!("lose-io=1".parse::<Fault>().is_err());
        assert_eq!(
            "exit-on-admin=0x06:2".parse(),
            Ok(Fault::ExitOnAdmin { opcode: 6, nth: 2 })
        );
        assert_eq!(
            "exit-on-admin=13:1".parse(),
            Ok(Fault::ExitOnAdmin { opcode: 13, nth: 1 })
        );
        assert!("exit-on-admin=0x06:0".parse::<Fault>().is_err());
        assert!("exit-on-admin=0x106:1".parse::<Fault>().is_err());
        let e = "explode".parse::<Fault>().unwrap_err().to_string();
        assert!(e.contains("allowed: exit-on-admin"), "{e}");
    }
}
