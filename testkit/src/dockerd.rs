//! A second Docker daemon on this machine, standing for a second host: its own data root,
//! exec root and socket, so it shares no image or container with the machine's daemon.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `dockerd` this test started; stopped (with its containers) when dropped.
pub struct Dockerd {
    dir: tempfile::TempDir,
    child: Child,
}

impl Dockerd {
    /// Starts a daemon with the storage driver the machine's daemon uses, in its own network
    /// namespace with no bridge network and no firewall rules (steps run with `--network
    /// none`; a step asking for the network gets none there). Panics with the daemon's log if it does not answer within a minute.
    pub fn start() -> Dockerd {
        // Short paths: containerd's socket lives under the exec root, and socket paths are
        // limited to about 100 bytes.
        let dir = tempfile::Builder::new()
            .prefix("dkd")
            .tempdir_in("/tmp")
            .expect("a folder for the second daemon");
        let driver = Command::new("docker")
            .args(["info", "--format", "{{.Driver}}"])
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .filter(|d| !d.is_empty())
            .unwrap_or_else(|| "vfs".into());
        let config = dir.path().join("daemon.json");
        std::fs::write(&config, "{}").expect("write daemon.json");
        let log = std::fs::File::create(dir.path().join("dockerd.log")).expect("dockerd.log");
        // In a network namespace of its own: a dockerd with `--bridge none` deletes the host's
        // `docker0`, which the machine's daemon needs.
        let child = Command::new("unshare")
            .args(["--net", "dockerd"])
            .arg("--data-root")
            .arg(dir.path().join("root"))
            .arg("--exec-root")
            .arg(dir.path().join("x"))
            .arg("--pidfile")
            .arg(dir.path().join("pid"))
            .arg("--host")
            .arg(format!("unix://{}", dir.path().join("d.sock").display()))
            .arg("--config-file")
            .arg(&config)
            .args(["--storage-driver", &driver])
            .args(["--bridge", "none", "--iptables=false", "--ip6tables=false"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("dockerd starts (the machine has Docker Engine)");
        let daemon = Dockerd { dir, child };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let answered = Command::new("docker")
                .args(["-H", &daemon.host(), "version"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if answered {
                return daemon;
            }
            assert!(
                Instant::now() < deadline,
                "the second dockerd did not answer within a minute:\n{}",
                daemon.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Its address, for `DOCKER_HOST` or `docker -H`.
    pub fn host(&self) -> String {
        format!("unix://{}", self.socket().display())
    }

    /// Its socket.
    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("d.sock")
    }

    /// What it logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("dockerd.log")).unwrap_or_default()
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        // A polite stop lets it stop its containers and unmount its layers, which a kill
        // would leave mounted under the temporary folder.
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
