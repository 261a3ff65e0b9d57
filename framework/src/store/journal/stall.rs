//! When the journal's records cannot be committed: the commit task stalls the journal
//! (`queues/receive/stall.rs`), and appends are refused until it is lifted, so that the
//! homeserver is told to retry later instead of being answered for records that pile up.

use crate::sync::MutexExt;
use std::path::Path;

use super::Journal;
use crate::store::Store;

impl Journal {
    pub(super) fn stalled(&self) -> Option<String> {
        self.stall.lock_unpoisoned().clone()
    }

    fn set_stalled(&self, reason: Option<String>) {
        *self.stall.lock_unpoisoned() = reason;
        // Receivers waiting for room (`Store::journal_room`) stop waiting, and are refused.
        self.committed.notify_waiters();
    }

    fn unemptied(&self) -> Option<String> {
        self.lock().unemptied.clone()
    }
}

impl Store {
    /// Why received transactions are refused, while they are (see [`Store::stall_journal`]).
    pub(crate) fn journal_stalled(&self) -> Option<String> {
        self.journal.as_ref()?.stalled()
    }

    /// Refuses received transactions, saying `Some(reason)`, or takes them again (`None`).
    pub(crate) fn stall_journal(&self, reason: Option<String>) {
        if let Some(journal) = &self.journal {
            journal.set_stalled(reason);
        }
    }

    /// Why the file of the last committed batch could not be emptied, until it is: no batch
    /// is taken meanwhile (see `Journal::finish`).
    pub(crate) fn journal_unemptied(&self) -> Option<String> {
        self.journal.as_ref()?.unemptied()
    }

    /// The database file the journal's records are committed to.
    pub(crate) fn journal_database(&self) -> Option<&Path> {
        Some(&self.journal.as_ref()?.db_path)
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{append, started};
    use crate::store::TxnName;

    #[test]
    fn a_stalled_journal_refuses_appends_until_lifted() {
        let (_dir, _db, journal) = started(1);
        append(&journal, "t1");
        journal.set_stalled(Some("disk full".into()));
        let error = journal
            .append(
                "as",
                TxnName {
                    id: "t2",
                    digest: "",
                },
                5,
                Vec::new(),
                None,
            )
            .unwrap_err()
            .to_string();
        assert!(error.contains("disk full"), "{error}");
        assert_eq!(journal.backlog(), 1);
        journal.set_stalled(None);
        append(&journal, "t3");
        assert_eq!(journal.backlog(), 2);
    }

    /// Records that find no file to go to (every other file kept, or not emptied) are said to,
    /// and settling the kept batches frees their files.
    #[test]
    fn settling_frees_files_when_none_is_left() {
        use std::collections::HashSet;
        let (_dir, _db, journal) = started(1);
        let mut handles = Vec::new();
        for i in 0..super::super::MAX_LATE {
            let seq = append(&journal, &format!("t{i}"));
            let batch = journal.take().unwrap();
            journal.finish(&batch, HashSet::from([seq]));
        }
        // The two free files cannot be emptied: as a read-only file system would have it.
        for _ in 0..2 {
            append(&journal, "x");
            let batch = journal.take().unwrap();
            let path = journal.lock().paths[batch.file].clone();
            let writable = std::mem::replace(
                &mut journal.lock().files[batch.file],
                std::fs::File::open(&path).unwrap(),
            );
            handles.push((batch.file, writable));
            journal.finish(&batch, HashSet::new());
        }
        append(&journal, "y");
        assert!(journal.take().is_none());
        assert!(journal.out_of_files());
        assert!(!journal.settle(true).is_empty());
        journal.settled(true);
        assert!(!journal.out_of_files());
        assert_eq!(journal.take().unwrap().records[0].txn_id, "y");
        for (file, writable) in handles {
            journal.lock().files[file] = writable;
        }
    }

    #[test]
    fn a_file_that_cannot_be_emptied_is_reported_until_it_is() {
        let (_dir, db, journal) = started(1);
        append(&journal, "t1");
        let batch = journal.take().unwrap();
        // A handle that cannot truncate, in place of the file: as a read-only file system would.
        let mut path = db.clone().into_os_string();
        path.push("-inbox-0");
        let writable = std::mem::replace(
            &mut journal.lock().files[batch.file],
            std::fs::File::open(&path).unwrap(),
        );
        journal.finish(&batch, Default::default());
        let reason = journal.unemptied().expect("reported");
        assert!(reason.contains("store.db-inbox-0"), "{reason}");
        // Its file holds its place: appends go to the others, tried again at every take.
        append(&journal, "t2");
        let second = journal.take().expect("another file is free");
        assert_eq!(second.records[0].txn_id, "t2");
        assert!(journal.unemptied().is_some());
        journal.finish(&second, Default::default());
        for i in 3..3 + super::super::FILES {
            append(&journal, &format!("t{i}"));
            let next = journal.take().unwrap();
            assert_ne!(next.file, batch.file, "appended to the file not emptied");
            journal.finish(&next, Default::default());
        }
        assert!(journal.unemptied().is_some());

        journal.lock().files[batch.file] = writable;
        append(&journal, "u");
        let next = journal.take().expect("the file emptied, the next batch");
        assert_eq!(next.records[0].txn_id, "u");
        assert!(journal.unemptied().is_none());
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            0,
            "t1's file emptied"
        );
    }
}
