//! Crash-safe file writes for everything in the state directory.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// The state directory as the actuator sees it: whole-file reads, atomic replacements, and
/// moving an unreadable file aside. [`RealDisk`] is the filesystem; the fault simulation
/// (`crate::faultsim`) keeps files in memory and loses every write after a simulated crash.
pub trait Disk: Send + Sync {
    fn read(&self, path: &Path) -> io::Result<Vec<u8>>;
    /// Either the old content or the new one survives a crash, never a mix.
    fn write_atomic(&self, path: &Path, bytes: &[u8]) -> io::Result<()>;
    fn quarantine(&self, path: &Path, unix_seconds: i64) -> io::Result<PathBuf>;
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
}

/// [`Disk`] on the real filesystem.
#[derive(Clone, Copy, Debug, Default)]
pub struct RealDisk;

impl Disk for RealDisk {
    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        fs::read(path)
    }
    fn write_atomic(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        atomic_write(path, bytes)
    }
    fn quarantine(&self, path: &Path, unix_seconds: i64) -> io::Result<PathBuf> {
        quarantine(path, unix_seconds)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }
}

/// Writes `bytes` to `path` so that a crash leaves either the old file or the new one, never a
/// mix: temp file in the same directory, fsync, rename over, fsync the directory.
pub fn atomic_write(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Moves a file that could not be read aside (`NAME.corrupt-<unix seconds>`), so a rebuilt one can
/// take its place without losing what it held. Returns the new path.
pub fn quarantine(path: &Path, unix_seconds: i64) -> io::Result<PathBuf> {
    // Never over an earlier one kept aside in the same second.
    for n in 0..1000 {
        let mut aside = path.as_os_str().to_owned();
        aside.push(format!(".corrupt-{unix_seconds}"));
        if n > 0 {
            aside.push(format!("-{n}"));
        }
        let aside = PathBuf::from(aside);
        if fs::symlink_metadata(&aside).is_err() {
            fs::rename(path, &aside)?;
            return Ok(aside);
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AlreadyExists,
        format!("{}: too many files kept aside", path.display()),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_whole_files_and_leaves_no_temp() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("state.json");
        atomic_write(&p, b"one").unwrap();
        atomic_write(&p, b"two").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert_eq!(fs::read_dir(d.path()).unwrap().count(), 1);
    }

    #[test]
    fn quarantine_keeps_the_bytes() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("cap-ledger.json");
        fs::write(&p, b"{garbage").unwrap();
        let aside = quarantine(&p, 42).unwrap();
        assert!(aside
            .to_string_lossy()
            .ends_with("cap-ledger.json.corrupt-42"));
        assert_eq!(fs::read(aside).unwrap(), b"{garbage");
        assert!(!p.exists());
    }

    #[test]
    fn missing_directory_is_an_error_not_a_panic() {
        assert!(atomic_write(Path::new("/nonexistent/dir/f"), b"x").is_err());
    }
}
