//! The operator docs' relative links: each must name a file that exists and, with `#anchor`,
//! a heading of that file (GitHub's anchors: lower case, punctuation dropped, spaces to `-`).
//! Checked in the tree and in the installed package (/usr/share/doc/burst-agent).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The Markdown files an operator reads, relative to the docs' root (the repository, or
/// /usr/share/doc/burst-agent): README, CONTRIBUTING, RELIABILITY, ARCHITECTURE and docs/*.md.
pub fn files(root: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = [
        "README.md",
        "CONTRIBUTING.md",
        "RELIABILITY.md",
        "ARCHITECTURE.md",
    ]
    .iter()
    .map(PathBuf::from)
    .collect();
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .unwrap_or_else(|e| panic!("{}/docs: {e}", root.display()))
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .map(|p| p.strip_prefix(root).unwrap().to_path_buf())
        .collect();
    docs.sort();
    out.extend(docs);
    out
}

fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == '-' || *c == '_' || *c == ' ')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// Lines outside fenced code blocks, with their numbers.
fn prose(text: &str) -> Vec<(usize, &str)> {
    let mut fenced = false;
    let mut out = Vec::new();
    for (i, l) in text.lines().enumerate() {
        if l.starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if !fenced && !l.starts_with("    ") {
            out.push((i + 1, l));
        }
    }
    out
}

fn anchors(text: &str) -> Vec<String> {
    prose(text)
        .into_iter()
        .filter_map(|(_, l)| {
            let h = l.trim_start_matches('#');
            (l.starts_with('#') && h.starts_with(' ')).then(|| slug(h))
        })
        .collect()
}

/// Every broken relative link under `root`, as `FILE:LINE: TARGET (why)`.
pub fn broken(root: &Path) -> Vec<String> {
    let files = files(root);
    let mut texts: BTreeMap<PathBuf, String> = BTreeMap::new();
    for f in &files {
        let t = std::fs::read_to_string(root.join(f))
            .unwrap_or_else(|e| panic!("{}: {e}", root.join(f).display()));
        texts.insert(f.clone(), t);
    }
    let mut bad = Vec::new();
    for f in &files {
        let text = &texts[f];
        let dir = f.parent().unwrap_or(Path::new(""));
        for (n, line) in prose(text) {
            let mut rest = line;
            while let Some(i) = rest.find("](") {
                rest = &rest[i + 2..];
                let Some(end) = rest.find(')') else { break };
                let target = &rest[..end];
                rest = &rest[end..];
                if target.contains("://") || target.starts_with("mailto:") || target.contains(' ') {
                    continue;
                }
                let (path, anchor) = match target.split_once('#') {
                    Some((p, a)) => (p, Some(a)),
                    None => (target, None),
                };
                let file = if path.is_empty() {
                    f.clone()
                } else {
                    normalize(&dir.join(path))
                };
                if !root.join(&file).exists() {
                    bad.push(format!(
                        "{}:{n}: {target} (no file {})",
                        f.display(),
                        file.display()
                    ));
                    continue;
                }
                if let Some(a) = anchor {
                    let heads = match texts.get(&file) {
                        Some(t) => anchors(t),
                        None => match std::fs::read_to_string(root.join(&file)) {
                            Ok(t) if file.extension().is_some_and(|x| x == "md") => anchors(&t),
                            _ => continue,
                        },
                    };
                    if !heads.iter().any(|h| h == a) {
                        bad.push(format!(
                            "{}:{n}: {target} (no heading #{a} in {})",
                            f.display(),
                            file.display()
                        ));
                    }
                }
            }
        }
    }
    bad
}

/// `a/b/../c` as `a/c`, without touching the file system.
fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}
