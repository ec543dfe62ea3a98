//! Where things live: the repository, the cache of slow artefacts (outside
//! the work tree, so later sessions and CI reuse it), and per-run output.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// Paths the harness works with.
pub struct Paths {
    /// Repository root (holds `Kbuild`).
    pub repo: PathBuf,
    /// Cache for the guest kernel and other slow artefacts (`$DIA_CACHE`, default `~/.cache/dia`).
    pub cache: PathBuf,
    /// Build and run output (`target/qemu-tests`).
    pub out: PathBuf,
}

impl Paths {
    /// Finds the repository from the current directory upwards.
    pub fn discover() -> Result<Self> {
        let mut dir = std::env::current_dir().context("current directory")?;
        let repo = loop {
            if dir.join("Kbuild").is_file() && dir.join("qemu-tests").is_dir() {
                break dir;
            }
            if !dir.pop() {
                bail!("run dia-harness inside the dia repository (no Kbuild + qemu-tests/ found upwards)");
            }
        };
        let cache = match std::env::var_os("DIA_CACHE") {
            Some(c) => PathBuf::from(c),
            None => PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into()))
                .join(".cache/dia"),
        };
        let out = repo.join("target/qemu-tests");
        std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
        Ok(Self { repo, cache, out })
    }

    /// A path inside `qemu-tests/`.
    pub fn qemu_tests(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.repo.join("qemu-tests").join(rel)
    }
}
