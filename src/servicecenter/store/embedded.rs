//! The embedded store: one [redb] file, `registry.redb`, under `--data-dir`, holding the
//! same keys and values as etcd would ([`super::keys`]) in one table, `kv`.
//!
//! Each batch from the writer is one write transaction, committed with
//! [`Durability::Immediate`] (redb's default, set explicitly): persistent once `commit`
//! returns (one fsync), which is what a request's 2xx waits for (group commit, see
//! [`super`]).
//! redb locks the file: a second process opening the same directory fails with
//! [`StoreError::Open`] instead of corrupting it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};

use super::keys::LeaseRecord;
use super::{Adaptor, Snapshot, StoreError, Write};

/// The one table: key path → value bytes.
const KV: TableDefinition<&str, &[u8]> = TableDefinition::new("kv");
/// redb's page cache by default, MiB (redb's own default, 1 GiB, would make the file's size
/// the core's RSS). The registry is served from memory, so the cache only speeds up the
/// writer's walks of the file's B-tree (and the one read at start); see docs/storage.md.
pub const DEFAULT_CACHE_MIB: usize = 4;
/// The environment variable that sets redb's page cache, in MiB
/// (1 to [`MAX_CACHE_MIB`]; default [`DEFAULT_CACHE_MIB`]).
pub const CACHE_ENV: &str = "SYNCER_STORE_CACHE_MIB";
/// The largest page cache [`CACHE_ENV`] may ask for, MiB.
pub const MAX_CACHE_MIB: usize = 1024;

/// The page cache in bytes: [`CACHE_ENV`] when it holds a whole number of MiB in
/// 1..=[`MAX_CACHE_MIB`], else (with a warning) [`DEFAULT_CACHE_MIB`].
fn cache_bytes() -> usize {
    let mib = match std::env::var(CACHE_ENV) {
        Err(_) => DEFAULT_CACHE_MIB,
        Ok(v) => match v.trim().parse::<usize>() {
            Ok(n) if (1..=MAX_CACHE_MIB).contains(&n) => n,
            _ => {
                tracing::warn!(
                    value = %v,
                    default_mib = DEFAULT_CACHE_MIB,
                    "{CACHE_ENV} is not a number of MiB in 1..={MAX_CACHE_MIB}: using the default"
                );
                DEFAULT_CACHE_MIB
            }
        },
    };
    mib << 20
}
/// The file under `--data-dir`.
pub const FILE_NAME: &str = "registry.redb";

/// An open embedded store (cheap to clone).
#[derive(Clone)]
pub struct Embedded {
    db: Arc<Database>,
    path: PathBuf,
}

impl std::fmt::Debug for Embedded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Embedded")
            .field("path", &self.path)
            .finish()
    }
}

impl Embedded {
    /// Opens (or creates) `dir/registry.redb`, creating `dir` if needed. Blocking.
    ///
    /// # Errors
    /// [`StoreError::DataDir`] when the directory cannot be created, [`StoreError::Open`]
    /// when the file cannot be opened (in use by another process, not a redb file, ...).
    pub fn open(dir: &Path) -> Result<Embedded, StoreError> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::DataDir {
            path: dir.to_owned(),
            source,
        })?;
        let path = dir.join(FILE_NAME);
        let cache = cache_bytes();
        let open = |path: &Path| -> Result<Database, redb::Error> {
            let db = Database::builder().set_cache_size(cache).create(path)?;
            let tx = db.begin_write()?;
            tx.open_table(KV)?;
            tx.commit()?;
            Ok(db)
        };
        let db = open(&path).map_err(|source| StoreError::Open {
            path: path.clone(),
            source,
        })?;
        tracing::info!(path = %path.display(), cache_mib = cache >> 20, "embedded store open");
        Ok(Embedded {
            db: Arc::new(db),
            path,
        })
    }

    /// The redb file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn load_blocking(&self) -> Result<Snapshot, redb::Error> {
        let tx = self.db.begin_read()?;
        let table = tx.open_table(KV)?;
        let mut records = Vec::new();
        for item in table.iter()? {
            let (k, v) = item?;
            records.push((k.value().to_owned(), v.value().to_vec()));
        }
        Ok(Snapshot { records })
    }

    fn write_blocking(&self, batch: Vec<Write>) -> Result<(), redb::Error> {
        let mut tx = self.db.begin_write()?;
        // Requests are answered once this commit returns: it must be on disk by then.
        tx.set_durability(Durability::Immediate)?;
        {
            let mut table = tx.open_table(KV)?;
            for w in batch {
                match w {
                    Write::Put { key, value } => {
                        table.insert(key.as_str(), value.as_slice())?;
                    }
                    Write::PutInstance {
                        key,
                        value,
                        lease_key,
                        ttl_secs,
                        deadline_ms,
                    } => {
                        table.insert(key.as_str(), value.as_slice())?;
                        let lease = lease_value(ttl_secs, deadline_ms);
                        table.insert(lease_key.as_str(), lease.as_slice())?;
                    }
                    Write::Renew {
                        lease_key,
                        ttl_secs,
                        deadline_ms,
                    } => {
                        let lease = lease_value(ttl_secs, deadline_ms);
                        table.insert(lease_key.as_str(), lease.as_slice())?;
                    }
                    Write::Delete { key } => {
                        table.remove(key.as_str())?;
                    }
                    Write::DeletePrefix { prefix } => {
                        let mut doomed = Vec::new();
                        for item in table.range(prefix.as_str()..)? {
                            let (k, _) = item?;
                            let k = k.value();
                            if !k.starts_with(prefix.as_str()) {
                                break;
                            }
                            doomed.push(k.to_owned());
                        }
                        for k in doomed {
                            table.remove(k.as_str())?;
                        }
                    }
                }
            }
        }
        tx.commit()?;
        Ok(())
    }
}

fn lease_value(ttl_secs: u64, deadline_ms: i64) -> Vec<u8> {
    serde_json::to_vec(&LeaseRecord {
        ttl_secs,
        deadline_ms,
    })
    .unwrap_or_default()
}

impl Adaptor for Embedded {
    async fn load(&self) -> Result<Snapshot, StoreError> {
        let me = self.clone();
        Ok(tokio::task::spawn_blocking(move || me.load_blocking()).await??)
    }

    async fn write(&self, batch: Vec<Write>) -> Result<(), StoreError> {
        let me = self.clone();
        Ok(tokio::task::spawn_blocking(move || me.write_blocking(batch)).await??)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn writes_survive_reopening_and_prefix_deletes_stop_at_the_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let store = Embedded::open(dir.path()).unwrap();
        store
            .write(vec![
                Write::Put {
                    key: "/cse-sr/inst/files/d/p/s1/a".into(),
                    value: b"1".to_vec(),
                },
                Write::Put {
                    key: "/cse-sr/inst/files/d/p/s1/b".into(),
                    value: b"2".to_vec(),
                },
                Write::Put {
                    key: "/cse-sr/inst/files/d/p/s10/a".into(),
                    value: b"3".to_vec(),
                },
                Write::Renew {
                    lease_key: "/cse-sr/inst/leases/d/p/s1/a".into(),
                    ttl_secs: 5,
                    deadline_ms: 42,
                },
            ])
            .await
            .unwrap();
        store
            .write(vec![Write::DeletePrefix {
                prefix: "/cse-sr/inst/files/d/p/s1/".into(),
            }])
            .await
            .unwrap();
        drop(store);
        let store = Embedded::open(dir.path()).unwrap();
        let keys: Vec<String> = store
            .load()
            .await
            .unwrap()
            .records
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(
            keys,
            vec![
                "/cse-sr/inst/files/d/p/s10/a".to_string(),
                "/cse-sr/inst/leases/d/p/s1/a".to_string()
            ]
        );
    }
}
