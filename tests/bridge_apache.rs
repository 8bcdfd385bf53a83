//! The shipped Apache recipe of the brownout bridge (contrib/bridge/, docs/bridge.md) on
//! Debian's apache2: `bridge-level`, run as `hooks.on_bridge` would run it, switches a real
//! Apache between levels with no reload, and what is never degraded stays at full cost.

mod common;
use common::apache::Apache;
use std::io::{Read, Write};
use std::path::Path;
use std::process::Command;

/// One HTTP/1.1 request on loopback: the status, the headers (lower-case names) and the body.
fn request(
    port: u16,
    method: &str,
    path: &str,
    extra: &str,
) -> (u16, Vec<(String, String)>, String) {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let body = if method == "POST" { "amount=5" } else { "" };
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{extra}Content-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    (status, headers, body.to_string())
}

fn header<'a>(h: &'a [(String, String)], name: &str) -> Option<&'a str> {
    h.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

fn level(flags: &Path, n: &str) -> std::process::Output {
    Command::new(common::root().join("contrib/bridge/bridge-level"))
        .arg(n)
        .arg(flags)
        .output()
        .unwrap()
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

#[test]
fn the_recipe_switches_a_real_apache_by_flag_files_and_never_degrades_forms_or_members() {
    let dir = tempfile::tempdir().unwrap();
    let flags = dir.path().join("flags");
    let snaps = dir.path().join("snapshots");
    std::fs::create_dir_all(&flags).unwrap();
    write(&snaps.join("index.html"), "SNAPSHOT home\n");
    write(&snaps.join("news/index.html"), "SNAPSHOT news\n");
    write(&snaps.join("news/a.html"), "SNAPSHOT article\n");
    let recipe = common::root().join("contrib/bridge/apache-bridge.conf");
    let conf = format!(
        "Define BRIDGE_FLAGS {}\nDefine BRIDGE_SNAPSHOTS {}\n\
         Define BRIDGE_KEEP_COOKIE \"wordpress_logged_in_|PHPSESSID\"\n\
         Define BRIDGE_KEEP_PATH \"^/(wp-admin|donate)\"\n\
         Define BRIDGE_IMAGE_ORIGIN https://static.example.com\n\
         KeepAlive On\nInclude {}\n",
        flags.display(),
        snaps.display(),
        recipe.display()
    );
    let a = Apache::start_with(2, 8, &conf);
    for (path, text) in [
        ("news/index.html", "DYNAMIC news\n"),
        ("news/a.html", "DYNAMIC article\n"),
        ("wp-admin/index.html", "DYNAMIC admin\n"),
        ("donate/index.html", "DYNAMIC donate\n"),
        ("logo.png", "PNG"),
    ] {
        write(&a.docroot.join(path), text);
    }
    write(&a.docroot.join("index.html"), "DYNAMIC home\n");
    let get = |path: &str, extra: &str| request(a.port, "GET", path, extra);

    // Level 0: the site as it is.
    let (status, h, body) = get("/", "");
    assert_eq!((status, body.as_str()), (200, "DYNAMIC home\n"));
    assert_eq!(header(&h, "cache-control"), None);
    assert_eq!(get("/logo.png", "").0, 200);

    // Level 1, no reload: hot pages from their snapshots, cacheable for a minute.
    let o = level(&flags, "1");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let (status, h, body) = get("/", "");
    assert_eq!(
        (status, body.as_str()),
        (200, "SNAPSHOT home\n"),
        "{}",
        a.error_log()
    );
    assert_eq!(header(&h, "cache-control"), Some("public, max-age=60"));
    assert!(header(&h, "last-modified").is_some(), "{h:?}");
    assert_eq!(get("/news/", "").2, "SNAPSHOT news\n");
    assert_eq!(get("/news/a.html", "").2, "SNAPSHOT article\n");
    // Images go to the static origin, with a redirect no browser keeps past the burst.
    let (status, h, _) = get("/logo.png", "");
    assert_eq!(status, 302);
    assert_eq!(
        header(&h, "location"),
        Some("https://static.example.com/logo.png")
    );
    // Never degraded: a member, a query, the CMS and the forms, a POST.
    let member = "Cookie: lang=ja; wordpress_logged_in_abc=1\r\n";
    let (_, h, body) = get("/", member);
    assert_eq!(body, "DYNAMIC home\n");
    assert_eq!(
        header(&h, "cache-control"),
        None,
        "a member's page is cached"
    );
    // Only snapshots are marked cacheable, and for visitors without cookies (Vary).
    let (_, h, _) = get("/", "");
    assert!(
        header(&h, "vary").is_some_and(|v| v.contains("Cookie")),
        "{h:?}"
    );
    for (path, extra, page) in [
        ("/?page=2", "", "DYNAMIC home\n"),
        ("/wp-admin/", "", "DYNAMIC admin\n"),
        ("/donate/", "", "DYNAMIC donate\n"),
        (
            "/",
            "Authorization: Basic b3BzOm9wcw==\r\n",
            "DYNAMIC home\n",
        ),
    ] {
        let (_, h, body) = get(path, extra);
        assert_eq!(body, page, "{path} {extra}");
        assert_eq!(
            header(&h, "cache-control"),
            None,
            "{path} {extra} is cached"
        );
    }
    let (_, _, body) = request(
        a.port,
        "POST",
        "/",
        "Content-Type: application/x-www-form-urlencoded\r\n",
    );
    assert!(
        !body.contains("SNAPSHOT"),
        "a POST was served a snapshot: {body}"
    );

    // Level 2: no keep-alive either.
    let keep = "Connection: keep-alive\r\n";
    assert!(level(&flags, "2").status.success());
    let (_, h, body) = get("/", keep);
    assert_eq!(body, "SNAPSHOT home\n");
    assert_eq!(header(&h, "connection"), Some("close"), "{h:?}");

    // Back to full service, again with no reload.
    assert!(level(&flags, "0").status.success());
    assert!(std::fs::read_dir(&flags).unwrap().next().is_none());
    let (_, h, body) = get("/", "");
    assert_eq!(body, "DYNAMIC home\n");
    assert_eq!(header(&h, "cache-control"), None);
    assert_eq!(get("/logo.png", "").0, 200);
}

#[test]
fn the_recipe_without_its_defines_is_refused_by_apache_configtest() {
    let dir = tempfile::tempdir().unwrap();
    let recipe = common::root().join("contrib/bridge/apache-bridge.conf");
    let conf = dir.path().join("httpd.conf");
    let m = "/usr/lib/apache2/modules";
    std::fs::write(
        &conf,
        format!(
            "ServerRoot {root}\nLoadModule mpm_prefork_module {m}/mod_mpm_prefork.so\n\
             LoadModule authz_core_module {m}/mod_authz_core.so\n\
             LoadModule rewrite_module {m}/mod_rewrite.so\nLoadModule alias_module {m}/mod_alias.so\n\
             LoadModule headers_module {m}/mod_headers.so\nLoadModule env_module {m}/mod_env.so\n\
             Listen 127.0.0.1:{port}\nServerName 127.0.0.1\nErrorLog {root}/error.log\n\
             Define BRIDGE_FLAGS /run/burst-agent-bridge\nDefine BRIDGE_SNAPSHOTS {root}\n\
             Include {recipe}\n",
            root = dir.path().display(),
            port = common::apache::free_port(),
            recipe = recipe.display()
        ),
    )
    .unwrap();
    let o = Command::new("/usr/sbin/apache2")
        .arg("-f")
        .arg(&conf)
        .arg("-t")
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("Define BRIDGE_KEEP_COOKIE"), "{err}");
}

#[test]
fn bridge_level_refuses_what_it_cannot_do_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let o = level(dir.path(), "x");
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("LEVEL must be a number 0-9"));
    let o = level(&dir.path().join("missing"), "1");
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(
        err.contains("is not a directory") && err.contains("RuntimeDirectory"),
        "{err}"
    );
    // Up two levels and down one: whole levels only, and it says where it is.
    let o = level(dir.path(), "2");
    assert!(String::from_utf8_lossy(&o.stdout).contains("at level 2"));
    let o = level(dir.path(), "1");
    assert!(String::from_utf8_lossy(&o.stdout).contains("at level 1"));
    assert!(dir.path().join("level1").exists() && !dir.path().join("level2").exists());
}
