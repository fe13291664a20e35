//! Per-step overhead of the Docker executor: a no-op step (`true`) run through
//! `DockerExecutor` (create with limits, labels and mounts, start, stream logs, wait, remove)
//! next to `docker run --rm <same image> true` in a loop, in the same run.
//!
//! Run: `cargo bench -p shardci-worker --bench step_overhead [-- ITERATIONS]` (default 30; needs
//! the Docker daemon and Debian's busybox-static, as the tests do).

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use shardci_types::{Resources, Status, StepSpec};
use shardci_worker::executor::{DockerExecutor, Executor, StepContext};
use shardci_worker::images::{busybox_image, ensure};
use shardci_worker::logs::MemorySink;
use tokio_util::sync::CancellationToken;

use shardci_testkit::IMAGE;

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn main() {
    let iterations: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(30);
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let executor = runtime.block_on(async {
        let executor = DockerExecutor::connect("bench-step-overhead")
            .await
            .expect("the Docker daemon is reachable");
        let context = dir.path().join("image");
        std::fs::create_dir_all(&context).expect("mkdir");
        let image = busybox_image(IMAGE, &context).expect("write the Dockerfile");
        ensure(executor.client(), &image, &mut MemorySink::default())
            .await
            .expect("the busybox image builds");
        executor
    });
    let source = dir.path().join("src");
    std::fs::create_dir_all(&source).expect("mkdir");
    let ctx = StepContext {
        source_dir: source,
        work_dir: dir.path().join("work"),
        labels: BTreeMap::from([("shardci.run".to_string(), "bench".to_string())]),
        secrets: BTreeMap::new(),
        cancel: CancellationToken::new(),
        stop_grace: Duration::from_secs(1),
        step_key: None,
        dependency_keys: Vec::new(),
    };
    let step = StepSpec {
        timeout: Duration::from_secs(60),
        resources: Resources {
            memory_bytes: 128 << 20,
            milli_cpus: 1000,
            pids: 64,
        },
        ..StepSpec::new("noop", IMAGE, "true")
    };

    // Alternate the two so drift in the daemon's state affects both alike.
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for _ in 0..iterations {
        let started = Instant::now();
        let outcome = runtime.block_on(executor.run(&step, &ctx, &mut MemorySink::default()));
        ours.push(started.elapsed());
        assert_eq!(outcome.status, Status::Success, "{}", outcome.message);

        let started = Instant::now();
        let status = Command::new("docker")
            .args(["run", "--rm", "--network", "none", IMAGE, "true"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("docker runs");
        theirs.push(started.elapsed());
        assert!(status.success());
    }
    let (ours, theirs) = (median(ours), median(theirs));
    println!("no-op step, median of {iterations}:");
    println!(
        "  shardci Docker executor      {:>8.1} ms",
        ours.as_secs_f64() * 1e3
    );
    println!(
        "  docker run --rm IMAGE true   {:>8.1} ms",
        theirs.as_secs_f64() * 1e3
    );
    println!(
        "  ratio                        {:>8.2}x",
        ours.as_secs_f64() / theirs.as_secs_f64()
    );
}
