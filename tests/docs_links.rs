//! The operator docs hold together (issue 21, part 5): every relative link and anchor in
//! README, CONTRIBUTING, RELIABILITY, ARCHITECTURE and docs/ resolves, and the README stays a
//! front page (at most about 15 KB) that points at the rest. The installed package's copy is
//! checked by tests/systemd_service.rs.

mod common;

#[test]
fn every_relative_link_in_the_docs_resolves() {
    let bad = common::docs::broken(common::root());
    assert!(bad.is_empty(), "broken links:\n{}", bad.join("\n"));
}

/// The checker can fail: a link to a heading that is not there, and to a file that is not.
#[test]
fn a_broken_link_or_anchor_is_named_with_its_line() {
    let d = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(d.path().join("docs")).unwrap();
    for f in ["CONTRIBUTING.md", "RELIABILITY.md", "ARCHITECTURE.md"] {
        std::fs::write(d.path().join(f), "# x\n").unwrap();
    }
    std::fs::write(
        d.path().join("README.md"),
        "# Top\n\nSee [ops](docs/ops.md#troubleshooting) and [aws](docs/aws.md).\n\n    [code](nowhere.md)\n",
    )
    .unwrap();
    std::fs::write(
        d.path().join("docs/ops.md"),
        "# Operations\n\n## Trouble shooting\n\n[back](../README.md#top)\n",
    )
    .unwrap();
    let bad = common::docs::broken(d.path());
    assert_eq!(
        bad,
        [
            "README.md:3: docs/ops.md#troubleshooting (no heading #troubleshooting in docs/ops.md)",
            "README.md:3: docs/aws.md (no file docs/aws.md)",
        ]
    );
}

#[test]
fn the_readme_is_a_front_page() {
    let readme = std::fs::read_to_string(common::root().join("README.md")).unwrap();
    assert!(
        readme.len() <= 15 * 1024,
        "README.md is {} bytes: move detail into docs/",
        readme.len()
    );
    for doc in [
        "docs/install.md",
        "docs/aws.md",
        "docs/configuration.md",
        "docs/how-it-decides.md",
        "docs/operations.md",
        "docs/alarms-events.md",
        "docs/simulate.md",
        "CONTRIBUTING.md",
    ] {
        assert!(
            readme.contains(&format!("]({doc})")),
            "README does not link {doc}"
        );
    }
    assert!(readme.contains("scripts/test.sh") && readme.contains("scripts/quickstart.sh"));
}
