//! `dia-guest-check`: low-level checks that scenarios run inside the test
//! appliance, below libdia on purpose: raw ioctls with wrong numbers, bad
//! pointers and random arguments, to prove the driver answers each with an
//! errno and never an oops. Exit code 0 means every check held.

use std::ffi::CString;
use std::process::ExitCode;

use dia_abi::ioctl::{ioc, DiaIdentity, DIA_IOC_IDENTIFY, IOC_READ, IOC_WRITE};

const DEVICE: &str = "/dev/dia";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("identify") => identify(),
        Some("ioctl-errors") => ioctl_errors(),
        Some("ioctl-fuzz") => ioctl_fuzz(&args[1..]),
        _ => Err("usage: dia-guest-check identify | ioctl-errors | ioctl-fuzz [--iterations N] [--seed S]".into()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dia-guest-check: {e}");
            ExitCode::FAILURE
        }
    }
}

/// An open `/dev/dia`, closed on drop.
struct Dev(libc::c_int);

impl Dev {
    fn open() -> Result<Self, String> {
        let path = CString::new(DEVICE).map_err(|e| e.to_string())?;
        // SAFETY: `path` is a valid NUL-terminated string.
        let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
        if fd < 0 {
            return Err(format!(
                "open {DEVICE}: {}",
                std::io::Error::last_os_error()
            ));
        }
        Ok(Self(fd))
    }

    /// Issues a raw ioctl; returns the errno on failure.
    fn ioctl(&self, cmd: u32, arg: usize) -> Result<i32, i32> {
        // The request type is c_ulong on glibc and c_int on musl: same bits.
        // SAFETY: the kernel validates `arg`; a bad pointer is the point of
        // some checks and can only produce EFAULT, never touch our memory
        // outside what we pass deliberately.
        let r = unsafe { libc::ioctl(self.0, cmd as _, arg) };
        if r < 0 {
            Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
        } else {
            Ok(r)
        }
    }
}

impl Drop for Dev {
    fn drop(&mut self) {
        // SAFETY: `self.0` is an fd we own.
        unsafe { libc::close(self.0) };
    }
}

fn ascii(b: &[u8]) -> String {
    String::from_utf8_lossy(b)
        .trim_end_matches([' ', '\0'])
        .to_string()
}

fn identify() -> Result<(), String> {
    let dev = Dev::open()?;
    let mut id = DiaIdentity::default();
    dev.ioctl(DIA_IOC_IDENTIFY, std::ptr::addr_of_mut!(id) as usize)
        .map_err(|e| format!("DIA_IOC_IDENTIFY: {}", std::io::Error::from_raw_os_error(e)))?;
    println!("model:    {}", ascii(&id.model));
    println!("serial:   {}", ascii(&id.serial));
    println!("firmware: {}", ascii(&id.firmware));
    println!("abi:      {}", id.abi_version);
    Ok(())
}

fn expect_errno(what: &str, got: Result<i32, i32>, want: i32) -> Result<(), String> {
    match got {
        Err(e) if e == want => {
            println!("ok: {what}: {}", std::io::Error::from_raw_os_error(e));
            Ok(())
        }
        Err(e) => Err(format!(
            "{what}: expected {}, got {}",
            std::io::Error::from_raw_os_error(want),
            std::io::Error::from_raw_os_error(e)
        )),
        Ok(r) => Err(format!("{what}: expected an error, got success ({r})")),
    }
}

/// Two pages where the second is unmapped: a buffer that ends early.
struct ShortBuffer {
    base: *mut libc::c_void,
    page: usize,
}

impl ShortBuffer {
    fn new() -> Result<Self, String> {
        // SAFETY: sysconf has no preconditions.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) })
            .map_err(|e| e.to_string())?;
        // SAFETY: anonymous private mapping of two pages; checked below.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                2 * page,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err("mmap failed".into());
        }
        // SAFETY: unmaps the second page of our own mapping.
        unsafe { libc::munmap(base.cast::<u8>().add(page).cast(), page) };
        Ok(Self { base, page })
    }

    /// An address with only `bytes` valid bytes after it.
    fn tail(&self, bytes: usize) -> usize {
        self.base as usize + self.page - bytes
    }
}

impl Drop for ShortBuffer {
    fn drop(&mut self) {
        // SAFETY: unmaps the first page, which we still own.
        unsafe { libc::munmap(self.base, self.page) };
    }
}

fn ioctl_errors() -> Result<(), String> {
    let dev = Dev::open()?;
    let mut id = DiaIdentity::default();
    let good = std::ptr::addr_of_mut!(id) as usize;
    expect_errno(
        "unknown request number",
        dev.ioctl(ioc(IOC_READ, 0xee, 8), good),
        libc::ENOTTY,
    )?;
    expect_errno(
        "identify number with a wrong size",
        dev.ioctl(ioc(IOC_READ, 0x01, 8), good),
        libc::ENOTTY,
    )?;
    expect_errno(
        "identify number with a wrong direction",
        dev.ioctl(
            ioc(IOC_WRITE, 0x01, std::mem::size_of::<DiaIdentity>()),
            good,
        ),
        libc::ENOTTY,
    )?;
    expect_errno(
        "another driver's magic",
        dev.ioctl(0x5401, good),
        libc::ENOTTY,
    )?;
    expect_errno(
        "identify into NULL",
        dev.ioctl(DIA_IOC_IDENTIFY, 0),
        libc::EFAULT,
    )?;
    expect_errno(
        "identify into a kernel address",
        dev.ioctl(DIA_IOC_IDENTIFY, 0xffff_8880_0000_0000),
        libc::EFAULT,
    )?;
    let short = ShortBuffer::new()?;
    expect_errno(
        "identify into a 16-byte buffer",
        dev.ioctl(DIA_IOC_IDENTIFY, short.tail(16)),
        libc::EFAULT,
    )?;
    dev.ioctl(DIA_IOC_IDENTIFY, good)
        .map_err(|e| format!("identify after the bad calls: errno {e}"))?;
    println!("ok: identify still works");
    Ok(())
}

/// xorshift64*: deterministic, seedable, dependency-free.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

fn flag(args: &[String], name: &str, default: u64) -> Result<u64, String> {
    match args.iter().position(|a| a == name) {
        None => Ok(default),
        Some(i) => args
            .get(i + 1)
            .ok_or(format!("{name} needs a value"))?
            .parse()
            .map_err(|e| format!("{name}: {e}")),
    }
}

fn ioctl_fuzz(args: &[String]) -> Result<(), String> {
    let iterations = flag(args, "--iterations", 1000)?;
    let mut rng = Rng(flag(args, "--seed", 1)?.max(1));
    let dev = Dev::open()?;
    let short = ShortBuffer::new()?;
    let mut buf = vec![0u8; 1 << 16];
    let mut errnos = std::collections::BTreeMap::<i32, u64>::new();
    for _ in 0..iterations {
        let r = rng.next();
        let cmd = match r % 4 {
            // Our magic with random number, direction and size.
            0 | 1 => ioc(
                (r >> 8) as u32 & 3,
                (r >> 16) as u8,
                (r >> 24) as usize & 0x3fff,
            ),
            // The real request.
            2 => DIA_IOC_IDENTIFY,
            // Anything at all.
            _ => (r >> 32) as u32,
        };
        let arg = match (r >> 40) % 5 {
            0 => 0,
            1 => buf.as_mut_ptr() as usize,
            2 => short.tail(((r >> 48) % 200) as usize + 1),
            3 => 0xffff_8880_0000_0000 + ((r >> 20) & 0xffff_f000) as usize,
            _ => rng.next() as usize,
        };
        match dev.ioctl(cmd, arg) {
            Ok(_) => *errnos.entry(0).or_default() += 1,
            Err(e) => *errnos.entry(e).or_default() += 1,
        }
    }
    for (e, n) in &errnos {
        let name = if *e == 0 {
            "success".to_string()
        } else {
            std::io::Error::from_raw_os_error(*e).to_string()
        };
        println!("{n:6} x {name}");
    }
    let allowed = [0, libc::ENOTTY, libc::EFAULT, libc::EINVAL];
    if let Some(bad) = errnos.keys().find(|e| !allowed.contains(e)) {
        return Err(format!("unexpected errno {bad} from the fuzzed ioctls"));
    }
    println!("ok: {iterations} random ioctls, driver alive");
    Ok(())
}
