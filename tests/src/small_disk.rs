//! A small file system of the test's own, for a data dir that fills up: a tmpfs of a given
//! size mounted on a fresh directory (which needs root, as CI has), grown in place when the
//! test gives space back, and unmounted on drop.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};
use tempfile::TempDir;

pub struct SmallDisk {
    dir: TempDir,
}

impl SmallDisk {
    /// A tmpfs of `bytes` bytes on a new directory.
    pub fn mount(bytes: u64) -> Result<SmallDisk> {
        let dir = tempfile::Builder::new().prefix("conclave-small-disk-").tempdir()?;
        mount(dir.path(), &format!("size={bytes}"))?;
        Ok(SmallDisk { dir })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Make it `bytes` bytes, keeping what it holds.
    pub fn resize(&self, bytes: u64) -> Result<()> {
        mount(self.path(), &format!("remount,size={bytes}"))
    }

    /// Bytes in use.
    pub fn used(&self) -> Result<u64> {
        let output = Command::new("df").args(["--output=used", "-B1"]).arg(self.path()).output().context("running df")?;
        let text = String::from_utf8_lossy(&output.stdout);
        text.lines().nth(1).and_then(|line| line.trim().parse().ok()).with_context(|| format!("df printed {text:?}"))
    }

    /// Leave it mounted when dropped (it holds a data dir kept for whoever looks).
    pub fn keep(self) -> std::path::PathBuf {
        let path = self.path().to_path_buf();
        std::mem::forget(self);
        path
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        // Lazily: a process killed a moment ago may still hold a file open.
        let _ = Command::new("umount").arg("-l").arg(self.path()).status();
    }
}

fn mount(path: &Path, options: &str) -> Result<()> {
    let output = Command::new("mount").args(["-t", "tmpfs", "-o", options, "tmpfs"]).arg(path).output().context("running mount")?;
    if !output.status.success() {
        bail!("mount -t tmpfs -o {options} on {} failed (the test needs root): {}", path.display(), String::from_utf8_lossy(&output.stderr));
    }
    Ok(())
}
