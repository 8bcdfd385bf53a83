//! Debian's apache2 on a free loopback port: prefork MPM, mod_status, its own ServerRoot.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

pub struct Apache {
    pub port: u16,
    pub pidfile: PathBuf,
    pub docroot: PathBuf,
    conf: PathBuf,
    dir: tempfile::TempDir,
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

impl Apache {
    pub fn start(start_servers: u32, max_workers: u32) -> Apache {
        Apache::start_with(start_servers, max_workers, "")
    }

    /// [`Apache::start`] with `extra` appended to its config (mod_alias, mod_headers, mod_env
    /// and mod_mime are loaded for it).
    pub fn start_with(start_servers: u32, max_workers: u32, extra: &str) -> Apache {
        let httpd = PathBuf::from("/usr/sbin/apache2");
        assert!(
            httpd.is_file(),
            "Debian's apache2 is not installed: `apt-get install -y apache2 apache2-utils`, or run {}",
            super::SETUP
        );
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let docroot = dir.path().join("htdocs");
        std::fs::create_dir_all(&docroot).unwrap();
        std::fs::create_dir_all(dir.path().join("logs")).unwrap();
        std::fs::write(
            docroot.join("index.html"),
            "<h1>burst-agent test site</h1>\n",
        )
        .unwrap();
        let pidfile = dir.path().join("apache2.pid");
        let m = "/usr/lib/apache2/modules";
        let conf = dir.path().join("httpd.conf");
        let spare = start_servers.max(1);
        let text = format!(
            "ServerRoot \"{root}\"\n\
             LoadModule mpm_prefork_module {m}/mod_mpm_prefork.so\n\
             LoadModule authz_core_module {m}/mod_authz_core.so\n\
             LoadModule authz_host_module {m}/mod_authz_host.so\n\
             LoadModule status_module {m}/mod_status.so\n\
             LoadModule dir_module {m}/mod_dir.so\n\
             LoadModule rewrite_module {m}/mod_rewrite.so\n\
             LoadModule alias_module {m}/mod_alias.so\n\
             LoadModule headers_module {m}/mod_headers.so\n\
             LoadModule env_module {m}/mod_env.so\n\
             LoadModule mime_module {m}/mod_mime.so\n\
             TypesConfig /dev/null\nAddType text/html .html\nAddType image/png .png\n\
             Listen 127.0.0.1:{port}\n\
             ServerName 127.0.0.1\n\
             PidFile {pid}\n\
             ErrorLog {root}/logs/error.log\n\
             DocumentRoot {doc}\n\
             StartServers {spare}\nMinSpareServers {spare}\nMaxSpareServers {max}\n\
             ServerLimit {max}\nMaxRequestWorkers {max}\n\
             ExtendedStatus On\n\
             <Location /server-status>\n  SetHandler server-status\n  Require ip 127.0.0.1\n</Location>\n\
             RewriteEngine On\nRewriteRule ^/broken$ - [R=503]\nRewriteRule ^/moved$ / [R=301,L]\n\
             {extra}\n",
            root = dir.path().display(),
            pid = pidfile.display(),
            doc = docroot.display(),
            max = max_workers.max(spare),
        );
        std::fs::write(&conf, text).unwrap();
        let out = Command::new(&httpd)
            .arg("-f")
            .arg(&conf)
            .args(["-k", "start"])
            .output()
            .expect("run apache2");
        assert!(
            out.status.success(),
            "apache2 did not start: {}{}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(dir.path().join("logs/error.log")).unwrap_or_default()
        );
        let a = Apache {
            port,
            pidfile,
            docroot,
            conf,
            dir,
        };
        // Ready: listening, pidfile written, and the parent has its StartServers children.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let children = std::fs::read_to_string(&a.pidfile)
                .ok()
                .and_then(|p| p.trim().parse::<u32>().ok())
                .and_then(|pid| {
                    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).ok()
                })
                .map_or(0, |c| c.split_whitespace().count() as u32);
            if children >= spare && std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "apache2 on {port} not ready: {children} of {spare} children\n{}",
                a.error_log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        a
    }

    pub fn status_url(&self) -> String {
        format!("http://127.0.0.1:{}/server-status", self.port)
    }

    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("logs/error.log")).unwrap_or_default()
    }
}

impl Drop for Apache {
    fn drop(&mut self) {
        let _ = Command::new("/usr/sbin/apache2")
            .arg("-f")
            .arg(&self.conf)
            .args(["-k", "stop"])
            .output();
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.pidfile.exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
