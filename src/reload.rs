//! Reloading files at run time: the gossip keyring (`--keyring-file`) and the exchange's TLS
//! certificate, key and CA (`tls_config`) are read again on SIGHUP and when a file changes.
//!
//! [`sighup`] turns the signal into a counter every reloader watches; a [`FileWatch`] waits
//! for the next SIGHUP or for a change of one of its files (modification time, size or inode,
//! checked every [`RELOAD_POLL`]), so an `mv` of a new file over the old one is seen too. A
//! reloader reads its files again when [`FileWatch::changed`] returns, keeps what it had
//! when the new files are bad, and logs the outcome either way.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info};

/// How often watched files are checked for a change.
pub const RELOAD_POLL: Duration = Duration::from_secs(1);

/// A counter of the SIGHUPs received since start; every reloader subscribes to it. Without
/// a signal handler (not unix, or it cannot be installed), it never moves: files are still
/// watched.
pub fn sighup(tracker: &TaskTracker, shutdown: CancellationToken) -> watch::Receiver<u64> {
    let (tx, rx) = watch::channel(0u64);
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::hangup()) {
            Ok(mut hup) => {
                tracker.spawn(async move {
                    loop {
                        tokio::select! {
                            () = shutdown.cancelled() => return,
                            got = hup.recv() => if got.is_none() { return },
                        }
                        tracing::info!(
                            "SIGHUP received: reloading the config file, keyring and TLS files"
                        );
                        tx.send_modify(|n| *n += 1);
                    }
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGHUP; files are still watched")
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = (tracker, shutdown);
        drop(tx);
    }
    rx
}

/// Why a [`FileWatch`] fired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// A SIGHUP arrived.
    Signal,
    /// One of the files changed (or appeared, or went away).
    FileChanged,
}

/// What identifies one version of a file: modification time, length and inode.
type Stamp = Option<(SystemTime, u64, u64)>;

fn stamp(path: &PathBuf) -> Stamp {
    let meta = std::fs::metadata(path).ok()?;
    #[cfg(unix)]
    let inode = std::os::unix::fs::MetadataExt::ino(&meta);
    #[cfg(not(unix))]
    let inode = 0;
    Some((meta.modified().ok()?, meta.len(), inode))
}

/// Waits for SIGHUP or a change of one of a set of files.
#[derive(Debug)]
pub struct FileWatch {
    paths: Vec<PathBuf>,
    stamps: Vec<Stamp>,
    hup: watch::Receiver<u64>,
}

impl FileWatch {
    /// Watches `paths` (their current versions count as seen) and the SIGHUP counter `hup`.
    pub fn new(paths: Vec<PathBuf>, mut hup: watch::Receiver<u64>) -> FileWatch {
        hup.mark_unchanged();
        let stamps = paths.iter().map(stamp).collect();
        FileWatch { paths, stamps, hup }
    }

    /// Resolves at the next SIGHUP or file change (checked every [`RELOAD_POLL`]). The new
    /// versions of the files count as seen from then on.
    pub async fn changed(&mut self) -> Trigger {
        let mut signals_open = true;
        loop {
            tokio::select! {
                got = self.hup.changed(), if signals_open => match got {
                    Ok(()) => {
                        self.hup.mark_unchanged();
                        self.stamps = self.paths.iter().map(stamp).collect();
                        return Trigger::Signal;
                    }
                    Err(_) => signals_open = false,
                },
                () = tokio::time::sleep(RELOAD_POLL) => {
                    let now: Vec<Stamp> = self.paths.iter().map(stamp).collect();
                    if now != self.stamps {
                        self.stamps = now;
                        return Trigger::FileChanged;
                    }
                }
            }
        }
    }
}

/// Material read from files (TLS configurations), replaced as a whole by a successful
/// reload; readers take the current one for each new connection.
#[derive(Debug)]
pub struct Reloaded<T> {
    current: RwLock<Arc<T>>,
}

impl<T> Reloaded<T> {
    /// Starts with `value`.
    pub fn new(value: T) -> Reloaded<T> {
        Reloaded {
            current: RwLock::new(Arc::new(value)),
        }
    }

    /// The current material.
    pub fn get(&self) -> Arc<T> {
        self.current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Replaces the material (new readers get `value`; those holding the old keep it).
    pub fn replace(&self, value: T) {
        *self
            .current
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(value);
    }
}

/// Calls `reload` whenever `watch` fires, until `shutdown`, and logs each outcome: `{what}
/// reloaded` at INFO with what `reload` returns, or `{what} files refused` at ERROR with its
/// error (the material in use stays).
pub async fn follow<E: std::error::Error + 'static>(
    mut watch: FileWatch,
    shutdown: CancellationToken,
    what: &'static str,
    mut reload: impl FnMut() -> Result<String, E>,
) {
    loop {
        let trigger = tokio::select! {
            () = shutdown.cancelled() => return,
            trigger = watch.changed() => trigger,
        };
        match reload() {
            Ok(detail) => info!(?trigger, "{what} reloaded: {detail}"),
            Err(e) => error!(?trigger, error = %crate::errors::error_chain(&e),
                "{what} files refused; keeping what is in use"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_rewritten_file_and_a_signal_both_fire() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("keyring");
        std::fs::write(&path, "one").expect("write");
        let (tx, rx) = watch::channel(0);
        let mut watch = FileWatch::new(vec![path.clone()], rx);

        // A replacement by rename (a new inode, same length) is a change.
        let next = dir.path().join("keyring.new");
        std::fs::write(&next, "two").expect("write");
        std::fs::rename(&next, &path).expect("rename");
        let fired = tokio::time::timeout(Duration::from_secs(5), watch.changed()).await;
        assert_eq!(fired.expect("fires"), Trigger::FileChanged);

        tx.send_modify(|n| *n += 1);
        let fired = tokio::time::timeout(Duration::from_secs(5), watch.changed()).await;
        assert_eq!(fired.expect("fires"), Trigger::Signal);

        // Nothing new: it waits.
        let idle = tokio::time::timeout(RELOAD_POLL * 3, watch.changed()).await;
        assert!(idle.is_err(), "fired without a change");
    }
}
