//! A scratch directory for the fuzz and bench entry points' pools: in
//! memory (`/dev/shm`) where there is one, else the temporary directory;
//! created empty, removed on drop.

use std::path::{Path, PathBuf};

/// An empty directory of its own, removed on drop.
#[derive(Debug)]
pub struct Scratch(PathBuf);

impl Scratch {
    /// `<base>/<name>`, emptied and created.
    pub fn new(name: &str) -> Self {
        let base = Path::new("/dev/shm");
        let base = if base.is_dir() {
            base.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        let d = base.join(name);
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("scratch directory");
        Self(d)
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
