//! Comparing large reads: records compared per second and the peak memory of the comparing
//! process, for 100,000 and 1,000,000 records per side, beside `sed | sort | join` on the same
//! JSONL files as a yardstick (sed puts the id first; GNU sort spills to disk too, so both are
//! bounded-memory; the yardstick compares lines as text, not JSON); then capturing a read of
//! as many records, as a container's stdout arrives.
//!
//! `cargo bench -p shardci-regression --bench compare [-- SIZES]` (SIZES: comma-separated
//! record counts, default 100000,1000000). Each comparison runs in a child process so its
//! peak RSS (from `wait4`) is its own.

use std::io::{BufWriter, Write};
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use shardci_regression::compare::records::{Destination, Limits, compare_stream};

const CHILD: &str = "SHARDCI_BENCH_COMPARE_CHILD";
const CAPTURE_CHILD: &str = "SHARDCI_BENCH_CAPTURE_CHILD";
const BUDGET: u64 = 64 << 20;

fn main() {
    if let Ok(dir) = std::env::var(CHILD) {
        child(Path::new(&dir));
        return;
    }
    if let Ok(spec) = std::env::var(CAPTURE_CHILD) {
        capture_child(&spec);
        return;
    }
    let sizes: Vec<u64> = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .unwrap_or_else(|| "100000,1000000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    println!(
        "{:>10} {:>14} {:>12} {:>10} {:>14} {:>12} {:>10} {:>7}",
        "records",
        "shardci rec/s",
        "seconds",
        "peak MiB",
        "sort|join rec/s",
        "seconds",
        "peak MiB",
        "ratio"
    );
    for &n in &sizes {
        let dir = tempfile::tempdir().expect("tempdir");
        generate(dir.path(), n);
        let (ours, our_rss) =
            measure(Command::new(std::env::current_exe().expect("exe")).env(CHILD, dir.path()));
        // The same JSONL files: sed puts each record's id in front, sort and join pair them.
        let script = "export LC_ALL=C; for s in c t; do sed -E 's/^.*\"id\":([0-9]+),.*$/\\1\\t&/' $s.jsonl | sort -S 64M -T . -t '\t' -k1,1 > $s.sorted || exit 1; done; join -t '\t' -a1 -a2 c.sorted t.sorted | awk -F '\t' 'NF != 3 || $2 != $3 { d++ } END { print d + 0 }' > differing";
        let (theirs, their_rss) = measure(
            Command::new("sh")
                .args(["-c", script])
                .current_dir(dir.path()),
        );
        let differing = std::fs::read_to_string(dir.path().join("differing")).unwrap_or_default();
        let rate = |s: f64| n as f64 / s;
        println!(
            "{n:>10} {:>14.0} {ours:>12.2} {:>10.1} {:>14.0} {theirs:>12.2} {:>10.1} {:>7.2}",
            rate(ours),
            our_rss,
            rate(theirs),
            their_rss,
            theirs / ours
        );
        println!(
            "           (sort|join found {} differing ids)",
            differing.trim()
        );
    }
    println!(
        "ratio: sort|join's time over shardci's (above 1: shardci is faster); goal >= 100000 rec/s and < 200 MiB"
    );
    println!();
    println!(
        "capturing a read (stdout split, masked, parsed, written per stream), in 64 KiB chunks:"
    );
    println!(
        "{:>10} {:>14} {:>12} {:>10}",
        "records", "records/s", "seconds", "peak MiB"
    );
    for n in &sizes {
        let dir = tempfile::tempdir().expect("tempdir");
        let spec = format!("{}:{n}", dir.path().display());
        let (seconds, rss) =
            measure(Command::new(std::env::current_exe().expect("exe")).env(CAPTURE_CHILD, spec));
        println!(
            "{n:>10} {:>14.0} {seconds:>12.2} {rss:>10.1}",
            *n as f64 / seconds
        );
    }
}

/// Feeds `n` records through a capture, as a container's stdout would arrive.
fn capture_child(spec: &str) {
    let (dir, n) = spec.rsplit_once(':').expect("dir:n");
    let n: u64 = n.parse().expect("count");
    let masker = shardci_regression::mask::Masker::new(["a-secret-value".to_string()]);
    let mut capture =
        shardci_regression::capture::Capture::create(Path::new(dir), "bench", &[], masker)
            .expect("capture");
    let mut chunk = Vec::with_capacity(64 << 10);
    for i in 0..n {
        chunk.extend_from_slice(record_line(i, &user(i, &(i % 90).to_string())).as_bytes());
        chunk.push(b'\n');
        if chunk.len() >= 64 << 10 {
            capture.stdout(&chunk);
            chunk.clear();
        }
    }
    capture.stdout(&chunk);
    let output = capture
        .finish(shardci_regression::Exit::Code { code: 0 }, 0.0)
        .expect("finish");
    assert_eq!(output.records(), n);
}

/// Runs `command` to its end: wall seconds and peak RSS in MiB (its own and its children's).
fn measure(command: &mut Command) -> (f64, f64) {
    let started = Instant::now();
    // Reaped by `wait4` below, which also gives its resource usage.
    #[allow(clippy::zombie_processes)]
    let child = command.spawn().expect("spawn");
    let mut status = 0;
    // SAFETY: `rusage` is plain data, zeroed is a valid value; wait4 fills it for our child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = child.id() as libc::pid_t;
    // SAFETY: waits for our own child, with valid pointers.
    let waited = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(waited, pid, "wait4");
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "the comparison failed"
    );
    (
        started.elapsed().as_secs_f64(),
        usage.ru_maxrss as f64 / 1024.0,
    )
}

fn child(dir: &Path) {
    let dest = Destination {
        out_dir: &dir.join("diff"),
        name: "users",
        relative_to: dir,
        scratch: dir,
    };
    let limits = Limits {
        memory_bytes: BUDGET,
        ..Limits::default()
    };
    let diff = compare_stream(
        "users",
        Some(&dir.join("c.jsonl")),
        Some(&dir.join("t.jsonl")),
        &vec![vec!["id".to_string()]],
        &limits,
        &dest,
    )
    .expect("compare");
    eprintln!(
        "           (shardci: {} matched, {} changed, {} only in control, {} only in target, {} partitions)",
        diff.matched, diff.changed, diff.control_only, diff.target_only, diff.partitions
    );
}

/// `n` users per side: the target changes 1 % of them, drops 0.5 % and adds 0.5 %, in another
/// order. Also the same records as `key \t data` lines for sort and join.
/// A RECORD message as a connector prints it.
fn record_line(i: u64, data: &str) -> String {
    format!(
        "{{\"type\":\"RECORD\",\"record\":{{\"stream\":\"users\",\"data\":{data},\"emitted_at\":{i}}}}}"
    )
}

/// A user's data (the target's `age` may be a string).
fn user(i: u64, age: &str) -> String {
    format!(
        "{{\"age\":{age},\"city\":\"city {}\",\"email\":\"user{i}@example.invalid\",\"id\":{i},\"name\":\"user {i}\",\"score\":{}.5}}",
        i % 1000,
        i % 7919
    )
}

fn generate(dir: &Path, n: u64) {
    let file = |name: &str| {
        BufWriter::with_capacity(
            1 << 20,
            std::fs::File::create(dir.join(name)).expect("create"),
        )
    };
    let (mut c, mut t) = (file("c.jsonl"), file("t.jsonl"));
    let record = |i: u64, age: String| user(i, &age);
    let write = |out: &mut BufWriter<std::fs::File>, i: u64, data: &str| {
        writeln!(out, "{}", record_line(i, data)).expect("write");
    };
    for i in 0..n {
        write(&mut c, i, &record(i, (i % 90).to_string()));
    }
    // A fixed permutation: the target prints in another order than the control.
    let step = 7_919u64;
    assert!(
        !n.is_multiple_of(step),
        "the record count must not be a multiple of {step}"
    );
    for j in 0..n {
        let i = (j * step) % n;
        if i.is_multiple_of(200) {
            continue;
        }
        let age = if i % 100 == 1 {
            format!("\"{}\"", i % 90)
        } else {
            (i % 90).to_string()
        };
        write(&mut t, i, &record(i, age));
    }
    for i in n..n + n / 200 {
        write(&mut t, i, &record(i, "1".into()));
    }
    for mut w in [c, t] {
        w.flush().expect("flush");
    }
}
