//! [`Durability::Disk`](crate::store::Durability::Disk): a record is synced to disk before it
//! is answered.
//!
//! A sync costs as much for one record as for a hundred, so receivers that come together share
//! one (a group commit): whoever finds no sync running starts one covering everything appended
//! so far; those who append meanwhile wait for it to end, and most find their records covered;
//! the first that is not starts the next sync, for all of them.

use std::{
    fs::File,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use super::Journal;
use crate::{Error, Result, store::Store};

#[derive(Debug)]
pub(super) struct Syncer {
    /// The journal's files, opened again: a sync runs on a blocking thread while appends go on.
    files: Arc<Vec<File>>,
    paths: Vec<PathBuf>,
    /// Records numbered below this are on disk.
    synced: AtomicU64,
    /// Held by the receiver whose sync runs; the others wait for it.
    turn: tokio::sync::Mutex<()>,
    /// Syncs done.
    syncs: AtomicU64,
}

impl Syncer {
    /// Syncs for the journal's `files` beside `db_path`, whose records below `number` were
    /// read back at the start. The directory is synced here, so that files it just made stay.
    pub(super) fn new(
        db_path: &Path,
        files: &[File],
        paths: &[PathBuf],
        number: u64,
    ) -> Result<Syncer> {
        let io = |path: &Path, e: std::io::Error| {
            Error::Other(format!("inbox journal {}: {e}", path.display()))
        };
        let dir = match db_path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io(dir, e))?;
        let again = files
            .iter()
            .zip(paths)
            .map(|(file, path)| file.try_clone().map_err(|e| io(path, e)))
            .collect::<Result<Vec<_>>>()?;
        Ok(Syncer {
            files: Arc::new(again),
            paths: paths.to_vec(),
            synced: AtomicU64::new(number),
            turn: tokio::sync::Mutex::new(()),
            syncs: AtomicU64::new(0),
        })
    }
}

impl Journal {
    /// Returns once every record appended before the call is on disk: at once unless the
    /// durability is [`Disk`](crate::store::Durability::Disk).
    pub(crate) async fn sync(&self) -> Result<()> {
        let Some(syncer) = &self.syncer else {
            return Ok(());
        };
        let wanted = self.lock().number;
        if syncer.synced.load(Ordering::Acquire) >= wanted {
            return Ok(());
        }
        let _turn = syncer.turn.lock().await;
        let synced = syncer.synced.load(Ordering::Acquire);
        if synced >= wanted {
            // The sync we waited for covered our records.
            return Ok(());
        }
        let (through, dirty) = {
            let state = self.lock();
            let dirty: Vec<bool> = state.last_in.iter().map(|&last| last > synced).collect();
            (state.number, dirty)
        };
        let files = syncer.files.clone();
        let result = tokio::task::spawn_blocking(move || {
            for (i, file) in files.iter().enumerate() {
                if dirty[i] {
                    file.sync_data().map_err(|e| (i, e))?;
                }
            }
            Ok(())
        })
        .await
        .map_err(|e| Error::Other(format!("inbox journal sync: {e}")))?;
        if let Err((i, error)) = result {
            return Err(Error::Other(format!(
                "inbox journal {}: sync: {error}",
                syncer.paths[i].display()
            )));
        }
        syncer.synced.fetch_max(through, Ordering::AcqRel);
        syncer.syncs.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Syncs done so far (with [`Durability::Disk`](crate::store::Durability::Disk)).
    #[cfg(any(test, feature = "testing"))]
    pub(crate) fn syncs(&self) -> u64 {
        self.syncer
            .as_ref()
            .map_or(0, |s| s.syncs.load(Ordering::Relaxed))
    }
}

impl Store {
    /// Returns once every transaction appended to the journal so far is on disk, if the
    /// store's durability asks for that (see [`Journal::sync`]).
    pub(crate) async fn sync_journal(&self) -> Result<()> {
        match &self.journal {
            Some(journal) => journal.sync().await,
            None => Ok(()),
        }
    }

    /// Syncs of the journal done so far.
    #[cfg(any(test, feature = "testing"))]
    pub(crate) fn journal_syncs(&self) -> u64 {
        self.journal.as_ref().map_or(0, |journal| journal.syncs())
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{append, item};
    use crate::store::{Durability, TxnName, journal::Journal};

    #[tokio::test]
    async fn receivers_together_share_one_sync() {
        let dir = tempfile::tempdir().unwrap();
        let (journal, _) = Journal::open(&dir.path().join("store.db"), Durability::Disk).unwrap();
        journal.start(1).unwrap();
        journal.sync().await.unwrap();
        assert_eq!(journal.syncs(), 0, "nothing to sync");
        append(&journal, "t1");
        journal.sync().await.unwrap();
        assert_eq!(journal.syncs(), 1);
        journal.sync().await.unwrap();
        assert_eq!(journal.syncs(), 1, "already on disk");

        // Ten receivers appended, then all wait: the first sync covers every one.
        let journal = std::sync::Arc::new(journal);
        for i in 0..10 {
            append(&journal, &format!("u{i}"));
        }
        let waits: Vec<_> = (0..10)
            .map(|_| {
                let journal = journal.clone();
                tokio::spawn(async move { journal.sync().await })
            })
            .collect();
        for wait in waits {
            wait.await.unwrap().unwrap();
        }
        assert_eq!(journal.syncs(), 2);

        // Records in two files (a batch was taken between them) are all synced.
        append(&journal, "v1");
        let _batch = journal.take().unwrap();
        journal
            .append(
                "as",
                TxnName {
                    id: "v2",
                    digest: "",
                },
                5,
                vec![item("{}")],
                None,
            )
            .unwrap();
        journal.sync().await.unwrap();
        assert_eq!(journal.syncs(), 3);
    }

    #[tokio::test]
    async fn the_default_durability_never_syncs() {
        let dir = tempfile::tempdir().unwrap();
        let (journal, _) =
            Journal::open(&dir.path().join("store.db"), Durability::OsCache).unwrap();
        journal.start(1).unwrap();
        append(&journal, "t1");
        journal.sync().await.unwrap();
        assert_eq!(journal.syncs(), 0);
    }
}
