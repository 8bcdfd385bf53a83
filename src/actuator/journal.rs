//! The actuator's write-ahead journal of launch intents, kept in `STATE_DIR/state.json` with the
//! cap ledger (`journal.json` of agents from before). An intent is written (with its cap-ledger
//! attempts) **before** RunInstances and its outcome after, so a crash between the two leaves an
//! intent whose instances are found by their `burst-agent:intent` tag, never launched twice; what
//! EC2 has not listed 300 s after the last call was not launched. Everything else about a slave is observable from EC2 and the ELB and is not journaled.

use crate::fsutil::{Disk, RealDisk};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

pub const FILE_NAME: &str = "journal.json";
const VERSION: u32 = 1;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case", deny_unknown_fields)]
pub enum Outcome {
    /// Written before the call; the call's result is not known yet.
    Started,
    Launched {
        instance_ids: Vec<String>,
    },
    /// EC2 refused for good; nothing was launched.
    Failed {
        error: String,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Intent {
    /// Also the `burst-agent:intent` tag and the client tokens' stem.
    pub id: String,
    pub created_at: Timestamp,
    /// The cap-ledger attempts this launch stands for (`<id>#1` …).
    pub keys: Vec<String>,
    pub outcome: Outcome,
    /// The RunInstances call (1-based) whose outcome was unknown when the launch was left open:
    /// for the operator reading state.json (an open launch is never sent again). 0: call 1.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub open_call: u32,
    /// When a RunInstances call for it was last sent (written before sending): EC2 may take a
    /// while to list what that call launched. Absent: `created_at`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sent: Option<Timestamp>,
}

impl Intent {
    /// Since when EC2 may still be about to list instances of this intent.
    pub fn settling_since(&self) -> Timestamp {
        self.last_sent
            .unwrap_or(self.created_at)
            .max(self.created_at)
    }
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl Intent {
    /// The client token of the `n`-th RunInstances call for this intent (1-based).
    pub fn client_token(&self, n: u32) -> String {
        format!("{}-{n}", self.id)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Journal {
    version: u32,
    pub intents: Vec<Intent>,
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

impl Default for Journal {
    fn default() -> Self {
        Journal::new()
    }
}

impl Journal {
    pub fn new() -> Self {
        Journal::with(Vec::new())
    }

    pub fn with(intents: Vec<Intent>) -> Self {
        Journal {
            version: VERSION,
            intents,
        }
    }

    /// A missing file is an empty journal; anything unreadable is an error naming the file and
    /// the place in it (the caller keeps the file aside and relies on the tags).
    pub fn load(path: &Path) -> Result<Option<Self>, JournalError> {
        Self::load_from(&RealDisk, path)
    }

    /// [`Journal::load`] through a [`Disk`].
    pub fn load_from(disk: &dyn Disk, path: &Path) -> Result<Option<Self>, JournalError> {
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
        let j: Journal = serde_json::from_slice(&bytes).map_err(|e| JournalError::Corrupt {
            path: path.into(),
            why: format!("line {} column {}: {e}", e.line(), e.column()),
        })?;
        if j.version != VERSION {
            return Err(JournalError::Corrupt {
                path: path.into(),
                why: format!("version {} (this agent reads {VERSION})", j.version),
            });
        }
        Ok(Some(j))
    }

    pub fn save(&self, path: &Path) -> Result<(), JournalError> {
        self.save_to(&RealDisk, path)
    }

    /// [`Journal::save`] through a [`Disk`].
    pub fn save_to(&self, disk: &dyn Disk, path: &Path) -> Result<(), JournalError> {
        let mut bytes = serde_json::to_vec_pretty(self).map_err(|e| JournalError::Io {
            path: path.into(),
            source: std::io::Error::other(e),
        })?;
        bytes.push(b'\n');
        disk.write_atomic(path, &bytes)
            .map_err(|source| JournalError::Io {
                path: path.into(),
                source,
            })
    }

    pub fn get_mut(&mut self, id: &str) -> Option<&mut Intent> {
        self.intents.iter_mut().find(|i| i.id == id)
    }

    /// Whether a resolved intent of this journal launched the instance `id`.
    pub fn launched(&self, id: &str) -> bool {
        self.intents.iter().any(|i| {
            matches!(&i.outcome, Outcome::Launched { instance_ids } if instance_ids.iter().any(|x| x == id))
        })
    }

    /// Whether this journal holds the intent `id` (resolved or not).
    pub fn knows(&self, id: &str) -> bool {
        self.intents.iter().any(|i| i.id == id)
    }

    pub fn unresolved(&self) -> impl Iterator<Item = &Intent> {
        self.intents
            .iter()
            .filter(|i| i.outcome == Outcome::Started)
    }

    /// Forgets resolved intents older than `keep_secs`. Returns how many.
    pub fn prune(&mut self, now: Timestamp, keep_secs: i64) -> usize {
        let before = self.intents.len();
        self.intents.retain(|i| {
            i.outcome == Outcome::Started || now.as_second() - i.created_at.as_second() <= keep_secs
        });
        before - self.intents.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_prune_keeps_unresolved_intents() {
        let d = tempfile::tempdir().unwrap();
        let p = path_in(d.path());
        assert!(Journal::load(&p).unwrap().is_none());
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
        j.save(&p).unwrap();
        let mut back = Journal::load(&p).unwrap().unwrap();
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
        let e = Journal::load(&p).unwrap_err().to_string();
        assert!(e.contains("journal.json") && e.contains("line 1"), "{e}");
        std::fs::write(&p, "{\"version\": 9, \"intents\": []}").unwrap();
        let e = Journal::load(&p).unwrap_err().to_string();
        assert!(e.contains("version 9"), "{e}");
    }
}
