//! A real etcd (Debian's `etcd-server`) on loopback ports, one member, data in a temporary
//! folder, killed when dropped.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running single-member etcd.
pub struct Etcd {
    child: Child,
    _data: tempfile::TempDir,
    /// Its client address, `http://127.0.0.1:<port>`.
    pub endpoint: String,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

impl Etcd {
    /// Starts etcd and waits until its client port answers.
    pub fn start() -> Etcd {
        let data = tempfile::tempdir().expect("a temporary directory");
        let (client, peer) = (free_port(), free_port());
        let endpoint = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let child = Command::new("etcd")
            .arg("--data-dir")
            .arg(data.path())
            .args(["--name", "test"])
            .args(["--listen-client-urls", &endpoint])
            .args(["--advertise-client-urls", &endpoint])
            .args(["--listen-peer-urls", &peer_url])
            .args(["--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &format!("test={peer_url}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("etcd runs (scripts/install-deps installs Debian's etcd-server)");
        let etcd = Etcd {
            child,
            _data: data,
            endpoint,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", client)).is_err() {
            assert!(Instant::now() < deadline, "etcd did not start on {client}");
            std::thread::sleep(Duration::from_millis(100));
        }
        etcd
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
