//! A real S3 API (moto's server) on a loopback port, for tests of the object-store paths.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A real S3 API (moto's server) on a loopback port, killed when dropped. moto keeps objects
/// in memory, so a restarted server starts empty: tests re-create their bucket.
pub struct Moto {
    child: Option<Child>,
    /// The loopback port it listens on.
    pub port: u16,
}

impl Moto {
    /// Starts a server on a free loopback port.
    pub fn start() -> Moto {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let mut moto = Moto { child: None, port };
        moto.restart();
        moto
    }

    /// `http://127.0.0.1:<port>`.
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

    /// Kills the server (objects are lost: moto keeps them in memory).
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

    /// Creates a bucket.
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
