//! The `journal.json` of agents from before `state.json`: read once at the upgrade, then kept in
//! `state.json` with the cap ledger. The journal itself (its intents, what an open one means,
//! the ledger rebuilt from it) is burst-core's `lifecycle::intents`.

use crate::fsutil::Disk;
#[cfg(test)]
use crate::fsutil::RealDisk;
pub use burst_core::lifecycle::intents::{Intent, Journal, Outcome};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

pub const FILE_NAME: &str = "journal.json";
const VERSION: u32 = 1;

/// The file's form.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    version: u32,
    intents: Vec<Intent>,
}

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("{path}: {why}")]
    Corrupt { path: PathBuf, why: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

pub fn path_in(state_dir: &Path) -> PathBuf {
    state_dir.join(FILE_NAME)
}

/// A missing file is `None`; anything unreadable is an error naming the file and the place in
/// it (the caller keeps the file aside and relies on the tags). The agent reads through
/// [`load_from`]; this is its tests' way in.
#[cfg(test)]
pub fn load(path: &Path) -> Result<Option<Journal>, JournalError> {
    load_from(&RealDisk, path)
}

/// [`load`] through a [`Disk`].
pub fn load_from(disk: &dyn Disk, path: &Path) -> Result<Option<Journal>, JournalError> {
    let bytes = match disk.read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(JournalError::Io {
                path: path.into(),
                source,
            })
        }
    };
    let j: File = serde_json::from_slice(&bytes).map_err(|e| JournalError::Corrupt {
        path: path.into(),
        why: format!("line {} column {}: {e}", e.line(), e.column()),
    })?;
    if j.version != VERSION {
        return Err(JournalError::Corrupt {
            path: path.into(),
            why: format!("version {} (this agent reads {VERSION})", j.version),
        });
    }
    Ok(Some(Journal::with(j.intents)))
}

/// Writes `journal` in the old form (tests of the upgrade write what an old agent left; no
/// agent writes journal.json any more).
#[cfg(test)]
pub fn save(journal: &Journal, path: &Path) -> Result<(), JournalError> {
    let file = File {
        version: VERSION,
        intents: journal.intents.clone(),
    };
    let mut bytes = serde_json::to_vec_pretty(&file).map_err(|e| JournalError::Io {
        path: path.into(),
        source: std::io::Error::other(e),
    })?;
    bytes.push(b'\n');
    RealDisk
        .write_atomic(path, &bytes)
        .map_err(|source| JournalError::Io {
            path: path.into(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::Timestamp;

    #[test]
    fn round_trip_and_prune_keeps_unresolved_intents() {
        let d = tempfile::tempdir().unwrap();
        let p = path_in(d.path());
        assert!(load(&p).unwrap().is_none());
        let t0: Timestamp = "2026-11-25T00:00:00Z".parse().unwrap();
        let mut j = Journal::new();
        j.intents.push(Intent {
            id: "bi-1".into(),
            created_at: t0,
            keys: vec!["bi-1#1".into()],
            outcome: Outcome::Started,
            open_call: 0,
            last_sent: None,
        });
        j.intents.push(Intent {
            id: "bi-2".into(),
            created_at: t0,
            keys: vec!["bi-2#1".into()],
            outcome: Outcome::Launched {
                instance_ids: vec!["i-1".into()],
            },
            open_call: 3,
            last_sent: Some(t0),
        });
        save(&j, &p).unwrap();
        let mut back = load(&p).unwrap().unwrap();
        assert_eq!(back, j);
        assert_eq!(back.intents[0].client_token(2), "bi-1-2");
        let later: Timestamp = "2026-11-27T00:00:00Z".parse().unwrap();
        assert_eq!(back.prune(later, 86_400), 1);
        assert_eq!(back.unresolved().count(), 1);
    }

    #[test]
    fn a_corrupt_journal_is_an_error_naming_file_and_place() {
        let d = tempfile::tempdir().unwrap();
        let p = path_in(d.path());
        std::fs::write(&p, "{\"version\": 1, \"intents\": [ {\"id\": 3} ]}").unwrap();
        let e = load(&p).unwrap_err().to_string();
        assert!(e.contains("journal.json") && e.contains("line 1"), "{e}");
        std::fs::write(&p, "{\"version\": 9, \"intents\": []}").unwrap();
        let e = load(&p).unwrap_err().to_string();
        assert!(e.contains("version 9"), "{e}");
    }
}
