//! Scheduled runs (`[[schedules]]`): while this coordinator leads, each tick of a schedule's
//! cron pattern plans and submits its ref. Exactly one run per tick whatever the number of
//! coordinators: only the leader fires, and each tick's submission carries the key
//! `schedule:<name>:<tick>`, which the run store keeps durably, so a tick fired again (by a
//! new leader catching up) answers with the run it already made. A tick that passed while no
//! coordinator led fires once when one does, if it is no older than the schedule's
//! `catch_up`.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use shardci_types::Event;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::remote_plan::{RemotePlanner, Trigger};
use crate::election::Role;
use crate::repositories::{Repository, Schedule};

pub(crate) async fn run(
    schedules: Vec<Schedule>,
    repositories: Vec<Repository>,
    planner: Arc<RemotePlanner>,
    mut roles: watch::Receiver<Role>,
    stop: CancellationToken,
) {
    let leading = |roles: &watch::Receiver<Role>| matches!(*roles.borrow(), Role::Leader);
    loop {
        while !leading(&roles) {
            tokio::select! {
                () = stop.cancelled() => return,
                changed = roles.changed() => if changed.is_err() { return },
            }
        }
        let now = Utc::now();
        for schedule in &schedules {
            if let Ok(missed) = schedule.cron.find_previous_occurrence(&now, true)
                && (now - missed)
                    .to_std()
                    .is_ok_and(|age| age <= schedule.catch_up)
            {
                fire(schedule, &repositories, &planner, missed);
            }
        }
        let mut after = now;
        while leading(&roles) {
            let next = schedules
                .iter()
                .filter_map(|s| s.cron.find_next_occurrence(&after, false).ok())
                .min();
            let Some(next) = next else { return };
            let wait = (next - Utc::now()).to_std().unwrap_or_default();
            tokio::select! {
                () = stop.cancelled() => return,
                changed = roles.changed() => if changed.is_err() { return },
                () = tokio::time::sleep(wait) => {
                    for schedule in &schedules {
                        if schedule.cron.find_next_occurrence(&after, false).ok() == Some(next) {
                            fire(schedule, &repositories, &planner, next);
                        }
                    }
                    after = next;
                }
            }
        }
    }
}

fn fire(
    schedule: &Schedule,
    repositories: &[Repository],
    planner: &Arc<RemotePlanner>,
    tick: DateTime<Utc>,
) {
    let Some(repository) = repositories.iter().find(|r| r.name == schedule.repository) else {
        return;
    };
    let tick_text = tick.format("%Y-%m-%dT%H:%M:%SZ").to_string();
    let trigger = Trigger {
        repository: repository.clone(),
        event: Event::Schedule,
        head: schedule.reference.clone(),
        branch: Some(schedule.reference.clone()),
        base_branch: None,
        labels: schedule.labels.clone(),
        all: false,
        secrets: Default::default(),
        submitted_by: format!("schedule {} (tick {tick_text})", schedule.name),
        idempotency_key: format!("schedule:{}:{}", schedule.name, tick.timestamp()),
    };
    let planner = planner.clone();
    let name = schedule.name.clone();
    tokio::spawn(async move {
        match planner.run(trigger).await {
            Ok(run) => {
                tracing::info!(%run, schedule = %name, tick = %tick_text, "a schedule started a run")
            }
            Err(e) => {
                tracing::warn!(schedule = %name, tick = %tick_text, error = %e, "a schedule's run was not started")
            }
        }
    });
}
