//! Dispatch throughput and lease latency over real gRPC on loopback.
//!
//! Run: `cargo bench -p shardci-coordinator --bench lease` (`-- 1000` for 1,000 workers,
//! `-- overhead` for only the tracing and metrics comparison at its end).
//!
//! N simulated workers (default 200) each hold a session with an in-process coordinator and
//! loop: request work, receive an assignment, report it finished, wait for the
//! acknowledgement. The coordinator runs on each state store in turn: memory, the embedded
//! file store (fsync'd WAL) and etcd (a real `etcd` process on loopback, with leader election
//! and fenced writes, as deployed). Printed beside them, on the same machine in the same run: a
//! bare tonic session that answers every request with a canned assignment (same messages, no
//! scheduler), and a bare tonic unary echo. The ratios are what the scheduler and its
//! durability cost. Durable stores lease fewer shards per worker (the rate is what counts).
//! The memory store and the echo alternate three times (the machine drifts between runs);
//! the median pair is printed with every pair's ratio.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use shardci_coordinator::server::{ElectionConfig, ServerConfig, serve};
use shardci_coordinator::state::{EtcdStore, FileStore, MemoryStore, StateStore};
use shardci_proto::v1 as pb;
use shardci_proto::v1::client_service_client::ClientServiceClient;
use shardci_proto::v1::worker_service_client::WorkerServiceClient;
use shardci_proto::v1::worker_service_server::{WorkerService, WorkerServiceServer};
use shardci_scheduling::schedule::SchedulerConfig;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const SHARDS_PER_WORKER: usize = 25;

fn msg(m: pb::worker_message::Msg) -> pb::WorkerMessage {
    pb::WorkerMessage { msg: Some(m) }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

struct Figures {
    leases: usize,
    elapsed: Duration,
    latencies: Vec<Duration>,
}

impl Figures {
    fn line(&self, name: &str) -> String {
        format!(
            "{name:<40} {:>10.0} {:>10.2} {:>10.2}",
            self.leases as f64 / self.elapsed.as_secs_f64(),
            percentile(&self.latencies, 0.5).as_secs_f64() * 1000.0,
            percentile(&self.latencies, 0.99).as_secs_f64() * 1000.0
        )
    }
}

/// One simulated worker: request, get an assignment, finish it, get the ack; `rounds` times.
/// Connects first and waits at `ready`, so connection set-up stays out of the timing.
async fn simulated_worker(
    url: String,
    id: usize,
    rounds: usize,
    ready: Arc<tokio::sync::Barrier>,
    connects: Arc<tokio::sync::Semaphore>,
) -> Vec<Duration> {
    // A fleet does not connect in one instant: at most 64 connects at once, retried on reset.
    let permit = connects.acquire().await.expect("semaphore");
    let mut attempt = 0;
    let (tx, mut inbound) = loop {
        attempt += 1;
        let opened = async {
            let mut client = WorkerServiceClient::connect(url.clone())
                .await
                .map_err(|e| e.to_string())?;
            let (tx, rx) = mpsc::channel(16);
            let hello = pb::Hello {
                worker_id: format!("sim-{id}"),
                slots: 1,
                ..Default::default()
            };
            tx.send(msg(pb::worker_message::Msg::Hello(hello)))
                .await
                .map_err(|e| e.to_string())?;
            let inbound = client
                .session(ReceiverStream::new(rx))
                .await
                .map_err(|e| e.to_string())?
                .into_inner();
            Ok::<_, String>((tx, inbound))
        };
        match opened.await {
            Ok(pair) => break pair,
            Err(e) if attempt < 5 => {
                eprintln!("worker {id}: connect attempt {attempt} failed ({e}); retrying");
                tokio::time::sleep(Duration::from_millis(50 * attempt)).await;
            }
            Err(e) => panic!("worker {id} could not connect: {e}"),
        }
    };
    drop(permit);
    ready.wait().await;
    let mut latencies = Vec::with_capacity(rounds);
    let mut done = 0;
    let mut asked = Instant::now();
    tx.send(msg(pb::worker_message::Msg::RequestWork(pb::RequestWork {
        free_slots: 1,
    })))
    .await
    .expect("ask");
    while done < rounds {
        let Ok(Some(message)) = inbound.message().await else {
            break;
        };
        match message.msg {
            Some(pb::coordinator_message::Msg::Assignment(assignment)) => {
                latencies.push(asked.elapsed());
                let results = assignment
                    .jobs
                    .iter()
                    .map(|j| pb::JobResult {
                        job_id: j.id.clone(),
                        status: pb::Status::Success as i32,
                        steps: vec![],
                        attempt: 1,
                        flaky: false,
                    })
                    .collect();
                let finished = pb::ShardFinished {
                    shard: assignment.shard,
                    results,
                };
                tx.send(msg(pb::worker_message::Msg::ShardFinished(finished)))
                    .await
                    .expect("finish");
            }
            Some(pb::coordinator_message::Msg::Ack(_)) => {
                done += 1;
                asked = Instant::now();
                tx.send(msg(pb::worker_message::Msg::RequestWork(pb::RequestWork {
                    free_slots: 1,
                })))
                .await
                .expect("ask");
            }
            Some(pb::coordinator_message::Msg::NoWork(_)) => {
                tokio::time::sleep(Duration::from_millis(5)).await;
                asked = Instant::now();
                tx.send(msg(pb::worker_message::Msg::RequestWork(pb::RequestWork {
                    free_slots: 1,
                })))
                .await
                .expect("ask");
            }
            _ => {}
        }
    }
    latencies
}

async fn drive(url: &str, workers: usize, rounds: usize) -> Figures {
    let ready = Arc::new(tokio::sync::Barrier::new(workers + 1));
    let connects = Arc::new(tokio::sync::Semaphore::new(64));
    let tasks: Vec<_> = (0..workers)
        .map(|i| {
            tokio::spawn(simulated_worker(
                url.to_string(),
                i,
                rounds,
                ready.clone(),
                connects.clone(),
            ))
        })
        .collect();
    ready.wait().await;
    let start = Instant::now();
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.expect("worker task"));
    }
    let elapsed = start.elapsed();
    latencies.sort();
    Figures {
        leases: latencies.len(),
        elapsed,
        latencies,
    }
}

fn plan(shards: usize) -> pb::Plan {
    let step = pb::Step {
        name: "unit".into(),
        image: "busybox".into(),
        command: "true".into(),
        ..Default::default()
    };
    let jobs = (0..shards)
        .map(|i| pb::Job {
            id: format!("c{i}/unit"),
            steps: vec![step.clone()],
            expected_seconds: 1.0,
            ..Default::default()
        })
        .collect();
    let shards = (0..shards)
        .map(|i| pb::Shard {
            id: format!("shard-{i:06}"),
            job_ids: vec![format!("c{i}/unit")],
            expected_seconds: 1.0,
            requires: vec![],
            after: vec![],
        })
        .collect();
    pb::Plan {
        jobs,
        shards,
        ..Default::default()
    }
}

/// The coordinator's figures on `store`; `shared` campaigns for leadership first, as
/// coordinators on etcd do.
async fn shardci_figures(
    workers: usize,
    rounds: usize,
    store: Arc<dyn StateStore>,
    shared: bool,
) -> Figures {
    observed_figures(workers, rounds, store, shared, false).await
}

/// [`shardci_figures`]; `observed` also serves `/metrics` and scrapes it every 100 ms, as a
/// Prometheus server would (ten times as often as usual).
async fn observed_figures(
    workers: usize,
    rounds: usize,
    store: Arc<dyn StateStore>,
    shared: bool,
    observed: bool,
) -> Figures {
    let shutdown = CancellationToken::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let data = tempfile::tempdir().expect("tempdir");
    let metrics = observed.then(|| std::net::TcpListener::bind("127.0.0.1:0").expect("bind"));
    let scrape_at = metrics.as_ref().and_then(|l| l.local_addr().ok());
    let config = ServerConfig {
        metrics,
        max_bundle_bytes: 1 << 20,
        max_active_runs: 16,
        election: shared.then(|| ElectionConfig {
            ttl: Duration::from_secs(5),
            advertise: url.clone(),
        }),
        ..ServerConfig::new(
            data.path().to_path_buf(),
            SchedulerConfig {
                lease_ttl_ms: 60_000,
                max_infra_retries: 2,
                ..SchedulerConfig::default()
            },
        )
    };
    let server = tokio::spawn(serve(listener, config, store, shutdown.clone()));
    let mut client = ClientServiceClient::connect(url.clone())
        .await
        .expect("client");
    // Until it leads, a coordinator answers UNAVAILABLE.
    while client.ping(pb::PingRequest {}).await.is_err() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let bundle = b"bench".to_vec();
    let digest = hex::encode(Sha256::digest(&bundle));
    client
        .upload_source(tokio_stream::iter(vec![pb::SourceChunk {
            expected_digest: digest.clone(),
            data: bundle,
        }]))
        .await
        .expect("upload");
    let source = pb::Source {
        location: Some(pb::source::Location::BundleDigest(digest)),
        ..Default::default()
    };
    client
        .submit_run(pb::SubmitRunRequest {
            plan_request: Some(pb::PlanRequest {
                source: Some(source),
                ..Default::default()
            }),
            plan: Some(plan(workers * rounds)),
            ..Default::default()
        })
        .await
        .expect("submit");
    let scraper = scrape_at.map(|address| {
        let stop = shutdown.clone();
        tokio::spawn(async move {
            let mut scrapes = 0u32;
            while !stop.is_cancelled() {
                if let Ok(mut stream) = tokio::net::TcpStream::connect(address).await {
                    use tokio::io::{AsyncReadExt, AsyncWriteExt};
                    let _ = stream
                        .write_all(b"GET /metrics HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
                        .await;
                    let mut page = Vec::new();
                    let _ = stream.read_to_end(&mut page).await;
                    scrapes += u32::from(page.starts_with(b"HTTP/1.1 200"));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            scrapes
        })
    });
    let figures = drive(&url, workers, rounds).await;
    shutdown.cancel();
    let _ = server.await;
    if let Some(scraper) = scraper {
        let _ = scraper.await;
    }
    figures
}

/// An OTLP trace receiver that counts the spans it gets.
#[derive(Clone, Default)]
struct SpanCounter(Arc<std::sync::atomic::AtomicUsize>);

#[tonic::async_trait]
impl opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::TraceService
    for SpanCounter
{
    async fn export(
        &self,
        request: tonic::Request<
            opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest,
        >,
    ) -> Result<
        tonic::Response<
            opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse,
        >,
        tonic::Status,
    > {
        let spans: usize = request
            .into_inner()
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .map(|s| s.spans.len())
            .sum();
        self.0
            .fetch_add(spans, std::sync::atomic::Ordering::Relaxed);
        Ok(tonic::Response::new(Default::default()))
    }
}

/// Shards per worker in an overhead run: long enough (seconds, tens of thousands of leases)
/// that the scrapes and any exports fall inside the timing, not after it.
const OVERHEAD_SHARDS_PER_WORKER: usize = 200;

/// Off/on pairs in the overhead comparison, an even number (pairs swap CPUs): single pairs on
/// this machine vary by a tenth.
const OVERHEAD_PAIRS: usize = 16;

/// The CPUs an overhead child pins itself to (comma-separated), before its runtime starts.
const OVERHEAD_CPUS: &str = "SHARDCI_BENCH_OVERHEAD_CPUS";

/// The CPUs this process may run on.
fn allowed_cpus() -> Vec<usize> {
    // SAFETY: a zeroed cpu_set_t is an empty set, and sched_getaffinity writes at most its size.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    let size = std::mem::size_of::<libc::cpu_set_t>();
    if unsafe { libc::sched_getaffinity(0, size, &mut set) } != 0 {
        return Vec::new();
    }
    (0..libc::CPU_SETSIZE as usize)
        .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
        .collect()
}

/// Pins this process (its threads started after this call) to `cpus`, a comma-separated list.
fn pin_to(cpus: &str) {
    // SAFETY: as in allowed_cpus; CPU_SET only writes inside the set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for cpu in cpus
        .split(',')
        .filter_map(|c| c.trim().parse::<usize>().ok())
    {
        unsafe { libc::CPU_SET(cpu, &mut set) };
    }
    let size = std::mem::size_of::<libc::cpu_set_t>();
    let pinned = unsafe { libc::sched_setaffinity(0, size, &set) } == 0;
    assert!(pinned, "could not pin the bench to CPUs {cpus}");
}

/// The CPUs of an overhead comparison: two disjoint halves of those allowed, one for each
/// side of a pair, which run at the same time. `None` on one CPU: both sides share it.
fn overhead_cpus() -> Option<OverheadCpus> {
    let cpus = allowed_cpus();
    if cpus.len() < 2 {
        return None;
    }
    let (first, second) = cpus.split_at(cpus.len() / 2);
    let list = |cpus: &[usize]| {
        cpus.iter()
            .map(usize::to_string)
            .collect::<Vec<_>>()
            .join(",")
    };
    Some(OverheadCpus {
        halves: [list(first), list(second)],
    })
}

/// Where the two sides of an overhead pair run, as lists for [`OVERHEAD_CPUS`].
struct OverheadCpus {
    halves: [String; 2],
}

/// The environment variable that makes this bench a child of the overhead comparison:
/// `off` or `on` (a coordinator run) or `receiver` (the OTLP collector `on` exports to).
const OVERHEAD_CHILD: &str = "SHARDCI_BENCH_OVERHEAD_CHILD";

/// The CPU time this process has used, user and system, from `/proc/self/stat` (in clock
/// ticks of 1/100 s, as Linux reports them).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // The command name, in parentheses, may hold spaces: count fields after it.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are the 14th and 15th fields, the 12th and 13th after the name.
    (ticks(11) + ticks(12)) / 100.0
}

/// An OTLP collector in a process of its own, as in a deployment: prints its address, counts
/// the spans it receives until its standard input closes, then prints the count.
fn overhead_receiver(runtime: &tokio::runtime::Runtime) {
    let counter = SpanCounter::default();
    let address = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("addr");
        let service = opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::TraceServiceServer::new(counter.clone());
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        address
    });
    println!("{address}");
    let _ = std::io::Write::flush(&mut std::io::stdout());
    let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut Vec::new());
    println!("{}", counter.0.load(std::sync::atomic::Ordering::Relaxed));
}

/// One memory-store run in this (child) process, tracing and metrics `on` (OTLP export to
/// `OTEL_EXPORTER_OTLP_ENDPOINT`, `/metrics` scraped every 100 ms) or off; prints
/// `<leases/s> <CPU microseconds per lease>`.
fn overhead_child(runtime: &tokio::runtime::Runtime, workers: usize, on: bool) {
    // Both sides log as a coordinator does (the subscriber is installed either way); only
    // `on` exports spans.
    let telemetry =
        runtime.block_on(async { shardci_runtime::init_telemetry("shardci-coordinator", "error") });
    assert_eq!(
        telemetry.exporting(),
        on,
        "the OTLP exporter is on only when asked"
    );
    let cpu = cpu_seconds();
    let figures = runtime.block_on(observed_figures(
        workers,
        OVERHEAD_SHARDS_PER_WORKER,
        Arc::new(MemoryStore::new()),
        false,
        on,
    ));
    // Sending what is still batched is part of the cost.
    runtime.block_on(telemetry.shutdown());
    let cpu = cpu_seconds() - cpu;
    println!(
        "{} {}",
        figures.leases as f64 / figures.elapsed.as_secs_f64(),
        cpu * 1e6 / figures.leases as f64
    );
}

/// One overhead child's figures: leases per second, CPU microseconds per lease, and the spans
/// its collector received.
type OverheadFigures = (f64, f64, usize);

/// An OTLP collector process for an `on` child.
struct Collector {
    process: std::process::Child,
    lines: std::io::Lines<std::io::BufReader<std::process::ChildStdout>>,
    address: String,
}

impl Collector {
    fn start(bench: &std::path::Path, cpus: Option<&str>) -> Collector {
        let mut command = std::process::Command::new(bench);
        if let Some(cpus) = cpus {
            command.env(OVERHEAD_CPUS, cpus);
        }
        let mut process = command
            .env(OVERHEAD_CHILD, "receiver")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("the collector starts");
        let mut lines = std::io::BufRead::lines(std::io::BufReader::new(
            process.stdout.take().expect("stdout"),
        ));
        let address = lines
            .next()
            .and_then(Result::ok)
            .expect("the collector names its address");
        Collector {
            process,
            lines,
            address,
        }
    }

    /// Stops the collector; the spans it received.
    fn finish(mut self) -> usize {
        drop(self.process.stdin.take());
        let spans = self
            .lines
            .next()
            .and_then(Result::ok)
            .and_then(|l| l.parse().ok());
        let _ = self.process.wait();
        spans.unwrap_or(0)
    }
}

/// Starts a coordinator child, tracing and metrics on (exporting to `collector`) or off.
fn start_overhead_child(
    bench: &std::path::Path,
    workers: usize,
    cpus: Option<&str>,
    collector: Option<&Collector>,
) -> std::process::Child {
    let mut child = std::process::Command::new(bench);
    child
        .arg(workers.to_string())
        .env(
            OVERHEAD_CHILD,
            if collector.is_some() { "on" } else { "off" },
        )
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    if let Some(cpus) = cpus {
        child.env(OVERHEAD_CPUS, cpus);
    }
    if let Some(collector) = collector {
        child.env(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            format!("http://{}", collector.address),
        );
    }
    child.spawn().expect("the child bench starts")
}

/// A coordinator child's leases per second and CPU microseconds per lease.
fn overhead_child_figures(child: std::process::Child) -> (f64, f64) {
    let out = child.wait_with_output().expect("the child bench runs");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut fields = text.split_whitespace();
    let rate = fields.next().and_then(|f| f.parse().ok());
    let cpu = fields.next().and_then(|f| f.parse().ok());
    match (out.status.success(), rate, cpu) {
        (true, Some(rate), Some(cpu)) => (rate, cpu),
        _ => panic!(
            "the overhead child failed: {}{text}",
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

/// One pair: the `off` and `on` children at the same time, each on its own half of the CPUs
/// (swapped every other pair), the collector on the `on` side's, so whatever it costs counts
/// against tracing.
fn overhead_pair(
    workers: usize,
    pair: usize,
    cpus: Option<&OverheadCpus>,
) -> (OverheadFigures, OverheadFigures) {
    let bench = std::env::current_exe().expect("this bench");
    let (off_cpus, on_cpus) = match cpus {
        Some(cpus) if pair.is_multiple_of(2) => (Some(&cpus.halves[0]), Some(&cpus.halves[1])),
        Some(cpus) => (Some(&cpus.halves[1]), Some(&cpus.halves[0])),
        None => (None, None),
    };
    let collector = Collector::start(&bench, on_cpus.map(String::as_str));
    let on = start_overhead_child(
        &bench,
        workers,
        on_cpus.map(String::as_str),
        Some(&collector),
    );
    let off = start_overhead_child(&bench, workers, off_cpus.map(String::as_str), None);
    let (on, off) = (overhead_child_figures(on), overhead_child_figures(off));
    let spans = collector.finish();
    ((off.0, off.1, 0), (on.0, on.1, spans))
}

/// Tracing and metrics off against on, in child processes (tracing is switched on once per
/// process), [`OVERHEAD_PAIRS`] pairs; the median of each side and every pair's ratio, of
/// throughput and of the coordinator process's CPU per lease. The two sides of a pair run at
/// the same time on CPUs of their own ([`overhead_pair`]): this machine's speed drifts by a
/// third within minutes, which back-to-back runs took for overhead.
fn observability_overhead(workers: usize) {
    let cpus = overhead_cpus();
    let pairs: Vec<(OverheadFigures, OverheadFigures)> = (0..OVERHEAD_PAIRS)
        .map(|pair| overhead_pair(workers, pair, cpus.as_ref()))
        .collect();
    let median = |mut runs: Vec<f64>| {
        runs.sort_by(f64::total_cmp);
        runs[runs.len() / 2]
    };
    // Each pair ran at once, so its ratio is untouched by the machine's drift; but its two
    // CPUs differ (one takes the interrupts), and pairs swap them, so the figure is the
    // median of each two consecutive pairs' geometric mean, which cancels that out.
    let ratios = |of: &dyn Fn(&OverheadFigures) -> f64| {
        let ratios: Vec<f64> = pairs.iter().map(|(off, on)| of(on) / of(off)).collect();
        let listed = ratios
            .iter()
            .map(|r| format!("{r:.2}x"))
            .collect::<Vec<_>>()
            .join(", ");
        let swapped = ratios
            .chunks_exact(2)
            .map(|two| (two[0] * two[1]).sqrt())
            .collect();
        (median(swapped), listed)
    };
    let (off, on) = (
        median(pairs.iter().map(|p| p.0.0).collect()),
        median(pairs.iter().map(|p| p.1.0).collect()),
    );
    let (off_cpu, on_cpu) = (
        median(pairs.iter().map(|p| p.0.1).collect()),
        median(pairs.iter().map(|p| p.1.1).collect()),
    );
    let leases = workers * OVERHEAD_SHARDS_PER_WORKER;
    let spans = pairs.iter().map(|p| p.1.2).min().unwrap_or(0);
    match &cpus {
        Some(cpus) => println!(
            "observability: each pair's sides run at once, on CPUs {} and {} (swapped every other pair), the collector beside the `on` side",
            cpus.halves[0], cpus.halves[1]
        ),
        None => println!("observability: one CPU, which both sides and the collector share"),
    }
    println!(
        "observability, {leases} leases per run: off {off:.0} leases/s, {off_cpu:.0} us CPU per lease; on (OTLP export to a collector process, which received at least {spans} spans; /metrics scraped every 100 ms) {on:.0} leases/s, {on_cpu:.0} us CPU per lease"
    );
    let (throughput, throughput_pairs) = ratios(&|r| r.0);
    let (cpu, cpu_pairs) = ratios(&|r| r.1);
    println!(
        "observability on / off, {OVERHEAD_PAIRS} simultaneous pairs, the median of each two (CPUs swapped) pairs' geometric mean: throughput {throughput:.2}x (pairs: {throughput_pairs}), CPU per lease {cpu:.2}x (pairs: {cpu_pairs}); goal: under 10 % throughput cost"
    );
}

/// A session server with no scheduler: every request gets the same assignment at once.
struct EchoSession;

#[tonic::async_trait]
impl WorkerService for EchoSession {
    type SessionStream = std::pin::Pin<
        Box<dyn futures_util::Stream<Item = Result<pb::CoordinatorMessage, tonic::Status>> + Send>,
    >;

    async fn session(
        &self,
        request: tonic::Request<tonic::Streaming<pb::WorkerMessage>>,
    ) -> Result<tonic::Response<Self::SessionStream>, tonic::Status> {
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(async move {
            let step = pb::Step {
                name: "unit".into(),
                image: "busybox".into(),
                command: "true".into(),
                ..Default::default()
            };
            while let Ok(Some(message)) = inbound.message().await {
                let reply = match message.msg {
                    Some(pb::worker_message::Msg::RequestWork(_)) => {
                        pb::coordinator_message::Msg::Assignment(pb::Assignment {
                            shard: Some(pb::ShardRef {
                                run_id: "run".into(),
                                shard_id: "shard".into(),
                                attempt: 1,
                            }),
                            source: Some(pb::Source::default()),
                            jobs: vec![pb::Job {
                                id: "c/unit".into(),
                                steps: vec![step.clone()],
                                ..Default::default()
                            }],
                            secrets: Default::default(),
                            trace_context: Default::default(),
                            images: Vec::new(),
                        })
                    }
                    Some(pb::worker_message::Msg::ShardFinished(f)) => {
                        pb::coordinator_message::Msg::Ack(pb::Ack {
                            shard: f.shard,
                            outcome: pb::ack::Outcome::Accepted as i32,
                            message: String::new(),
                        })
                    }
                    _ => continue,
                };
                if tx
                    .send(Ok(pb::CoordinatorMessage { msg: Some(reply) }))
                    .await
                    .is_err()
                {
                    break;
                }
            }
        });
        Ok(tonic::Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    type FetchSourceStream = std::pin::Pin<
        Box<dyn futures_util::Stream<Item = Result<pb::SourceChunk, tonic::Status>> + Send>,
    >;

    async fn fetch_source(
        &self,
        _: tonic::Request<pb::FetchSourceRequest>,
    ) -> Result<tonic::Response<Self::FetchSourceStream>, tonic::Status> {
        Err(tonic::Status::unimplemented("bench"))
    }
}

async fn echo_figures(workers: usize) -> (Figures, Figures) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    let server = tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(WorkerServiceServer::new(EchoSession))
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(listener),
                stop.cancelled_owned(),
            )
            .await
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let session = drive(&url, workers, SHARDS_PER_WORKER).await;
    // Unary echo: the cheapest round trip tonic offers (FetchSource's refusal is a unary-shaped
    // call with no body work on either side).
    let ready = Arc::new(tokio::sync::Barrier::new(workers + 1));
    let connects = Arc::new(tokio::sync::Semaphore::new(64));
    let tasks: Vec<_> = (0..workers)
        .map(|_| {
            let url = url.clone();
            let ready = ready.clone();
            let connects = connects.clone();
            tokio::spawn(async move {
                let permit = connects.acquire().await.expect("semaphore");
                let mut client = WorkerServiceClient::connect(url).await.expect("connect");
                drop(permit);
                ready.wait().await;
                let mut latencies = Vec::with_capacity(SHARDS_PER_WORKER);
                for _ in 0..SHARDS_PER_WORKER {
                    let at = Instant::now();
                    let _ = client
                        .fetch_source(pb::FetchSourceRequest {
                            digest: String::new(),
                        })
                        .await;
                    latencies.push(at.elapsed());
                }
                latencies
            })
        })
        .collect();
    ready.wait().await;
    let start = Instant::now();
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.expect("echo task"));
    }
    let elapsed = start.elapsed();
    latencies.sort();
    shutdown.cancel();
    let _ = server.await;
    (
        session,
        Figures {
            leases: latencies.len(),
            elapsed,
            latencies,
        },
    )
}

/// Alternating runs of the memory store and the echo.
const REPEATS: usize = 3;

/// Shards per worker on the durable stores: fewer, since each lease is two durable writes.
const DURABLE_SHARDS_PER_WORKER: usize = 5;

fn main() {
    let workers: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(200);
    // Before the runtime's threads start, so they are pinned too.
    if let Ok(cpus) = std::env::var(OVERHEAD_CPUS) {
        pin_to(&cpus);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    if let Some(mode) = std::env::var_os(OVERHEAD_CHILD) {
        if mode == "receiver" {
            overhead_receiver(&runtime);
        } else {
            overhead_child(&runtime, workers, mode == "on");
        }
        return;
    }
    // `-- overhead`: only tracing and metrics off against on.
    if std::env::args().any(|a| a == "overhead") {
        observability_overhead(workers);
        return;
    }
    // For a profiler: only the memory store, over and over, nothing printed.
    if std::env::var_os("SHARDCI_BENCH_PROFILE_MEMORY").is_some() {
        for _ in 0..20 {
            runtime.block_on(shardci_figures(
                workers,
                SHARDS_PER_WORKER,
                Arc::new(MemoryStore::new()),
                false,
            ));
        }
        return;
    }
    // The memory store and the session echo are what the goal compares, and this machine's
    // speed drifts by a third between runs: they alternate, three times each, and the pair
    // with the median throughput ratio is reported.
    let mut pairs: Vec<(Figures, Figures, Figures)> = (0..REPEATS)
        .map(|_| {
            let memory = runtime.block_on(shardci_figures(
                workers,
                SHARDS_PER_WORKER,
                Arc::new(MemoryStore::new()),
                false,
            ));
            let (session, unary) = runtime.block_on(echo_figures(workers));
            (memory, session, unary)
        })
        .collect();
    let throughput = |f: &Figures| f.leases as f64 / f.elapsed.as_secs_f64();
    let ratios: Vec<f64> = pairs
        .iter()
        .map(|(memory, session, _)| throughput(memory) / throughput(session))
        .collect();
    pairs.sort_by(|a, b| {
        (throughput(&a.0) / throughput(&a.1)).total_cmp(&(throughput(&b.0) / throughput(&b.1)))
    });
    let (memory, session, unary) = pairs.swap_remove(REPEATS / 2);
    let state = tempfile::tempdir().expect("tempdir");
    let file = runtime.block_on(async {
        let store = FileStore::open(state.path()).await.expect("file store");
        shardci_figures(workers, DURABLE_SHARDS_PER_WORKER, Arc::new(store), false).await
    });
    let etcd_process = shardci_testkit::Etcd::start();
    let etcd = runtime.block_on(async {
        let store = EtcdStore::connect(std::slice::from_ref(&etcd_process.endpoint), "/bench/")
            .await
            .expect("etcd");
        shardci_figures(workers, DURABLE_SHARDS_PER_WORKER, Arc::new(store), true).await
    });
    drop(etcd_process);
    println!(
        "lease benchmark: {workers} simulated workers over gRPC on loopback, {} cores ({SHARDS_PER_WORKER} shards each on memory and the echoes, {DURABLE_SHARDS_PER_WORKER} on the durable stores)",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    println!(
        "{:<40} {:>10} {:>10} {:>10} {:>10}",
        "server", "leases/s", "p50 ms", "p99 ms", "vs echo"
    );
    for (name, figures) in [
        ("shardci, memory store", &memory),
        ("shardci, file store (fsync)", &file),
        ("shardci, etcd (elected, fenced)", &etcd),
        ("bare tonic session echo", &session),
        ("bare tonic unary round trip", &unary),
    ] {
        println!(
            "{} {:>9.2}x",
            figures.line(name),
            throughput(figures) / throughput(&session)
        );
    }
    let p50 = |f: &Figures| percentile(&f.latencies, 0.5).as_secs_f64();
    println!(
        "memory store / session echo, each of {REPEATS} alternating pairs: {}",
        ratios
            .iter()
            .map(|r| format!("{r:.2}x"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "memory store / session echo, the median pair: throughput {:.2}x, p50 latency {:.2}x (goal: at least 0.8x, within 2x)",
        throughput(&memory) / throughput(&session),
        p50(&memory) / p50(&session)
    );
    observability_overhead(workers);
    for (name, figures, rounds) in [
        ("memory", &memory, SHARDS_PER_WORKER),
        ("file", &file, DURABLE_SHARDS_PER_WORKER),
        ("etcd", &etcd, DURABLE_SHARDS_PER_WORKER),
    ] {
        assert_eq!(
            figures.leases,
            workers * rounds,
            "every shard was leased once on the {name} store"
        );
    }
}
