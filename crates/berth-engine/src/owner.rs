//! Owner identity and liveness.
//!
//! Each berth process registers as an owner: a random id plus an exclusive lock on a file named
//! after it in the owners directory. The kernel drops the lock when the process dies, however it
//! dies (SIGKILL included), so "the lock can be taken" means "the owner is dead" without trusting
//! pids, which get reused.

use std::fs::{File, OpenOptions};
use std::path::PathBuf;

use crate::{Labels, labels};

/// A registered berth process; dropping it releases the liveness lock and removes its file.
#[derive(Debug)]
pub struct Owner {
    id: String,
    host: String,
    lock_path: PathBuf,
    _lock: File,
}

/// Directory holding one lock file per live owner (`BERTH_OWNERS_DIR`, else under the temp dir).
pub fn owners_dir() -> PathBuf {
    std::env::var_os("BERTH_OWNERS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("berth-owners"))
}

pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    if let Ok(mut f) = File::open("/dev/urandom") {
        use std::io::Read;
        let _ = f.read_exact(&mut buf);
    }
    if buf.iter().all(|b| *b == 0) {
        // No /dev/urandom: fall back to time and pid, still unique enough per host.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
            ^ u128::from(std::process::id());
        buf = t.to_le_bytes()[..bytes.min(16)].to_vec();
    }
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

impl Owner {
    /// Registers this process as a new owner.
    pub fn register() -> std::io::Result<Owner> {
        Owner::register_in(owners_dir())
    }

    /// Registers this process as a new owner, with its lock file in `dir`.
    pub fn register_in(dir: PathBuf) -> std::io::Result<Owner> {
        std::fs::create_dir_all(&dir)?;
        let id = random_hex(6);
        let lock_path = dir.join(format!("{id}.lock"));
        let lock = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(&lock_path)?;
        lock.lock()?;
        Ok(Owner {
            id,
            host: hostname(),
            lock_path,
            _lock: lock,
        })
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// The owner labels for an object of this owner.
    pub fn labels(&self) -> Labels {
        Labels::from([
            (labels::OWNER.to_string(), self.id.clone()),
            (labels::OWNER_HOST.to_string(), self.host.clone()),
            (
                labels::OWNER_LOCK.to_string(),
                self.lock_path.display().to_string(),
            ),
        ])
    }

    /// Whether the owner with these labels is certainly dead. Owners on other hosts, and owners
    /// whose liveness cannot be told, count as alive: gc must never touch a live run.
    pub fn is_dead(object_labels: &Labels) -> bool {
        Owner::is_dead_in(&owners_dir(), object_labels)
    }

    /// [`Owner::is_dead`] with lock files in `dir`.
    pub fn is_dead_in(dir: &std::path::Path, object_labels: &Labels) -> bool {
        let Some(id) = object_labels.get(labels::OWNER) else {
            return false;
        };
        if object_labels.get(labels::OWNER_HOST).map(String::as_str) != Some(hostname().as_str()) {
            return false;
        }
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return false;
        }
        // The lock the owner recorded (only a `<id>.lock` file, by absolute path), else the
        // default directory's. Opened read-only: flock needs no write access.
        let file_name = format!("{id}.lock");
        let path = object_labels
            .get(labels::OWNER_LOCK)
            .map(PathBuf::from)
            .filter(|p| p.is_absolute() && p.file_name().is_some_and(|n| n == file_name.as_str()))
            .unwrap_or_else(|| dir.join(&file_name));
        match OpenOptions::new().read(true).open(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
            Err(_) => false,
            Ok(f) => match f.try_lock() {
                Ok(()) => {
                    let _ = std::fs::remove_file(&path);
                    true
                }
                Err(_) => false,
            },
        }
    }
}

impl Drop for Owner {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.lock_path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_registered_owner_is_alive_until_dropped() {
        let dir = std::env::temp_dir().join(format!("berth-owner-test-{}", std::process::id()));
        let owner = Owner::register_in(dir.clone()).unwrap();
        let labels = owner.labels();
        assert!(!Owner::is_dead_in(&dir, &labels));
        drop(owner);
        assert!(Owner::is_dead_in(&dir, &labels));
        let mut foreign = labels.clone();
        foreign.insert(labels::OWNER_HOST.into(), "another-host".into());
        assert!(!Owner::is_dead_in(&dir, &foreign));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn liveness_follows_the_recorded_lock_whatever_the_checkers_directory() {
        let dir = std::env::temp_dir().join(format!("berth-owner-test2-{}", std::process::id()));
        let elsewhere = dir.join("elsewhere");
        let owner = Owner::register_in(dir.join("owners")).unwrap();
        let labels = owner.labels();
        // A checker with another owners directory still sees the owner alive.
        assert!(!Owner::is_dead_in(&elsewhere, &labels));
        // A recorded path that is not `<id>.lock` is ignored (falls back to the directory).
        let mut odd = labels.clone();
        odd.insert(labels::OWNER_LOCK.into(), "/etc/passwd".into());
        assert!(Owner::is_dead_in(&elsewhere, &odd));
        drop(owner);
        assert!(Owner::is_dead_in(&elsewhere, &labels));
        let _ = std::fs::remove_dir_all(dir);
    }
}
