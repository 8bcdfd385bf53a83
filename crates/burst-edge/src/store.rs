//! One versioned JSON file in the state directory: `state.json`, `events.json` and `status.json`
//! are each a [`Format`]. The body is the file's own serde type; the format adds its top-level
//! `"version"`, refuses a version it does not read (a newer agent's file is never read as if it
//! were its own), names the field that does not parse (`at cap.entries[3].key: ...`), and writes
//! atomically through [`Disk`]. What to do with a damaged file (set it aside and start afresh,
//! or block and salvage) stays with each caller: only the caller knows what losing it costs.

use crate::fsutil::Disk;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::io;
use std::path::Path;

/// The versions one file's reader understands.
#[derive(Clone, Copy, Debug)]
pub struct Format {
    /// For messages: "state.json".
    pub name: &'static str,
    /// What is written, and the newest read.
    pub version: u32,
    /// The oldest read.
    pub oldest: u32,
    /// A file with no `"version"` (written before the file had one) reads as this version;
    /// `None`: such a file is refused.
    pub unversioned: Option<u32>,
}

/// Why a file's bytes are not this format.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Damage {
    pub why: String,
    /// Its version is above what this agent reads: a newer agent wrote it.
    pub newer: bool,
}

impl std::fmt::Display for Damage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.why)
    }
}

/// What reading found.
#[derive(Debug)]
pub enum Read<T> {
    Missing,
    Found {
        value: T,
        version: u32,
    },
    /// The file is there but could not be read (permissions, I/O).
    Unreadable(io::Error),
    Damaged(Damage),
}

impl Format {
    /// The body and the version it was written as.
    pub fn decode<T: DeserializeOwned>(&self, bytes: &[u8]) -> Result<(T, u32), Damage> {
        let damaged = |why: String| Damage { why, newer: false };
        let mut v: serde_json::Value = serde_json::from_slice(bytes)
            .map_err(|e| damaged(format!("line {} column {}: {e}", e.line(), e.column())))?;
        let obj = v
            .as_object_mut()
            .ok_or_else(|| damaged("not a JSON object".into()))?;
        let version = match obj.remove("version") {
            None => self
                .unversioned
                .ok_or_else(|| damaged("no \"version\"".into()))?,
            Some(n) => match n.as_u64().and_then(|n| u32::try_from(n).ok()) {
                Some(n) if (self.oldest..=self.version).contains(&n) => n,
                Some(n) if n > self.version => {
                    return Err(Damage {
                        why: format!(
                            "version {n}, but this agent reads version {} (a newer agent wrote \
                             it?)",
                            self.version
                        ),
                        newer: true,
                    })
                }
                _ => {
                    return Err(damaged(format!(
                        "version {n}, but this agent reads versions {} to {}",
                        self.oldest, self.version
                    )))
                }
            },
        };
        let value = serde_path_to_error::deserialize(v)
            .map_err(|e| damaged(format!("at {}: {}", e.path(), e.inner())))?;
        Ok((value, version))
    }

    /// `value` with this format's version first, then its own fields in their order, pretty,
    /// one line feed at the end.
    pub(crate) fn encode<T: Serialize>(&self, value: &T) -> io::Result<Vec<u8>> {
        #[derive(Serialize)]
        struct Versioned<'a, T> {
            version: u32,
            #[serde(flatten)]
            body: &'a T,
        }
        let v = Versioned {
            version: self.version,
            body: value,
        };
        let mut bytes = serde_json::to_vec_pretty(&v)
            .map_err(|e| io::Error::other(format!("{}: {e}", self.name)))?;
        bytes.push(b'\n');
        Ok(bytes)
    }

    pub fn read<T: DeserializeOwned>(&self, disk: &dyn Disk, path: &Path) -> Read<T> {
        match disk.read(path) {
            Ok(bytes) => match self.decode(&bytes) {
                Ok((value, version)) => Read::Found { value, version },
                Err(d) => Read::Damaged(d),
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => Read::Missing,
            Err(e) => Read::Unreadable(e),
        }
    }

    /// One atomic replacement of `path`.
    pub fn write<T: Serialize>(&self, disk: &dyn Disk, path: &Path, value: &T) -> io::Result<()> {
        disk.write_atomic(path, &self.encode(value)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Body {
        n: u32,
        #[serde(default)]
        names: Vec<String>,
    }

    const F: Format = Format {
        name: "t.json",
        version: 3,
        oldest: 2,
        unversioned: None,
    };

    #[test]
    fn what_is_written_reads_back_with_its_version() {
        let b = Body {
            n: 7,
            names: vec!["a".into()],
        };
        let bytes = F.encode(&b).unwrap();
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(text.starts_with("{\n  \"version\": 3,"), "{text}");
        assert!(text.ends_with("}\n"), "{text}");
        assert_eq!(F.decode::<Body>(&bytes).unwrap(), (b, 3));
    }

    #[test]
    fn versions_outside_the_range_and_bad_fields_are_named() {
        let newer = F.decode::<Body>(br#"{"version": 4, "n": 1}"#).unwrap_err();
        assert!(newer.newer && newer.why.contains("version 4"), "{newer:?}");
        let older = F.decode::<Body>(br#"{"version": 1, "n": 1}"#).unwrap_err();
        assert!(
            !older.newer && older.why.contains("versions 2 to 3"),
            "{older:?}"
        );
        assert_eq!(F.decode::<Body>(br#"{"version": 2, "n": 1}"#).unwrap().1, 2);
        let none = F.decode::<Body>(br#"{"n": 1}"#).unwrap_err();
        assert_eq!(none.why, "no \"version\"");
        let old = Format {
            unversioned: Some(2),
            ..F
        };
        assert_eq!(old.decode::<Body>(br#"{"n": 1}"#).unwrap().1, 2);
        let field = F
            .decode::<Body>(br#"{"version": 3, "n": 1, "names": ["a", 5]}"#)
            .unwrap_err();
        assert!(field.why.starts_with("at names[1]:"), "{field:?}");
        let broken = F
            .decode::<Body>(b"{\"version\": 3,\n \"n\": }")
            .unwrap_err();
        assert!(broken.why.starts_with("line 2 column"), "{broken:?}");
        assert_eq!(
            F.decode::<Body>(b"[1]").unwrap_err().why,
            "not a JSON object"
        );
    }
}
