//! The messages a worker's session is answered with, built in one place for the actor, the
//! writer and the session task.

use std::time::Duration;

use shardci_proto::v1 as pb;
use shardci_scheduling::schedule::{Ack, Attempt, ShardKey};

/// How long a worker told "no work" waits before asking again, unless woken sooner.
pub(crate) const NO_WORK_RETRY: Duration = Duration::from_millis(500);

/// "Nothing for you now; ask again after `retry_after`."
pub(crate) fn no_work(retry_after: Duration) -> pb::CoordinatorMessage {
    pb::CoordinatorMessage {
        msg: Some(pb::coordinator_message::Msg::NoWork(pb::NoWork {
            retry_after: Some(crate::wire::wire_duration(retry_after)),
        })),
    }
}

/// The verdict on a shard attempt's results.
pub(crate) fn ack_message(key: &ShardKey, attempt: Attempt, ack: Ack) -> pb::CoordinatorMessage {
    let (outcome, message) = match ack {
        Ack::Accepted => (pb::ack::Outcome::Accepted, String::new()),
        Ack::AlreadyDone => (pb::ack::Outcome::AlreadyDone, String::new()),
        Ack::Fenced => (
            pb::ack::Outcome::Fenced,
            format!("attempt {attempt} of {key} is no longer current"),
        ),
        Ack::UnknownShard => (pb::ack::Outcome::UnknownShard, format!("no shard {key}")),
        Ack::Rejected(why) => (pb::ack::Outcome::Rejected, why),
    };
    pb::CoordinatorMessage {
        msg: Some(pb::coordinator_message::Msg::Ack(pb::Ack {
            shard: Some(pb::ShardRef {
                run_id: key.run.0.clone(),
                shard_id: key.shard.0.clone(),
                attempt: attempt.0,
            }),
            outcome: outcome as i32,
            message,
        })),
    }
}
