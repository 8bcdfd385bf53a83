//! The actuator's durable state: `STATE_DIR/state.json`, the cap ledger and the launch intents
//! together, replaced atomically in **one** write per change. Two files could disagree after a
//! `kill -9` between their writes (a launch attempt charged to the cap with no intent to
//! resolve it, counted against every later day); one file cannot.
//!
//! Version 3 holds the ledger, the intents, the policy's history, a block waiting for
//! `repair`, `owned` (the instances this install's records name), the slaves it is releasing,
//! the sync brake and the clock's mark. Version 2 still loads: its owner-tagged instances are
//! claimed once, then recorded.
//!
//! - missing: read `cap-ledger.json` and `journal.json` of agents from before (then written
//!   here and the old files renamed `*.migrated`), else start empty with a warning;
//! - unreadable, or written by a newer agent: kept aside, never silently reset: the ledger comes
//!   back **blocked** (no scale-out) with whatever entries and intents could still be read, and
//!   [`super::Actuator::adopt`] rebuilds it from those, the journal and the instances' tags.

use super::brake::SyncBrake;
use super::journal::{Intent, Journal};
use super::ledger_store::{self, Stored};
use crate::cap::{CapLedger, Entry};
use crate::config::CapConfig;
use crate::fsutil::Disk;
use crate::policy::History;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

pub const FILE_NAME: &str = "state.json";
/// 3: `owned`, the instances this install's records name (ownership by record, not by tag).
/// Version 2 files still load: their instances are claimed by the owner tag once, at the first
/// adoption after the upgrade, and recorded from then on.
const VERSION: u32 = 3;
const FORMAT: crate::store::Format = crate::store::Format {
    name: FILE_NAME,
    version: VERSION,
    oldest: 2,
    unversioned: None,
};

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct OnDisk {
    cap: Stored,
    intents: Vec<Intent>,
    /// What the policy remembers between ticks (cooldowns, stabilization, last scaling), so a
    /// restart does not scale as if nothing had happened.
    #[serde(default)]
    history: History,
    /// Scale-out stays blocked until an operator runs `burst-agent repair`: why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    needs_repair: Option<String>,
    /// Every instance this install launched (bound from its journal intent) or an operator
    /// adopted with `repair --adopt`, until EC2 no longer lists it: what makes an instance
    /// ours. Tags only find instances; anyone with `ec2:CreateTags` can write them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    owned: Option<BTreeSet<String>>,
    /// The brake on a content sync that keeps failing (burst-core's `lifecycle::brake`): kept
    /// across restarts, so a crash loop cannot spend the cap on a broken sync.
    #[serde(default, skip_serializing_if = "is_default")]
    sync_brake: SyncBrake,
    /// The agent's clock when last written (clock.rs): a restart in the same boot goes on from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    clock: Option<crate::clock::Mark>,
    /// The slaves this install chose to release, and when: written before their
    /// `burst-agent:draining-since` tag, so adoption takes the release from the record, never
    /// from a tag anyone with `ec2:CreateTags` could write.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    releasing: BTreeMap<String, Timestamp>,
}

fn is_default(b: &SyncBrake) -> bool {
    *b == SyncBrake::default()
}

pub fn path_in(state_dir: &Path) -> PathBuf {
    state_dir.join(FILE_NAME)
}

/// What loading found, and what to tell the operator (`warn`: normal but notable; `error`:
/// scale-out is blocked until adoption rebuilds the ledger).
pub struct Loaded {
    pub ledger: CapLedger,
    pub journal: Journal,
    pub history: History,
    /// No state at all (first start, or the state was lost: adoption tells which).
    pub fresh: bool,
    /// Scale-out is blocked until `burst-agent repair`: why.
    pub needs_repair: Option<String>,
    /// The instances the records name; `None`: state from an agent before records (version 2
    /// or the older files), whose owner-tagged instances are claimed once at adoption.
    pub owned: Option<BTreeSet<String>>,
    pub sync_brake: SyncBrake,
    pub clock: Option<crate::clock::Mark>,
    /// The slaves the records say this install was releasing, and since when.
    pub releasing: BTreeMap<String, Timestamp>,
    pub warn: Vec<String>,
    pub error: Vec<String>,
}

fn empty(cfg: &CapConfig) -> Result<CapLedger, String> {
    CapLedger::new(
        &cfg.time_zone,
        cfg.daily_limit,
        Some(cfg.daily_instance_hours),
    )
    .map_err(|e| e.to_string())
}

pub fn load(
    disk: &dyn Disk,
    state_dir: &Path,
    cfg: &CapConfig,
    now: Timestamp,
) -> Result<Loaded, String> {
    let path = path_in(state_dir);
    let bytes = match disk.read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return legacy(disk, state_dir, cfg, now)
        }
        Err(e) => return unreadable(disk, &path, &e, cfg, now),
    };
    match parse(&bytes).and_then(|(d, version)| decoded(d, version, cfg, now)) {
        Ok(loaded) => Ok(loaded),
        Err(e) => salvaged(disk, &path, &bytes, &e, cfg, now),
    }
}

/// A state.json that cannot be read at all (`e`): never written over, moved aside for the
/// operator (or the agent does not start), and launches blocked until `repair`.
fn unreadable(
    disk: &dyn Disk,
    path: &Path,
    e: &std::io::Error,
    cfg: &CapConfig,
    now: Timestamp,
) -> Result<Loaded, String> {
    // Never written over: moved aside for the operator, or the agent does not start.
    let aside = disk.quarantine(path, now.as_second()).map_err(|qe| {
        format!(
            "cannot read {}: {e}; and cannot move it aside ({qe}): fix its owner and \
             mode (the service runs as user burst-agent) and start again",
            path.display()
        )
    })?;
    let why = format!(
        "cannot read {}: {e} (kept aside as {}); today's launches cannot be counted: \
         stop the agent and run `sudo -u burst-agent burst-agent repair`",
        path.display(),
        aside.display()
    );
    Ok(Loaded {
        ledger: empty(cfg)?.blocked(why.clone()),
        journal: Journal::new(),
        history: History::new(),
        fresh: false,
        needs_repair: Some(why.clone()),
        owned: Some(BTreeSet::new()),
        sync_brake: SyncBrake::default(),
        clock: None,
        releasing: BTreeMap::new(),
        warn: Vec::new(),
        error: vec![why],
    })
}

/// A state.json that parsed (`version` as its file says): the state it holds, blocked if it
/// says so. `Err`: its ledger does not read after all.
fn decoded(d: OnDisk, version: u32, cfg: &CapConfig, now: Timestamp) -> Result<Loaded, String> {
    let owned = if version < VERSION {
        None
    } else {
        Some(d.owned.unwrap_or_default())
    };
    let ledger = d.cap.into_ledger(cfg, now)?;
    let needs_repair = d.needs_repair;
    Ok(Loaded {
        ledger: match &needs_repair {
            Some(why) => ledger.blocked(why.clone()),
            None => ledger,
        },
        journal: Journal::with(d.intents),
        history: d.history,
        fresh: false,
        needs_repair,
        owned,
        sync_brake: d.sync_brake,
        clock: d.clock,
        releasing: d.releasing,
        warn: Vec::new(),
        error: Vec::new(),
    })
}

/// A state.json that does not parse (`e`): kept aside, and what still reads of it salvaged;
/// launches stay blocked until the ledger is rebuilt (or `repair`, when something was lost).
fn salvaged(
    disk: &dyn Disk,
    path: &Path,
    bytes: &[u8],
    e: &str,
    cfg: &CapConfig,
    now: Timestamp,
) -> Result<Loaded, String> {
    let why = format!("{}: {e}", path.display());
    let (entries, intents, owned, dropped) = salvage(bytes);
    let newer = FORMAT.decode::<OnDisk>(bytes).is_err_and(|d| d.newer);
    let aside = disk.quarantine(path, now.as_second());
    let mut error = vec![format!(
        "{why}; kept aside as {}; {} ledger entr(y/ies) and {} launch intent(s) \
         could still be read; launches stay blocked until the ledger is rebuilt from \
         them and the instances' tags",
        crate::fsutil::aside_text(&aside),
        entries.len(),
        intents.len()
    )];
    if let Err(e) = &aside {
        error.push(format!("could not keep {} aside: {e}", path.display()));
    }
    // Whatever could not be read may have counted today's launches, and the tags alone
    // cannot rebuild it (EC2 forgets terminated instances within about an hour): an
    // operator must say. Only a file whose every entry and intent still reads is
    // rebuilt on its own, at adoption.
    let lost = if newer {
        Some("it was written by a newer agent".to_string())
    } else if entries.is_empty() && intents.is_empty() {
        Some("nothing in it could be read".to_string())
    } else if dropped > 0 {
        Some(format!(
            "{dropped} of its entries or intents could not be read"
        ))
    } else {
        None
    };
    let needs_repair = lost.map(|lost| {
        format!(
            "{why}: {lost}, so today's launches cannot be counted; stop the agent and \
             run `sudo -u burst-agent burst-agent repair`"
        )
    });
    Ok(Loaded {
        ledger: empty(cfg)?
            .with_entries(entries)
            .blocked(needs_repair.clone().unwrap_or(why)),
        journal: Journal::with(intents),
        history: History::new(),
        fresh: false,
        needs_repair,
        owned: Some(owned),
        sync_brake: v_brake(bytes),
        clock: None,
        releasing: BTreeMap::new(),
        warn: Vec::new(),
        error,
    })
}

fn parse(bytes: &[u8]) -> Result<(OnDisk, u32), String> {
    FORMAT.decode(bytes).map_err(|d| d.why)
}

/// The parts of an unreadable file that still read: each ledger entry and intent that parses,
/// each instance id of `owned`, and how many entries and intents did not.
fn salvage(bytes: &[u8]) -> (Vec<Entry>, Vec<Intent>, BTreeSet<String>, usize) {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(bytes) else {
        return (Vec::new(), Vec::new(), BTreeSet::new(), 0);
    };
    let owned: BTreeSet<String> = v
        .get("owned")
        .and_then(serde_json::Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(serde_json::Value::as_str)
        .map(str::to_string)
        .collect();
    let each = |v: Option<&serde_json::Value>| -> Vec<serde_json::Value> {
        v.and_then(serde_json::Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    let raw_entries = each(v.pointer("/cap/entries"));
    let raw_intents = each(v.get("intents"));
    let total = raw_entries.len() + raw_intents.len();
    let entries: Vec<Entry> = raw_entries
        .into_iter()
        .filter_map(|e| serde_json::from_value(e).ok())
        .collect();
    let intents: Vec<Intent> = raw_intents
        .into_iter()
        .filter_map(|i| serde_json::from_value(i).ok())
        .collect();
    let dropped = total - entries.len() - intents.len();
    (entries, intents, owned, dropped)
}

/// The brake of an unreadable file, if that part still reads (else none: a broken sync trips it
/// again after two more failures).
fn v_brake(bytes: &[u8]) -> SyncBrake {
    serde_json::from_slice::<serde_json::Value>(bytes)
        .ok()
        .and_then(|v| v.get("sync_brake").cloned())
        .and_then(|b| serde_json::from_value(b).ok())
        .unwrap_or_default()
}

/// No state.json: the two files of agents from before, if any.
fn legacy(
    disk: &dyn Disk,
    state_dir: &Path,
    cfg: &CapConfig,
    now: Timestamp,
) -> Result<Loaded, String> {
    let (mut warn, mut error) = (Vec::new(), Vec::new());
    let lpath = ledger_store::path_in(state_dir);
    let mut fresh = false;
    let ledger = match ledger_store::load_from(disk, &lpath, cfg, now)? {
        ledger_store::Loaded::Ok(l) => l,
        ledger_store::Loaded::Missing(l, _) => {
            fresh = true;
            warn.push(format!(
                "no {} in {}: starting with an empty burst cap ledger (normal on first start; \
                 if EC2 lists instances this install launched, launches stay blocked until \
                 `burst-agent repair`)",
                FILE_NAME,
                state_dir.display()
            ));
            l
        }
        ledger_store::Loaded::Corrupt(l, msg) => {
            error.push(msg);
            l
        }
    };
    let jpath = super::journal::path_in(state_dir);
    let journal = match super::journal::load_from(disk, &jpath) {
        Ok(j) => j.unwrap_or_default(),
        Err(e) => {
            let aside = disk.quarantine(&jpath, now.as_second());
            error.push(format!(
                "actuator journal unreadable, kept aside as {}; launches in flight are \
                 recovered from instance tags: {e}",
                crate::fsutil::aside_text(&aside)
            ));
            Journal::new()
        }
    };
    // The journal shows launches but the ledger that counted them is gone: the day's count is
    // unknown. An operator must say.
    let needs_repair = (fresh && !journal.intents.is_empty()).then(|| {
        format!(
            "no {} in {} but {} lists {} launch(es): the ledger that counted them is gone; \
             stop the agent and run `sudo -u burst-agent burst-agent repair --used-today N`",
            ledger_store::FILE_NAME,
            state_dir.display(),
            super::journal::FILE_NAME,
            journal.intents.len()
        )
    });
    if let Some(why) = &needs_repair {
        error.push(why.clone());
        warn.clear();
    }
    // No ledger file: nothing is ours until a launch or `repair --adopt` makes it so. The
    // files of an agent from before state.json: its owner-tagged slaves are claimed once.
    let owned = fresh.then(BTreeSet::new);
    let fresh = fresh && journal.intents.is_empty();
    Ok(Loaded {
        owned,
        sync_brake: SyncBrake::default(),
        clock: None,
        releasing: BTreeMap::new(),
        ledger: match &needs_repair {
            Some(why) => ledger.blocked(why.clone()),
            None => ledger,
        },
        journal,
        history: History::new(),
        fresh,
        needs_repair,
        warn,
        error,
    })
}

/// Everything state.json holds, to write it.
pub struct Snapshot<'a> {
    pub ledger: &'a CapLedger,
    pub journal: &'a Journal,
    pub history: &'a History,
    pub needs_repair: Option<&'a str>,
    pub owned: &'a BTreeSet<String>,
    pub sync_brake: &'a SyncBrake,
    pub clock: Option<&'a crate::clock::Mark>,
    pub releasing: &'a BTreeMap<String, Timestamp>,
}

/// Writes ledger and intents (and the policy's history) in one atomic replacement.
pub fn save(
    disk: &dyn Disk,
    state_dir: &Path,
    ledger: &CapLedger,
    journal: &Journal,
) -> std::io::Result<()> {
    write(
        disk,
        state_dir,
        &Snapshot {
            ledger,
            journal,
            history: &History::new(),
            needs_repair: None,
            owned: &BTreeSet::new(),
            sync_brake: &SyncBrake::default(),
            clock: None,
            releasing: &BTreeMap::new(),
        },
    )
}

/// Writes `s` in one atomic replacement of state.json.
pub fn write(disk: &dyn Disk, state_dir: &Path, s: &Snapshot<'_>) -> std::io::Result<()> {
    let d = OnDisk {
        cap: Stored::of(s.ledger),
        intents: s.journal.intents.clone(),
        history: s.history.clone(),
        needs_repair: s.needs_repair.map(str::to_string),
        owned: Some(s.owned.clone()),
        sync_brake: s.sync_brake.clone(),
        clock: s.clock.cloned(),
        releasing: s.releasing.clone(),
    };
    FORMAT.write(disk, &path_in(state_dir), &d)
}

/// After state.json is written: the two files it replaces are renamed `*.migrated`, so nobody
/// reads a stale ledger in them.
pub fn retire_legacy(disk: &dyn Disk, state_dir: &Path) {
    for p in [
        ledger_store::path_in(state_dir),
        super::journal::path_in(state_dir),
    ] {
        let mut to = p.as_os_str().to_owned();
        to.push(".migrated");
        match disk.rename(&p, Path::new(&to)) {
            Ok(()) => tracing::info!(from = %p.display(), "moved into {FILE_NAME}"),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!("could not rename {}: {e}", p.display()),
        }
    }
}

/// The ledger as stored, for readers other than the actuator (`status`, a dry run's reload).
pub fn load_ledger(
    disk: &dyn Disk,
    state_dir: &Path,
    cfg: &CapConfig,
    now: Timestamp,
) -> Result<CapLedger, String> {
    let path = path_in(state_dir);
    match disk.read(&path) {
        Ok(bytes) => {
            let (d, _) = parse(&bytes).map_err(|e| format!("{}: {e}", path.display()))?;
            d.cap.into_ledger(cfg, now)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let l = ledger_store::path_in(state_dir);
            Ok(ledger_store::load_from(disk, &l, cfg, now)?.into_ledger())
        }
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actuator::journal::Outcome;
    use crate::fsutil::RealDisk;

    fn cfg() -> CapConfig {
        CapConfig {
            time_zone: "UTC".into(),
            daily_limit: 7,
            ..CapConfig::default()
        }
    }

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn ledger_and_intents_come_back_together() {
        let d = tempfile::tempdir().unwrap();
        let now = ts("2026-11-25T10:00:00Z");
        let mut l = load(&RealDisk, d.path(), &cfg(), now).unwrap();
        assert_eq!(l.warn.len(), 1, "first start is said");
        l.ledger.record_attempt("bi-a#1", now).unwrap();
        l.journal.intents.push(Intent {
            id: "bi-a".into(),
            created_at: now,
            keys: vec!["bi-a#1".into()],
            outcome: Outcome::Started,
            open_call: 1,
            last_sent: None,
        });
        save(&RealDisk, d.path(), &l.ledger, &l.journal).unwrap();
        let back = load(&RealDisk, d.path(), &cfg(), now).unwrap();
        assert!(back.warn.is_empty() && back.error.is_empty());
        assert_eq!(back.ledger.used(now), 1);
        assert_eq!(back.journal.intents, l.journal.intents);
        assert_eq!(
            std::fs::read_dir(d.path()).unwrap().count(),
            1,
            "one file holds both"
        );
    }

    #[test]
    fn files_of_agents_from_before_are_read_then_retired() {
        let d = tempfile::tempdir().unwrap();
        let now = ts("2026-11-25T10:00:00Z");
        let mut ledger = CapLedger::new("UTC", 7, None).unwrap();
        ledger.record_attempt("bi-old#1", now).unwrap();
        ledger_store::save(&ledger_store::path_in(d.path()), &ledger).unwrap();
        let mut j = Journal::new();
        j.intents.push(Intent {
            id: "bi-old".into(),
            created_at: now,
            keys: vec!["bi-old#1".into()],
            outcome: Outcome::Started,
            open_call: 0,
            last_sent: None,
        });
        super::super::journal::save(&j, &super::super::journal::path_in(d.path())).unwrap();

        let l = load(&RealDisk, d.path(), &cfg(), now).unwrap();
        assert!(l.warn.is_empty() && l.error.is_empty(), "{:?}", l.error);
        assert_eq!(l.ledger.used(now), 1);
        assert_eq!(l.journal.intents.len(), 1);
        save(&RealDisk, d.path(), &l.ledger, &l.journal).unwrap();
        retire_legacy(&RealDisk, d.path());
        let mut names: Vec<String> = std::fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                "cap-ledger.json.migrated",
                "journal.json.migrated",
                "state.json"
            ]
        );
        assert_eq!(
            load(&RealDisk, d.path(), &cfg(), now)
                .unwrap()
                .ledger
                .used(now),
            1
        );
    }

    #[test]
    fn a_journal_of_launches_without_its_ledger_waits_for_repair() {
        let d = tempfile::tempdir().unwrap();
        let now = ts("2026-11-25T10:00:00Z");
        let mut j = Journal::new();
        j.intents.push(Intent {
            id: "bi-old".into(),
            created_at: now,
            keys: vec!["bi-old#1".into()],
            outcome: Outcome::Launched {
                instance_ids: vec!["i-0old".into()],
            },
            open_call: 0,
            last_sent: None,
        });
        super::super::journal::save(&j, &super::super::journal::path_in(d.path())).unwrap();
        let l = load(&RealDisk, d.path(), &cfg(), now).unwrap();
        let why = l.needs_repair.unwrap();
        assert!(
            why.contains("cap-ledger.json") && why.contains("burst-agent repair"),
            "{why}"
        );
        assert!(l.ledger.is_blocked().is_some());
        assert!(!l.fresh);
    }

    #[test]
    fn an_unreadable_file_blocks_launches_and_keeps_what_still_reads() {
        let d = tempfile::tempdir().unwrap();
        let now = ts("2026-11-25T10:00:00Z");
        // One good entry, one broken one (ended before it began is caught later; here a
        // timestamp that does not parse), and one good intent.
        let text = r#"{"version": 2,
          "cap": {"time_zone": "UTC", "entries": [
             {"key": "bi-a#1", "instance_id": "i-0a", "launched_at": "2026-11-25T08:00:00Z", "ended_at": null},
             {"key": "bi-b#1", "instance_id": null, "launched_at": "yesterday", "ended_at": null}]},
          "intents": [{"id": "bi-a", "created_at": "2026-11-25T08:00:00Z", "keys": ["bi-a#1"],
             "outcome": {"state": "launched", "instance_ids": ["i-0a"]}}]}"#;
        std::fs::write(path_in(d.path()), text).unwrap();
        let l = load(&RealDisk, d.path(), &cfg(), now).unwrap();
        let why = l.ledger.is_blocked().unwrap();
        assert!(
            why.contains("state.json") && why.contains("entries[1]"),
            "{why}"
        );
        assert_eq!(l.ledger.entries().len(), 1, "the readable entry is kept");
        assert_eq!(l.journal.intents.len(), 1);
        assert!(l.error[0].contains("1 ledger entr(y/ies) and 1 launch intent(s)"));
        // The operator reads where the file went, as a path (not a Rust `Ok("...")`).
        let aside = format!("kept aside as {}/state.json.corrupt-", d.path().display());
        assert!(l.error[0].contains(&aside), "{}", l.error[0]);
        // What the unreadable entry counted is unknown: an operator must say.
        let repair = l.needs_repair.unwrap();
        assert!(
            repair.contains("1 of its entries or intents could not be read")
                && repair.contains("burst-agent repair"),
            "{repair}"
        );

        // Every entry reads, only the file as a whole does not: rebuilt without an operator.
        let ok = r#"{"version": 2, "edited_by_hand": true,
          "cap": {"time_zone": "UTC", "entries": [
             {"key": "bi-a#1", "instance_id": "i-0a", "launched_at": "2026-11-25T08:00:00Z", "ended_at": null}]},
          "intents": []}"#;
        std::fs::write(path_in(d.path()), ok).unwrap();
        let l = load(&RealDisk, d.path(), &cfg(), now).unwrap();
        assert!(l.ledger.is_blocked().is_some());
        assert!(l.needs_repair.is_none());
        assert!(
            !path_in(d.path()).exists(),
            "kept aside, not left to be read again"
        );

        // A newer agent's file is never read as if it were ours.
        std::fs::write(
            path_in(d.path()),
            r#"{"version": 4, "cap": {}, "intents": []}"#,
        )
        .unwrap();
        let l = load(&RealDisk, d.path(), &cfg(), now).unwrap();
        assert!(l.ledger.is_blocked().unwrap().contains("version 4"));
        assert!(l.needs_repair.unwrap().contains("newer agent"));
    }
}
