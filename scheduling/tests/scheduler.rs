//! The scheduler core in virtual time: leases, fencing, retries, priorities, cancellation.

use shardci_scheduling::schedule::{
    Ack, Attempt, FailureClass, JobDef, JobId, JobReport, Millis, NewRun, Notice, Priority, RunId,
    Scheduler, SchedulerConfig, ShardDef, ShardId, ShardKey, Status, WorkerId,
};

fn run(id: &str, class: u8, shards: &[(&str, &[&str])], requires: &[&str]) -> NewRun {
    let mut jobs = Vec::new();
    let mut defs = Vec::new();
    for (shard, shard_jobs) in shards {
        for job in *shard_jobs {
            jobs.push(JobDef {
                id: JobId::from(*job),
                requires: vec![],
                test_retries: 0,
                expected_seconds: 10.0,
                quarantined: false,
            });
        }
        defs.push(ShardDef {
            id: ShardId::from(*shard),
            jobs: shard_jobs.iter().map(|j| JobId::from(*j)).collect(),
            requires: requires.iter().map(|r| r.to_string()).collect(),
            expected_seconds: 10.0,
            after: vec![],
        });
    }
    NewRun {
        id: RunId::from(id),
        priority: Priority { class, boost: 0 },
        jobs,
        shards: defs,
        deadline: None,
    }
}

fn report(job: &str, status: Status, class: Option<FailureClass>) -> JobReport {
    JobReport {
        job: JobId::from(job),
        status,
        failure_class: class,
        steps: vec![],
    }
}

fn ok(job: &str) -> JobReport {
    report(job, Status::Success, None)
}

fn w(id: &str) -> WorkerId {
    WorkerId::from(id)
}

fn sched() -> Scheduler {
    Scheduler::new(SchedulerConfig {
        lease_ttl_ms: 10_000,
        max_infra_retries: 2,
        ..SchedulerConfig::default()
    })
}

fn result_of(s: &Scheduler, run: &str, job: &str) -> shardci_scheduling::schedule::JobResult {
    s.run(&RunId::from(run))
        .unwrap()
        .results
        .into_iter()
        .find(|r| r.job.0 == job)
        .expect("a result")
}

#[test]
fn a_shard_waits_for_the_shards_it_comes_after_to_settle_whatever_their_results() {
    let mut s = sched();
    let mut new = run(
        "r1",
        1,
        &[("build", &["c/build"]), ("tests", &["c/unit"])],
        &[],
    );
    new.shards[1].after = vec![ShardId::from("build")];
    s.submit(Millis(0), new).unwrap();
    let one = s.connect(Millis(0), &w("w1"), "", vec![], 1, &[]).unwrap();
    let two = s.connect(Millis(0), &w("w2"), "", vec![], 1, &[]).unwrap();
    let first = s.request_work(Millis(1), &w("w1"), one, 1).unwrap();
    assert_eq!(first[0].shard.0, "build");
    assert!(
        s.request_work(Millis(1), &w("w2"), two, 1)
            .unwrap()
            .is_empty(),
        "the tests wait for the build, though a slot is free"
    );
    assert!(
        !s.has_queued_work(),
        "nothing can start: idle workers are not woken for it"
    );
    let failed = report("c/build", Status::Failure, Some(FailureClass::Test));
    s.complete(
        Millis(2),
        &w("w1"),
        &RunId::from("r1"),
        &ShardId::from("build"),
        Attempt(1),
        vec![failed],
    );
    assert!(s.has_queued_work());
    let second = s.request_work(Millis(3), &w("w2"), two, 1).unwrap();
    assert_eq!(second[0].shard.0, "tests", "a failed build is settled too");

    // A shard may only come after an earlier one: no run can wait on itself.
    let mut cyclic = run("r2", 1, &[("a", &["x"]), ("b", &["y"])], &[]);
    cyclic.shards[0].after = vec![ShardId::from("b")];
    assert!(s.submit(Millis(4), cyclic).is_err());
}

#[test]
fn a_worker_is_given_the_shard_whose_build_it_ran_within_the_locality_window() {
    for (window, expected) in [(0, "tests-a"), (1, "tests-b")] {
        let mut s = Scheduler::new(SchedulerConfig {
            locality_window: window,
            ..SchedulerConfig::default()
        });
        let mut new = run(
            "r1",
            1,
            &[
                ("build-a", &["a/build"]),
                ("build-b", &["b/build"]),
                ("tests-a", &["a/unit"]),
                ("tests-b", &["b/unit"]),
            ],
            &[],
        );
        new.shards[2].after = vec![ShardId::from("build-a")];
        new.shards[3].after = vec![ShardId::from("build-b")];
        s.submit(Millis(0), new).unwrap();
        let one = s.connect(Millis(0), &w("w1"), "", vec![], 1, &[]).unwrap();
        let two = s.connect(Millis(0), &w("w2"), "", vec![], 1, &[]).unwrap();
        assert_eq!(
            s.request_work(Millis(1), &w("w1"), one, 1).unwrap()[0]
                .shard
                .0,
            "build-a"
        );
        assert_eq!(
            s.request_work(Millis(1), &w("w2"), two, 1).unwrap()[0]
                .shard
                .0,
            "build-b"
        );
        for (worker, shard, job) in [("w1", "build-a", "a/build"), ("w2", "build-b", "b/build")] {
            let ack = s.complete(
                Millis(2),
                &w(worker),
                &RunId::from("r1"),
                &ShardId::from(shard),
                Attempt(1),
                vec![ok(job)],
            );
            assert_eq!(ack, Ack::Accepted);
        }
        // w2 built b: with a window it takes b's tests, where b's image already is.
        let next = s.request_work(Millis(3), &w("w2"), two, 1).unwrap();
        assert_eq!(next[0].shard.0, expected, "window {window}");
    }
}

#[test]
fn shards_go_out_in_order_and_the_run_finishes() {
    let mut s = sched();
    s.submit(
        Millis(0),
        run("r1", 1, &[("s1", &["a"]), ("s2", &["b"])], &[]),
    )
    .unwrap();
    let session = s.connect(Millis(0), &w("w1"), "", vec![], 1, &[]).unwrap();
    let first = s.request_work(Millis(1), &w("w1"), session, 4).unwrap();
    assert_eq!(first.len(), 1, "one slot, one shard");
    assert_eq!(
        (first[0].shard.0.as_str(), first[0].attempt),
        ("s1", Attempt(1))
    );
    assert_eq!(
        s.complete(
            Millis(2),
            &w("w1"),
            &RunId::from("r1"),
            &ShardId::from("s1"),
            Attempt(1),
            vec![ok("a")]
        ),
        Ack::Accepted
    );
    let second = s.request_work(Millis(3), &w("w1"), session, 1).unwrap();
    assert_eq!(second[0].shard.0, "s2");
    s.complete(
        Millis(4),
        &w("w1"),
        &RunId::from("r1"),
        &ShardId::from("s2"),
        Attempt(1),
        vec![ok("b")],
    );
    let view = s.run(&RunId::from("r1")).unwrap();
    assert_eq!(view.status, Status::Success);
    assert_eq!(view.results.len(), 2);
    assert!(s.take_notices().iter().any(|n| matches!(
        n,
        Notice::RunFinished {
            status: Status::Success,
            ..
        }
    )));
}

#[test]
fn shards_only_go_to_workers_with_the_required_labels() {
    let mut s = sched();
    s.submit(Millis(0), run("r1", 1, &[("big", &["a"])], &["large"]))
        .unwrap();
    let small = s
        .connect(Millis(0), &w("small"), "", vec!["docker".into()], 4, &[])
        .unwrap();
    assert!(
        s.request_work(Millis(1), &w("small"), small, 4)
            .unwrap()
            .is_empty()
    );
    let large = s
        .connect(
            Millis(0),
            &w("large"),
            "",
            vec!["docker".into(), "large".into()],
            4,
            &[],
        )
        .unwrap();
    assert_eq!(
        s.request_work(Millis(1), &w("large"), large, 4)
            .unwrap()
            .len(),
        1
    );
}

#[test]
fn a_lost_worker_s_shard_returns_to_the_front_as_a_new_attempt_and_its_late_result_is_fenced() {
    let mut s = sched();
    s.submit(
        Millis(0),
        run("r1", 1, &[("s1", &["a"]), ("s2", &["b"])], &[]),
    )
    .unwrap();
    let w1 = s.connect(Millis(0), &w("w1"), "", vec![], 1, &[]).unwrap();
    let got = s.request_work(Millis(0), &w("w1"), w1, 1).unwrap();
    assert_eq!(got[0].shard.0, "s1");
    // w1 goes silent; the lease expires at 10s.
    s.tick(Millis(9_999));
    assert_eq!(s.workers().len(), 1);
    s.tick(Millis(10_000));
    assert!(s.workers().is_empty());
    let w2 = s
        .connect(Millis(10_001), &w("w2"), "", vec![], 1, &[])
        .unwrap();
    let again = s.request_work(Millis(10_001), &w("w2"), w2, 1).unwrap();
    assert_eq!(
        (again[0].shard.0.as_str(), again[0].attempt),
        ("s1", Attempt(2)),
        "the retry goes first, as attempt 2"
    );
    // The paused worker wakes up and reports attempt 1: refused.
    assert_eq!(
        s.complete(
            Millis(10_002),
            &w("w1"),
            &RunId::from("r1"),
            &ShardId::from("s1"),
            Attempt(1),
            vec![ok("a")]
        ),
        Ack::Fenced
    );
    assert_eq!(
        s.complete(
            Millis(10_003),
            &w("w2"),
            &RunId::from("r1"),
            &ShardId::from("s1"),
            Attempt(2),
            vec![ok("a")]
        ),
        Ack::Accepted
    );
    let result = result_of(&s, "r1", "a");
    assert_eq!(
        (result.attempt, result.worker.unwrap().0.as_str()),
        (Attempt(2), "w2")
    );
    assert_eq!(
        s.run(&RunId::from("r1")).unwrap().results.len(),
        1,
        "exactly one result"
    );
}

#[test]
fn heartbeats_keep_a_busy_worker_alive() {
    let mut s = sched();
    s.submit(Millis(0), run("r1", 1, &[("s1", &["a"])], &[]))
        .unwrap();
    let session = s.connect(Millis(0), &w("w1"), "", vec![], 1, &[]).unwrap();
    s.request_work(Millis(0), &w("w1"), session, 1).unwrap();
    for t in (3_000..60_000).step_by(3_000) {
        s.heartbeat(Millis(t), &w("w1"), session).unwrap();
        s.tick(Millis(t));
    }
    assert_eq!(s.workers().len(), 1);
    assert_eq!(
        s.complete(
            Millis(60_000),
            &w("w1"),
            &RunId::from("r1"),
            &ShardId::from("s1"),
            Attempt(1),
            vec![ok("a")]
        ),
        Ack::Accepted
    );
}

#[test]
fn a_repeated_completion_is_acknowledged_as_already_done() {
    let mut s = sched();
    s.submit(Millis(0), run("r1", 1, &[("s1", &["a"])], &[]))
        .unwrap();
    let session = s.connect(Millis(0), &w("w1"), "", vec![], 1, &[]).unwrap();
    s.request_work(Millis(0), &w("w1"), session, 1).unwrap();
    let args = (
        &w("w1"),
        &RunId::from("r1"),
        &ShardId::from("s1"),
        Attempt(1),
    );
    assert_eq!(
        s.complete(Millis(1), args.0, args.1, args.2, args.3, vec![ok("a")]),
        Ack::Accepted
    );
    assert_eq!(
        s.complete(Millis(2), args.0, args.1, args.2, args.3, vec![ok("a")]),
        Ack::AlreadyDone
    );
    assert_eq!(result_of(&s, "r1", "a").attempts, 1);
}

#[test]
fn infrastructure_failures_retry_up_to_the_limit() {
    let mut s = sched();
    s.submit(Millis(0), run("r1", 1, &[("s1", &["a", "b"])], &[]))
        .unwrap();
    let session = s.connect(Millis(0), &w("w1"), "", vec![], 1, &[]).unwrap();
    for attempt in 1..=3 {
        let got = s
            .request_work(Millis(attempt), &w("w1"), session, 1)
            .unwrap();
        assert_eq!(got[0].attempt, Attempt(attempt as u32));
        let jobs: Vec<String> = got[0].jobs.iter().map(|j| j.0.clone()).collect();
        let reports = if attempt == 1 {
            assert_eq!(jobs, ["a", "b"]);
            vec![ok("a"), report("b", Status::Error, Some(FailureClass::Oom))]
        } else {
            assert_eq!(jobs, ["b"], "only the failed job is retried");
            vec![report("b", Status::Error, Some(FailureClass::Docker))]
        };
        assert_eq!(
            s.complete(
                Millis(attempt),
                &w("w1"),
                &RunId::from("r1"),
                &ShardId::from("s1"),
                Attempt(attempt as u32),
                reports
            ),
            Ack::Accepted
        );
    }
    assert!(
        s.request_work(Millis(9), &w("w1"), session, 1)
            .unwrap()
            .is_empty(),
        "two retries, then it stops"
    );
    let b = result_of(&s, "r1", "b");
    assert_eq!(
        (b.status, b.failure_class, b.attempts),
        (Status::Error, Some(FailureClass::Docker), 3)
    );
    assert_eq!(s.run(&RunId::from("r1")).unwrap().status, Status::Error);
}

#[test]
fn test_failures_are_final_unless_the_test_type_allows_retries_and_a_pass_after_a_failure_is_flaky()
{
    let mut s = sched();
    let mut r = run("r1", 1, &[("s1", &["strict", "retrying"])], &[]);
    r.jobs[1].test_retries = 1;
    s.submit(Millis(0), r).unwrap();
    let session = s.connect(Millis(0), &w("w1"), "", vec![], 1, &[]).unwrap();
    s.request_work(Millis(0), &w("w1"), session, 1).unwrap();
    let failing = vec![
        report("strict", Status::Failure, Some(FailureClass::Test)),
        report("retrying", Status::Failure, Some(FailureClass::Test)),
    ];
    s.complete(
        Millis(1),
        &w("w1"),
        &RunId::from("r1"),
        &ShardId::from("s1"),
        Attempt(1),
        failing,
    );
    let retry = s.request_work(Millis(2), &w("w1"), session, 1).unwrap();
    assert_eq!(retry[0].jobs, [JobId::from("retrying")]);
    s.complete(
        Millis(3),
        &w("w1"),
        &RunId::from("r1"),
        &ShardId::from("s1"),
        Attempt(2),
        vec![ok("retrying")],
    );
    assert_eq!(result_of(&s, "r1", "strict").status, Status::Failure);
    let flaky = result_of(&s, "r1", "retrying");
    assert_eq!(
        (flaky.status, flaky.flaky, flaky.attempts),
        (Status::Success, true, 2)
    );
    assert_eq!(s.run(&RunId::from("r1")).unwrap().status, Status::Failure);
}

#[test]
fn pushes_outrank_pull_requests_and_pull_requests_share_fairly() {
    let mut s = sched();
    s.submit(
        Millis(0),
        run(
            "pr-old",
            1,
            &[("a1", &["a1"]), ("a2", &["a2"]), ("a3", &["a3"])],
            &[],
        ),
    )
    .unwrap();
    s.submit(
        Millis(1),
        run("pr-new", 1, &[("b1", &["b1"]), ("b2", &["b2"])], &[]),
    )
    .unwrap();
    s.submit(Millis(2), run("push", 2, &[("p1", &["p1"])], &[]))
        .unwrap();
    let session = s.connect(Millis(3), &w("w1"), "", vec![], 4, &[]).unwrap();
    let order: Vec<String> = s
        .request_work(Millis(3), &w("w1"), session, 4)
        .unwrap()
        .into_iter()
        .map(|a| format!("{}/{}", a.run, a.shard))
        .collect();
    assert_eq!(order, ["push/p1", "pr-old/a1", "pr-new/b1", "pr-old/a2"]);
}

#[test]
fn cancelling_a_run_stops_running_shards_and_drops_queued_ones() {
    let mut s = sched();
    s.submit(
        Millis(0),
        run("r1", 1, &[("s1", &["a"]), ("s2", &["b"])], &[]),
    )
    .unwrap();
    let session = s.connect(Millis(0), &w("w1"), "", vec![], 1, &[]).unwrap();
    s.request_work(Millis(0), &w("w1"), session, 1).unwrap();
    s.take_notices();
    s.cancel(Millis(1), &RunId::from("r1")).unwrap();
    let notices = s.take_notices();
    assert!(notices.iter().any(|n| matches!(n, Notice::CancelShard { worker, shard, .. } if worker.0 == "w1" && shard.0 == "s1")));
    assert!(
        !notices
            .iter()
            .any(|n| matches!(n, Notice::RunFinished { .. })),
        "not settled while s1 runs"
    );
    assert!(
        s.request_work(Millis(2), &w("w1"), session, 1)
            .unwrap()
            .is_empty()
    );
    s.complete(
        Millis(3),
        &w("w1"),
        &RunId::from("r1"),
        &ShardId::from("s1"),
        Attempt(1),
        vec![report("a", Status::Cancelled, None)],
    );
    let view = s.run(&RunId::from("r1")).unwrap();
    assert_eq!(view.status, Status::Cancelled);
    assert!(view.finished.is_some());
    assert_eq!(result_of(&s, "r1", "b").status, Status::Cancelled);
}

#[test]
fn a_run_past_its_deadline_is_cancelled() {
    let mut s = sched();
    let mut r = run("r1", 1, &[("s1", &["a"])], &[]);
    r.deadline = Some(Millis(5_000));
    s.submit(Millis(0), r).unwrap();
    assert_eq!(s.next_deadline(), Some(Millis(5_000)));
    s.tick(Millis(5_000));
    assert_eq!(s.run(&RunId::from("r1")).unwrap().status, Status::Cancelled);
}

#[test]
fn a_draining_worker_gets_no_new_work() {
    let mut s = sched();
    s.submit(Millis(0), run("r1", 1, &[("s1", &["a"])], &[]))
        .unwrap();
    let session = s.connect(Millis(0), &w("w1"), "", vec![], 1, &[]).unwrap();
    assert!(s.drain(&w("w1")));
    assert!(
        s.request_work(Millis(0), &w("w1"), session, 1)
            .unwrap()
            .is_empty()
    );
}

#[test]
fn a_lying_worker_is_refused_and_nothing_accepted_is_lost() {
    let mut s = sched();
    s.submit(Millis(0), run("r1", 1, &[("s1", &["a", "b"])], &[]))
        .unwrap();
    let session = s.connect(Millis(0), &w("w1"), "", vec![], 1, &[]).unwrap();
    s.request_work(Millis(0), &w("w1"), session, 1).unwrap();
    let key = (&RunId::from("r1"), &ShardId::from("s1"));
    assert!(
        matches!(
            s.complete(Millis(1), &w("w1"), key.0, key.1, Attempt(1), vec![ok("a")]),
            Ack::Rejected(_)
        ),
        "a missing job"
    );
    assert!(matches!(
        s.complete(
            Millis(1),
            &w("w1"),
            key.0,
            key.1,
            Attempt(1),
            vec![ok("a"), ok("b"), ok("zzz")]
        ),
        Ack::Rejected(_)
    ));
    assert!(matches!(
        s.complete(
            Millis(1),
            &w("w1"),
            key.0,
            key.1,
            Attempt(1),
            vec![ok("a"), report("b", Status::Running, None)]
        ),
        Ack::Rejected(_)
    ));
    assert!(matches!(
        s.complete(
            Millis(1),
            &w("w1"),
            key.0,
            key.1,
            Attempt(7),
            vec![ok("a"), ok("b")]
        ),
        Ack::Rejected(_)
    ));
    assert_eq!(
        s.complete(
            Millis(1),
            &w("intruder"),
            key.0,
            key.1,
            Attempt(1),
            vec![ok("a"), ok("b")]
        ),
        Ack::Fenced
    );
    assert_eq!(
        s.complete(
            Millis(1),
            &w("w1"),
            &RunId::from("nope"),
            key.1,
            Attempt(1),
            vec![]
        ),
        Ack::UnknownShard
    );
    assert!(s.run(&RunId::from("r1")).unwrap().results.is_empty());
    assert_eq!(
        s.complete(
            Millis(2),
            &w("w1"),
            key.0,
            key.1,
            Attempt(1),
            vec![ok("a"), ok("b")]
        ),
        Ack::Accepted
    );
    assert_eq!(s.run(&RunId::from("r1")).unwrap().status, Status::Success);
}

#[test]
fn a_reconnecting_worker_keeps_what_it_still_runs_and_is_told_to_drop_what_was_reassigned() {
    let mut s = sched();
    s.submit(
        Millis(0),
        run("r1", 1, &[("s1", &["a"]), ("s2", &["b"])], &[]),
    )
    .unwrap();
    let first = s.connect(Millis(0), &w("w1"), "", vec![], 2, &[]).unwrap();
    s.request_work(Millis(0), &w("w1"), first, 2).unwrap();
    let s1 = (
        ShardKey {
            run: RunId::from("r1"),
            shard: ShardId::from("s1"),
        },
        Attempt(1),
    );
    // Reconnects quickly, still running s1 only: s2 was lost with the restart.
    let second = s
        .connect(
            Millis(100),
            &w("w1"),
            "",
            vec![],
            2,
            std::slice::from_ref(&s1),
        )
        .unwrap();
    assert!(
        s.request_work(Millis(100), &w("w1"), first, 1).is_err(),
        "the old session is stale"
    );
    let again = s.request_work(Millis(101), &w("w1"), second, 2).unwrap();
    assert_eq!(
        (again[0].shard.0.as_str(), again[0].attempt),
        ("s2", Attempt(2))
    );
    assert_eq!(
        s.complete(
            Millis(102),
            &w("w1"),
            &RunId::from("r1"),
            &ShardId::from("s1"),
            Attempt(1),
            vec![ok("a")]
        ),
        Ack::Accepted
    );
    // A worker that claims an attempt it no longer holds is told to cancel it.
    s.take_notices();
    s.connect(
        Millis(200),
        &w("w1"),
        "",
        vec![],
        2,
        &[(s1.0.clone(), Attempt(1))],
    )
    .unwrap();
    assert!(
        s.take_notices()
            .iter()
            .any(|n| matches!(n, Notice::CancelShard { .. }))
    );
}

#[test]
fn invalid_plans_are_refused() {
    let mut s = sched();
    let mut r = run("r1", 1, &[("s1", &["a"]), ("s2", &["a"])], &[]);
    r.jobs.truncate(1);
    assert!(
        s.submit(Millis(0), r)
            .unwrap_err()
            .to_string()
            .contains("job a is in two shards")
    );
    s.submit(Millis(0), run("r2", 1, &[("s1", &["a"])], &[]))
        .unwrap();
    assert!(
        s.submit(Millis(0), run("r2", 1, &[("s1", &["a"])], &[]))
            .is_err(),
        "duplicate run id"
    );
    // An empty plan finishes at once.
    s.submit(Millis(0), run("empty", 1, &[], &[])).unwrap();
    assert_eq!(
        s.run(&RunId::from("empty")).unwrap().status,
        Status::Success
    );
}

#[test]
fn a_second_process_with_a_live_worker_s_id_is_refused_and_a_reconnect_is_not() {
    let mut s = sched();
    s.submit(Millis(0), run("r1", 1, &[("s1", &["a"])], &[]))
        .unwrap();
    let first = s
        .connect(Millis(0), &w("w1"), "aaaa", vec![], 1, &[])
        .unwrap();
    let got = s.request_work(Millis(0), &w("w1"), first, 1).unwrap();
    let held = (
        ShardKey {
            run: RunId::from("r1"),
            shard: ShardId::from("s1"),
        },
        got[0].attempt,
    );
    // Another process claims the id while the first is connected: refused, nothing taken.
    let refused = s
        .connect(Millis(1), &w("w1"), "bbbb", vec![], 1, &[])
        .expect_err("the id is taken");
    assert!(
        refused.to_string().contains("already connected"),
        "{refused}"
    );
    assert!(s.holds(&w("w1"), &held.0, held.1));
    // The same process reconnecting keeps its attempt.
    let again = s
        .connect(
            Millis(2),
            &w("w1"),
            "aaaa",
            vec![],
            1,
            std::slice::from_ref(&held),
        )
        .unwrap();
    assert_ne!(again, first);
    assert!(s.holds(&w("w1"), &held.0, held.1));
    // Once its connection closes, a new process may take the id (the old attempt is lost).
    s.suspect(Millis(3), &w("w1"), again, 1_000);
    s.connect(Millis(4), &w("w1"), "bbbb", vec![], 1, &[])
        .unwrap();
    assert!(!s.holds(&w("w1"), &held.0, held.1));
}

#[test]
fn a_closed_connection_loses_its_shards_after_the_grace_not_the_lease() {
    let mut s = sched();
    s.submit(Millis(0), run("r1", 1, &[("s1", &["a"])], &[]))
        .unwrap();
    let session = s
        .connect(Millis(0), &w("w1"), "aaaa", vec![], 1, &[])
        .unwrap();
    s.request_work(Millis(0), &w("w1"), session, 1).unwrap();
    s.suspect(Millis(1_000), &w("w1"), session, 1_000);
    assert_eq!(
        s.next_deadline(),
        Some(Millis(2_000)),
        "grace, not the 10 s lease"
    );
    s.tick(Millis(1_999));
    assert_eq!(s.workers().len(), 1, "still within the grace");
    s.tick(Millis(2_000));
    assert!(s.workers().is_empty());
    let w2 = s
        .connect(Millis(2_001), &w("w2"), "cccc", vec![], 1, &[])
        .unwrap();
    let again = s.request_work(Millis(2_001), &w("w2"), w2, 1).unwrap();
    assert_eq!(again[0].attempt, Attempt(2));
    // A stale session's close changes nothing.
    let mut s = sched();
    let old = s
        .connect(Millis(0), &w("w1"), "aaaa", vec![], 1, &[])
        .unwrap();
    let _new = s
        .connect(Millis(1), &w("w1"), "aaaa", vec![], 1, &[])
        .unwrap();
    s.suspect(Millis(2), &w("w1"), old, 1);
    s.tick(Millis(5));
    assert_eq!(s.workers().len(), 1);
}
