//! Reading the TOML file: every problem at once, each with line:column and key path.
//!
//! Serde stops at the first error, so loading runs in rounds: deserialize, record the error,
//! remove the offending key from the (spanned) document, and try again. Keys removed this way
//! fall back to their defaults only so that the rest of the file can still be checked; a file
//! with any problem is never accepted.
//!
//! [`parse_read`] takes what reading the file gave: burst-core opens no file (the agent's
//! `config::load_file` is the one place the file is read).

use super::{validate, Config};
use std::fmt;
use std::ops::Range;
use std::path::Path;
use toml::de::{DeTable, DeValue};
use toml::Spanned;

/// One problem in a config file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// Dotted key path (`policy.scale_in.threshold`); empty for the document itself.
    pub path: String,
    /// 1-based line and column, when the key is written in the file.
    pub location: Option<(usize, usize)>,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some((l, c)) = self.location {
            write!(f, "{l}:{c}: ")?;
        }
        if self.path.is_empty() || self.message.starts_with(&self.path) {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}{hint}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
        /// What to do about it, when the operator can fix it ("" otherwise).
        hint: String,
    },
    #[error("{origin}: {} problem(s):\n{}", problems.len(), render(origin, problems))]
    Invalid {
        origin: String,
        problems: Vec<Problem>,
    },
}

fn render(origin: &str, problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| match p.location {
            Some(_) => format!("  {origin}:{p}"),
            None => format!("  {origin}: {p}"),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

impl ConfigError {
    pub fn problems(&self) -> &[Problem] {
        match self {
            ConfigError::Read { .. } => &[],
            ConfigError::Invalid { problems, .. } => problems,
        }
    }
}

/// The fix for a config file the agent cannot read. The service runs as its own user, which
/// reads the file through its group: a file left `root:root 0640` (or a directory `0700`) is
/// the usual cause.
fn read_hint(path: &Path, e: &std::io::Error) -> String {
    let file = path.display();
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .display();
    match e.kind() {
        // The package's own directory may be given to the group; any other one (a home, /opt)
        // is someone's, and only the file is.
        std::io::ErrorKind::PermissionDenied if dir.to_string() == "/etc/burst-agent" => format!(
            "; the service reads it as user burst-agent: `chown root:burst-agent {dir} {file} && \
             chmod 0750 {dir} && chmod 0640 {file}` (the Debian package sets this up)"
        ),
        std::io::ErrorKind::PermissionDenied => format!(
            "; the service reads it as user burst-agent: `chgrp burst-agent {file} && chmod 0640 \
             {file}`, and burst-agent must be able to enter {dir} and each directory above it"
        ),
        std::io::ErrorKind::NotFound => format!(
            "; copy the example: `install -m 0640 -g burst-agent \
             /usr/share/doc/burst-agent/examples/agent.toml {file}`"
        ),
        _ => String::new(),
    }
}

/// Parses and validates a config file from what reading it gave (the agent reads it:
/// `config::load_file`); a read error becomes [`ConfigError::Read`] with the fix for it.
pub fn parse_read(path: &Path, read: std::io::Result<String>) -> Result<Config, ConfigError> {
    let src = read.map_err(|source| ConfigError::Read {
        path: path.display().to_string(),
        hint: read_hint(path, &source),
        source,
    })?;
    parse_str(&src, &path.display().to_string())
}

/// Parses and validates config text; `origin` names it in messages.
pub fn parse_str(src: &str, origin: &str) -> Result<Config, ConfigError> {
    parse_checked(src, origin, false)
}

/// [`parse_read`] for a command that changes nothing (`fleet`): what only an acting master
/// needs (an AMI, an ELB, the ledger table) is not required, so a support desk's file of
/// `[ledger]`, `[aws]` and `[prices]` reads. Everything written is still checked.
pub fn parse_read_only(path: &Path, read: std::io::Result<String>) -> Result<Config, ConfigError> {
    let src = read.map_err(|source| ConfigError::Read {
        path: path.display().to_string(),
        hint: read_hint(path, &source),
        source,
    })?;
    parse_checked(&src, &path.display().to_string(), true)
}

fn parse_checked(src: &str, origin: &str, read_only: bool) -> Result<Config, ConfigError> {
    let index = LineIndex::new(src);
    let invalid = |problems| ConfigError::Invalid {
        origin: origin.to_string(),
        problems,
    };
    let (doc, syntax_errors) = DeTable::parse_recoverable(src);
    if !syntax_errors.is_empty() {
        let problems = syntax_errors
            .iter()
            .map(|e| Problem {
                path: String::new(),
                location: e.span().map(|s| index.locate(s.start)),
                message: syntax_message(src, e),
            })
            .collect();
        return Err(invalid(problems));
    }

    let mut problems = Vec::new();
    let mut working = doc.clone();
    let mut parsed = None;
    // Each round removes one key, so the number of rounds is bounded by the keys in the file.
    for _ in 0..=count_keys(doc.get_ref()) {
        let de = toml::de::Deserializer::from(working.clone());
        match serde_path_to_error::deserialize::<_, Config>(de) {
            Ok(cfg) => {
                parsed = Some(cfg);
                break;
            }
            Err(err) => {
                let pte_path = err.path().to_string();
                let inner = err.into_inner();
                let by_span = inner
                    .span()
                    .and_then(|s| deepest_entry(working.get_ref(), &s, &mut Vec::new()));
                let keys = by_span.unwrap_or_else(|| split_path(&pte_path));
                let path = keys.join(".");
                let location = locate_path(doc.get_ref(), &keys)
                    .or_else(|| inner.span().map(|s| s.start))
                    .map(|offset| index.locate(offset));
                problems.push(Problem {
                    path,
                    location,
                    message: in_operator_words(&first_line(inner.message())),
                });
                if keys.is_empty() || !remove_path(working.get_mut(), &keys) {
                    break;
                }
            }
        }
    }

    match parsed {
        Some(mut cfg) => {
            cfg.carry_renamed_keys();
            let mut checked = cfg.clone();
            checked.agent.dry_run |= read_only;
            // A dry_run or role that could not be read is not "false" or "master": the checks
            // that hang on them (a master's AMI, ELB and table) wait until they read, rather
            // than adding problems that only follow from the first.
            checked.agent.dry_run |= problems
                .iter()
                .any(|p| p.path == "agent.dry_run" || p.path == "agent.role");
            for mut p in validate(&checked) {
                let keys = split_path(&p.path);
                p.location = locate_path(doc.get_ref(), &keys).map(|s| index.locate(s));
                problems.push(p);
            }
            if problems.is_empty() {
                Ok(cfg)
            } else {
                // File order; problems about keys not written in the file come last.
                problems.sort_by_key(|p| (p.location.is_none(), p.location));
                Err(invalid(problems))
            }
        }
        None => {
            problems.sort_by_key(|p| (p.location.is_none(), p.location));
            Err(invalid(problems))
        }
    }
}

/// Keys the schema still reads only to refuse them with what replaced them: never suggested.
const REMOVED_KEYS: [&str; 1] = ["cap_keep_for"];

/// A TOML syntax error's message; a duplicate key is named (toml says only "duplicate key").
fn syntax_message(src: &str, e: &toml::de::Error) -> String {
    let msg = first_line(e.message());
    let key = e
        .span()
        .and_then(|s| src.get(s))
        .map(|k| k.trim().trim_matches('"').trim_matches('\''))
        .filter(|k| !k.is_empty() && !k.contains('\n'));
    match key {
        Some(k) if msg == "duplicate key" => {
            format!("duplicate key `{k}`: a key is set once in its table (delete one of the two)")
        }
        _ => msg,
    }
}

/// Serde's words made an operator's: a near miss of a key or a value named ("did you mean"),
/// removed keys left out of the valid ones, Rust's type names said as what to write.
fn in_operator_words(msg: &str) -> String {
    for (kind, what) in [("field", "key"), ("variant", "value")] {
        let Some(rest) = msg.strip_prefix(&format!("unknown {kind} `")) else {
            continue;
        };
        let Some((typed, tail)) = rest.split_once('`') else {
            continue;
        };
        let valid: Vec<&str> = tail
            .split('`')
            .skip(1)
            .step_by(2)
            .filter(|k| !REMOVED_KEYS.contains(k))
            .collect();
        if let Some(best) = closest(typed, &valid) {
            return format!("unknown {kind} `{typed}`: did you mean `{best}`?");
        }
        if valid.is_empty() {
            return msg.to_string();
        }
        let list: Vec<String> = valid.iter().map(|k| format!("`{k}`")).collect();
        return format!(
            "unknown {kind} `{typed}`; the {what}s here are {}",
            list.join(", ")
        );
    }
    let mut out = msg.to_string();
    for (rust, words) in [
        ("expected u8", "expected a whole number (no quotes)"),
        ("expected u16", "expected a whole number (no quotes)"),
        ("expected u32", "expected a whole number (no quotes)"),
        ("expected u64", "expected a whole number (no quotes)"),
        ("expected usize", "expected a whole number (no quotes)"),
        ("expected i64", "expected a whole number (no quotes)"),
        ("expected f64", "expected a number like 0.8 (no quotes)"),
        ("expected a boolean", "expected true or false (no quotes)"),
    ] {
        if out.ends_with(rust) {
            out.truncate(out.len() - rust.len());
            out.push_str(words);
        }
    }
    out
}

/// The valid name `typed` most likely meant: one edit in three (at least one), or one a prefix
/// of the other.
fn closest<'a>(typed: &str, valid: &[&'a str]) -> Option<&'a str> {
    let limit = (typed.chars().count() / 3).max(1);
    valid
        .iter()
        .map(|v| (edits(typed, v), *v))
        .filter(|(d, v)| {
            *d <= limit || (typed.len() >= 4 && (v.starts_with(typed) || typed.starts_with(*v)))
        })
        .min_by_key(|(d, _)| *d)
        .map(|(_, v)| v)
}

/// Levenshtein distance.
fn edits(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

fn first_line(msg: &str) -> String {
    msg.lines().next().unwrap_or("").trim().to_string()
}

fn split_path(path: &str) -> Vec<String> {
    if path.is_empty() || path == "." {
        return Vec::new();
    }
    path.split('.')
        .map(|k| k.split('[').next().unwrap_or(k).to_string())
        .filter(|k| !k.is_empty() && k != "?")
        .collect()
}

fn count_keys(t: &DeTable<'_>) -> usize {
    t.iter()
        .map(|(_, v)| {
            1 + match v.get_ref() {
                DeValue::Table(inner) => count_keys(inner),
                _ => 0,
            }
        })
        .sum()
}

fn contains(outer: &Range<usize>, inner: &Range<usize>) -> bool {
    outer.start <= inner.start && inner.end <= outer.end && outer.start < outer.end
}

/// The deepest key whose key or value span holds `span`, as a key path.
fn deepest_entry(
    t: &DeTable<'_>,
    span: &Range<usize>,
    prefix: &mut Vec<String>,
) -> Option<Vec<String>> {
    for (k, v) in t.iter() {
        let key_hit = contains(&k.span(), span);
        let value_hit = contains(&v.span(), span);
        if !(key_hit || value_hit) {
            continue;
        }
        prefix.push(k.get_ref().to_string());
        if let DeValue::Table(inner) = v.get_ref() {
            if let Some(found) = deepest_entry(inner, span, prefix) {
                return Some(found);
            }
        }
        return Some(prefix.clone());
    }
    None
}

/// Byte offset where `keys` is written: the value for a present key, else the nearest table.
fn locate_path(t: &DeTable<'_>, keys: &[String]) -> Option<usize> {
    let (first, rest) = keys.split_first()?;
    let (k, v) = t.get_key_value(first.as_str())?;
    if rest.is_empty() {
        return Some(k.span().start);
    }
    match v.get_ref() {
        DeValue::Table(inner) => locate_path(inner, rest).or(Some(k.span().start)),
        _ => Some(k.span().start),
    }
}

fn remove_path(t: &mut DeTable<'_>, keys: &[String]) -> bool {
    match keys {
        [] => false,
        [last] => t.remove(last.as_str()).is_some(),
        [first, rest @ ..] => match t.get_mut(first.as_str()).map(Spanned::get_mut) {
            Some(DeValue::Table(inner)) => remove_path(inner, rest),
            _ => t.remove(first.as_str()).is_some(),
        },
    }
}

/// Byte offsets to 1-based line:column.
struct LineIndex {
    starts: Vec<usize>,
}

impl LineIndex {
    fn new(src: &str) -> Self {
        let mut starts = vec![0];
        starts.extend(src.match_indices('\n').map(|(i, _)| i + 1));
        LineIndex { starts }
    }
    fn locate(&self, offset: usize) -> (usize, usize) {
        let line = self.starts.partition_point(|&s| s <= offset).max(1);
        (line, offset - self.starts[line - 1] + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Dur;

    fn problems(src: &str) -> Vec<Problem> {
        match parse_str(src, "t.toml") {
            Ok(_) => Vec::new(),
            Err(e) => e.problems().to_vec(),
        }
    }

    #[test]
    fn unwritten_keys_are_the_defaults() {
        let mut want = Config::default();
        want.agent.dry_run = true;
        assert_eq!(parse_str("[agent]\ndry_run = true\n", "t").unwrap(), want);
        // A partial section keeps the other keys' own defaults.
        let c = parse_str(
            "[agent]\ndry_run = true\n[policy.scale_in]\nsustain = \"5m\"\n",
            "t",
        )
        .unwrap();
        assert_eq!(c.policy.scale_in.threshold, want.policy.scale_in.threshold);
        assert_eq!(c.policy.scale_in.sustain, Dur::secs(300));
    }

    /// A key this version replaced is named, with what replaced it, where it stands.
    #[test]
    fn the_replaced_cap_keep_for_says_what_replaced_it() {
        let p = problems("[agent]\ndry_run = true\n[policy]\ncap_keep_for = \"15m\"\n");
        assert_eq!(p.len(), 1, "{p:#?}");
        assert_eq!(p[0].path, "policy.cap_keep_for");
        assert_eq!(p[0].location, Some((4, 1)), "{p:#?}");
        assert!(
            p[0].message.contains("replaced by policy.cap_unit_value")
                && p[0].message.contains("policy.max_kept_per_day"),
            "{}",
            p[0].message
        );
    }

    /// `[alarms]` speaks one unit: the old ratio key is carried over as the percent it meant
    /// and named with its replacement; the new key takes a percent and the alarm's threshold is
    /// its ratio.
    #[test]
    fn the_memory_alarm_takes_a_percent_like_the_disk_alarm() {
        // A config kept across the upgrade (dpkg keeps an edited conffile) still loads, as
        // the percent it meant, and is told to rename the key.
        let c = parse_str(
            "[agent]\ndry_run = true\n[alarms]\nmemory_used_ratio = 0.9\n",
            "t",
        )
        .unwrap();
        assert_eq!(c.alarms.memory_used_percent, 90.0);
        let d = c.deprecations();
        assert!(
            d[0].contains("write memory_used_percent = 90 instead"),
            "{d:?}"
        );
        let p = problems(
            "[agent]\ndry_run = true\n[alarms]\nmemory_used_ratio = 0.9\nmemory_used_percent = 80.0\n",
        );
        assert_eq!(p.len(), 1, "{p:#?}");
        assert_eq!(p[0].path, "alarms.memory_used_ratio");
        assert_eq!(p[0].location, Some((4, 1)), "{p:#?}");
        assert!(p[0].message.contains("disagree"), "{}", p[0].message);
        let p = problems("[agent]\ndry_run = true\n[alarms]\nmemory_used_percent = 0.9\n");
        assert!(p.is_empty(), "0.9 % is odd but valid: {p:#?}");
        let p = problems("[agent]\ndry_run = true\n[alarms]\nmemory_used_percent = 150\n");
        assert_eq!(p[0].path, "alarms.memory_used_percent", "{p:#?}");
        let c: crate::config::Config =
            toml::from_str("[alarms]\nmemory_used_percent = 85.0\n").unwrap();
        let memory = crate::alarms::plan(&c)
            .into_iter()
            .find(|a| a.kind == "memory")
            .unwrap();
        assert_eq!(memory.threshold, 0.85);
        assert!(
            memory.description.contains("at least 85%"),
            "{}",
            memory.description
        );
    }

    #[test]
    fn syntax_error_has_line_and_column() {
        let p = problems("[agent]\ngroup = \n");
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0].location.map(|l| l.0), Some(2));
    }

    #[test]
    fn reports_every_unknown_and_mistyped_key() {
        let src = "[agent]\ngrup = \"x\"\nrole = \"boss\"\n\n[sampling]\ninterval = \"10 fortnights\"\nbogus = 1\n\n[nonsense]\n";
        let p = problems(src);
        let paths: Vec<&str> = p.iter().map(|p| p.path.as_str()).collect();
        assert!(paths.contains(&"agent.grup"), "{p:#?}");
        assert!(paths.contains(&"agent.role"), "{p:#?}");
        assert!(paths.contains(&"sampling.interval"), "{p:#?}");
        assert!(paths.contains(&"sampling.bogus"), "{p:#?}");
        assert!(paths.contains(&"nonsense"), "{p:#?}");
        let role = p.iter().find(|p| p.path == "agent.role").unwrap();
        assert_eq!(role.location, Some((3, 1)));
        assert!(role.message.contains("boss"), "{role:?}");
        let interval = p.iter().find(|p| p.path == "sampling.interval").unwrap();
        assert_eq!(interval.location, Some((6, 1)));
    }

    #[test]
    fn semantic_problems_are_located() {
        let src = "[policy.scale_out]\nthreshold = 0.8\n[policy.scale_in]\nthreshold = 0.9\n";
        let p = problems(src);
        let t = p
            .iter()
            .find(|p| p.path == "policy.scale_in.threshold")
            .unwrap();
        assert_eq!(t.location, Some((4, 1)));
        assert_eq!(
            t.to_string(),
            "4:1: policy.scale_in.threshold must be below policy.scale_out.threshold (0.9 >= 0.8)"
        );
    }

    #[test]
    fn line_index_maps_offsets() {
        let idx = LineIndex::new("ab\ncd\n\nef");
        assert_eq!(idx.locate(0), (1, 1));
        assert_eq!(idx.locate(1), (1, 2));
        assert_eq!(idx.locate(3), (2, 1));
        assert_eq!(idx.locate(6), (3, 1));
        assert_eq!(idx.locate(8), (4, 2));
    }

    #[test]
    fn messages_speak_to_the_operator() {
        let src =
            "[agent]\ndry_run = \"yes\"\n[policy]\nmax_slave = 3\nvictim_order = \"oldest\"\n\
                   [sampling]\ninterval = 10\n[cap]\ndaily_limit = \"7\"\n";
        let p = problems(src);
        let msg = |path: &str| {
            p.iter()
                .find(|p| p.path == path)
                .unwrap_or_else(|| panic!("no {path} in {p:#?}"))
                .message
                .clone()
        };
        assert_eq!(
            msg("policy.max_slave"),
            "unknown field `max_slave`: did you mean `max_slaves`?"
        );
        assert!(
            msg("policy.victim_order").contains("did you mean `oldest_first`?"),
            "{p:#?}"
        );
        let interval = msg("sampling.interval");
        assert!(interval.contains("write \"10s\""), "{interval}");
        assert!(msg("cap.daily_limit").ends_with("expected a whole number (no quotes)"));
        assert!(msg("agent.dry_run").ends_with("expected true or false (no quotes)"));
        // Nothing that only follows from dry_run reading as false (a master's AMI, ELB, table).
        assert_eq!(p.len(), 5, "{p:#?}");
        // A key far from any: the valid ones, without the removed cap_keep_for.
        let p = problems("[policy]\nflapdoodle = 1\n");
        assert!(
            p[0].message
                .contains("the keys here are `evaluation_interval`"),
            "{p:?}"
        );
        assert!(!p[0].message.contains("cap_keep_for"), "{p:?}");
    }

    #[test]
    fn a_duplicate_key_is_named() {
        let p = problems("[policy]\nmax_slaves = 4\nmax_slaves = 5\n");
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(
            p[0].message.starts_with("duplicate key `max_slaves`"),
            "{p:?}"
        );
        assert_eq!(p[0].location.map(|l| l.0), Some(3));
    }

    #[test]
    fn an_unreadable_config_outside_etc_is_not_fixed_by_giving_its_directory_away() {
        let denied = std::io::Error::from(std::io::ErrorKind::PermissionDenied);
        let fix = read_hint(Path::new("/home/ops/agent.toml"), &denied);
        assert!(
            fix.contains("chgrp burst-agent /home/ops/agent.toml"),
            "{fix}"
        );
        assert!(!fix.contains("chown root:burst-agent /home/ops"), "{fix}");
        let fix = read_hint(Path::new("/etc/burst-agent/agent.toml"), &denied);
        assert!(
            fix.contains("chown root:burst-agent /etc/burst-agent"),
            "{fix}"
        );
    }
}
