//! Two hosts on one machine: the machine's Docker daemon and a second `dockerd` this test
//! starts (its own data root and socket), each with its own `shardci-worker`. A connector's
//! image is built on the first; its tests run on the second, which has never seen it and
//! gets it through the run's store.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use shardci_testkit::{Dockerd, IMAGE, commit_all, fixture};

mod common;
use common::{bin, ensure_image, ensure_image_at, signal, spawn_coordinator, wait_for};

struct Stopped(Vec<Child>);

impl Drop for Stopped {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn files(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|entries| entries.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

/// The run's records of its build step (`runs/<run>/steps/<key>.json`).
fn build_records(store: &Path, run: &str) -> Vec<Value> {
    files(&store.join("runs").join(run).join("steps"))
        .iter()
        .filter_map(|p| std::fs::read(p).ok())
        .filter_map(|b| serde_json::from_slice::<Value>(&b).ok())
        .filter(|r| r["step"] == "build")
        .collect()
}

fn image_id(host: Option<&str>, tag: &str) -> String {
    let mut docker = Command::new("docker");
    if let Some(host) = host {
        docker.args(["-H", host]);
    }
    let out = docker
        .args(["image", "inspect", "--format", "{{.Id}}", tag])
        .output()
        .expect("docker runs");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn a_test_job_on_a_host_without_the_image_loads_it_from_the_store_once() {
    ensure_image();
    let second = Dockerd::start();
    ensure_image_at(Some(&second.host()));
    let tag = format!("shardci-test/two-hosts-{}", std::process::id());
    let dev = format!("{tag}:dev");

    // c1's image holds a marker and 64 MB that do not compress, so saving it takes long
    // enough to kill the worker in the middle.
    let repo = fixture(
        1,
        "[test_types.build]\nbuild_image = { dockerfile = \"Dockerfile\", context = \".\" }\ncommand = \"echo built\"\n\n\
         [test_types.unit]\ndepends_on = [\"build\"]\nrequires = [\"tester\"]\nimage = \"IMAGE\"\ncommand = \"cat /marker\"\n\n\
         [test_types.lint]\ndepends_on = [\"build\"]\nrequires = [\"tester\"]\nimage = \"IMAGE\"\ncommand = \"test -s /blob && echo lint ok\"\n\n\
         [templates.generic]\ntest_types = [\"build\", \"unit\", \"lint\"]\n"
            .replace("IMAGE", &dev)
            .as_str(),
    );
    let c1 = repo.path().join("connectors/c1");
    std::fs::write(
        c1.join("connector.toml"),
        format!("language = \"generic\"\nimage = \"{tag}\"\n"),
    )
    .unwrap();
    std::fs::write(c1.join("marker"), "built on the first host\n").unwrap();
    std::fs::write(
        c1.join("Dockerfile"),
        format!("FROM {IMAGE}\nCOPY marker /marker\nRUN head -c 64000000 /dev/urandom > /blob\n"),
    )
    .unwrap();
    commit_all(repo.path(), "c1 builds an image");

    let dir = tempfile::tempdir().unwrap();
    let (coordinator, address) =
        spawn_coordinator(dir.path(), &["--lease-ttl".as_ref(), "3s".as_ref()]);
    let url = format!("http://{address}");
    let store = dir.path().join("coordinator/store");
    let mut children = Stopped(vec![coordinator]);
    let worker = |id: &str, labels: &str, docker_host: Option<&str>| {
        let mut command = Command::new(bin("shardci-worker"));
        command
            .args(["--coordinator", &url, "--id", id, "--labels", labels])
            .args(["--stop-grace-seconds", "2"])
            .arg("--data-dir")
            .arg(dir.path().join(id))
            .env_remove("DOCKER_HOST")
            .env("SHARDCI_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join(format!("{id}.log"))).unwrap());
        if let Some(host) = docker_host {
            command.env("DOCKER_HOST", host);
        }
        command.spawn().unwrap()
    };

    // Only the first host's worker is there: it takes c1/build (it cannot run the tests).
    children.0.push(worker("first-a", "docker", None));
    let out = Command::new(bin("shardci"))
        .args(["submit", "--all", "--coordinator", &url])
        .arg("--repo")
        .arg(repo.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let run = String::from_utf8_lossy(&out.stdout).trim().to_string();

    // Killed while it uploads the image: nothing another host would load is left.
    let images = store.join("images");
    let staged = |p: &PathBuf| p.to_string_lossy().contains('#');
    wait_for("the image upload starts", Duration::from_secs(180), || {
        files(&images).iter().any(staged)
    });
    signal(children.0[1].id(), "-KILL");
    let _ = children.0[1].wait();
    let whole: Vec<PathBuf> = files(&images).into_iter().filter(|p| !staged(p)).collect();
    assert!(whole.is_empty(), "a partial upload is visible: {whole:?}");
    assert!(
        build_records(&store, &run).is_empty(),
        "no record names an image that is not there"
    );

    // Another worker on the first host takes the lost shard once its lease is gone, builds
    // (Docker's layer cache makes that quick) and saves the image whole.
    children.0.push(worker("first-b", "docker", None));
    wait_for("the build is recorded", Duration::from_secs(180), || {
        !build_records(&store, &run).is_empty()
    });
    let record = &build_records(&store, &run)[0];
    let object = record["image"]["object"]
        .as_str()
        .expect("the record names the image");
    assert!(store.join(object).is_file(), "{object}");
    assert_eq!(record["image"]["id"], image_id(None, &dev));

    // The second host has no such image; its worker runs c1's tests.
    assert_eq!(image_id(Some(&second.host()), &dev), "");
    children
        .0
        .push(worker("second", "docker,tester", Some(&second.host())));
    let deadline = Instant::now() + Duration::from_secs(180);
    let finished = loop {
        let out = Command::new(bin("shardci"))
            .args(["runs", "show", &run, "--json", "--coordinator", &url])
            .output()
            .unwrap();
        let value: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        if matches!(
            value["status"].as_str(),
            Some("success" | "failure" | "cancelled" | "error")
        ) {
            break value;
        }
        assert!(Instant::now() < deadline, "the run did not finish: {value}");
        std::thread::sleep(Duration::from_millis(300));
    };
    assert_eq!(finished["status"], "success", "{finished}");

    // The same image, by id, on both hosts; one object in the store.
    assert_eq!(image_id(Some(&second.host()), &dev), image_id(None, &dev));
    let whole: Vec<PathBuf> = files(&images).into_iter().filter(|p| !staged(p)).collect();
    assert_eq!(whole.len(), 1, "{whole:?}");

    let log = |job: &str, step: &str| {
        let path = store.join(format!("runs/{run}/jobs/{job}/{step}/log.txt"));
        std::fs::read_to_string(&path).unwrap_or_default()
    };
    let loads = ["c1_unit", "c1_lint"]
        .iter()
        .map(|job| {
            log(job, "build")
                .matches(&format!("loaded image {dev}"))
                .count()
        })
        .sum::<usize>();
    assert_eq!(
        loads, 1,
        "the second host loads the image once for both jobs"
    );
    // The figures: what saving and loading cost.
    for (job, step) in [
        ("c1_build", "build"),
        ("c1_unit", "build"),
        ("c1_lint", "build"),
    ] {
        for line in log(job, step).lines().filter(|l| l.contains(" image ")) {
            eprintln!("{job}: {line}");
        }
    }
    assert!(log("c1_build", "build").contains(&format!("saved image {dev}")));
    assert_eq!(log("c1_unit", "unit"), "built on the first host\n");
    assert_eq!(log("c1_lint", "lint"), "lint ok\n");

    let _ = Command::new("docker").args(["rmi", "-f", &dev]).output();
}
