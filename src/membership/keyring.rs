//! The keyring file (`--keyring-file`): the gossip keys, read at start and again when the
//! file changes or on SIGHUP, so keys rotate without a restart.
//!
//! Format (serf's keyring file is accepted as is): one base64 32-byte key per line, the first
//! sealing, every one opening; blank lines are skipped and `#` starts a comment. Or a JSON
//! array of keys, `["k1", "k2"]`. A file with no key, more than [`MAX_KEYRING_KEYS`] keys,
//! or more than [`MAX_KEYRING_FILE_BYTES`] bytes is refused. Errors name the line (or array
//! entry) at fault, never a key.
//!
//! [`reload`] is the reloader: it publishes each good new version on a watch channel that
//! the membership run task follows ([`super::Membership::follow_keyring`]), and keeps the
//! current keyring when a new version is bad (an error names the file and what is wrong).

use std::io::Read;
use std::path::{Path, PathBuf};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error};

use super::cipher::{GossipKey, KeyError, Keyring, MAX_KEYRING_KEYS};
use crate::reload::FileWatch;

/// Largest keyring file read, bytes (sixteen keys with comments fit many times over).
pub const MAX_KEYRING_FILE_BYTES: u64 = 64 * 1024;

/// A keyring file that cannot be used. No variant carries key material.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file could not be read (missing, unreadable, not UTF-8).
    #[error("cannot read the keyring file")]
    Read(#[source] std::io::Error),
    /// The file is larger than [`MAX_KEYRING_FILE_BYTES`].
    #[error("the keyring file is larger than {MAX_KEYRING_FILE_BYTES} bytes")]
    TooBig,
    /// No key in it (blank lines and comments only, or `[]`).
    #[error("the keyring file holds no key (one base64 key per line, or a JSON array of keys)")]
    Empty,
    /// More keys than [`MAX_KEYRING_KEYS`].
    #[error("the keyring file holds {count} keys; at most {MAX_KEYRING_KEYS} are allowed")]
    TooManyKeys {
        /// Keys found.
        count: usize,
    },
    /// A line is not a key.
    #[error("line {line} of the keyring file is not a key")]
    Line {
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        #[source]
        source: KeyError,
    },
    /// An entry of the JSON array is not a key.
    #[error("entry {entry} of the keyring file's JSON array is not a key")]
    Entry {
        /// 1-based position in the array.
        entry: usize,
        /// What is wrong with it.
        #[source]
        source: KeyError,
    },
    /// The file starts with `[` but is not a JSON array of strings.
    #[error("the keyring file is not a JSON array of strings (at line {line}, column {column})")]
    Json {
        /// Where the JSON parser stopped, 1-based.
        line: usize,
        /// Where the JSON parser stopped, 1-based.
        column: usize,
    },
}

/// Parses the text of a keyring file (see the module doc).
///
/// # Errors
/// [`Error`] for a bad line or entry, bad JSON, no key or too many keys.
pub fn parse(text: &str) -> Result<Keyring, Error> {
    let keys = if text.trim_start().starts_with('[') {
        // serde_json's messages may quote what they read: keep only where it stopped.
        let entries: Vec<String> = serde_json::from_str(text).map_err(|e| Error::Json {
            line: e.line(),
            column: e.column(),
        })?;
        entries
            .iter()
            .enumerate()
            .map(|(i, entry)| {
                GossipKey::from_base64(entry).map_err(|source| Error::Entry {
                    entry: i + 1,
                    source,
                })
            })
            .collect::<Result<Vec<_>, _>>()?
    } else {
        let mut keys = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let key = line.split('#').next().unwrap_or_default().trim();
            if key.is_empty() {
                continue;
            }
            keys.push(GossipKey::from_base64(key).map_err(|source| Error::Line {
                line: i + 1,
                source,
            })?);
        }
        keys
    };
    let count = keys.len();
    Keyring::new(keys).ok_or(if count == 0 {
        Error::Empty
    } else {
        Error::TooManyKeys { count }
    })
}

/// Reads and parses the keyring file at `path`.
///
/// # Errors
/// [`Error::Read`], [`Error::TooBig`], or what [`parse`] finds.
pub fn load(path: &Path) -> Result<Keyring, Error> {
    let file = std::fs::File::open(path).map_err(Error::Read)?;
    let mut text = String::new();
    file.take(MAX_KEYRING_FILE_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(Error::Read)?;
    if text.len() as u64 > MAX_KEYRING_FILE_BYTES {
        return Err(Error::TooBig);
    }
    parse(&text)
}

/// The reloader of the keyring file at `path`, whose current keyring is `current`: returns
/// the channel of keyrings to give the membership run task, and the task to spawn. On each
/// SIGHUP (`hup`, see [`crate::reload::sighup`]) or change of the file it reads the file
/// again; a good version is published, a bad one is logged at error and the current keyring
/// stays. It ends when `shutdown` is cancelled.
pub fn reload(
    path: PathBuf,
    current: Keyring,
    hup: watch::Receiver<u64>,
    shutdown: CancellationToken,
) -> (
    watch::Receiver<Keyring>,
    impl std::future::Future<Output = ()> + Send + 'static,
) {
    let (keyring, updates) = watch::channel(current);
    let mut files = FileWatch::new(vec![path.clone()], hup);
    let task = async move {
        loop {
            let trigger = tokio::select! {
                () = shutdown.cancelled() => return,
                trigger = files.changed() => trigger,
            };
            match load(&path) {
                Ok(new) => {
                    debug!(file = %path.display(), trigger = ?trigger, keys = new.len(),
                        "keyring file read");
                    keyring.send_replace(new);
                }
                Err(e) => {
                    error!(file = %path.display(), trigger = ?trigger, error = %chain(&e),
                        "gossip keyring not reloaded: the file is refused, the current keyring stays");
                }
            }
        }
    };
    (updates, task)
}

/// `error: cause: cause...` on one line.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use base64::Engine;

    use super::*;

    fn b64(byte: u8) -> String {
        base64::engine::general_purpose::STANDARD.encode([byte; 32])
    }

    fn key(byte: u8) -> GossipKey {
        GossipKey::from_bytes([byte; 32])
    }

    #[test]
    fn lines_comments_and_json_arrays_parse_in_order() {
        let text = format!(
            "# rotated 2026-12-01\n\n  {}  \n{} # the old one\n",
            b64(2),
            b64(1)
        );
        let expected = Keyring::new(vec![key(2), key(1)]).expect("keys");
        assert_eq!(parse(&text).expect("lines"), expected);
        let json = format!("[\"{}\", \"{}\"]", b64(2), b64(1));
        assert_eq!(parse(&json).expect("json"), expected);
    }

    #[test]
    fn bad_files_say_where_without_quoting_keys() {
        let secret = b64(5);
        let text = format!("{secret}\n# next\n{}\n", &secret[..20]);
        let error = parse(&text).expect_err("a short key");
        let message = chain(&error);
        assert!(
            message.starts_with("line 3 of the keyring file"),
            "{message}"
        );
        assert!(!message.contains(&secret[..8]), "{message}");

        assert!(matches!(parse("# nothing\n\n"), Err(Error::Empty)));
        assert!(matches!(parse("[]"), Err(Error::Empty)));
        let error = parse(&format!("[\"{secret}\", 7]")).expect_err("not a string");
        assert!(matches!(error, Error::Json { line: 1, .. }), "{error}");
        assert!(!chain(&error).contains(&secret[..8]));
        let error = parse(&format!("[\"{secret}\", \"{}\"]", &secret[..10])).expect_err("short");
        assert!(matches!(error, Error::Entry { entry: 2, .. }), "{error}");
        let many = vec![b64(1); MAX_KEYRING_KEYS + 1].join("\n");
        assert!(matches!(
            parse(&many),
            Err(Error::TooManyKeys { count: 17 })
        ));
    }

    #[test]
    fn files_too_big_or_missing_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let big = dir.path().join("big");
        let mut text = format!("{}\n", b64(1));
        text.push_str(&"#".repeat(MAX_KEYRING_FILE_BYTES as usize));
        std::fs::write(&big, text).expect("write");
        assert!(matches!(load(&big), Err(Error::TooBig)));
        assert!(matches!(
            load(&dir.path().join("missing")),
            Err(Error::Read(_))
        ));
    }

    #[tokio::test]
    async fn a_changed_file_is_published_and_a_bad_one_keeps_the_current_keyring() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("keyring");
        std::fs::write(&path, b64(1)).expect("write");
        let first = load(&path).expect("valid");
        let (hup_tx, hup) = watch::channel(0);
        let shutdown = CancellationToken::new();
        let (mut updates, task) = reload(path.clone(), first.clone(), hup, shutdown.clone());
        let task = tokio::spawn(task);

        std::fs::write(&path, format!("{}\n{}\n", b64(1), b64(2))).expect("write");
        tokio::time::timeout(Duration::from_secs(5), updates.changed())
            .await
            .expect("published")
            .expect("open");
        assert_eq!(updates.borrow_and_update().len(), 2);

        // A bad version: nothing is published, even on SIGHUP.
        std::fs::write(&path, "not a key\n").expect("write");
        hup_tx.send_modify(|n| *n += 1);
        let quiet = tokio::time::timeout(Duration::from_secs(3), updates.changed()).await;
        assert!(quiet.is_err(), "a bad keyring was published");
        assert_eq!(updates.borrow().len(), 2);

        // Fixed: published on the next SIGHUP.
        std::fs::write(&path, b64(2)).expect("write");
        hup_tx.send_modify(|n| *n += 1);
        tokio::time::timeout(Duration::from_secs(5), updates.changed())
            .await
            .expect("published")
            .expect("open");
        assert_eq!(*updates.borrow(), Keyring::single(key(2)));
        shutdown.cancel();
        task.await.expect("reloader ends");
    }
}
