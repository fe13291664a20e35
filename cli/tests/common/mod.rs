//! Helpers the integration tests share: git fixtures and a real S3 API server (moto).
#![allow(dead_code)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const IMAGE: &str = "shardci-test/busybox:1";

pub fn git(dir: &Path, args: &[&str]) {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.invalid")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.invalid")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A generic-layout monorepo with `n` connectors and the given test types and templates.
pub fn fixture(n: usize, steps: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("shardci.toml"),
        format!(
            "[project]\ndefault_branch = \"main\"\n\n[discovery]\nlayout = \"generic\"\nmetadata = \"connectors/*/connector.toml\"\n\n\
             [defaults]\nimage = \"{IMAGE}\"\nexpected_duration = \"5s\"\nresources = {{ memory = \"64MiB\" }}\n\n{steps}\n\
             [sharding]\nshards_per_slot = 1\nmin_shard_duration = \"1s\"\n"
        ),
    )
    .unwrap();
    for i in 1..=n {
        let c = dir.path().join(format!("connectors/c{i}"));
        std::fs::create_dir_all(&c).unwrap();
        std::fs::write(c.join("connector.toml"), "language = \"generic\"\n").unwrap();
    }
    git(dir.path(), &["init", "-q", "-b", "main"]);
    git(dir.path(), &["add", "-A"]);
    git(dir.path(), &["commit", "-qm", "fixture"]);
    dir
}

/// A real S3 API (moto's server) on a loopback port, killed when dropped. moto keeps objects
/// in memory, so a restarted server starts empty: tests re-create their bucket.
pub struct Moto {
    child: Option<Child>,
    pub port: u16,
}

impl Moto {
    pub fn start() -> Moto {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let mut moto = Moto { child: None, port };
        moto.restart();
        moto
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The environment that points object_store's S3 client at this server.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.endpoint()),
            ("AWS_ALLOW_HTTP", "true".into()),
            ("AWS_ACCESS_KEY_ID", "testing".into()),
            ("AWS_SECRET_ACCESS_KEY", "testing".into()),
            ("AWS_REGION", "us-east-1".into()),
        ]
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// (Re)starts the server on the same port and waits until it answers.
    pub fn restart(&mut self) {
        self.stop();
        let child = Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &self.port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect(
                "moto_server runs (scripts/install-deps installs it: pip install 'moto[server]')",
            );
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.request("GET", "/").is_none() {
            assert!(
                Instant::now() < deadline,
                "moto_server did not start on {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn create_bucket(&self, name: &str) {
        let reply = self
            .request("PUT", &format!("/{name}"))
            .expect("moto answers");
        assert!(
            reply.starts_with("HTTP/1.1 200") || reply.starts_with("HTTP/1.0 200"),
            "{reply}"
        );
    }

    /// One plain HTTP request; moto does not check signatures.
    fn request(&self, method: &str, path: &str) -> Option<String> {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .ok()?;
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )
        .ok()?;
        let mut reply = String::new();
        stream.read_to_string(&mut reply).ok()?;
        Some(reply)
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        self.stop();
    }
}
