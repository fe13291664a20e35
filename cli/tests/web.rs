//! The coordinator's web view with real processes on loopback: refused without a token, JSON
//! and pages with one, and a run's page in headless Chromium seeing a job change state
//! without reloading.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

mod common;
use common::{bin, free_address, http_get as get, spawn_coordinator, wait_for};

const CLIENT: &str = "web-client-token-0123456789";
const WORKER: &str = "web-worker-token-0123456789";

fn worker(url: &str, dir: &std::path::Path) -> Child {
    Command::new(bin("shardci-worker"))
        .args([
            "--coordinator",
            url,
            "--id",
            "web-worker",
            "--executor",
            "process",
        ])
        .args(["--token", WORKER])
        .arg("--data-dir")
        .arg(dir.join("worker"))
        .env("SHARDCI_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("worker")
}

#[test]
fn the_web_view_follows_a_run_live_and_refuses_strangers() {
    let dir = tempfile::tempdir().expect("tempdir");
    // The step runs until the test lets it end (at most a minute), so the page is sure to
    // find it running, however long Chromium takes to start on a loaded machine.
    let release = dir.path().join("release");
    let repo = shardci_testkit::fixture(
        1,
        &format!(
            "[test_types.slow]\ncommand = \"echo starting; for i in $(seq 600); do [ -e {} ] && break; sleep 0.1; done; echo done\"\n\n[templates.generic]\ntest_types = [\"slow\"]\n",
            release.display()
        ),
    );
    let web = free_address();
    let (mut coordinator, address) = spawn_coordinator(
        dir.path(),
        &[
            "--client-token".as_ref(),
            CLIENT.as_ref(),
            "--worker-token".as_ref(),
            WORKER.as_ref(),
            "--web-listen".as_ref(),
            web.as_ref(),
        ],
    );
    let url = format!("http://{address}");
    let mut worker = worker(&url, dir.path());

    let submitted = Command::new(env!("CARGO_BIN_EXE_shardci"))
        .args(["submit", "--all", "--coordinator", &url, "--token", CLIENT])
        .arg("--repo")
        .arg(repo.path())
        .output()
        .expect("submit");
    let stderr = String::from_utf8_lossy(&submitted.stderr).into_owned();
    assert!(submitted.status.success(), "{stderr}");
    let run = String::from_utf8_lossy(&submitted.stdout)
        .trim()
        .to_string();
    // submit names the run's page.
    assert!(
        stderr.contains(&format!("follow it at http://{web}/runs/{run}")),
        "{stderr}"
    );

    // Strangers are refused; the token opens it, as a header or in the address.
    let (status, body) = get(&web, "/api/runs", None);
    assert_eq!(status, 401, "{body}");
    assert!(
        body.contains("a token with the read scope is required"),
        "{body}"
    );
    assert_eq!(
        get(
            &web,
            &format!("/runs/{run}"),
            Some("wrong-token-0123456789")
        )
        .0,
        401
    );
    let (status, body) = get(&web, "/api/runs", Some(CLIENT));
    assert_eq!(status, 200, "{body}");
    let runs: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(runs["runs"][0]["id"], run.as_str());
    let (status, page) = get(&web, &format!("/runs/{run}?token={CLIENT}"), None);
    assert_eq!(status, 200);
    assert!(
        page.contains("<script>") && !page.contains("src=\"http"),
        "self-contained"
    );
    assert_eq!(get(&web, "/nothing", Some(CLIENT)).0, 404);

    // Once the job runs, open its page in Chromium and keep it open to the end.
    let job = "c1/slow";
    wait_for("the job to run", Duration::from_secs(60), || {
        let (_, body) = get(&web, &format!("/api/runs/{run}"), Some(CLIENT));
        serde_json::from_str::<Value>(&body).is_ok_and(|r| {
            r["job_list"].as_array().is_some_and(|jobs| {
                jobs.iter()
                    .any(|j| j["id"] == job && j["status"] == "running")
            })
        })
    });
    // The live log has what the step printed so far, while it still runs.
    let log = format!("/api/logs?run={run}&job=c1%2Fslow&step=slow&offset=0");
    let mut part = Value::Null;
    wait_for("the live log", Duration::from_secs(30), || {
        let (status, body) = get(&web, &log, Some(CLIENT));
        part = serde_json::from_str(&body).unwrap_or(Value::Null);
        status == 200
            && part["text"]
                .as_str()
                .is_some_and(|t| t.contains("starting"))
    });
    assert_eq!(part["done"], false, "{part}");
    assert!(part["next"].as_u64().is_some_and(|n| n > 0), "{part}");

    let page = format!("http://{web}/runs/{run}?token={CLIENT}");
    let shot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("web-view.png");
    let chromium = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--virtual-time-budget=60000",
            "--dump-dom",
            &page,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromium runs");
    // Time for Chromium to load the page and see the job running (a second or two when the
    // machine is idle); then the step ends, and the open page must see that too.
    std::thread::sleep(Duration::from_secs(10));
    std::fs::write(&release, b"").expect("release the step");
    let dom = chromium.wait_with_output().expect("chromium ends");
    let dom = String::from_utf8_lossy(&dom.stdout).into_owned();
    // The row was seen running, then finished, in one page load.
    let row = dom
        .split("<tr")
        .find(|r| r.contains(&format!("data-job=\"{job}\"")))
        .unwrap_or_else(|| panic!("no row for {job}: {dom}"));
    assert!(row.contains("data-seen=\"running success\""), "{row}");
    assert!(dom.contains("data-status=\"success\""), "{dom}");
    // A look at it for people (kept with the test's outputs).
    let _ = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--window-size=1000,700",
        ])
        .arg(format!("--screenshot={}", shot.display()))
        .arg(&page)
        .stderr(Stdio::null())
        .status();

    // The finished log reads whole from the store, and says so.
    wait_for("the log in the store", Duration::from_secs(30), || {
        let (_, body) = get(
            &web,
            &format!("/api/logs?run={run}&job=c1%2Fslow&step=slow&offset=0"),
            Some(CLIENT),
        );
        serde_json::from_str::<Value>(&body).is_ok_and(|p| {
            p["done"] == true && p["text"].as_str().is_some_and(|t| t.contains("done"))
        })
    });
    let (_, body) = get(&web, &format!("/api/runs/{run}"), Some(CLIENT));
    let detail: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(detail["job_list"][0]["worker"], "web-worker", "{detail}");
    assert!(
        detail["report"]
            .as_str()
            .is_some_and(|r| r.ends_with("/report.html")),
        "{detail}"
    );
    let _ = worker.kill();
    let _ = coordinator.kill();
    let _ = (worker.wait(), coordinator.wait());
}
