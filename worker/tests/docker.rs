//! The Docker executor against the real Docker daemon: every way a step can end, isolation,
//! labels and cleanup. Images are built locally from Debian's static busybox (no registry).

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use bollard::query_parameters::{CreateContainerOptionsBuilder, ListContainersOptionsBuilder};
use shardci_types::{FailureClass, ImageBuild, JobSpec, Resources, Status, StepSpec};
use shardci_worker::dag::run_job;
use shardci_worker::executor::{
    DockerExecutor, Executor, LABEL_INSTANCE, LABEL_MANAGED, LABEL_WORKER, StepContext,
};
use shardci_worker::images::{busybox_image, ensure};
use shardci_worker::logs::{LogSink, MaskingSink, MemorySink};
use tokio_util::sync::CancellationToken;

use shardci_testkit::IMAGE;

async fn executor(worker: &str) -> DockerExecutor {
    let executor = DockerExecutor::connect(worker)
        .await
        .expect("the Docker daemon is reachable");
    let dir = tempfile::tempdir().unwrap();
    let image = busybox_image(IMAGE, dir.path()).unwrap();
    ensure(executor.client(), &image, &mut MemorySink::default())
        .await
        .expect("the busybox image builds");
    executor
}

fn step(name: &str, command: &str) -> StepSpec {
    StepSpec {
        workdir: "conn".into(),
        env: vec![("GREETING".into(), "hello".into())],
        timeout: Duration::from_secs(60),
        resources: Resources {
            memory_bytes: 128 * 1024 * 1024,
            milli_cpus: 1000,
            pids: 64,
        },
        ..StepSpec::new(name, IMAGE, command)
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    ctx: StepContext,
}

fn fixture(test: &str) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("src");
    std::fs::create_dir_all(source.join("conn")).unwrap();
    std::fs::write(source.join("conn/data.txt"), "from the source tree\n").unwrap();
    let ctx = StepContext {
        source_dir: source,
        work_dir: dir.path().join("work"),
        labels: BTreeMap::from([
            ("shardci.run".into(), format!("test-{test}")),
            ("shardci.job".into(), test.into()),
        ]),
        secrets: BTreeMap::new(),
        cancel: CancellationToken::new(),
        stop_grace: Duration::from_secs(1),
        step_key: None,
        dependency_keys: Vec::new(),
    };
    Fixture { _dir: dir, ctx }
}

async fn containers_of_run(executor: &DockerExecutor, run: &str) -> usize {
    let filters = HashMap::from([("label".to_string(), vec![format!("shardci.run={run}")])]);
    let options = ListContainersOptionsBuilder::default()
        .all(true)
        .filters(&filters)
        .build();
    executor
        .client()
        .list_containers(Some(options))
        .await
        .unwrap()
        .len()
}

#[tokio::test]
async fn a_successful_step_sees_its_source_env_and_workdir_and_leaves_no_container() {
    let executor = executor("w-success").await;
    let f = fixture("success");
    let mut logs = MemorySink::default();
    let outcome = executor
        .run(&step("unit", "cat data.txt; echo \"$GREETING from $(pwd)\"; echo work > $SHARDCI_WORK_DIR/out.txt"), &f.ctx, &mut logs)
        .await;
    assert_eq!(
        outcome.status,
        Status::Success,
        "{outcome:?} {}",
        logs.text()
    );
    assert_eq!(outcome.exit_code, Some(0));
    assert_eq!(logs.text(), "from the source tree\nhello from /src/conn\n");
    assert_eq!(
        std::fs::read_to_string(f.ctx.work_dir.join("out.txt")).unwrap(),
        "work\n"
    );
    assert_eq!(
        containers_of_run(&executor, "test-success").await,
        0,
        "the container was removed"
    );
}

#[tokio::test]
async fn a_failing_command_is_a_test_failure_with_its_exit_code() {
    let executor = executor("w-fail").await;
    let f = fixture("fail");
    let mut logs = MemorySink::default();
    let outcome = executor
        .run(&step("unit", "echo broken >&2; exit 3"), &f.ctx, &mut logs)
        .await;
    assert_eq!(outcome.status, Status::Failure);
    assert_eq!(outcome.failure_class, Some(FailureClass::Test));
    assert_eq!(outcome.exit_code, Some(3));
    assert!(logs.text().contains("broken"));
}

#[tokio::test]
async fn the_source_is_read_only_and_there_is_no_network() {
    let executor = executor("w-iso").await;
    let f = fixture("iso");
    let mut logs = MemorySink::default();
    let outcome = executor
        .run(&step("unit", "ls /sys/class/net; if touch /src/conn/new 2>/dev/null; then echo WRITABLE; else echo read-only; fi"), &f.ctx, &mut logs)
        .await;
    assert_eq!(outcome.status, Status::Success, "{}", logs.text());
    assert_eq!(logs.text(), "lo\nread-only\n");
    assert!(!f.ctx.source_dir.join("conn/new").exists());
}

#[tokio::test]
async fn a_step_past_its_timeout_is_stopped_and_classified() {
    let executor = executor("w-timeout").await;
    let f = fixture("timeout");
    let mut s = step("integration", "echo started; sleep 60");
    s.timeout = Duration::from_secs(1);
    let started = Instant::now();
    let mut logs = MemorySink::default();
    let outcome = executor.run(&s, &f.ctx, &mut logs).await;
    assert_eq!(
        outcome.failure_class,
        Some(FailureClass::Timeout),
        "{outcome:?}"
    );
    assert_eq!(outcome.status, Status::Error);
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "stopped, not waited out"
    );
    assert!(logs.text().contains("timed out"));
    assert_eq!(containers_of_run(&executor, "test-timeout").await, 0);
}

#[tokio::test]
async fn a_step_past_its_memory_limit_is_classified_oom() {
    let executor = executor("w-oom").await;
    let f = fixture("oom");
    // dd fills a 64 MiB buffer at once: past the limit in one step (busybox tail, growing its
    // buffer by copies, took half a minute to get there and timed out under load).
    let mut s = step("unit", "dd if=/dev/zero of=/dev/null bs=64M count=1");
    s.resources.memory_bytes = 32 * 1024 * 1024;
    let outcome = executor.run(&s, &f.ctx, &mut MemorySink::default()).await;
    assert_eq!(
        outcome.failure_class,
        Some(FailureClass::Oom),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn a_missing_image_is_classified_image() {
    let executor = executor("w-image").await;
    let f = fixture("image");
    let mut s = step("unit", "true");
    s.image = "shardci-test/no-such-image:0".into();
    let outcome = executor.run(&s, &f.ctx, &mut MemorySink::default()).await;
    assert_eq!(
        outcome.failure_class,
        Some(FailureClass::Image),
        "{outcome:?}"
    );
    assert!(outcome.message.contains("shardci-test/no-such-image:0"));
}

#[tokio::test]
async fn cancellation_stops_the_container_within_the_grace_period() {
    let executor = executor("w-cancel").await;
    let f = fixture("cancel");
    let cancel = f.ctx.cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        cancel.cancel();
    });
    let started = Instant::now();
    let outcome = executor
        .run(
            &step("acceptance", "sleep 60"),
            &f.ctx,
            &mut MemorySink::default(),
        )
        .await;
    assert_eq!(outcome.status, Status::Cancelled, "{outcome:?}");
    assert!(started.elapsed() < Duration::from_secs(20));
    assert_eq!(containers_of_run(&executor, "test-cancel").await, 0);
}

#[tokio::test]
async fn secrets_reach_the_step_and_are_masked_in_its_logs() {
    let executor = executor("w-secret").await;
    let mut f = fixture("secret");
    f.ctx
        .secrets
        .insert("API_TOKEN".into(), "tok-123456\nsecond-line-7890".into());
    let mut s = step("unit", "echo \"token=$API_TOKEN\"");
    s.secrets = vec!["API_TOKEN".into()];
    let values: Vec<String> = f.ctx.secrets.values().cloned().collect();
    let mut logs = MaskingSink::new(MemorySink::default(), &values);
    let outcome = executor.run(&s, &f.ctx, &mut logs).await;
    assert_eq!(outcome.status, Status::Success);
    let text = logs.into_inner().text();
    assert_eq!(text, "token=***\n***\n");
}

#[tokio::test]
async fn build_steps_build_their_image_and_a_broken_dockerfile_fails_the_step() {
    let executor = executor("w-build").await;
    let f = fixture("build");
    std::fs::write(
        f.ctx.source_dir.join("conn/Dockerfile"),
        format!("FROM {IMAGE}\nCOPY data.txt /data.txt\n"),
    )
    .unwrap();
    let mut s = step("build", "echo built");
    s.build_image = Some(ImageBuild {
        context: "conn".into(),
        dockerfile: "conn/Dockerfile".into(),
        tag: "shardci-test/conn:dev".into(),
    });
    let outcome = executor.run(&s, &f.ctx, &mut MemorySink::default()).await;
    assert_eq!(outcome.status, Status::Success, "{outcome:?}");
    executor
        .client()
        .inspect_image("shardci-test/conn:dev")
        .await
        .expect("the connector image exists");

    std::fs::write(
        f.ctx.source_dir.join("conn/Dockerfile"),
        format!("FROM {IMAGE}\nRUN exit 7\n"),
    )
    .unwrap();
    s.build_image.as_mut().unwrap().tag = "shardci-test/broken:dev".into();
    let outcome = executor.run(&s, &f.ctx, &mut MemorySink::default()).await;
    assert_eq!(
        outcome.failure_class,
        Some(FailureClass::Test),
        "{outcome:?}"
    );
    assert!(
        outcome
            .message
            .contains("docker build of shardci-test/broken:dev failed"),
        "{}",
        outcome.message
    );
}

async fn remove_container(executor: &DockerExecutor, name: &str) {
    let force = bollard::query_parameters::RemoveContainerOptionsBuilder::default()
        .force(true)
        .build();
    let _ = executor.client().remove_container(name, Some(force)).await;
}

#[tokio::test]
async fn the_sweep_removes_only_containers_of_processes_that_are_gone() {
    let executor = executor("w-sweep").await;
    let dir = shardci_worker::instance::lock_dir();
    std::fs::create_dir_all(&dir).unwrap();
    // A process that died: its lock file is there and nobody holds it.
    let dead = "00000000000dead1";
    std::fs::write(dir.join(format!("{dead}.lock")), "").unwrap();
    // A process that lives: its lock is held (here, by this test).
    let alive = "00000000000a11fe";
    let held = std::fs::File::create(dir.join(format!("{alive}.lock"))).unwrap();
    held.try_lock().unwrap();
    let names = [
        ("shardci-orphan-dead", Some(dead)),
        ("shardci-orphan-alive", Some(alive)),
        ("shardci-orphan-unknown", None),
    ];
    for (name, instance) in names {
        remove_container(&executor, name).await;
        let mut labels = HashMap::from([
            (LABEL_MANAGED.to_string(), "true".to_string()),
            (LABEL_WORKER.to_string(), "w-sweep".to_string()),
        ]);
        if let Some(instance) = instance {
            labels.insert(LABEL_INSTANCE.to_string(), instance.to_string());
        }
        let body = bollard::models::ContainerCreateBody {
            image: Some(IMAGE.into()),
            cmd: Some(vec!["sleep".into(), "60".into()]),
            labels: Some(labels),
            ..Default::default()
        };
        executor
            .client()
            .create_container(
                Some(CreateContainerOptionsBuilder::default().name(name).build()),
                body,
            )
            .await
            .unwrap();
    }
    executor.sweep_orphans().await.unwrap();
    let exists = |name: &'static str| {
        let client = executor.client().clone();
        async move { client.inspect_container(name, None).await.is_ok() }
    };
    // Other tests' workers sweep this host too, and a lock another sweeper is probing at
    // that instant looks held: that sweep skips the dead instance and the other removes it.
    // Either way it goes, soon.
    let mut tries = 0;
    while exists("shardci-orphan-dead").await && tries < 20 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        executor.sweep_orphans().await.unwrap();
        tries += 1;
    }
    assert!(
        !exists("shardci-orphan-dead").await,
        "a dead process's container goes"
    );
    assert!(
        exists("shardci-orphan-alive").await,
        "a live process's container stays"
    );
    assert!(
        exists("shardci-orphan-unknown").await,
        "an unknown one stays"
    );
    assert!(
        !dir.join(format!("{dead}.lock")).exists(),
        "the dead lock is forgotten"
    );
    for name in ["shardci-orphan-alive", "shardci-orphan-unknown"] {
        remove_container(&executor, name).await;
    }
    drop(held);
}

#[tokio::test]
async fn dependents_of_a_failed_step_are_skipped_with_the_reason() {
    let executor = executor("w-dag").await;
    let f = fixture("dag");
    let mut unit = step("unit", "echo unit");
    unit.depends_on = vec!["build".into()];
    let mut acceptance = step("acceptance", "echo acceptance");
    acceptance.depends_on = vec!["build".into()];
    let lint = step("lint", "echo lint");
    let job = JobSpec {
        id: "c/unit".into(),
        steps: vec![step("build", "exit 1"), unit, acceptance, lint],
    };
    let outcome = run_job(&executor, &job, &f.ctx, None, |_| {
        Box::new(MemorySink::default()) as Box<dyn LogSink>
    })
    .await;
    let by_name: HashMap<&str, _> = outcome.steps.iter().map(|s| (s.step.as_str(), s)).collect();
    assert_eq!(outcome.status, Status::Failure);
    assert_eq!(by_name["build"].status, Status::Failure);
    assert_eq!(by_name["unit"].status, Status::Skipped);
    assert_eq!(by_name["unit"].message, "dependency build failed");
    assert_eq!(by_name["acceptance"].status, Status::Skipped);
    assert_eq!(
        by_name["lint"].status,
        Status::Success,
        "an independent step still runs"
    );
}

/// Counts what it is given and keeps only the tail: a 300 MB log must not be held anywhere.
#[derive(Default)]
struct CountingSink {
    bytes: u64,
    tail: Vec<u8>,
}

impl LogSink for CountingSink {
    fn write(&mut self, bytes: &[u8]) {
        self.bytes += bytes.len() as u64;
        self.tail.extend_from_slice(bytes);
        let keep = self.tail.len().saturating_sub(256);
        self.tail.drain(..keep);
    }
}

/// The peak resident memory of this test process, in MiB (nextest runs each test alone).
fn peak_rss_mib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb / 1024)
}

#[tokio::test]
async fn a_300_mb_log_arrives_whole_whatever_the_daemon_rotates() {
    // The machine's daemon rotates json-file logs at 10 MB x 3: reading the daemon's log kept
    // 30 MB of this. The attach stream keeps all of it.
    let executor = executor("w-bigl").await;
    let f = fixture("bigl");
    let mut sink = CountingSink::default();
    let line = "0123456789012345678901234567890123456789012345678"; // 49 + newline = 50 bytes
    let lines = 6_000_000u64; // 300 MB
    // stderr first: the two streams are not ordered with each other.
    let command = format!("echo on-stderr >&2; yes {line} | head -n {lines}; echo the-last-line");
    let outcome = executor
        .run(&step("loud", &command), &f.ctx, &mut sink)
        .await;
    assert_eq!(outcome.status, Status::Success, "{outcome:?}");
    let expected = "on-stderr\n".len() as u64 + lines * 50 + "the-last-line\n".len() as u64;
    assert_eq!(sink.bytes, expected, "every byte of stdout and stderr");
    let tail = String::from_utf8_lossy(&sink.tail);
    assert!(
        tail.ends_with(&format!("{line}\nthe-last-line\n")),
        "{tail}"
    );
    let peak = peak_rss_mib();
    println!("peak resident memory while streaming 300 MB: {peak} MiB");
    assert!(
        peak < 200,
        "the log streamed through in bounded memory ({peak} MiB)"
    );
}

#[tokio::test]
async fn steps_run_with_least_privilege_unless_they_ask() {
    let executor = executor("w-priv").await;
    let f = fixture("priv");
    let probe = "id -u; id -g; if touch /etc/x 2>/dev/null; then echo root-writable; else echo root-read-only; fi; \
                 touch /tmp/t && echo tmp-writable; touch $SHARDCI_WORK_DIR/w && echo work-writable; \
                 grep CapEff /proc/self/status; sleep 2";
    let mut logs = MemorySink::default();
    let probe_step = step("unit", probe);
    let running = executor.run(&probe_step, &f.ctx, &mut logs);
    let inspect = async {
        // While the step sleeps, its container as the daemon sees it.
        let filters = HashMap::from([(
            "label".to_string(),
            vec!["shardci.run=test-priv".to_string()],
        )]);
        let options = ListContainersOptionsBuilder::default()
            .filters(&filters)
            .build();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let found = executor
                .client()
                .list_containers(Some(options.clone()))
                .await
                .unwrap();
            if let Some(id) = found.first().and_then(|c| c.id.clone()) {
                return executor
                    .client()
                    .inspect_container(&id, None)
                    .await
                    .unwrap();
            }
            assert!(Instant::now() < deadline, "the step's container appeared");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let (outcome, inspected) = tokio::join!(running, inspect);
    assert_eq!(outcome.status, Status::Success, "{}", logs.text());
    let host = inspected.host_config.expect("a host config");
    assert_eq!(host.cap_drop, Some(vec!["ALL".to_string()]));
    assert_eq!(host.readonly_rootfs, Some(true));
    assert_eq!(host.privileged, Some(false));
    assert!(
        host.security_opt
            .unwrap_or_default()
            .contains(&"no-new-privileges".to_string())
    );
    assert_eq!(host.log_config.and_then(|l| l.typ).as_deref(), Some("none"));
    assert_eq!(
        inspected.config.and_then(|c| c.user).as_deref(),
        Some("65534:65534")
    );
    assert_eq!(
        logs.text(),
        "65534\n65534\nroot-read-only\ntmp-writable\nwork-writable\nCapEff:\t0000000000000000\n"
    );

    // A step that asks for root, a capability and a writable root gets exactly that.
    let f = fixture("priv2");
    let mut logs = MemorySink::default();
    let asking = StepSpec {
        user: Some("0".into()),
        cap_add: vec!["CHOWN".into()],
        read_only_root: false,
        ..step(
            "unit",
            "id -u; touch /etc/x && echo root-writable; grep CapEff /proc/self/status",
        )
    };
    let outcome = executor.run(&asking, &f.ctx, &mut logs).await;
    assert_eq!(outcome.status, Status::Success, "{}", logs.text());
    assert_eq!(logs.text(), "0\nroot-writable\nCapEff:\t0000000000000001\n");
}

async fn remove_images(docker: &bollard::Docker, tags: &[&str]) {
    for tag in tags {
        let _ = docker
            .remove_image(
                tag,
                None::<bollard::query_parameters::RemoveImageOptions>,
                None,
            )
            .await;
    }
}

/// Project images (`[[images]]`) are built from the checkout where missing, in order (the
/// second builds on the first); a host file the worker does not give and a context that is a
/// link out of the checkout are refused before anything is built.
#[tokio::test]
async fn project_images_are_built_from_the_checkout_and_host_files_are_given_only_on_purpose() {
    use shardci_types::ProjectImage;
    let executor = executor("project-images").await;
    let docker = executor.client().clone();
    let checkout = tempfile::tempdir().unwrap();
    let base = checkout.path().join("images/base");
    let on_top = checkout.path().join("images/on-top");
    std::fs::create_dir_all(&base).unwrap();
    std::fs::create_dir_all(&on_top).unwrap();
    std::fs::write(
        base.join("Dockerfile"),
        "FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\n",
    )
    .unwrap();
    std::fs::write(
        on_top.join("Dockerfile"),
        "FROM shardci-test/project-base:1\nRUN echo built on top > /marker\n",
    )
    .unwrap();
    let tags = ["shardci-test/project-base:1", "shardci-test/project-top:1"];
    remove_images(&docker, &tags).await;
    let images = [
        ProjectImage::new(
            tags[0].into(),
            "images/base",
            "Dockerfile",
            vec![("busybox".into(), "/bin/busybox".into())],
        )
        .unwrap(),
        ProjectImage::new(tags[1].into(), "images/on-top", "Dockerfile", vec![]).unwrap(),
    ];
    let mut log = MemorySink::default();
    let built = executor
        .ensure_project_images(&images, checkout.path(), &mut log)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", log.text()));
    assert_eq!(built, tags, "both built, in order");
    let again = executor
        .ensure_project_images(&images, checkout.path(), &mut log)
        .await
        .expect("present");
    assert!(again.is_empty(), "present images are not built again");

    // A host file the worker was not told to give (the default gives only /bin/busybox).
    let greedy = ProjectImage::new(
        "shardci-test/greedy:1".into(),
        "images/base",
        "Dockerfile",
        vec![("busybox".into(), "/etc/shadow".into())],
    )
    .unwrap();
    let refused = executor
        .ensure_project_images(&[greedy], checkout.path(), &mut log)
        .await
        .expect_err("refused");
    assert!(
        refused.contains("/etc/shadow") && refused.contains("--image-host-file"),
        "{refused}"
    );

    // A context that is a symbolic link out of the checkout.
    std::os::unix::fs::symlink("/etc", checkout.path().join("images/escape")).unwrap();
    let escaping = ProjectImage::new(
        "shardci-test/escape:1".into(),
        "images/escape",
        "Dockerfile",
        vec![],
    )
    .unwrap();
    let refused = executor
        .ensure_project_images(&[escaping], checkout.path(), &mut log)
        .await
        .expect_err("refused");
    assert!(refused.contains("leaves the checkout"), "{refused}");
    remove_images(&docker, &tags).await;
}
