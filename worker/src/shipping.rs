//! Log shipping: each step's output is written to a local file first and shipped from there in
//! sequenced chunks, so a slow or absent coordinator delays logs but never loses them, and a
//! large log is read in pieces, never whole.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use shardci_proto::v1 as pb;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use crate::logs::LogSink;
use crate::shared::{Shared, lock};

/// Largest log chunk sent at once.
const CHUNK_BYTES: usize = 64 * 1024;

/// One log file per (job, step): the sink appends, the shipper sends what is new.
pub(crate) struct LogFile {
    pub(crate) job: String,
    pub(crate) step: String,
    pub(crate) path: PathBuf,
    pub(crate) shipped: u64,
    pub(crate) seq: u64,
    /// Bumped when the log is to be sent again from its start (another coordinator took
    /// over); a pass that read an older epoch does not move `shipped`.
    pub(crate) epoch: u64,
}

/// The log files of one shard attempt.
pub(crate) type LogRegistry = Arc<Mutex<Vec<LogFile>>>;

/// A sink that appends to a step's log file.
pub(crate) struct FileSink {
    pub(crate) file: Option<std::fs::File>,
}

impl LogSink for FileSink {
    fn write(&mut self, bytes: &[u8]) {
        use std::io::Write;
        if let Some(file) = &mut self.file {
            let _ = file.write_all(bytes);
        }
    }
}

/// Ships what each registered file gained since the last call; with `eof`, ends each file's
/// stream with an empty last chunk.
pub(crate) async fn ship_logs(
    shared: &Shared,
    registry: &LogRegistry,
    run: &str,
    shard: &str,
    attempt: u32,
    eof: bool,
) {
    let files: Vec<(usize, PathBuf, u64, u64)> = lock(registry)
        .iter()
        .enumerate()
        .map(|(i, f)| (i, f.path.clone(), f.shipped, f.epoch))
        .collect();
    for (index, path, shipped, epoch) in files {
        let Ok(mut file) = tokio::fs::File::open(&path).await else {
            continue;
        };
        if file.seek(std::io::SeekFrom::Start(shipped)).await.is_err() {
            continue;
        }
        // One chunk in memory at a time, however much the step printed since the last pass.
        let mut buffer = vec![0u8; CHUNK_BYTES];
        while let Ok(read) = file.read(&mut buffer).await {
            if read == 0 && !eof {
                break;
            }
            let piece = buffer[..read].to_vec();
            let (job, step, seq, offset) = {
                let registry = lock(registry);
                let f = &registry[index];
                if f.epoch != epoch {
                    // Reset while this pass read: the next pass starts over.
                    break;
                }
                (f.job.clone(), f.step.clone(), f.seq, f.shipped)
            };
            let chunk = pb::LogChunk {
                run_id: run.into(),
                shard_id: shard.into(),
                attempt,
                job_id: job,
                step,
                seq,
                eof: piece.is_empty(),
                data: piece.clone(),
                offset: Some(offset),
            };
            // Wait for a session rather than drop: the file keeps everything meanwhile.
            let mut link = shared.link.subscribe();
            let outbox = loop {
                if let Some(outbox) = link.borrow_and_update().clone() {
                    break Some(outbox);
                }
                if tokio::time::timeout(Duration::from_secs(30), link.changed())
                    .await
                    .is_err()
                {
                    break None;
                }
            };
            let Some(outbox) = outbox else { return };
            if outbox
                .send(pb::WorkerMessage {
                    msg: Some(pb::worker_message::Msg::Log(chunk)),
                })
                .await
                .is_err()
            {
                return;
            }
            let mut registry = lock(registry);
            if registry[index].epoch != epoch {
                break;
            }
            registry[index].seq += 1;
            registry[index].shipped += piece.len() as u64;
            if piece.is_empty() {
                break;
            }
        }
    }
}

/// The logs of every shard attempt still running here, for a new coordinator.
pub(crate) type LiveRegistries = std::sync::Mutex<Vec<std::sync::Weak<Mutex<Vec<LogFile>>>>>;

/// Another coordinator answered (a failover, a restart): it holds none of the running steps'
/// logs, so each is sent again from its start (the receiver keeps only what it lacks).
pub(crate) fn ship_again_from_the_start(live: &LiveRegistries) {
    let mut live = lock(live);
    live.retain(|registry| registry.strong_count() > 0);
    for registry in live.iter().filter_map(std::sync::Weak::upgrade) {
        for file in lock(&registry).iter_mut() {
            file.shipped = 0;
            file.seq = 0;
            file.epoch += 1;
        }
    }
}

/// Stores each step's whole log under its attempt's number, beside the step's artifacts, before
/// the shard's completion is reported: whichever coordinator publishes the run finds it there,
/// even one that never heard the step's chunks (after a failover or a restart). Without a
/// store, the coordinator's spool is all there is.
pub(crate) async fn store_logs(shared: &Shared, registry: &LogRegistry, run: &str, attempt: u32) {
    let store = lock(&shared.artifact_store)
        .as_ref()
        .map(|(_, store)| store.clone());
    let Some(store) = store else { return };
    let files: Vec<(String, String, PathBuf)> = lock(registry)
        .iter()
        .map(|f| (f.job.clone(), f.step.clone(), f.path.clone()))
        .collect();
    for (job, step, path) in files {
        let Ok(meta) = tokio::fs::metadata(&path).await else {
            continue;
        };
        let key = shardci_types::log_key(run, &job, &step, Some(attempt));
        if let Err(e) = crate::artifacts::upload_file(store.as_ref(), &key, &path, meta.len()).await
        {
            tracing::warn!(%key, error = %e, "failed to store a step's log; the coordinator's copy is all there is");
        }
    }
}
