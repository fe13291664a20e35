//! This process's identity on its host. A worker id names a worker to people and to the
//! coordinator; an instance id names one process, minted at start. The coordinator refuses a
//! second live session for a worker id from another instance, and containers carry the
//! instance that started them, so a sweep removes only containers whose process is gone.
//!
//! Liveness on a host is a lock file per instance (`<dir>/<instance>.lock`, held with an
//! exclusive `flock` for the life of the process): the kernel drops the lock when the process
//! dies, even by `kill -9`, so any worker on the host that can take the lock knows the instance
//! is dead. The folder is `SHARDCI_INSTANCE_DIR`, else `shardci-instances` under the system's
//! temporary folder; every worker that shares a Docker daemon must share it.

use std::fs::File;
use std::io::Read;
use std::path::PathBuf;
use std::sync::OnceLock;

/// The folder of instance lock files on this host.
pub fn lock_dir() -> PathBuf {
    std::env::var_os("SHARDCI_INSTANCE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("shardci-instances"))
}

struct Instance {
    id: String,
    /// Held (locked) until the process exits; `None` if the lock could not be taken.
    _lock: Option<File>,
}

static INSTANCE: OnceLock<Instance> = OnceLock::new();

fn random_hex(bytes: usize) -> String {
    let mut buffer = vec![0u8; bytes];
    let filled = File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buffer))
        .is_ok();
    if !filled {
        // No /dev/urandom: time and pid still differ between processes on a host.
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
            ^ u128::from(std::process::id());
        for (i, b) in buffer.iter_mut().enumerate() {
            *b = (seed >> ((i % 16) * 8)) as u8;
        }
    }
    buffer.iter().map(|b| format!("{b:02x}")).collect()
}

fn acquire() -> Instance {
    let id = random_hex(8);
    let dir = lock_dir();
    let lock = std::fs::create_dir_all(&dir)
        .and_then(|()| File::create(dir.join(format!("{id}.lock"))))
        .and_then(|file| {
            file.try_lock()
                .map(|()| file)
                .map_err(std::io::Error::other)
        });
    match lock {
        Ok(file) => Instance {
            id,
            _lock: Some(file),
        },
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e, "no instance lock: other workers on this host cannot tell that this one is alive");
            Instance { id, _lock: None }
        }
    }
}

/// This process's instance id (16 hex digits), minted and locked on first use.
pub fn id() -> &'static str {
    &INSTANCE.get_or_init(acquire).id
}

/// Whether `instance`'s process is gone: its lock file exists and can be locked. An instance
/// with no lock file here is unknown (another host, or no lock taken) and counts as alive.
pub fn is_dead(instance: &str) -> bool {
    if instance == id() || !instance.bytes().all(|b| b.is_ascii_hexdigit()) {
        return false;
    }
    let path = lock_dir().join(format!("{instance}.lock"));
    match File::options().write(true).open(&path) {
        Ok(file) => file.try_lock().is_ok(),
        Err(_) => false,
    }
}

/// Forgets a dead instance's lock file once its containers are gone.
pub fn forget(instance: &str) {
    if is_dead(instance) {
        let _ = std::fs::remove_file(lock_dir().join(format!("{instance}.lock")));
    }
}

/// A default worker id unique per process on a host: the host name and part of the instance.
pub fn default_worker_id() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "worker".into());
    format!("{host}-{}", &id()[..6])
}

#[cfg(test)]
mod tests {
    #[test]
    fn this_instance_is_alive_and_a_released_one_is_dead() {
        let me = super::id();
        assert_eq!(me.len(), 16);
        assert!(!super::is_dead(me));
        // An instance whose process let go of its lock.
        let other = "00000000deadbeef";
        std::fs::create_dir_all(super::lock_dir()).expect("lock dir");
        std::fs::write(super::lock_dir().join(format!("{other}.lock")), "").expect("write");
        assert!(super::is_dead(other));
        super::forget(other);
        assert!(!super::lock_dir().join(format!("{other}.lock")).exists());
        // Unknown here: alive as far as this host can tell.
        assert!(!super::is_dead("0123456789abcdef"));
        assert!(!super::is_dead("../../etc/passwd"));
    }
}
