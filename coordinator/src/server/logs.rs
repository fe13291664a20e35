//! Live step logs as the coordinator holds them until the run is published: one spool file per
//! attempt of a step (a retried job's attempts never run together), appended in sequence,
//! fanned out to followers, closed when the attempt completes, and deleted once the store has
//! them. Nothing but the followers' in-flight chunks is held in memory, so a step printing
//! gigabytes costs the coordinator disk, not memory.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use shardci_proto::v1 as pb;
use shardci_scheduling::schedule::{Attempt, RunId, ShardId};
use tokio::sync::mpsc;

use super::commands::{LogKey, LogVerdict};

struct LogBuffer {
    /// The spool file.
    file: PathBuf,
    /// Bytes in it.
    len: u64,
    /// The shard that ran this attempt of the job.
    shard: String,
    /// Next expected sequence number.
    next_seq: u64,
    done: bool,
    followers: Vec<mpsc::Sender<Vec<u8>>>,
}

/// A buffer's identity: a step of a job, in one attempt.
type BufferKey = (RunId, String, String, u32);

/// What a reader gets: the spooled bytes so far (`len` of `file`; no file when the step has not
/// logged yet) and, when following an unfinished log, what comes after them.
pub(crate) struct LogSnapshot {
    /// The attempt read (the latest, unless one was asked for).
    pub attempt: u32,
    pub file: Option<PathBuf>,
    pub len: u64,
    pub follow: Option<mpsc::Receiver<Vec<u8>>>,
}

/// Every live log, by (run, job, step, attempt).
pub(crate) struct LiveLogs {
    dir: PathBuf,
    next_file: u64,
    buffers: BTreeMap<BufferKey, LogBuffer>,
}

/// The keys of one run: keys start with the run id, so a range finds them.
fn run_range(run: &RunId) -> std::ops::RangeFrom<BufferKey> {
    (run.clone(), String::new(), String::new(), 0)..
}

impl LiveLogs {
    /// Spools into `dir`, emptied first: what an earlier process left there has no run here.
    pub(crate) fn new(dir: &Path) -> std::io::Result<Self> {
        match std::fs::remove_dir_all(dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        std::fs::create_dir_all(dir)?;
        Ok(Self {
            dir: dir.to_path_buf(),
            next_file: 0,
            buffers: BTreeMap::new(),
        })
    }

    fn buffer(&mut self, key: BufferKey, shard: &str) -> &mut LogBuffer {
        let dir = &self.dir;
        let next_file = &mut self.next_file;
        self.buffers.entry(key).or_insert_with(|| {
            *next_file += 1;
            LogBuffer {
                file: dir.join(format!("{next_file}.log")),
                len: 0,
                shard: shard.to_string(),
                next_seq: 0,
                done: false,
                followers: Vec::new(),
            }
        })
    }

    /// Appends a chunk the caller has checked comes from the attempt's holder. Repeats (after
    /// a reconnect) are dropped; a gap is kept and logged.
    pub(crate) fn append(&mut self, chunk: &pb::LogChunk) -> LogVerdict {
        let key = (
            RunId(chunk.run_id.clone()),
            chunk.job_id.clone(),
            chunk.step.clone(),
            chunk.attempt,
        );
        let buffer = self.buffer(key, &chunk.shard_id);
        let mut data: &[u8] = &chunk.data;
        match chunk.offset {
            // Keep only the bytes after what the spool holds: a log sent again from its start
            // (after a failover, in other pieces) adds nothing twice.
            Some(offset) => {
                let end = offset.saturating_add(data.len() as u64);
                if end <= buffer.len && !(chunk.eof && end == buffer.len) {
                    return LogVerdict::Dropped;
                }
                if offset > buffer.len {
                    // Bytes before it never arrived (lost with a session, or sent before a
                    // resend from the start): kept, it would sit in the wrong place. The
                    // worker sends the log again from its start on its next session, and
                    // stores it whole at the end either way.
                    tracing::debug!(
                        offset,
                        held = buffer.len,
                        "dropping a log chunk that starts past what was received"
                    );
                    return LogVerdict::Dropped;
                }
                data = &data[(buffer.len - offset) as usize..];
                buffer.next_seq = buffer.next_seq.max(chunk.seq + 1);
            }
            None => {
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
            }
        }
        if !data.is_empty() {
            let written = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&buffer.file)
                .and_then(|mut f| f.write_all(data));
            match written {
                Ok(()) => buffer.len += data.len() as u64,
                Err(e) => {
                    tracing::error!(file = %buffer.file.display(), error = %e, "failed to spool a log chunk");
                }
            }
        }
        buffer
            .followers
            .retain(|f| f.try_send(data.to_vec()).is_ok());
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

    /// What an attempt of a step (the latest when `None`) has logged so far and, when `follow`
    /// is asked and the log is not done, a receiver for what comes next. Reading never creates
    /// a buffer, but a follower may wait for a step's first chunk.
    pub(crate) fn read(&mut self, key: &LogKey, attempt: Option<u32>, follow: bool) -> LogSnapshot {
        let attempt = attempt.or_else(|| self.latest_attempt(key)).unwrap_or(1);
        let (run, job, step) = key.clone();
        let key = (run, job, step, attempt);
        if !follow {
            return match self.buffers.get(&key) {
                Some(buffer) => LogSnapshot {
                    attempt,
                    file: Some(buffer.file.clone()),
                    len: buffer.len,
                    follow: None,
                },
                None => LogSnapshot {
                    attempt,
                    file: None,
                    len: 0,
                    follow: None,
                },
            };
        }
        let buffer = self.buffer(key, "");
        let follow = (!buffer.done).then(|| {
            let (tx, rx) = mpsc::channel(256);
            buffer.followers.push(tx);
            rx
        });
        LogSnapshot {
            attempt,
            file: Some(buffer.file.clone()),
            len: buffer.len,
            follow,
        }
    }

    /// One run's spooled logs by (job, step, attempt), for publishing.
    pub(crate) fn of_run(&self, run: &RunId) -> BTreeMap<(String, String, u32), PathBuf> {
        self.buffers
            .range(run_range(run))
            .take_while(|(key, _)| &key.0 == run)
            .filter(|(_, buffer)| buffer.len > 0 || buffer.file.exists())
            .map(|((_, job, step, attempt), buffer)| {
                ((job.clone(), step.clone(), *attempt), buffer.file.clone())
            })
            .collect()
    }

    /// Drops one run's logs and their files (they are in the store now).
    pub(crate) fn remove_run(&mut self, run: &RunId) {
        let keys: Vec<BufferKey> = self
            .buffers
            .range(run_range(run))
            .take_while(|(key, _)| &key.0 == run)
            .map(|(key, _)| key.clone())
            .collect();
        for key in keys {
            if let Some(buffer) = self.buffers.remove(&key) {
                let _ = std::fs::remove_file(&buffer.file);
            }
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
            offset: None,
        }
    }

    fn at(offset: u64, data: &str) -> pb::LogChunk {
        pb::LogChunk {
            offset: Some(offset),
            ..chunk("r1", 0, data)
        }
    }

    #[test]
    fn a_log_sent_again_from_its_start_in_other_pieces_adds_only_what_was_missing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut logs = LiveLogs::new(dir.path()).expect("a spool");
        assert_eq!(logs.append(&at(0, "hello ")), LogVerdict::Accepted);
        assert_eq!(logs.append(&at(6, "wor")), LogVerdict::Accepted);
        // The worker met another coordinator and came back: everything again, cut differently.
        assert_eq!(logs.append(&at(0, "hel")), LogVerdict::Dropped);
        assert_eq!(logs.append(&at(3, "lo world")), LogVerdict::Accepted);
        assert_eq!(logs.append(&at(11, "!")), LogVerdict::Accepted);
        assert_eq!(
            logs.append(&at(20, "from a session that was lost")),
            LogVerdict::Dropped,
            "a chunk past what arrived would sit in the wrong place"
        );
        assert_eq!(text(&logs.read(&key("r1"), None, false)), "hello world!");
        let mut end = at(12, "");
        end.eof = true;
        assert_eq!(logs.append(&end), LogVerdict::Accepted);
    }

    fn key(run: &str) -> LogKey {
        (RunId(run.into()), "j".into(), "unit".into())
    }

    fn text(snapshot: &LogSnapshot) -> String {
        let bytes = snapshot
            .file
            .as_ref()
            .and_then(|f| std::fs::read(f).ok())
            .unwrap_or_default();
        String::from_utf8_lossy(&bytes[..snapshot.len as usize]).into_owned()
    }

    #[test]
    fn repeats_are_dropped_and_followers_see_what_comes_next() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut logs = LiveLogs::new(dir.path()).expect("a spool");
        assert_eq!(logs.append(&chunk("r1", 0, "a")), LogVerdict::Accepted);
        assert_eq!(logs.append(&chunk("r1", 0, "a")), LogVerdict::Dropped);
        let now = logs.read(&key("r1"), None, true);
        assert_eq!(text(&now), "a");
        let mut follow = now.follow.expect("the log is not done");
        assert_eq!(logs.append(&chunk("r1", 1, "b")), LogVerdict::Accepted);
        assert_eq!(follow.try_recv().ok(), Some(b"b".to_vec()));
        logs.attempt_done(&RunId("r1".into()), &ShardId("s1".into()), Attempt(1));
        assert!(
            logs.read(&key("r1"), None, true).follow.is_none(),
            "done: nothing to follow"
        );
        assert_eq!(text(&logs.read(&key("r1"), None, false)), "ab");
        // A retry's output is its own: attempt 2 does not join attempt 1's.
        let mut retry = chunk("r1", 0, "second try");
        retry.attempt = 2;
        assert_eq!(logs.append(&retry), LogVerdict::Accepted);
        assert_eq!(text(&logs.read(&key("r1"), None, false)), "second try");
        assert_eq!(text(&logs.read(&key("r1"), Some(1), false)), "ab");
        assert_eq!(logs.of_run(&RunId("r1".into())).len(), 2);
    }

    #[test]
    fn reading_an_unknown_log_creates_nothing_and_runs_are_removed_with_their_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("stale.log"), "from an earlier process").expect("write");
        let mut logs = LiveLogs::new(dir.path()).expect("a spool");
        assert!(
            !dir.path().join("stale.log").exists(),
            "the spool starts empty"
        );
        assert_eq!(text(&logs.read(&key("nope"), None, false)), "");
        assert_eq!(logs.len(), 0);
        logs.append(&chunk("r1", 0, "a"));
        logs.append(&chunk("r2", 0, "b"));
        let files = logs.of_run(&RunId("r1".into()));
        assert_eq!(files.len(), 1);
        logs.remove_run(&RunId("r1".into()));
        assert_eq!(logs.len(), 1);
        assert!(
            files.values().all(|f| !f.exists()),
            "its spool files are gone"
        );
        assert_eq!(text(&logs.read(&key("r2"), None, false)), "b");
    }
}
