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

/// Why an etcd process did not come up.
enum StartFailure {
    /// Another process took a port between choosing it and etcd binding it: try other ports.
    PortTaken,
    /// Anything else, with what etcd said.
    Other(String),
}

/// Waits until `port` answers; fails early, with etcd's own words, if the process exits.
fn wait_until_serving(
    child: &mut Child,
    port: u16,
    log: &std::path::Path,
) -> Result<(), StartFailure> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            let said = std::fs::read_to_string(log).unwrap_or_default();
            if said.contains("address already in use") {
                return Err(StartFailure::PortTaken);
            }
            return Err(StartFailure::Other(format!(
                "etcd exited ({status}): {said}"
            )));
        }
        if Instant::now() >= deadline {
            let said = std::fs::read_to_string(log).unwrap_or_default();
            return Err(StartFailure::Other(format!(
                "etcd did not serve on {port} within 30 s: {said}"
            )));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

fn log_file(path: &std::path::Path) -> std::fs::File {
    std::fs::File::create(path).expect("etcd's log file")
}

/// Tries to start etcd on fresh ports a few times: tests run in parallel and grab ports too.
const PORT_ATTEMPTS: usize = 5;

impl Etcd {
    /// Starts etcd and waits until its client port answers.
    pub fn start() -> Etcd {
        let mut last = String::new();
        for _ in 0..PORT_ATTEMPTS {
            let data = tempfile::tempdir().expect("a temporary directory");
            let (client, peer) = (free_port(), free_port());
            let endpoint = format!("http://127.0.0.1:{client}");
            let peer_url = format!("http://127.0.0.1:{peer}");
            let log = data.path().join("etcd.log");
            let mut child = Command::new("etcd")
                .arg("--data-dir")
                .arg(data.path().join("member"))
                .args(["--name", "test"])
                .args(["--listen-client-urls", &endpoint])
                .args(["--advertise-client-urls", &endpoint])
                .args(["--listen-peer-urls", &peer_url])
                .args(["--initial-advertise-peer-urls", &peer_url])
                .args(["--initial-cluster", &format!("test={peer_url}")])
                .stdout(Stdio::null())
                .stderr(log_file(&log))
                .spawn()
                .expect("etcd runs (scripts/install-deps installs Debian's etcd-server)");
            match wait_until_serving(&mut child, client, &log) {
                Ok(()) => {
                    return Etcd {
                        child,
                        _data: data,
                        endpoint,
                    };
                }
                Err(failure) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    match failure {
                        StartFailure::PortTaken => last = "a port was taken".into(),
                        StartFailure::Other(why) => panic!("{why}"),
                    }
                }
            }
        }
        panic!("etcd did not start after {PORT_ATTEMPTS} tries: {last}");
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A real etcd cluster of several members on loopback, each of which can be killed and started
/// again on its data (a crashed host coming back).
pub struct EtcdCluster {
    members: Vec<Member>,
    _data: tempfile::TempDir,
    /// The members' client addresses, `http://127.0.0.1:<port>`.
    pub endpoints: Vec<String>,
}

struct Member {
    name: String,
    client: u16,
    peer_url: String,
    child: Option<Child>,
}

impl EtcdCluster {
    /// Starts `n` members and waits until each client port answers.
    pub fn start(n: usize) -> EtcdCluster {
        for _ in 0..PORT_ATTEMPTS {
            let data = tempfile::tempdir().expect("a temporary directory");
            let members: Vec<Member> = (0..n)
                .map(|i| Member {
                    name: format!("m{i}"),
                    client: free_port(),
                    peer_url: format!("http://127.0.0.1:{}", free_port()),
                    child: None,
                })
                .collect();
            let endpoints = members
                .iter()
                .map(|m| format!("http://127.0.0.1:{}", m.client))
                .collect();
            let mut cluster = EtcdCluster {
                members,
                _data: data,
                endpoints,
            };
            for i in 0..n {
                cluster.spawn(i);
            }
            let started: Result<Vec<()>, StartFailure> =
                (0..n).map(|i| cluster.try_wait_for(i)).collect();
            match started {
                Ok(_) => return cluster,
                // Dropping the cluster kills its members; fresh ports next time.
                Err(StartFailure::PortTaken) => continue,
                Err(StartFailure::Other(why)) => panic!("{why}"),
            }
        }
        panic!("an etcd cluster did not start after {PORT_ATTEMPTS} tries: ports were taken");
    }

    /// `etcd://host:port,...` as `shardci-coordinator --state` takes it.
    pub fn state_url(&self) -> String {
        let hosts: Vec<&str> = self
            .endpoints
            .iter()
            .map(|e| e.trim_start_matches("http://"))
            .collect();
        format!("etcd://{}", hosts.join(","))
    }

    fn spawn(&mut self, i: usize) {
        let initial: Vec<String> = self
            .members
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer_url))
            .collect();
        let dir = self._data.path().join(&self.members[i].name);
        let member = &mut self.members[i];
        let endpoint = format!("http://127.0.0.1:{}", member.client);
        let child = Command::new("etcd")
            .arg("--data-dir")
            .arg(dir)
            .args(["--name", &member.name])
            .args(["--listen-client-urls", &endpoint])
            .args(["--advertise-client-urls", &endpoint])
            .args(["--listen-peer-urls", &member.peer_url])
            .args(["--initial-advertise-peer-urls", &member.peer_url])
            .args(["--initial-cluster", &initial.join(",")])
            .args(["--initial-cluster-state", "new"])
            .args(["--initial-cluster-token", "shardci-test"])
            .stdout(Stdio::null())
            .stderr(log_file(
                &self._data.path().join(format!("{}.log", member.name)),
            ))
            .spawn()
            .expect("etcd runs (scripts/install-deps installs Debian's etcd-server)");
        member.child = Some(child);
    }

    fn try_wait_for(&mut self, i: usize) -> Result<(), StartFailure> {
        let log = self
            ._data
            .path()
            .join(format!("{}.log", self.members[i].name));
        let member = &mut self.members[i];
        let port = member.client;
        match member.child.as_mut() {
            Some(child) => wait_until_serving(child, port, &log),
            None => Err(StartFailure::Other(format!(
                "etcd member {i} is not running"
            ))),
        }
    }

    fn wait_for(&mut self, i: usize) {
        match self.try_wait_for(i) {
            Ok(()) => {}
            Err(StartFailure::PortTaken) => panic!("etcd member {i}: its port was taken"),
            Err(StartFailure::Other(why)) => panic!("etcd member {i}: {why}"),
        }
    }

    /// Kills member `i` (SIGKILL).
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts member `i` again on its data.
    pub fn restart(&mut self, i: usize) {
        self.kill(i);
        self.spawn(i);
        self.wait_for(i);
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }
}
