//! Live step logs as the coordinator holds them until the run is published: one buffer per
//! attempt of a step (a retried job's attempts never run together), in sequence, fanned out to
//! followers, closed when the attempt completes, and dropped once the store has them.

use std::collections::BTreeMap;

use shardci_proto::v1 as pb;
use shardci_scheduling::schedule::{Attempt, RunId, ShardId};
use tokio::sync::mpsc;

use super::commands::{LogKey, LogVerdict};

#[derive(Default)]
struct LogBuffer {
    data: Vec<u8>,
    /// The shard that ran this attempt of the job.
    shard: String,
    /// Next expected sequence number.
    next_seq: u64,
    done: bool,
    followers: Vec<mpsc::Sender<Vec<u8>>>,
}

/// A buffer's identity: a step of a job, in one attempt.
type BufferKey = (RunId, String, String, u32);

/// Every live log, by (run, job, step, attempt).
#[derive(Default)]
pub(crate) struct LiveLogs {
    buffers: BTreeMap<BufferKey, LogBuffer>,
}

/// The keys of one run: keys start with the run id, so a range finds them.
fn run_range(run: &RunId) -> std::ops::RangeFrom<BufferKey> {
    (run.clone(), String::new(), String::new(), 0)..
}

impl LiveLogs {
    /// Appends a chunk the caller has checked comes from the attempt's holder. Repeats (after
    /// a reconnect) are dropped; a gap is kept and logged.
    pub(crate) fn append(&mut self, chunk: &pb::LogChunk) -> LogVerdict {
        let key = (
            RunId(chunk.run_id.clone()),
            chunk.job_id.clone(),
            chunk.step.clone(),
            chunk.attempt,
        );
        let buffer = self.buffers.entry(key).or_insert_with(|| LogBuffer {
            shard: chunk.shard_id.clone(),
            ..LogBuffer::default()
        });
        if chunk.seq < buffer.next_seq {
            return LogVerdict::Dropped;
        }
        if chunk.seq > buffer.next_seq {
            tracing::warn!(
                seq = chunk.seq,
                expected = buffer.next_seq,
                "log chunks arrived out of order; keeping them"
            );
        }
        buffer.next_seq = chunk.seq + 1;
        buffer.data.extend_from_slice(&chunk.data);
        buffer
            .followers
            .retain(|f| f.try_send(chunk.data.clone()).is_ok());
        if chunk.eof {
            buffer.followers.clear();
        }
        LogVerdict::Accepted
    }

    /// The attempt's completion was accepted: its logs are whole, followers are released.
    pub(crate) fn attempt_done(&mut self, run: &RunId, shard: &ShardId, attempt: Attempt) {
        let this_run = self
            .buffers
            .range_mut(run_range(run))
            .take_while(|(key, _)| &key.0 == run);
        for ((.., buffer_attempt), buffer) in this_run {
            if *buffer_attempt == attempt.0 && buffer.shard == shard.0 {
                buffer.done = true;
                buffer.followers.clear();
            }
        }
    }

    /// The latest attempt of a step that has logged anything.
    fn latest_attempt(&self, key: &LogKey) -> Option<u32> {
        let (run, job, step) = key;
        let first = (run.clone(), job.clone(), step.clone(), 0);
        let last = (run.clone(), job.clone(), step.clone(), u32::MAX);
        self.buffers
            .range(first..=last)
            .next_back()
            .map(|((.., attempt), _)| *attempt)
    }

    /// What an attempt of a step (the latest when `None`) has logged so far, empty when nothing
    /// yet, and, when `follow` is asked and the log is not done, a receiver for what comes next.
    /// Reading never creates a buffer, but a follower may wait for a step's first chunk.
    pub(crate) fn read(
        &mut self,
        key: &LogKey,
        attempt: Option<u32>,
        follow: bool,
    ) -> (Vec<u8>, Option<mpsc::Receiver<Vec<u8>>>) {
        let attempt = attempt.or_else(|| self.latest_attempt(key)).unwrap_or(1);
        let (run, job, step) = key.clone();
        let key = (run, job, step, attempt);
        if !follow {
            return (
                self.buffers
                    .get(&key)
                    .map(|b| b.data.clone())
                    .unwrap_or_default(),
                None,
            );
        }
        let buffer = self.buffers.entry(key).or_default();
        let receiver = (!buffer.done).then(|| {
            let (tx, rx) = mpsc::channel(256);
            buffer.followers.push(tx);
            rx
        });
        (buffer.data.clone(), receiver)
    }

    /// Copies of one run's whole logs by (job, step, attempt), for publishing.
    pub(crate) fn of_run(&self, run: &RunId) -> BTreeMap<(String, String, u32), Vec<u8>> {
        self.buffers
            .range(run_range(run))
            .take_while(|(key, _)| &key.0 == run)
            .map(|((_, job, step, attempt), buffer)| {
                ((job.clone(), step.clone(), *attempt), buffer.data.clone())
            })
            .collect()
    }

    /// Drops one run's logs (they are in the store now).
    pub(crate) fn remove_run(&mut self, run: &RunId) {
        let keys: Vec<BufferKey> = self
            .buffers
            .range(run_range(run))
            .take_while(|(key, _)| &key.0 == run)
            .map(|(key, _)| key.clone())
            .collect();
        for key in keys {
            self.buffers.remove(&key);
        }
    }

    /// How many steps' logs are held, for tests of eviction.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.buffers.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(run: &str, seq: u64, data: &str) -> pb::LogChunk {
        pb::LogChunk {
            run_id: run.into(),
            shard_id: "s1".into(),
            attempt: 1,
            job_id: "j".into(),
            step: "unit".into(),
            seq,
            data: data.as_bytes().to_vec(),
            eof: false,
        }
    }

    fn key(run: &str) -> LogKey {
        (RunId(run.into()), "j".into(), "unit".into())
    }

    #[test]
    fn repeats_are_dropped_and_followers_see_what_comes_next() {
        let mut logs = LiveLogs::default();
        assert_eq!(logs.append(&chunk("r1", 0, "a")), LogVerdict::Accepted);
        assert_eq!(logs.append(&chunk("r1", 0, "a")), LogVerdict::Dropped);
        let (now, follow) = logs.read(&key("r1"), None, true);
        assert_eq!(now, b"a");
        let mut follow = follow.expect("the log is not done");
        assert_eq!(logs.append(&chunk("r1", 1, "b")), LogVerdict::Accepted);
        assert_eq!(follow.try_recv().ok(), Some(b"b".to_vec()));
        logs.attempt_done(&RunId("r1".into()), &ShardId("s1".into()), Attempt(1));
        assert!(
            logs.read(&key("r1"), None, true).1.is_none(),
            "done: nothing to follow"
        );
        assert_eq!(logs.read(&key("r1"), None, false).0, b"ab");
        // A retry's output is its own: attempt 2 does not join attempt 1's.
        let mut retry = chunk("r1", 0, "second try");
        retry.attempt = 2;
        retry.shard_id = "s1".into();
        assert_eq!(logs.append(&retry), LogVerdict::Accepted);
        assert_eq!(logs.read(&key("r1"), None, false).0, b"second try");
        assert_eq!(logs.read(&key("r1"), Some(1), false).0, b"ab");
        assert_eq!(logs.of_run(&RunId("r1".into())).len(), 2);
    }

    #[test]
    fn reading_an_unknown_log_creates_nothing_and_runs_are_removed_whole() {
        let mut logs = LiveLogs::default();
        assert_eq!(logs.read(&key("nope"), None, false).0, b"");
        assert_eq!(logs.len(), 0);
        logs.append(&chunk("r1", 0, "a"));
        logs.append(&chunk("r2", 0, "b"));
        assert_eq!(logs.of_run(&RunId("r1".into())).len(), 1);
        logs.remove_run(&RunId("r1".into()));
        assert_eq!(logs.len(), 1);
        assert_eq!(logs.read(&key("r2"), None, false).0, b"b");
    }
}
