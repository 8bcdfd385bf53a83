//! The cap ledger's stored form ([`Stored`]), as `state.json` keeps it under `cap`, and the
//! `STATE_DIR/cap-ledger.json` of agents from before `state.json`, read once at the upgrade
//! (`state.rs` migrates it and renames it `*.migrated`).
//!
//! - missing: start empty, with a warning (first start, or a new state directory);
//! - corrupt or unreadable: **never** silently reset; the ledger comes back blocked, so no
//!   scale-out happens until it is rebuilt from the instances' tags (the file is kept aside).

use crate::cap::{CapLedger, Carry, Entry};
use crate::config::CapConfig;
#[cfg(test)]
use crate::fsutil;
use crate::fsutil::Disk;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

pub const FILE_NAME: &str = "cap-ledger.json";
const VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct OnDisk {
    version: u32,
    time_zone: String,
    entries: Vec<Entry>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    carry: Option<Carry>,
}

impl OnDisk {
    fn stored(self) -> Stored {
        Stored {
            time_zone: self.time_zone,
            entries: self.entries,
            carry: self.carry,
        }
    }
}

/// The ledger as stored: in `cap-ledger.json` (before state.json) and in `state.json`'s `cap`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stored {
    pub time_zone: String,
    pub entries: Vec<Entry>,
    /// The previous time zone's day, while it counts (absent in files from before).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub carry: Option<Carry>,
}

impl Stored {
    pub fn of(ledger: &CapLedger) -> Self {
        Stored {
            time_zone: ledger.time_zone().to_string(),
            entries: ledger.entries().to_vec(),
            carry: ledger.kept_carry().cloned(),
        }
    }

    /// Checks what no parser can (keys unique, no entry ending before it began), then opens
    /// the ledger in the zone it was kept in and switches to the configured one the way a
    /// reload does: a restart with a new cap.time_zone grants no fresh day either.
    pub fn into_ledger(self, cfg: &CapConfig, now: jiff::Timestamp) -> Result<CapLedger, String> {
        let mut keys = std::collections::HashSet::new();
        for (i, e) in self.entries.iter().enumerate() {
            if !keys.insert(e.key.as_str()) {
                return Err(format!("entries[{i}]: key {:?} appears twice", e.key));
            }
            if e.ended_at.is_some_and(|end| end < e.launched_at) {
                return Err(format!(
                    "entries[{i}] ({}): ended_at is before launched_at",
                    e.key
                ));
            }
        }
        let kept = CapLedger::new(
            &self.time_zone,
            cfg.daily_limit,
            Some(cfg.daily_instance_hours),
        )
        .or_else(|_| empty(cfg))?;
        let mut l = kept.with_entries(self.entries).with_carry(self.carry);
        l.set_time_zone(&cfg.time_zone, now)
            .map_err(|e| e.to_string())?;
        Ok(l)
    }
}

/// What loading found.
#[derive(Debug)]
pub enum Loaded {
    Ok(CapLedger),
    /// No file: an empty ledger, and what to tell the operator (`state.rs` words its own).
    Missing(CapLedger, #[allow(dead_code)] String),
    /// Unreadable: a blocked ledger, and why.
    Corrupt(CapLedger, String),
}

impl Loaded {
    #[cfg(test)]
    pub fn ledger(&self) -> &CapLedger {
        match self {
            Loaded::Ok(l) | Loaded::Missing(l, _) | Loaded::Corrupt(l, _) => l,
        }
    }
    pub fn into_ledger(self) -> CapLedger {
        match self {
            Loaded::Ok(l) | Loaded::Missing(l, _) | Loaded::Corrupt(l, _) => l,
        }
    }
}

pub fn path_in(state_dir: &Path) -> PathBuf {
    state_dir.join(FILE_NAME)
}

fn empty(cfg: &CapConfig) -> Result<CapLedger, String> {
    CapLedger::new(
        &cfg.time_zone,
        cfg.daily_limit,
        Some(cfg.daily_instance_hours),
    )
    .map_err(|e| e.to_string())
}

// The file is only read now (`load_from`, once, at an upgrade from before state.json); `load`,
// `save`, `save_to` and `replace_with_rebuilt` write and read it for the tests.

/// Reads the ledger; the limits and time zone come from the config. A file kept in another
/// time zone (the config changed while the agent was stopped) switches at `now` the way a
/// reload does: the old zone's day under way keeps counting until it ends.
#[cfg(test)]
pub fn load(path: &Path, cfg: &CapConfig, now: jiff::Timestamp) -> Result<Loaded, String> {
    load_from(&crate::fsutil::RealDisk, path, cfg, now)
}

/// [`load`] through a [`Disk`].
pub fn load_from(
    disk: &dyn Disk,
    path: &Path,
    cfg: &CapConfig,
    now: jiff::Timestamp,
) -> Result<Loaded, String> {
    let ledger = empty(cfg)?;
    let read = disk.read(path).and_then(|b| {
        String::from_utf8(b).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
    });
    let text = match read {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(Loaded::Missing(
                ledger,
                format!(
                    "no burst cap ledger at {}: starting with an empty one (normal on first start)",
                    path.display()
                ),
            ))
        }
        Err(e) => {
            let why = format!("cannot read {}: {e}", path.display());
            return Ok(Loaded::Corrupt(ledger.blocked(why.clone()), why));
        }
    };
    match parse(&text).and_then(|d| d.stored().into_ledger(cfg, now)) {
        Ok(l) => Ok(Loaded::Ok(l)),
        Err(e) => {
            let why = format!("{}: {e}", path.display());
            Ok(Loaded::Corrupt(ledger.blocked(why.clone()), why))
        }
    }
}

fn parse(text: &str) -> Result<OnDisk, String> {
    let d: OnDisk = serde_json::from_str(text).map_err(|e| e.to_string())?;
    if d.version != VERSION {
        return Err(format!(
            "version {} is not the supported {VERSION}",
            d.version
        ));
    }
    Ok(d)
}

/// Writes the ledger atomically (temp file, fsync, rename).
#[cfg(test)]
pub fn save(path: &Path, ledger: &CapLedger) -> std::io::Result<()> {
    save_to(&crate::fsutil::RealDisk, path, ledger)
}

/// [`save`] through a [`Disk`].
#[cfg(test)]
pub fn save_to(disk: &dyn Disk, path: &Path, ledger: &CapLedger) -> std::io::Result<()> {
    let l = Stored::of(ledger);
    let d = OnDisk {
        version: VERSION,
        time_zone: l.time_zone,
        entries: l.entries,
        carry: l.carry,
    };
    let mut bytes = serde_json::to_vec_pretty(&d).map_err(std::io::Error::other)?;
    bytes.push(b'\n');
    disk.write_atomic(path, &bytes)
}

/// Replaces a corrupt ledger with one rebuilt from the cloud's view, keeping the corrupt file
/// aside. Returns where the old file went, if there was one.
#[cfg(test)]
pub fn replace_with_rebuilt(
    disk: &dyn Disk,
    path: &Path,
    rebuilt: &CapLedger,
    unix_now: i64,
) -> std::io::Result<Option<PathBuf>> {
    let aside = match disk.quarantine(path, unix_now) {
        Ok(p) => Some(p),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e),
    };
    save_to(disk, path, rebuilt)?;
    Ok(aside)
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::Timestamp;

    fn cfg() -> CapConfig {
        CapConfig::default()
    }

    fn noon() -> Timestamp {
        "2026-05-20T03:00:00Z".parse().unwrap()
    }

    #[test]
    fn a_restart_with_another_time_zone_grants_no_fresh_day() {
        let d = tempfile::tempdir().unwrap();
        let p = path_in(d.path());
        // Three slaves in the morning, Tokyo time (default zone), all ended by 04:00 UTC.
        let mut l = load(&p, &cfg(), noon()).unwrap().into_ledger();
        for k in ["a", "b", "c"] {
            l.record_attempt(k, "2026-05-20T01:00:00Z".parse().unwrap())
                .unwrap();
            l.record_ended(k, "2026-05-20T04:00:00Z".parse().unwrap())
                .unwrap();
        }
        save(&p, &l).unwrap();
        // Restarted at 08:00 UTC with cap.time_zone = America/Los_Angeles: LA's May 20 began at
        // 07:00 UTC, after those slaves ended, but Tokyo's May 20 runs to 15:00 UTC.
        let mut la = cfg();
        la.time_zone = "America/Los_Angeles".into();
        la.daily_limit = 3;
        let at8: Timestamp = "2026-05-20T08:00:00Z".parse().unwrap();
        let again = load(&p, &la, at8).unwrap().into_ledger();
        assert_eq!(again.time_zone(), "America/Los_Angeles");
        assert_eq!(again.remaining(at8), 0, "{}", again.status(at8));
        // The carry is kept on disk: a second restart grants nothing either.
        save(&p, &again).unwrap();
        let third = load(&p, &la, at8).unwrap().into_ledger();
        assert_eq!(third.remaining(at8), 0);
        // Once Tokyo's day is over, LA's own day counts alone.
        let at16: Timestamp = "2026-05-20T16:00:00Z".parse().unwrap();
        assert_eq!(third.remaining(at16), 3);
    }

    #[test]
    fn round_trip_survives_a_restart_mid_day() {
        let d = tempfile::tempdir().unwrap();
        let p = path_in(d.path());
        let now: Timestamp = "2026-05-20T03:00:00Z".parse().unwrap();
        let mut l = load(&p, &cfg(), noon()).unwrap().into_ledger();
        l.record_attempt("a#0", now).unwrap();
        l.bind("a#0", "i-1").unwrap();
        l.record_attempt("a#1", now).unwrap();
        save(&p, &l).unwrap();
        // "Restart": a fresh load sees the same day's use.
        let again = load(&p, &cfg(), noon()).unwrap();
        assert!(matches!(again, Loaded::Ok(_)));
        assert_eq!(again.ledger().used(now), 2);
        assert_eq!(again.ledger().remaining(now), 5);
    }

    #[test]
    fn missing_file_starts_empty_with_a_warning() {
        let d = tempfile::tempdir().unwrap();
        match load(&path_in(d.path()), &cfg(), noon()).unwrap() {
            Loaded::Missing(l, warning) => {
                assert!(l.entries().is_empty());
                assert!(warning.contains("no burst cap ledger"), "{warning}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn corrupt_file_blocks_and_is_never_reset() {
        let d = tempfile::tempdir().unwrap();
        let p = path_in(d.path());
        let now: Timestamp = "2026-05-20T03:00:00Z".parse().unwrap();
        for (bad, says) in [
            ("{\"version\":1,\"time_zone\":\"Asia/Tokyo\",\"entries\":[{\"key\":", "EOF"),
            ("not json at all", "expected"),
            ("{\"version\":9,\"time_zone\":\"UTC\",\"entries\":[]}", "version 9"),
            (
                "{\"version\":1,\"time_zone\":\"UTC\",\"entries\":[{\"key\":\"a\",\"instance_id\":null,\"launched_at\":\"2026-05-20T03:00:00Z\",\"ended_at\":null},{\"key\":\"a\",\"instance_id\":null,\"launched_at\":\"2026-05-20T03:00:00Z\",\"ended_at\":null}]}",
                "appears twice",
            ),
            (
                "{\"version\":1,\"time_zone\":\"UTC\",\"entries\":[{\"key\":\"a\",\"instance_id\":null,\"launched_at\":\"2026-05-20T03:00:00Z\",\"ended_at\":\"2026-05-20T02:00:00Z\"}]}",
                "before launched_at",
            ),
        ] {
            std::fs::write(&p, bad).unwrap();
            match load(&p, &cfg(), noon()).unwrap() {
                Loaded::Corrupt(l, why) => {
                    assert!(why.contains(FILE_NAME) && why.contains(says), "{why}");
                    assert_eq!(l.remaining(now), 0, "a corrupt ledger refuses scale-out");
                }
                other => panic!("{bad}: {other:?}"),
            }
            assert_eq!(std::fs::read_to_string(&p).unwrap(), bad, "the file is left as it was");
        }
    }

    #[test]
    fn rebuilding_keeps_the_corrupt_file_aside() {
        let d = tempfile::tempdir().unwrap();
        let p = path_in(d.path());
        std::fs::write(&p, "garbage").unwrap();
        let blocked = load(&p, &cfg(), noon()).unwrap().into_ledger();
        let now: Timestamp = "2026-05-20T03:00:00Z".parse().unwrap();
        let rebuilt = blocked.rebuilt_from(vec![Entry {
            key: "tag:i-1".into(),
            instance_id: Some("i-1".into()),
            launched_at: now,
            ended_at: None,
        }]);
        let aside = replace_with_rebuilt(&fsutil::RealDisk, &p, &rebuilt, 1_700_000_000)
            .unwrap()
            .unwrap();
        assert_eq!(std::fs::read_to_string(aside).unwrap(), "garbage");
        let l = load(&p, &cfg(), noon()).unwrap().into_ledger();
        assert_eq!(l.used(now), 1);
        assert_eq!(l.remaining(now), 6);
    }
}
