//! A real deployment on loopback: a `shardci-coordinator` process, `shardci-worker` processes
//! running steps in the real Docker daemon, and `shardci` submitting and watching. Workers are
//! killed, paused and cancelled to check that no job is lost or counted twice.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use shardci_testkit::{fixture, git};

mod common;
use common::{bin, ensure_image, signal, spawn_coordinator, spawn_coordinator_on, watched_once};

/// `n` connectors whose one step sleeps `seconds`.
fn slow_repo(n: usize, seconds: u32) -> tempfile::TempDir {
    fixture(
        n,
        &format!(
            "[test_types.slow]\ncommand = \"echo start $SHARDCI_CONNECTOR; sleep {seconds}; echo done\"\n\n[templates.generic]\ntest_types = [\"slow\"]\n"
        ),
    )
}

struct Cluster {
    /// The client token the coordinator was started with, if any.
    client_token: Option<String>,
    dir: tempfile::TempDir,
    url: String,
    coordinator: Child,
    workers: Vec<(String, Child)>,
    prefix: String,
}

impl Cluster {
    fn start(name: &str, lease: &str, workers: usize, extra: &[&str]) -> Cluster {
        ensure_image();
        let dir = tempfile::tempdir().unwrap();
        let mut args: Vec<&std::ffi::OsStr> = vec!["--lease-ttl".as_ref(), lease.as_ref()];
        args.extend(extra.iter().map(std::ffi::OsStr::new));
        let (coordinator, address) = spawn_coordinator(dir.path(), &args);
        let prefix = format!("{name}-{}", std::process::id());
        let client_token = extra
            .iter()
            .position(|a| *a == "--client-token")
            .and_then(|i| extra.get(i + 1))
            .map(|t| t.to_string());
        let mut cluster = Cluster {
            client_token,
            dir,
            url: format!("http://{address}"),
            coordinator,
            workers: Vec::new(),
            prefix,
        };
        for i in 1..=workers {
            let id = format!("{}-w{i}", cluster.prefix);
            let child = cluster.spawn_worker(&id, &[]);
            cluster.workers.push((id, child));
        }
        cluster.wait_for_workers(workers);
        cluster
    }

    fn spawn_worker(&self, id: &str, extra: &[&str]) -> Child {
        Command::new(bin("shardci-worker"))
            .args([
                "--coordinator",
                &self.url,
                "--id",
                id,
                "--labels",
                "docker",
                "--stop-grace-seconds",
                "2",
                "--sweep-every",
                "1s",
            ])
            .arg("--data-dir")
            .arg(self.dir.path().join(id))
            .args(extra)
            .env("SHARDCI_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.dir.path().join(format!("{id}.log"))).unwrap())
            .spawn()
            .unwrap()
    }

    fn worker_log(&self, id: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("{id}.log"))).unwrap_or_default()
    }

    fn shardci(&self, args: &[&str]) -> Output {
        let mut command = Command::new(bin("shardci"));
        if let Some(token) = &self.client_token {
            command.env("SHARDCI_TOKEN", token);
        }
        command
            .args(args)
            .env("SHARDCI_COORDINATOR", &self.url)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    fn json(&self, args: &[&str]) -> Value {
        let out = self.shardci(args);
        assert!(
            out.status.success(),
            "shardci {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    fn workers(&self) -> Vec<Value> {
        self.json(&["workers", "list", "--json"])
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    fn wait_for_workers(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.workers().len() < n {
            assert!(Instant::now() < deadline, "workers did not register");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn submit(&self, repo: &Path, args: &[&str]) -> String {
        let mut all = vec!["submit", "--repo", repo.to_str().unwrap()];
        all.extend_from_slice(args);
        let out = self.shardci(&all);
        assert!(
            out.status.success(),
            "submit: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    fn wait_for_run(&self, run: &str, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let value = self.json(&["runs", "show", run, "--json"]);
            if !matches!(value["status"].as_str(), Some("queued" | "running")) {
                return value;
            }
            assert!(
                Instant::now() < deadline,
                "run {run} did not finish: {value}"
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    /// A worker that is running a shard right now.
    fn busy_worker(&self) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(w) = self.workers().iter().find(|w| {
                w["current_shards"]
                    .as_array()
                    .is_some_and(|s| !s.is_empty())
            }) {
                return w["id"].as_str().unwrap().to_string();
            }
            assert!(Instant::now() < deadline, "no worker picked up a shard");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn pid(&self, id: &str) -> u32 {
        self.workers
            .iter()
            .find(|(w, _)| w == id)
            .map(|(_, c)| c.id())
            .unwrap()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for (_, child) in &mut self.workers {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = self.coordinator.kill();
        let _ = self.coordinator.wait();
        let _ = Command::new("sh")
            .arg("-c")
            .arg(format!("docker ps -aq --filter label=shardci.worker | xargs -r docker inspect -f '{{{{.Id}}}} {{{{index .Config.Labels \"shardci.worker\"}}}}' | grep ' {}' | cut -d' ' -f1 | xargs -r docker rm -f", self.prefix))
            .output();
    }
}

fn containers(filter: &str) -> usize {
    let out = Command::new("docker")
        .args(["ps", "-aq", "--filter", filter])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).lines().count()
}

fn results(run: &Value) -> Vec<Value> {
    run["results"].as_array().cloned().unwrap_or_default()
}

#[test]
fn three_workers_run_the_full_matrix_and_report_every_job_once() {
    let cluster = Cluster::start("matrix", "5s", 3, &[]);
    let example = tempfile::tempdir().unwrap();
    let copy = Command::new("cp")
        .arg("-r")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/monorepo/."))
        .arg(example.path())
        .status()
        .unwrap();
    assert!(copy.success());
    let _ = std::fs::remove_dir_all(example.path().join(".shardci"));
    git(example.path(), &["init", "-q", "-b", "master"]);
    git(example.path(), &["add", "-A"]);
    git(example.path(), &["commit", "-qm", "example"]);
    // The example's steps run in its own image.
    let local = cluster.shardci(&[
        "local",
        "--repo",
        example.path().to_str().unwrap(),
        "--connector",
        "source-pokeapi",
        "--all",
        "--json",
    ]);
    assert!(
        local.status.success(),
        "building the example image through `shardci local`: {}",
        String::from_utf8_lossy(&local.stderr)
    );

    let out = cluster.shardci(&[
        "submit",
        "--repo",
        example.path().to_str().unwrap(),
        "--all",
        "--label",
        "all versions",
        "--workers",
        "3",
        "--watch",
        "--json",
    ]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "the run fails on purpose: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let run: Value = serde_json::from_slice(&out.stdout).unwrap();
    let results = results(&run);
    assert_eq!(results.len(), 85, "one result per job");
    let ids: BTreeSet<&str> = results.iter().map(|r| r["job"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 85, "no job counted twice");
    let failed: BTreeSet<&str> = results
        .iter()
        .filter(|r| r["status"] != "success")
        .map(|r| r["job"].as_str().unwrap())
        .collect();
    assert_eq!(
        failed,
        BTreeSet::from([
            "source-github/unit[python=3.12,cdk=latest]",
            "source-github/unit[python=3.12,cdk=pinned]"
        ])
    );
    let github = results
        .iter()
        .find(|r| r["job"] == "source-github/unit[python=3.12,cdk=latest]")
        .unwrap();
    assert_eq!(
        github["steps"][0]["status"], "success",
        "the build step passed"
    );
    assert_eq!(github["steps"][1]["failure_class"], "test");
    assert_eq!(github["steps"][1]["exit_code"], 1);
    // Three workers (processes with nothing shared but the store), 85 jobs: each connector's
    // build ran once, in its build job, dispatched before the jobs that take it.
    let mut builds: BTreeMap<&str, usize> = BTreeMap::new();
    for result in &results {
        let connector = result["job"].as_str().unwrap().split('/').next().unwrap();
        for step in result["steps"].as_array().unwrap() {
            if step["step"] == "build" && step["reused_from"].is_null() {
                *builds.entry(connector).or_default() += 1;
            }
        }
    }
    assert_eq!(builds.len(), 11, "{builds:?}");
    assert!(
        builds.values().all(|n| *n == 1),
        "each build ran once: {builds:?}"
    );
    // Logs were shipped to the coordinator.
    let log = cluster.shardci(&[
        "logs",
        run["id"].as_str().unwrap(),
        "source-github/unit[python=3.12,cdk=latest]",
    ]);
    assert!(String::from_utf8_lossy(&log.stdout).contains("unit tests do not support python 3.12"));
}

#[test]
fn a_killed_worker_s_shard_reruns_elsewhere_soon_and_its_containers_are_swept_by_the_living() {
    let cluster = Cluster::start("kill", "10s", 3, &[]);
    let repo = slow_repo(6, 4);
    let run = cluster.submit(repo.path(), &["--all", "--workers", "3"]);
    let victim = cluster.busy_worker();
    // Kill it mid-step: once its container is running, not while it still fetches the source.
    let label = format!("label=shardci.worker={victim}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while containers(&label) == 0 {
        assert!(
            Instant::now() < deadline,
            "the busy worker never started a container"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let killed_at = Instant::now();
    signal(cluster.pid(&victim), "-KILL");
    // Its connection closed with it: the coordinator drops it after the 1 s grace, long
    // before the 10 s lease would have.
    let deadline = Instant::now() + Duration::from_secs(60);
    while cluster.workers().iter().any(|w| w["id"] == victim.as_str()) {
        assert!(Instant::now() < deadline, "the killed worker stays listed");
        std::thread::sleep(Duration::from_millis(50));
    }
    println!(
        "killed worker dropped {:.2}s after the kill (lease 10 s, grace 1 s)",
        killed_at.elapsed().as_secs_f64()
    );
    // Its container outlived it; a living worker on the host removes it, no restart needed.
    let deadline = Instant::now() + Duration::from_secs(60);
    while containers(&label) > 0 {
        assert!(
            Instant::now() < deadline,
            "the killed worker's containers were not swept"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let run = cluster.wait_for_run(&run, Duration::from_secs(120));
    assert_eq!(run["status"], "success", "{run}");
    let results = results(&run);
    assert_eq!(results.len(), 6, "each job has exactly one final result");
    assert!(
        results.iter().any(|r| r["attempt"] == 2),
        "the lost shard ran again as attempt 2: {run}"
    );
    assert!(results.iter().all(|r| r["attempt"].as_u64() <= Some(2)));
    // The report's timeline shows the lost attempt on the killed worker's lane and the
    // retried jobs on the lanes of the workers that ran them again.
    let report_json = cluster.dir.path().join(format!(
        "coordinator/store/runs/{}/report.json",
        run["id"].as_str().unwrap_or_default()
    ));
    let mut report = Value::Null;
    let deadline = Instant::now() + Duration::from_secs(60);
    while report.is_null() {
        assert!(Instant::now() < deadline, "the report was not written");
        report = std::fs::read(&report_json)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or(Value::Null);
        std::thread::sleep(Duration::from_millis(100));
    }
    let lanes = report["timeline"]["lanes"]
        .as_array()
        .expect("a timeline")
        .clone();
    let lost: Vec<&Value> = lanes
        .iter()
        .filter(|l| l["worker"] == victim.as_str())
        .flat_map(|l| l["bars"].as_array().into_iter().flatten())
        .filter(|b| b["lost"].is_string())
        .collect();
    assert_eq!(
        lost.len(),
        1,
        "one lost attempt on {victim}'s lane: {lanes:?}"
    );
    let lost_job = lost[0]["job"].as_str().unwrap_or_default();
    assert!(lost_job.contains(" attempt 1: "), "{lost_job}");
    let retried: Vec<&str> = results
        .iter()
        .filter(|r| r["attempt"] == 2)
        .filter_map(|r| r["job"].as_str())
        .collect();
    for job in &retried {
        assert!(
            lost_job.contains(job),
            "{job} was in the lost attempt: {lost_job}"
        );
        let lane = lanes
            .iter()
            .find(|l| {
                l["bars"]
                    .as_array()
                    .is_some_and(|b| b.iter().any(|b| b["job"] == *job))
            })
            .unwrap_or_else(|| panic!("{job} has no bar"));
        assert_ne!(
            lane["worker"],
            victim.as_str(),
            "{job} ran again on another worker"
        );
    }
    let html = std::fs::read_to_string(report_json.with_file_name("report.html")).expect("html");
    assert_eq!(html.matches("<rect class=\"bar lost").count(), 1);
}

#[test]
fn a_second_worker_with_a_live_worker_s_id_is_refused_and_harms_nothing() {
    let cluster = Cluster::start("twin", "5s", 1, &[]);
    let repo = slow_repo(1, 4);
    let run = cluster.submit(repo.path(), &["--all", "--workers", "1"]);
    let first = cluster.busy_worker();
    let label = format!("label=shardci.worker={first}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while containers(&label) == 0 {
        assert!(Instant::now() < deadline, "the step's container started");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Same id, another process: refused with a message naming the id, exit 2.
    let twin = Command::new(bin("shardci-worker"))
        .args([
            "--coordinator",
            &cluster.url,
            "--id",
            &first,
            "--sweep-every",
            "1s",
        ])
        .arg("--data-dir")
        .arg(cluster.dir.path().join("twin"))
        .env("SHARDCI_LOG", "warn")
        .output()
        .unwrap();
    assert_eq!(twin.status.code(), Some(2));
    let message = String::from_utf8_lossy(&twin.stderr);
    assert!(
        message.contains(&format!("worker {first} is already connected")),
        "{message}"
    );
    // The first one's step ran on, untouched, and passed on its first attempt.
    let run = cluster.wait_for_run(&run, Duration::from_secs(60));
    assert_eq!(run["status"], "success", "{run}");
    let results = results(&run);
    assert_eq!(results.len(), 1);
    assert_eq!(results[0]["attempt"], 1, "{run}");
}

#[test]
fn a_paused_worker_is_fenced_and_rejoins() {
    let cluster = Cluster::start("pause", "2s", 2, &[]);
    let repo = slow_repo(4, 3);
    let run = cluster.submit(repo.path(), &["--all", "--workers", "2"]);
    let victim = cluster.busy_worker();
    let pid = cluster.pid(&victim);
    signal(pid, "-STOP");
    // A paused worker's heartbeat ages (while it is still listed, before its lease expires).
    std::thread::sleep(Duration::from_millis(1000));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    if let Some(listed) = cluster
        .workers()
        .iter()
        .find(|w| w["id"] == victim.as_str())
    {
        let beat = listed["last_heartbeat"].as_i64().unwrap() as f64;
        assert!(
            now - beat >= 0.9,
            "the last heartbeat of a paused worker is {:.1}s old",
            now - beat
        );
    }
    let run = cluster.wait_for_run(&run, Duration::from_secs(120));
    signal(pid, "-CONT");
    assert_eq!(run["status"], "success", "{run}");
    let results = results(&run);
    assert_eq!(results.len(), 4);
    assert!(results.iter().any(|r| r["attempt"] == 2), "{run}");
    // Back from the pause, its late completion is refused and it joins again.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let fenced = cluster.worker_log(&victim).contains("fenced");
        let rejoined = cluster.workers().iter().any(|w| w["id"] == victim.as_str());
        if fenced && rejoined {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "fenced={fenced} rejoined={rejoined}\n{}",
            cluster.worker_log(&victim)
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn cancelling_a_run_leaves_no_container_behind() {
    let cluster = Cluster::start("cancel", "5s", 2, &[]);
    let repo = slow_repo(4, 60);
    let run = cluster.submit(repo.path(), &["--all", "--workers", "2"]);
    cluster.busy_worker();
    let out = cluster.shardci(&["runs", "cancel", &run]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let finished = cluster.wait_for_run(&run, Duration::from_secs(30));
    assert_eq!(finished["status"], "cancelled", "{finished}");
    let label = format!("label=shardci.run={run}");
    let deadline = Instant::now() + Duration::from_secs(15);
    while containers(&label) > 0 {
        assert!(
            Instant::now() < deadline,
            "containers of the cancelled run remain"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        results(&finished)
            .iter()
            .all(|r| r["status"] == "cancelled"),
        "{finished}"
    );
}

#[test]
fn a_failed_build_skips_its_dependents_and_git_sources_work() {
    let cluster = Cluster::start("build", "5s", 2, &[]);
    let repo = fixture(
        2,
        "[test_types.build]\ncommand = \"test $SHARDCI_CONNECTOR != c1 || { echo cannot build c1; exit 3; }\"\n\n\
         [test_types.unit]\ndepends_on = [\"build\"]\nsecrets = [\"API_TOKEN\"]\ncommand = \"echo unit ok with $API_TOKEN\"\n\n\
         [templates.generic]\ntest_types = [\"build\", \"unit\"]\n",
    );
    let url = format!("file://{}", repo.path().display());
    let out = Command::new(bin("shardci"))
        .args([
            "submit",
            "--repo",
            repo.path().to_str().unwrap(),
            "--all",
            "--test-type",
            "unit",
        ])
        .args([
            "--git-url",
            &url,
            "--secret",
            "API_TOKEN",
            "--watch",
            "--json",
        ])
        .env("SHARDCI_COORDINATOR", &cluster.url)
        .env("API_TOKEN", "tok-9f8e7d6c")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    let run: Value = serde_json::from_slice(&out.stdout).unwrap();
    let c1 = results(&run)
        .into_iter()
        .find(|r| r["job"] == "c1/unit")
        .unwrap();
    assert_eq!(c1["status"], "failure");
    assert_eq!(c1["steps"][0]["exit_code"], 3);
    assert_eq!(c1["steps"][1]["status"], "skipped");
    assert_eq!(c1["steps"][1]["message"], "dependency build failed");
    let c2 = results(&run)
        .into_iter()
        .find(|r| r["job"] == "c2/unit")
        .unwrap();
    assert_eq!(c2["status"], "success", "{run}");
    // The secret reached the step and was masked before its log left the worker.
    let log = cluster.shardci(&["logs", run["id"].as_str().unwrap(), "c2/unit"]);
    assert_eq!(String::from_utf8_lossy(&log.stdout), "unit ok with ***\n");
}

#[test]
fn a_full_coordinator_pushes_back_and_an_unknown_ref_is_refused_before_anything_is_sent() {
    let cluster = Cluster::start("busy", "5s", 1, &["--max-active-runs", "1"]);
    let repo = slow_repo(2, 30);
    let first = cluster.submit(repo.path(), &["--all"]);
    let second = cluster.shardci(&[
        "submit",
        "--repo",
        repo.path().to_str().unwrap(),
        "--all",
        "--label",
        "all versions",
    ]);
    assert_eq!(
        second.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );
    let message = String::from_utf8_lossy(&second.stderr);
    assert!(
        message.contains("retry later") && message.contains("ResourceExhausted"),
        "{message}"
    );
    let unknown = cluster.shardci(&[
        "submit",
        "--repo",
        repo.path().to_str().unwrap(),
        "--base",
        "origin/nope",
    ]);
    assert_eq!(unknown.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("unknown git ref \"origin/nope\""));
    assert!(
        cluster
            .shardci(&["runs", "cancel", &first])
            .status
            .success()
    );
}

#[test]
fn hostile_inputs_are_refused_and_the_coordinator_keeps_serving() {
    use shardci_proto::v1 as pb;
    use shardci_proto::v1::client_service_client::ClientServiceClient;
    use shardci_proto::v1::worker_service_client::WorkerServiceClient;

    let cluster = Cluster::start("hostile", "5s", 0, &["--worker-token", "s3cret-worker"]);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let hello = || pb::WorkerMessage {
            msg: Some(pb::worker_message::Msg::Hello(pb::Hello {
                worker_id: "rogue".into(),
                slots: 1,
                ..Default::default()
            })),
        };
        let versioned_session = |token: &str, version: u32, messages: Vec<pb::WorkerMessage>| {
            let url = cluster.url.clone();
            let token = token.to_string();
            async move {
                let mut client = WorkerServiceClient::connect(url).await.unwrap();
                let mut request = tonic::Request::new(tokio_stream::iter(messages));
                request
                    .metadata_mut()
                    .insert("authorization", format!("Bearer {token}").parse().unwrap());
                request.metadata_mut().insert(
                    shardci_proto::API_VERSION_HEADER,
                    version.to_string().parse().unwrap(),
                );
                client.session(request).await
            }
        };
        let session = |token: &str, messages: Vec<pb::WorkerMessage>| {
            versioned_session(token, shardci_proto::API_VERSION, messages)
        };
        let wrong_token = session("guess", vec![hello()]).await.unwrap_err();
        assert_eq!(
            wrong_token.code(),
            tonic::Code::Unauthenticated,
            "{wrong_token:?}"
        );
        let wrong_version = versioned_session("s3cret-worker", 2, vec![hello()])
            .await
            .unwrap_err();
        assert_eq!(wrong_version.code(), tonic::Code::FailedPrecondition);
        assert!(
            wrong_version.message().contains("speaks v2"),
            "{}",
            wrong_version.message()
        );
        let no_hello = session(
            "s3cret-worker",
            vec![pb::WorkerMessage {
                msg: Some(pb::worker_message::Msg::RequestWork(pb::RequestWork {
                    free_slots: 1,
                })),
            }],
        )
        .await
        .unwrap_err();
        assert_eq!(no_hello.code(), tonic::Code::InvalidArgument);

        // A log chunk for a shard that does not exist ends that session with INVALID_ARGUMENT.
        let chunk = pb::WorkerMessage {
            msg: Some(pb::worker_message::Msg::Log(pb::LogChunk {
                offset: None,
                run_id: "run-nope".into(),
                shard_id: "shard-001".into(),
                attempt: 1,
                job_id: "j".into(),
                step: "s".into(),
                seq: 0,
                data: b"x".to_vec(),
                eof: false,
            })),
        };
        let mut inbound = session("s3cret-worker", vec![hello(), chunk])
            .await
            .unwrap()
            .into_inner();
        let mut ended = None;
        while let Some(message) = inbound.message().await.transpose() {
            if let Err(status) = message {
                ended = Some(status);
                break;
            }
        }
        let ended = ended.expect("the session ends with a status");
        assert_eq!(ended.code(), tonic::Code::InvalidArgument);
        assert!(
            ended.message().contains("unknown shard run-nope/shard-001"),
            "{}",
            ended.message()
        );

        // A completion for a shard that does not exist is acknowledged as unknown, not recorded.
        let finished = pb::WorkerMessage {
            msg: Some(pb::worker_message::Msg::ShardFinished(pb::ShardFinished {
                shard: Some(pb::ShardRef {
                    run_id: "run-nope".into(),
                    shard_id: "shard-001".into(),
                    attempt: 3,
                }),
                results: vec![],
            })),
        };
        let mut inbound = session("s3cret-worker", vec![hello(), finished])
            .await
            .unwrap()
            .into_inner();
        let mut outcome = None;
        while let Ok(Some(message)) = inbound.message().await {
            if let Some(pb::coordinator_message::Msg::Ack(ack)) = message.msg {
                outcome = Some(ack.outcome);
                break;
            }
        }
        assert_eq!(outcome, Some(pb::ack::Outcome::UnknownShard as i32));

        // A run whose source was never uploaded is refused; the coordinator still answers.
        let mut client = ClientServiceClient::connect(cluster.url.clone())
            .await
            .unwrap();
        let submit = pb::SubmitRunRequest {
            plan_request: Some(pb::PlanRequest {
                source: Some(pb::Source {
                    location: Some(pb::source::Location::BundleDigest("0".repeat(64))),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            plan: Some(pb::Plan::default()),
            ..Default::default()
        };
        let refused = client.submit_run(submit).await.unwrap_err();
        assert_eq!(
            refused.code(),
            tonic::Code::FailedPrecondition,
            "{refused:?}"
        );
        let upload = client
            .upload_source(tokio_stream::iter(vec![pb::SourceChunk {
                expected_digest: "a".repeat(64),
                data: b"not what was announced".to_vec(),
            }]))
            .await
            .unwrap_err();
        assert_eq!(upload.code(), tonic::Code::InvalidArgument, "{upload:?}");
        assert!(
            client
                .list_runs(pb::ListRunsRequest::default())
                .await
                .is_ok(),
            "the coordinator keeps serving"
        );
    });

    // A worker started with the wrong token gives up with a clear message instead of retrying.
    let mut rogue =
        cluster.spawn_worker(&format!("{}-rogue", cluster.prefix), &["--token", "guess"]);
    let status = rogue.wait().unwrap();
    assert_eq!(status.code(), Some(2));
    assert!(
        cluster
            .worker_log(&format!("{}-rogue", cluster.prefix))
            .contains("refused this worker")
    );
}

#[test]
fn a_coordinator_without_tokens_refuses_to_listen_off_loopback() {
    for address in ["0.0.0.0:0", "[::]:0"] {
        let out = Command::new(bin("shardci-coordinator"))
            .args(["--listen", address])
            .env_remove("SHARDCI_CLIENT_TOKEN")
            .env_remove("SHARDCI_WORKER_TOKEN")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{address}");
        let message = String::from_utf8_lossy(&out.stderr);
        assert!(
            message.contains("refusing to listen") && message.contains("--insecure"),
            "{message}"
        );
    }
    // One token is not enough either.
    let out = Command::new(bin("shardci-coordinator"))
        .args(["--listen", "0.0.0.0:0", "--client-token", "c"])
        .env_remove("SHARDCI_WORKER_TOKEN")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn the_same_tree_runs_again_and_a_run_s_failed_jobs_can_be_retried() {
    let cluster = Cluster::start("retry", "5s", 1, &[]);
    let repo = fixture(
        3,
        "[test_types.unit]\ncommand = \"echo testing $SHARDCI_CONNECTOR; test $SHARDCI_CONNECTOR != c2\"\n\n[templates.generic]\ntest_types = [\"unit\"]\n",
    );
    let first = cluster.submit(repo.path(), &["--all"]);
    let second = cluster.submit(repo.path(), &["--all"]);
    assert_ne!(first, second, "submitting the same tree again is a new run");
    let first_run = cluster.wait_for_run(&first, Duration::from_secs(60));
    assert_eq!(first_run["status"], "failure", "{first_run}");
    cluster.wait_for_run(&second, Duration::from_secs(60));

    let retried = cluster.shardci(&["runs", "retry", &first, "--failed", "--watch", "--json"]);
    assert_eq!(retried.status.code(), Some(1), "c2 fails again");
    let run: Value = serde_json::from_slice(&retried.stdout).unwrap();
    let jobs: Vec<String> = results(&run)
        .iter()
        .map(|r| r["job"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(jobs, ["c2/unit"], "only the failed job ran again: {run}");
    let retry_id = run["id"].as_str().unwrap();
    assert_ne!(retry_id, first);
    let report = std::fs::read_to_string(
        cluster
            .dir
            .path()
            .join(format!("coordinator/store/runs/{retry_id}/report.html")),
    )
    .unwrap();
    assert!(
        report.contains(&format!("re-run of <a href=\"../{first}/report.html\">")),
        "the report links the first run"
    );
    let everything = cluster.shardci(&["runs", "retry", &first, "--json"]);
    assert!(everything.status.success());
    let value: Value = serde_json::from_slice(&everything.stdout).unwrap();
    assert_eq!(value["jobs"], 3, "a plain retry runs every job");
}

/// Peak resident memory of a process, in MiB.
fn peak_rss_mib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb / 1024)
}

#[test]
fn large_unauthenticated_requests_are_refused_before_their_bodies_are_read() {
    use shardci_proto::v1 as pb;
    use shardci_proto::v1::client_service_client::ClientServiceClient;

    let cluster = Cluster::start(
        "probe",
        "5s",
        0,
        &[
            "--client-token",
            "client-secret-0123456789",
            "--worker-token",
            "worker-secret-0123456789",
        ],
    );
    let before = peak_rss_mib(cluster.coordinator.id());
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let url = cluster.url.clone();
    let codes = runtime.block_on(async move {
        let huge = "x".repeat(60 << 20);
        let mut calls = Vec::new();
        for _ in 0..32 {
            let url = url.clone();
            let huge = huge.clone();
            calls.push(tokio::spawn(async move {
                let mut client = ClientServiceClient::connect(url)
                    .await
                    .unwrap()
                    .max_encoding_message_size(usize::MAX);
                let request = pb::SubmitRunRequest {
                    submitted_by: huge,
                    ..Default::default()
                };
                client
                    .submit_run(request)
                    .await
                    .map(|_| ())
                    .map_err(|s| s.code())
            }));
        }
        let mut codes = Vec::new();
        for call in calls {
            codes.push(call.await.unwrap());
        }
        codes
    });
    assert_eq!(codes.len(), 32);
    assert!(
        codes
            .iter()
            .all(|c| *c == Err(tonic::Code::Unauthenticated)),
        "{codes:?}"
    );
    let peak = peak_rss_mib(cluster.coordinator.id());
    println!(
        "coordinator peak resident memory: {before} MiB before, {peak} MiB after 32 x 60 MiB unauthenticated requests"
    );
    assert!(
        peak < 100,
        "the coordinator read refused bodies: {peak} MiB"
    );

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let url = cluster.url.clone();
    // An authenticated reader asking for a 60 MiB run id is cut off at the read method's cap;
    // the answer does not echo the id back.
    let status = runtime.block_on(async move {
        let mut client = ClientServiceClient::connect(url)
            .await
            .unwrap()
            .max_encoding_message_size(usize::MAX);
        let mut request = tonic::Request::new(pb::GetRunRequest {
            run_id: "r".repeat(60 << 20),
        });
        request.metadata_mut().insert(
            "authorization",
            "Bearer client-secret-0123456789".parse().unwrap(),
        );
        client
            .get_run(request)
            .await
            .expect_err("too large for a read")
    });
    assert!(
        status.message().len() < 1024,
        "the refusal does not echo the request: {} bytes",
        status.message().len()
    );
    let peak = peak_rss_mib(cluster.coordinator.id());
    assert!(
        peak < 100,
        "a read method reads at most its cap: {peak} MiB"
    );
}

#[test]
fn tls_with_worker_certificates_and_a_wrong_ca_fails_clearly() {
    let pki = shardci_testkit::Pki::new("shardci test CA");
    let other = shardci_testkit::Pki::new("some other CA");
    let dir = tempfile::tempdir().unwrap();
    let (mut coordinator, address) = spawn_coordinator(
        dir.path(),
        &[
            "--tls-cert".as_ref(),
            pki.server_cert.as_os_str(),
            "--tls-key".as_ref(),
            pki.server_key.as_os_str(),
            "--tls-client-ca".as_ref(),
            pki.ca.as_os_str(),
        ],
    );
    let https = format!("https://{address}");
    let shardci = |coordinator: &str, ca: &Path| {
        Command::new(bin("shardci"))
            .args(["workers", "list", "--json", "--coordinator", coordinator])
            .arg("--ca")
            .arg(ca)
            .output()
            .unwrap()
    };
    // The right CA: the client speaks TLS and is served.
    let out = shardci(&https, &pki.ca);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Another CA: the handshake fails and says why.
    let out = shardci(&https, &other.ca);
    assert_eq!(out.status.code(), Some(3));
    let message = String::from_utf8_lossy(&out.stderr);
    assert!(
        message.contains("certificate") && message.contains("UnknownIssuer"),
        "{message}"
    );
    // Plain HTTP to a TLS port does not silently work.
    let out = shardci(&format!("http://{address}"), &pki.ca);
    assert_ne!(out.status.code(), Some(0));

    // A worker with a certificate from the client CA joins.
    let worker = |id: &str, cert: Option<(&Path, &Path)>| {
        let mut command = Command::new(bin("shardci-worker"));
        command
            .args(["--coordinator", &https, "--id", id, "--executor", "process"])
            .arg("--ca")
            .arg(&pki.ca)
            .arg("--data-dir")
            .arg(dir.path().join(id))
            .env("SHARDCI_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some((cert, key)) = cert {
            command
                .arg("--client-cert")
                .arg(cert)
                .arg("--client-key")
                .arg(key);
        }
        command
    };
    let mut with_cert = worker("tls-w1", Some((&pki.client_cert, &pki.client_key)))
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = shardci(&https, &pki.ca);
        let listed: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        if listed
            .as_array()
            .is_some_and(|w| w.iter().any(|w| w["id"] == "tls-w1"))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the worker with a certificate joined"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // One without is refused for good: exit 2, saying what is missing.
    let without = worker("tls-w2", None).output().unwrap();
    assert_eq!(without.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&without.stderr).contains("client certificate"),
        "{}",
        String::from_utf8_lossy(&without.stderr)
    );
    let _ = with_cert.kill();
    let _ = with_cert.wait();
    let _ = coordinator.kill();
    let _ = coordinator.wait();
}

#[test]
fn a_step_printing_a_gibibyte_costs_the_coordinator_disk_not_memory() {
    let cluster = Cluster::start("gib", "10s", 0, &[]);
    let mut worker = Command::new(bin("shardci-worker"))
        .args([
            "--coordinator",
            &cluster.url,
            "--id",
            "gib-w1",
            "--executor",
            "process",
        ])
        .arg("--data-dir")
        .arg(cluster.dir.path().join("gib-w1"))
        .env("SHARDCI_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    cluster.wait_for_workers(1);
    // 2^24 lines of 64 bytes: 1 GiB.
    let repo = fixture(
        1,
        "[test_types.loud]\ncommand = \"yes 012345678901234567890123456789012345678901234567890123456789012 | head -n 16777216\"\ntimeout = \"10m\"\n\n[templates.generic]\ntest_types = [\"loud\"]\n",
    );
    let run = cluster.submit(repo.path(), &["--all"]);
    let finished = cluster.wait_for_run(&run, Duration::from_secs(600));
    assert_eq!(finished["status"], "success", "{finished}");
    // The run ends before its report is written: wait for the report, which is written last.
    let report = cluster
        .dir
        .path()
        .join(format!("coordinator/store/runs/{run}/report.html"));
    let deadline = Instant::now() + Duration::from_secs(300);
    while !report.exists() {
        assert!(Instant::now() < deadline, "the run was published");
        std::thread::sleep(Duration::from_millis(200));
    }
    let peak = peak_rss_mib(cluster.coordinator.id());
    println!("coordinator peak resident memory after a 1 GiB log: {peak} MiB");
    assert!(
        peak < 200,
        "the coordinator held the log in memory: {peak} MiB"
    );
    let stored = cluster.dir.path().join(format!(
        "coordinator/store/runs/{run}/jobs/c1_loud/loud/log.txt"
    ));
    assert_eq!(
        std::fs::metadata(&stored).unwrap().len(),
        1 << 30,
        "the whole log is in the store"
    );
    // The report is written before the coordinator hears it was, and empties the spool then.
    let spool = cluster.dir.path().join("coordinator/logs");
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::fs::read_dir(&spool).unwrap().count() > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        std::fs::read_dir(&spool).unwrap().count(),
        0,
        "the spool is emptied once the store has the log"
    );
    let _ = worker.kill();
    let _ = worker.wait();
}

#[test]
fn a_coordinator_killed_mid_run_carries_on_after_a_restart_without_rerunning_shards() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let address = format!("127.0.0.1:{port}");
    let key_file = dir.path().join("secrets.key");
    std::fs::write(&key_file, "8f".repeat(32)).unwrap();
    let url = format!("http://{address}");
    let coordinator = || {
        spawn_coordinator_on(
            &address,
            dir.path(),
            &[
                "--lease-ttl".as_ref(),
                "10s".as_ref(),
                "--secrets-key-file".as_ref(),
                key_file.as_os_str(),
            ],
        )
        .0
    };
    let list = |what: &[&str]| -> Value {
        let out = Command::new(bin("shardci"))
            .args(what)
            .args(["--json", "--coordinator", &url])
            .output()
            .unwrap();
        serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
    };
    let mut first = coordinator();
    let mut worker = Command::new(bin("shardci-worker"))
        .args([
            "--coordinator",
            &url,
            "--id",
            "restart-w1",
            "--executor",
            "process",
        ])
        .args(["--slots", "2"])
        .arg("--data-dir")
        .arg(dir.path().join("worker"))
        .env("SHARDCI_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Three shards on two slots: the third is handed out by the restarted coordinator, with
    // the run's secret it read back (sealed) from its state.
    let repo = fixture(
        3,
        "[test_types.slow]\ncommand = \"echo start $SHARDCI_CONNECTOR; sleep 6; test \\\"$RESTART_SECRET\\\" = opensesame && echo done $SHARDCI_CONNECTOR\"\nsecrets = [\"RESTART_SECRET\"]\n\n[templates.generic]\ntest_types = [\"slow\"]\n",
    );
    let watch_log = dir.path().join("watch.log");
    let watcher = Command::new(bin("shardci"))
        .args([
            "submit",
            "--all",
            "--workers",
            "3",
            "--watch",
            "--secret",
            "RESTART_SECRET",
            "--coordinator",
            &url,
        ])
        .arg("--repo")
        .arg(repo.path())
        .env("NO_COLOR", "1")
        .env("RESTART_SECRET", "opensesame")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&watch_log).unwrap())
        .spawn()
        .unwrap();
    // Both shards running on the worker, then the coordinator dies.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let running = list(&["workers", "list"])
            .as_array()
            .and_then(|w| w.first().cloned())
            .and_then(|w| w["current_shards"].as_array().map(|s| s.len()))
            .unwrap_or(0);
        if running == 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "both shards started: {} {}",
            list(&["workers", "list"]),
            std::fs::read_to_string(&watch_log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    signal(first.id(), "-KILL");
    let _ = first.wait();
    let mut second = coordinator();
    let jobs = ["c1/slow".into(), "c2/slow".into(), "c3/slow".into()];
    let run = watched_once(watcher, &watch_log, &jobs);
    let shown = list(&["runs", "show", &run]);
    let results = results(&shown);
    assert_eq!(results.len(), 3, "one final result per job: {shown}");
    assert!(
        results.iter().all(|r| r["attempt"] == 1),
        "the running shards were not run again: {shown}"
    );
    let _ = worker.kill();
    let _ = worker.wait();
    let _ = second.kill();
    let _ = second.wait();
}
