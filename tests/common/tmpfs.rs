//! A size-limited tmpfs mounted for one test, as a small filesystem that can
//! be filled and freed under a running server. Mounting needs root, as the
//! network-namespace tests do (CI runs as root); without it the test fails
//! and says so.

use std::path::{Path, PathBuf};
use std::process::Command;

pub struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `mib` MiB on `path` (created if needed).
    pub fn mount(path: &Path, mib: u64) -> Tmpfs {
        std::fs::create_dir_all(path).expect("mount point");
        let ok = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={mib}m,mode=0755"),
                "tmpfs",
            ])
            .arg(path)
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(
            ok,
            "cannot mount a tmpfs on {}: the storage fault tests need root (as CI runs them)",
            path.display()
        );
        Tmpfs {
            path: path.to_path_buf(),
        }
    }

    /// Writes a file that leaves about `free` octets free; returns its path.
    pub fn fill_leaving(&self, free: u64) -> PathBuf {
        let path = self.path.join("filler");
        let size = self.free().saturating_sub(free);
        let file = std::fs::File::create(&path).expect("filler");
        // tmpfs allocates on write, not on set_len: write it.
        let mut left = size;
        let chunk = vec![0u8; 1 << 20];
        let mut writer = std::io::BufWriter::new(file);
        while left > 0 {
            let n = left.min(chunk.len() as u64) as usize;
            std::io::Write::write_all(&mut writer, &chunk[..n]).expect("fill");
            left -= n as u64;
        }
        path
    }

    /// Free octets on the filesystem.
    pub fn free(&self) -> u64 {
        let out = Command::new("df")
            .args(["--output=avail", "-B1"])
            .arg(&self.path)
            .output()
            .expect("df");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .nth(1)
            .and_then(|l| l.trim().parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazy: a server killed a moment ago may still hold files open.
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}
