//! `shardci gc`: retention for a store. Lists by default; deletes only with --delete.

use std::time::SystemTime;

use shardci_planning::config::parse_duration;

use crate::args::GcArgs;
use crate::exit::{Code, Failure};

fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

pub fn run(args: GcArgs) -> Result<Code, Failure> {
    let max_age = parse_duration(&args.older_than)
        .map_err(|e| Failure::usage(anyhow::anyhow!("--older-than: {e}")))?;
    let store = super::report::existing_store(args.store.as_deref(), &args.repo)?;
    let runtime = super::runtime()?;
    let now = SystemTime::now();
    let expired = runtime
        .block_on(store.expired_runs(max_age, now))
        .map_err(|e| Failure::infrastructure(anyhow::anyhow!("failed to list runs: {e}")))?;
    let entries = runtime
        .block_on(store.expired_cache_entries(max_age, now))
        .map_err(|e| {
            Failure::infrastructure(anyhow::anyhow!("failed to list the step cache: {e}"))
        })?;
    let cache_entries = entries.len();
    let expired_ids: Vec<String> = expired.iter().map(|r| r.run_id.clone()).collect();
    let mut images = runtime
        .block_on(store.unreferenced_images(max_age, now, &entries, &expired_ids))
        .map_err(|e| {
            Failure::infrastructure(anyhow::anyhow!("failed to list the stored images: {e}"))
        })?;
    if let Some(size) = &args.max_images_size {
        let max = shardci_planning::config::parse_size(size)
            .map_err(|e| Failure::usage(anyhow::anyhow!("--max-images-size: {e}")))?;
        let (over, _) = runtime
            .block_on(store.images_over_size(max, &images))
            .map_err(|e| {
                Failure::infrastructure(anyhow::anyhow!("failed to list the stored images: {e}"))
            })?;
        images.extend(over);
    }
    let image_count = images.len();
    let mut deleted = 0;
    if args.delete {
        deleted += runtime
            .block_on(store.delete_objects(entries))
            .map_err(|e| {
                Failure::infrastructure(anyhow::anyhow!("failed to delete step cache entries: {e}"))
            })?;
        deleted += runtime
            .block_on(store.delete_objects(images))
            .map_err(|e| {
                Failure::infrastructure(anyhow::anyhow!("failed to delete stored images: {e}"))
            })?;
        for run in &expired {
            deleted += runtime
                .block_on(store.delete_run(&run.run_id))
                .map_err(|e| {
                    Failure::infrastructure(anyhow::anyhow!(
                        "failed to delete run {} ({deleted} object(s) deleted so far): {e}",
                        run.run_id
                    ))
                })?;
        }
    }
    let now_secs = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    if args.json {
        let json = serde_json::json!({
            "deleted": args.delete,
            "older_than_seconds": max_age,
            "runs": expired,
            "cache_entries": cache_entries,
            "images": image_count,
        });
        println!(
            "{}",
            serde_json::to_string_pretty(&json).unwrap_or_default()
        );
        return Ok(Code::Success);
    }
    for run in &expired {
        let age_days = (now_secs - run.last_modified) as f64 / 86_400.0;
        println!(
            "{}  {:>6.1} days old  {:>5} object(s)  {}",
            run.run_id,
            age_days,
            run.objects,
            human_bytes(run.bytes)
        );
    }
    let bytes: u64 = expired.iter().map(|r| r.bytes).sum();
    let objects: usize = expired.iter().map(|r| r.objects).sum();
    if args.delete {
        eprintln!(
            "deleted {} run(s), {cache_entries} step cache entr(ies) and {image_count} image(s): {deleted} object(s), {} of runs",
            expired.len(),
            human_bytes(bytes)
        );
    } else {
        eprintln!(
            "would delete {} run(s), {cache_entries} step cache entr(ies) and {image_count} image(s): {} object(s), {} of runs (dry run; pass --delete to delete)",
            expired.len(),
            objects + cache_entries + image_count,
            human_bytes(bytes)
        );
    }
    Ok(Code::Success)
}
