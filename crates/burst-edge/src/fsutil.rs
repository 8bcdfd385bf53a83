//! Crash-safe file writes for everything in the state directory.
//!
//! The state directory belongs to the agent's user, and `repair` or `status` may run as root:
//! nothing here follows a symbolic link someone planted there. A temp file has a random name
//! and is created new (`O_CREAT | O_EXCL | O_NOFOLLOW`, mode 0600), so no link or file at any
//! name can be written through or truncated; the final name is replaced by `rename`, which
//! replaces a link there rather than following it; reads refuse a link (`O_NOFOLLOW`); and a
//! file moved aside never replaces another (`RENAME_NOREPLACE`). A write is: a new temp file,
//! fsync, rename, fsync of the directory.
//!
//! Everything goes through the [`Disk`] trait: [`RealDisk`] here; the fault simulation's
//! `MemDisk` loses every write after a simulated crash.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
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
        read_no_follow(path)
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

fn no_follow() -> i32 {
    rustix::fs::OFlags::NOFOLLOW.bits() as i32
}

/// Reads a whole file, refusing a symbolic link in its place (as the last component; the
/// state directory itself may be a link an operator made).
pub(crate) fn read_no_follow(path: &Path) -> io::Result<Vec<u8>> {
    let mut f = OpenOptions::new()
        .read(true)
        .custom_flags(no_follow())
        .open(path)
        .map_err(|e| {
            if e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) {
                io::Error::new(
                    e.kind(),
                    "a symbolic link, and files in the state directory are never read through one",
                )
            } else {
                e
            }
        })?;
    let mut bytes = Vec::new();
    f.read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// Writes `bytes` to `path` so that a crash leaves either the old file or the new one, never a
/// mix: a new temp file in the same directory (random name, mode 0600), fsync, rename over,
/// fsync the directory.
pub fn atomic_write(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_via(path, bytes, &uuid::Uuid::new_v4().simple().to_string())
}

/// [`atomic_write`] through the temp file `.NAME.tmp-SUFFIX` (tests pick the suffix).
fn write_via(path: &Path, bytes: &[u8], suffix: &str) -> io::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))?;
    let tmp = dir.join(format!(".{}.tmp-{suffix}", name.to_string_lossy()));
    // create_new is O_CREAT | O_EXCL: it fails on anything already at that name, a link
    // included (dangling or not), and never truncates; O_NOFOLLOW says so twice.
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(no_follow())
        .open(&tmp)?;
    // From here the temp file is ours: remove it if anything fails.
    let result = (|| {
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

/// Where [`quarantine`] kept a file, for a log line or an error: its path, or why it is still
/// where it was.
pub fn aside_text(aside: &io::Result<PathBuf>) -> String {
    match aside {
        Ok(p) => p.display().to_string(),
        Err(e) => format!("nowhere (it could not be moved: {e})"),
    }
}

/// Moves a file that could not be read aside (`NAME.corrupt-<unix seconds>`), so a rebuilt one can
/// take its place without losing what it held. Returns the new path. A symbolic link is moved
/// as the link (rename never follows one), and never over anything already kept aside.
pub fn quarantine(path: &Path, unix_seconds: i64) -> io::Result<PathBuf> {
    // Never over an earlier one kept aside in the same second.
    for n in 0..1000 {
        let mut aside = path.as_os_str().to_owned();
        aside.push(format!(".corrupt-{unix_seconds}"));
        if n > 0 {
            aside.push(format!("-{n}"));
        }
        let aside = PathBuf::from(aside);
        if fs::symlink_metadata(&aside).is_ok() {
            continue;
        }
        match rename_no_replace(path, &aside) {
            Ok(()) => return Ok(aside),
            // Taken between the look and the move: the next name.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AlreadyExists,
        format!("{}: too many files kept aside", path.display()),
    ))
}

/// `rename` that fails with `AlreadyExists` rather than replace what is at `to`
/// (`renameat2(RENAME_NOREPLACE)`); a plain rename where the filesystem cannot do that.
fn rename_no_replace(from: &Path, to: &Path) -> io::Result<()> {
    use rustix::fs::{renameat_with, RenameFlags, CWD};
    use rustix::io::Errno;
    match renameat_with(CWD, from, CWD, to, RenameFlags::NOREPLACE) {
        Ok(()) => Ok(()),
        Err(e) if e == Errno::INVAL || e == Errno::NOSYS || e == Errno::NOTSUP => {
            fs::rename(from, to)
        }
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{symlink, PermissionsExt};

    #[test]
    fn replaces_whole_files_and_leaves_no_temp() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("state.json");
        atomic_write(&p, b"one").unwrap();
        atomic_write(&p, b"two").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert_eq!(fs::read_dir(d.path()).unwrap().count(), 1);
        let mode = fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "state files are the agent's alone");
    }

    /// The attack of issue 19: the state directory's owner (the agent's user) links the temp
    /// name a root-run `repair` will use to a file only root may write. The old temp name was
    /// `.NAME.tmp-PID`, guessable from the process id.
    #[test]
    fn a_link_at_a_guessable_temp_name_is_never_written_through() {
        let d = tempfile::tempdir().unwrap();
        let victim = d.path().join("shadow");
        fs::write(&victim, b"root's secret").unwrap();
        let p = d.path().join("state.json");
        symlink(
            &victim,
            d.path()
                .join(format!(".state.json.tmp-{}", std::process::id())),
        )
        .unwrap();
        atomic_write(&p, b"ledger").unwrap();
        assert_eq!(fs::read(&victim).unwrap(), b"root's secret");
        assert_eq!(fs::read(&p).unwrap(), b"ledger");
    }

    /// Whatever the name, a temp file is created new: a link planted there (to a file, or
    /// dangling toward one it would create) and a file planted there are left as they were,
    /// and the write fails rather than go through them.
    #[test]
    fn anything_at_the_temp_name_is_refused_not_followed_or_truncated() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("state.json");
        let tmp = d.path().join(".state.json.tmp-fixed");

        let victim = d.path().join("victim");
        fs::write(&victim, b"keep").unwrap();
        symlink(&victim, &tmp).unwrap();
        assert!(write_via(&p, b"new", "fixed").is_err());
        assert_eq!(fs::read(&victim).unwrap(), b"keep");
        assert!(fs::symlink_metadata(&tmp).unwrap().file_type().is_symlink());

        fs::remove_file(&tmp).unwrap();
        let created = d.path().join("cron-job");
        symlink(&created, &tmp).unwrap();
        assert!(write_via(&p, b"new", "fixed").is_err());
        assert!(!created.exists(), "a dangling link made its target");

        fs::remove_file(&tmp).unwrap();
        fs::write(&tmp, b"someone's file").unwrap();
        assert!(write_via(&p, b"new", "fixed").is_err());
        assert_eq!(fs::read(&tmp).unwrap(), b"someone's file");
        assert!(!p.exists());
    }

    /// A link at the final name is replaced (rename replaces the link itself), never written
    /// through.
    #[test]
    fn a_link_at_the_final_name_is_replaced_not_followed() {
        let d = tempfile::tempdir().unwrap();
        let victim = d.path().join("passwd");
        fs::write(&victim, b"root:x:0:0").unwrap();
        let p = d.path().join("status.json");
        symlink(&victim, &p).unwrap();
        atomic_write(&p, b"{}").unwrap();
        assert_eq!(fs::read(&victim).unwrap(), b"root:x:0:0");
        let meta = fs::symlink_metadata(&p).unwrap();
        assert!(meta.file_type().is_file());
        assert_eq!(fs::read(&p).unwrap(), b"{}");
    }

    #[test]
    fn reads_refuse_a_link() {
        let d = tempfile::tempdir().unwrap();
        let victim = d.path().join("secret");
        fs::write(&victim, b"root only").unwrap();
        let p = d.path().join("state.json");
        symlink(&victim, &p).unwrap();
        let e = RealDisk.read(&p).unwrap_err();
        assert!(e.to_string().contains("a symbolic link"), "{e}");
        fs::remove_file(&p).unwrap();
        fs::write(&p, b"{}").unwrap();
        assert_eq!(RealDisk.read(&p).unwrap(), b"{}");
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

    /// A link in the state file's place is moved aside as a link; a link already at the aside
    /// name is neither followed nor replaced.
    #[test]
    fn quarantine_moves_links_and_never_replaces_or_follows_one() {
        let d = tempfile::tempdir().unwrap();
        let victim = d.path().join("victim");
        fs::write(&victim, b"keep").unwrap();
        let p = d.path().join("state.json");
        symlink(&victim, &p).unwrap();
        let planted = d.path().join("state.json.corrupt-7");
        symlink(&victim, &planted).unwrap();
        let aside = quarantine(&p, 7).unwrap();
        assert!(aside.to_string_lossy().ends_with("state.json.corrupt-7-1"));
        assert!(fs::symlink_metadata(&aside)
            .unwrap()
            .file_type()
            .is_symlink());
        assert!(fs::symlink_metadata(&planted)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(fs::read(&victim).unwrap(), b"keep");
        assert!(fs::symlink_metadata(&p).is_err());
    }

    #[test]
    fn a_move_aside_never_replaces_what_appeared_at_its_name() {
        let d = tempfile::tempdir().unwrap();
        let from = d.path().join("a");
        let to = d.path().join("b");
        fs::write(&from, b"a").unwrap();
        fs::write(&to, b"b").unwrap();
        let e = rename_no_replace(&from, &to).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(fs::read(&to).unwrap(), b"b");
    }

    #[test]
    fn missing_directory_is_an_error_not_a_panic() {
        assert!(atomic_write(Path::new("/nonexistent/dir/f"), b"x").is_err());
    }
}
