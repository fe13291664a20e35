//! Coordinators that share a real 3-member etcd cluster on loopback: one leads, one stands by.
//! The leader is killed (SIGKILL) and paused (SIGSTOP) mid-run, an etcd member is killed and
//! restarted, and the run must still finish with every job counted exactly once; a deposed
//! leader that wakes up must not write.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use shardci_testkit::{EtcdCluster, fixture};

mod common;
use common::{bin, ensure_image, free_address, signal, wait_for, watched_once};

/// Two coordinators on fixed addresses sharing etcd and a report store folder.
struct Pair {
    etcd: EtcdCluster,
    dir: tempfile::TempDir,
    addresses: [String; 2],
    children: [Option<Child>; 2],
    /// The log file of each coordinator's current process.
    logs: [PathBuf; 2],
    generation: usize,
    prefix: String,
}

impl Pair {
    fn start() -> Pair {
        let mut pair = Pair {
            etcd: EtcdCluster::start(3),
            dir: tempfile::tempdir().expect("tempdir"),
            addresses: [free_address(), free_address()],
            children: [None, None],
            logs: [PathBuf::new(), PathBuf::new()],
            generation: 0,
            prefix: format!("/failover-{}/", std::process::id()),
        };
        pair.spawn(0);
        pair.wait_until_leading(0, Duration::from_secs(30));
        pair.spawn(1);
        pair
    }

    fn urls(&self) -> String {
        format!("http://{},http://{}", self.addresses[0], self.addresses[1])
    }

    fn spawn(&mut self, i: usize) {
        self.generation += 1;
        let log = self
            .dir
            .path()
            .join(format!("coordinator{i}.{}.log", self.generation));
        let child = Command::new(bin("shardci-coordinator"))
            .args(["--listen", &self.addresses[i]])
            .arg("--data-dir")
            .arg(self.dir.path().join(format!("c{i}")))
            .args(["--state", &self.etcd.state_url()])
            .args(["--state-prefix", &self.prefix])
            .args(["--election-ttl", "2s", "--lease-ttl", "10s"])
            .arg("--store")
            .arg(self.dir.path().join("store"))
            .env("SHARDCI_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("coordinator starts");
        self.children[i] = Some(child);
        self.logs[i] = log;
    }

    fn log(&self, i: usize) -> String {
        std::fs::read_to_string(&self.logs[i]).unwrap_or_default()
    }

    fn leading(&self, i: usize) -> bool {
        self.log(i).contains(" leading")
    }

    fn wait_until_leading(&self, i: usize, within: Duration) -> Instant {
        let deadline = Instant::now() + within;
        while !self.leading(i) {
            assert!(
                Instant::now() < deadline,
                "coordinator {i} did not lead: {}",
                self.log(i)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Instant::now()
    }

    fn leader(&self) -> usize {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(i) = (0..2).find(|&i| self.children[i].is_some() && self.leading(i)) {
                return i;
            }
            assert!(Instant::now() < deadline, "nobody leads");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.children[i].take() {
            signal(child.id(), "-KILL");
            let _ = child.wait();
        }
    }

    fn spawn_worker(&self, id: &str) -> Child {
        Command::new(bin("shardci-worker"))
            .args(["--coordinator", &self.urls(), "--id", id])
            .args([
                "--labels",
                "docker",
                "--slots",
                "2",
                "--stop-grace-seconds",
                "2",
            ])
            .arg("--data-dir")
            .arg(self.dir.path().join(id))
            .env("SHARDCI_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.dir.path().join(format!("{id}.log"))).expect("log"))
            .spawn()
            .expect("worker starts")
    }

    fn shardci(&self, args: &[&str]) -> std::process::Output {
        Command::new(bin("shardci"))
            .args(args)
            .env("SHARDCI_COORDINATOR", self.urls())
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .output()
            .expect("shardci runs")
    }

    fn json(&self, args: &[&str]) -> Value {
        let out = self.shardci(args);
        assert!(
            out.status.success(),
            "shardci {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("json")
    }

    fn running_shards(&self) -> usize {
        let out = self.shardci(&["workers", "list", "--json"]);
        serde_json::from_slice::<Value>(&out.stdout)
            .ok()
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default()
            .iter()
            .map(|w| w["current_shards"].as_array().map_or(0, Vec::len))
            .sum()
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // What the coordinators said, to tell why.
            for entry in std::fs::read_dir(self.dir.path())
                .into_iter()
                .flatten()
                .flatten()
            {
                let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
                let said: Vec<&str> = text
                    .lines()
                    .filter(|l| l.contains("WARN") || l.contains("ERROR") || l.contains("leading"))
                    .collect();
                if !said.is_empty() {
                    eprintln!("--- {}\n{}", entry.path().display(), said.join("\n"));
                }
            }
        }
        for i in 0..2 {
            self.kill(i);
        }
    }
}

fn kill_all(children: &mut [Child]) {
    for child in children {
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// How long after `killed` coordinator `i` logged `line`.
fn logged_after(pair: &Pair, i: usize, line: &str, killed: Instant) -> Duration {
    let deadline = killed + Duration::from_secs(30);
    while !pair.log(i).contains(line) {
        assert!(
            Instant::now() < deadline,
            "the new leader never logged {line:?}: {}",
            pair.log(i)
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    killed.elapsed()
}

#[test]
fn the_leader_killed_three_times_and_an_etcd_member_lost_mid_run_cost_no_job_and_no_double_count() {
    ensure_image();
    let mut pair = Pair::start();
    let mut workers = vec![pair.spawn_worker("fo-w1"), pair.spawn_worker("fo-w2")];
    const JOBS: usize = 24;
    let repo = fixture(
        JOBS,
        "[test_types.slow]\ncommand = \"echo start $SHARDCI_CONNECTOR; sleep 3; echo done $SHARDCI_CONNECTOR\"\n\n[templates.generic]\ntest_types = [\"slow\"]\n",
    );
    let watch_log = pair.dir.path().join("watch.log");
    let watcher = Command::new(bin("shardci"))
        .args(["submit", "--all", "--workers", &JOBS.to_string(), "--watch"])
        .args(["--coordinator", &pair.urls()])
        .arg("--repo")
        .arg(repo.path())
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&watch_log).expect("watch log"))
        .spawn()
        .expect("submit");

    let mut takeovers = Vec::new();
    for kill in 1..=3 {
        let leader = pair.leader();
        // Mid-run: workers serve this leader and shards are running.
        wait_for("shards running", Duration::from_secs(60), || {
            pair.log(leader).contains("granted the first worker lease") && pair.running_shards() > 0
        });
        if kill == 2 {
            // Some job finished under an earlier leader (on a loaded machine the first kills
            // can come before any did): the new leader below never spooled its log.
            wait_for("a job to finish", Duration::from_secs(60), || {
                let shown = pair.shardci(&["runs", "list", "--json"]);
                serde_json::from_slice::<Value>(&shown.stdout)
                    .ok()
                    .and_then(|runs| runs[0]["shards_done"].as_u64())
                    .is_some_and(|done| done > 0)
            });
        }
        let killed = Instant::now();
        pair.kill(leader);
        let standby = 1 - leader;
        let elected = pair.wait_until_leading(standby, Duration::from_secs(30)) - killed;
        let session = logged_after(&pair, standby, "granted the first worker lease", killed);
        // A shard lease needs a queued shard and a free slot (when a running shard ends).
        let deadline = Instant::now() + Duration::from_secs(8);
        while !pair.log(standby).contains("granted the first shard lease")
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(10));
        }
        let shard = if pair.log(standby).contains("granted the first shard lease") {
            format!("{} ms", killed.elapsed().as_millis())
        } else {
            "none yet".to_string()
        };
        eprintln!(
            "kill {kill}: new leader after {} ms, first worker lease after {} ms, first shard lease after {shard}",
            elected.as_millis(),
            session.as_millis(),
        );
        takeovers.push(session);
        assert!(
            pair.log(standby).contains("the leader refuses connections"),
            "a killed leader's process is known gone; the standby need not wait out its lease: {}",
            pair.log(standby)
        );
        if kill == 2 {
            // Logs of jobs that finished under earlier leaders: this one spooled none of them,
            // the store has them whole.
            let submitted = std::fs::read_to_string(&watch_log).unwrap_or_default();
            let run = submitted
                .split_whitespace()
                .find(|w| w.starts_with("run-"))
                .map(|w| w.trim_end_matches(':').to_string())
                .expect("the watch log names the run");
            let shown = pair.json(&["runs", "show", &run, "--json"]);
            let done = shown["results"].as_array().cloned().unwrap_or_default();
            let Some(job) = done
                .first()
                .and_then(|r| r["job"].as_str())
                .map(str::to_string)
            else {
                panic!("no job finished yet: {shown}");
            };
            let log = pair.shardci(&["logs", &run, &job]);
            let log = String::from_utf8_lossy(&log.stdout);
            assert!(
                log.contains("start") && log.contains("done"),
                "{job}: {log:?}"
            );
        }
        match kill {
            1 => {
                pair.etcd.kill(2);
                // A worker that never saw the old leader: the bundle it fetches was uploaded
                // to the old leader, so the new one serves it from the shared store.
                workers.push(pair.spawn_worker("fo-w3"));
            }
            2 => pair.etcd.restart(2),
            _ => {}
        }
        pair.spawn(leader);
        std::thread::sleep(Duration::from_millis(500));
        let survivor = pair.children[standby].as_mut().expect("the new leader");
        assert!(
            survivor.try_wait().expect("wait").is_none(),
            "the new leader kept leading through an etcd member's loss: {}",
            pair.log(standby)
        );
    }

    for entry in std::fs::read_dir(pair.dir.path()).expect("dir").flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("coordinator") {
            let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
            assert!(
                !text.contains("stepping down"),
                "only killed leaders lose leadership: {name} stepped down"
            );
        }
    }
    let jobs: Vec<String> = (1..=JOBS).map(|c| format!("c{c}/slow")).collect();
    let run = watched_once(watcher, &watch_log, &jobs);
    let shown = pair.json(&["runs", "show", &run, "--json"]);
    let results = shown["results"].as_array().cloned().unwrap_or_default();
    assert_eq!(results.len(), JOBS, "one final result per job: {shown}");
    assert!(results.iter().all(|r| r["status"] == "success"), "{shown}");
    // A kill can lose an assignment the leader made durable but never delivered; that shard runs
    // again. Each kill costs a shard at most the one attempt in flight as it died, and a shard
    // re-leased just before the next kill (they came 1.6 s apart in one run) can lose twice.
    // Running shards are kept, not re-run.
    let retried = results.iter().filter(|r| r["attempt"] != 1).count();
    assert!(
        results.iter().all(|r| r["attempt"].as_u64() <= Some(1 + 3)),
        "no shard ran more often than the three kills explain: {shown}"
    );
    eprintln!("jobs re-run after a lost assignment: {retried} of {JOBS}");
    let fetched = std::fs::read_dir(pair.dir.path().join("fo-w3").join("sources"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert!(
        fetched > 0,
        "the late worker fetched the source from a coordinator that never received it: {}",
        std::fs::read_to_string(pair.dir.path().join("fo-w3.log")).unwrap_or_default()
    );
    // The whole log of a job that ran across a takeover is in the store.
    let log = pair.shardci(&["logs", &run, "c1/slow"]);
    let log = String::from_utf8_lossy(&log.stdout);
    assert!(log.contains("start c1") && log.contains("done c1"), "{log}");
    let worst = takeovers.iter().max().copied().unwrap_or_default();
    eprintln!(
        "kill to the new leader's first worker lease: {:?} ms (worst {} ms; election TTL 2 s)",
        takeovers
            .iter()
            .map(Duration::as_millis)
            .collect::<Vec<_>>(),
        worst.as_millis()
    );
    assert!(
        worst < Duration::from_secs(10),
        "a takeover took {worst:?}: the standby did not take over"
    );
    kill_all(&mut workers);
}

#[test]
fn a_paused_leader_that_wakes_up_is_refused_and_steps_down() {
    let mut pair = Pair::start();
    let leader = pair.leader();
    let paused = pair.children[leader].as_ref().expect("leader").id();
    let paused_at = Instant::now();
    signal(paused, "-STOP");
    let standby = 1 - leader;
    let replaced = pair.wait_until_leading(standby, Duration::from_secs(30)) - paused_at;
    eprintln!(
        "a silent leader (SIGSTOP) replaced after {} ms (election TTL 2 s)",
        replaced.as_millis()
    );
    assert!(
        !pair.log(standby).contains("the leader refuses connections"),
        "a paused leader still accepts connections: only its lease can end it"
    );

    // A submission that only the paused leader hears: it reads it when it wakes, and must not
    // accept it, because it cannot make it durable.
    let repo = fixture(
        1,
        "[test_types.unit]\ncommand = \"true\"\n\n[templates.generic]\ntest_types = [\"unit\"]\n",
    );
    let only_old = format!("http://{}", pair.addresses[leader]);
    let submit = Command::new(bin("shardci"))
        .args(["submit", "--all", "--coordinator", &only_old])
        .arg("--repo")
        .arg(repo.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("submit");
    std::thread::sleep(Duration::from_millis(500));
    let woke = Instant::now();
    signal(paused, "-CONT");
    let mut old = pair.children[leader].take().expect("old leader");
    let deadline = Instant::now() + Duration::from_secs(20);
    let code = loop {
        if let Some(status) = old.try_wait().expect("wait") {
            break status.code();
        }
        assert!(
            Instant::now() < deadline,
            "the deposed leader kept running: {}",
            pair.log(leader)
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let stepped_down = woke.elapsed();
    // The client may still be trying the one address it was given (it retries a lost
    // coordinator for two minutes); what matters is that no run was accepted.
    std::thread::sleep(Duration::from_millis(500));
    let mut submit = submit;
    let _ = submit.kill();
    let out = submit.wait_with_output().expect("submit ends");
    assert!(
        !out.status.success() && out.stdout.is_empty(),
        "the deposed leader accepted a run: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    eprintln!(
        "the deposed leader stepped down {} ms after waking",
        stepped_down.as_millis()
    );
    assert_eq!(code, Some(4), "{}", pair.log(leader));
    let log = pair.log(leader);
    assert!(
        log.contains("stepped down") || log.contains("stepping down"),
        "{log}"
    );
    // Nothing it took in is anywhere: the new leader holds no run.
    let runs = pair.json(&["runs", "list", "--json"]);
    assert_eq!(runs.as_array().map(Vec::len), Some(0), "{runs}");
}

#[test]
fn an_unreachable_etcd_is_waited_for_and_garbage_under_the_prefix_is_named() {
    // Nothing listens here: the coordinator says so and keeps trying, it does not exit.
    let nobody = free_address();
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("c.log");
    let mut waiting = Command::new(bin("shardci-coordinator"))
        .args([
            "--listen",
            &free_address(),
            "--state",
            &format!("etcd://{nobody}"),
        ])
        .arg("--data-dir")
        .arg(dir.path().join("c"))
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("starts");
    wait_for("a retry message", Duration::from_secs(20), || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .matches("retrying")
            .count()
            >= 2
    });
    assert!(
        waiting.try_wait().expect("wait").is_none(),
        "it kept waiting"
    );
    let said = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(said.contains(&nobody), "names the endpoint: {said}");
    let _ = waiting.kill();
    let _ = waiting.wait();

    // A prefix holding something that is not a run: a clear error naming the key.
    let etcd = EtcdCluster::start(1);
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        use shardci_coordinator::state::{EtcdStore, Op, StateStore, Txn};
        let store = EtcdStore::connect(&etcd.endpoints, "/garbage/")
            .await
            .expect("etcd");
        store
            .txn(Txn {
                compares: vec![],
                ops: vec![Op::Put {
                    key: "runs/run-1/record".into(),
                    value: b"\x00not json".to_vec(),
                    lease: None,
                }],
            })
            .await
            .expect("put");
    });
    let out = Command::new(bin("shardci-coordinator"))
        .args(["--listen", &free_address(), "--state", &etcd.state_url()])
        .args(["--state-prefix", "/garbage/"])
        .arg("--data-dir")
        .arg(dir.path().join("c2"))
        .env("NO_COLOR", "1")
        .output()
        .expect("runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("runs/run-1/record"),
        "names the key: {stderr}"
    );
}

#[test]
fn a_running_step_s_log_is_whole_on_the_leader_that_took_over_and_can_be_followed_there() {
    ensure_image();
    let mut pair = Pair::start();
    let mut workers = vec![pair.spawn_worker("lg-w1")];
    let repo = fixture(
        1,
        "[test_types.slow]\ncommand = \"echo before the takeover; sleep 15; echo after the takeover\"\n\n[templates.generic]\ntest_types = [\"slow\"]\n",
    );
    let submitted = pair.shardci(&[
        "submit",
        "--all",
        "--repo",
        repo.path().to_str().expect("utf-8"),
    ]);
    assert!(
        submitted.status.success(),
        "{}",
        String::from_utf8_lossy(&submitted.stderr)
    );
    let run = String::from_utf8_lossy(&submitted.stdout)
        .trim()
        .to_string();
    assert!(run.starts_with("run-"), "{run}");
    let logs = |pair: &Pair| {
        String::from_utf8_lossy(&pair.shardci(&["logs", &run, "c1/slow"]).stdout).into_owned()
    };
    wait_for(
        "the step's first line on the leader",
        Duration::from_secs(60),
        || logs(&pair).contains("before the takeover"),
    );
    let leader = pair.leader();
    pair.kill(leader);
    pair.wait_until_leading(1 - leader, Duration::from_secs(30));
    // The new leader heard nothing of what the step printed before: the worker sends it again,
    // while the step still runs (its last line, and the copy stored at its end, come later).
    wait_for(
        "the step's first line on the new leader",
        Duration::from_secs(8),
        || logs(&pair).contains("before the takeover"),
    );
    assert!(
        !logs(&pair).contains("after the takeover"),
        "the step was still running"
    );
    let follow = pair.shardci(&["logs", &run, "c1/slow", "--follow"]);
    let followed = String::from_utf8_lossy(&follow.stdout);
    assert!(
        follow.status.success(),
        "{}",
        String::from_utf8_lossy(&follow.stderr)
    );
    assert_eq!(
        followed.matches("before the takeover").count(),
        1,
        "once, not repeated by the resend: {followed:?}"
    );
    assert!(followed.contains("after the takeover"), "{followed:?}");
    // The step ran once: its first line came from the first attempt, sent again.
    wait_for("the run to end", Duration::from_secs(30), || {
        pair.json(&["runs", "show", &run, "--json"])["results"]
            .as_array()
            .is_some_and(|r| !r.is_empty())
    });
    let shown = pair.json(&["runs", "show", &run, "--json"]);
    assert_eq!(shown["results"][0]["attempt"], 1, "{shown}");
    kill_all(&mut workers);
}
