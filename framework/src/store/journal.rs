//! The receive journal: where a transaction is stored before the homeserver is answered.
//!
//! The answer to a transaction promises that it is stored. Committing it to SQLite before
//! answering cost half of Trestle's speed at one event per transaction: a commit writes a WAL
//! frame and its header for every b-tree it touches, takes and drops five file locks, and
//! checkpoints now and then (`docs/benchmarks.md`, "Why the receive path's constants are what
//! they are"). So a transaction is appended here, one
//! `write` of one record, and answered; a task then commits the records to the inbox in
//! batches (`Store::commit_journal`), and only then are they handled. What the two steps
//! promise is the same as a WAL commit with `synchronous = NORMAL`: the bytes are in the
//! operating system's cache, which survives a crash of the process.
//!
//! Two files take turns, `<database>-inbox-0` and `-1`: records go to one while the other's
//! are committed, and a file is emptied only after its records are in the database. Every
//! record carries a number, a length and a CRC-32, so a start reads both files back in order and
//! commits what it finds before anything else happens. A record cut short by a crash mid-write
//! was never answered and is dropped; a damaged record anywhere else stops the start with an
//! error naming the file, since what follows it cannot be read.
//!
//! With [`Durability::Disk`] an answer also waits for the record to be synced to disk
//! (`sync.rs`), which survives a power loss as well.

use crate::sync::MutexExt;
use std::{
    fs::{File, OpenOptions},
    io::{Read, Write},
    path::{Path, PathBuf},
    sync::Mutex,
};

use super::{
    Durability,
    inbox::{NewInboxItem, TxnName},
};
use crate::{Error, Result};

mod commit;
mod format;
mod stall;
mod sync;

use format::{decode_all, encode};

#[cfg(test)]
pub(super) use commit::Form;
#[cfg(test)]
pub(super) use commit::commit_records;
pub(super) use commit::open_beside;
pub(crate) use commit::record_items;

/// Items the journal holds before receivers wait for the commit. Answering faster than the
/// database takes the records would pile them up in memory (say while a plugin holds SQLite's
/// write lock); waiting lets the homeserver feel it, as it did before the journal. (Larger
/// transactions wait for their own commit anyway: `queues/receive.rs`.) Fewer makes every
/// transaction wait for the one before, more lets latency grow (measured in
/// `docs/benchmarks.md`, "Why the receive path's constants are what they are").
pub(crate) const MAX_WAITING_ITEMS: usize = 100;

/// One received transaction.
pub(crate) struct Record {
    /// Appends are numbered, so that a start can put the two files' records in order.
    pub(crate) number: u64,
    pub(crate) appservice_id: String,
    pub(crate) txn_id: String,
    /// What names the transaction with its id (see [`TxnName`]).
    pub(crate) digest: String,
    pub(crate) received_at: i64,
    /// The seq of the first item; the others follow.
    pub(crate) first_seq: i64,
    pub(crate) items: Vec<NewInboxItem>,
    /// What the receiver keeps with the record until it is committed, not written to the
    /// file: `None` for records read back at a start.
    pub(crate) parsed: Option<Parsed>,
}

/// A received transaction as `receive` took it apart, kept with its record until the record is
/// committed, so that its items are not parsed again.
pub(crate) struct Parsed {
    /// The items, in the transaction's order.
    pub(crate) items: Vec<crate::transaction::Incoming>,
    /// Malformed items left out.
    pub(crate) skipped: usize,
    /// Told whether the transaction was new once it is committed, for a caller that waits.
    pub(crate) committed: Option<tokio::sync::oneshot::Sender<bool>>,
}

impl Record {
    /// The seq of its last item (one before `first_seq` for a record of none): its items take
    /// `first_seq..=last_seq()`, a range no other record's items share.
    pub(crate) fn last_seq(&self) -> i64 {
        self.first_seq + self.items.len() as i64 - 1
    }
}

impl std::fmt::Debug for Record {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Record")
            .field("number", &self.number)
            .field("txn_id", &self.txn_id)
            .field("first_seq", &self.first_seq)
            .field("items", &self.items.len())
            .finish()
    }
}

/// Records taken to be committed, and the file that holds them.
#[derive(Debug)]
pub(crate) struct Batch {
    /// In the order they were appended.
    pub(crate) records: Vec<Record>,
    file: usize,
}

/// What the journal remembers of the batch it handed out.
#[derive(Debug)]
struct Taken {
    file: usize,
    records: usize,
    items: usize,
    /// Committed, but its file could not be emptied yet.
    committed: bool,
}

#[derive(Debug)]
pub(crate) struct Journal {
    state: Mutex<State>,
    /// Wakes the task that commits the records.
    pub(crate) notify: tokio::sync::Notify,
    /// Tells the commit task that a receiver waits for the commit, so it stops gathering.
    pub(crate) hurry: tokio::sync::Notify,
    /// Wakes receivers waiting for the backlog to shrink (see [`MAX_WAITING_ITEMS`]).
    pub(crate) committed: tokio::sync::Notify,
    /// Whether an appservice commits this journal's records (see `Store::claim_journal`).
    claimed: std::sync::atomic::AtomicBool,
    /// With [`Durability::Disk`]: what syncs the files before an answer.
    syncer: Option<sync::Syncer>,
    /// Why the records cannot be committed, while the commit task has given up on taking more
    /// (`queues/receive/stall.rs`): appends are refused meanwhile.
    stall: Mutex<Option<String>>,
    /// The database the records go to, named in what the stall says to check.
    db_path: PathBuf,
}

#[derive(Debug)]
struct State {
    files: [File; 2],
    paths: [PathBuf; 2],
    /// The file appends go to.
    current: usize,
    /// Bytes in the current file, to cut a failed append back off.
    len: u64,
    number: u64,
    /// The seq the next item gets. The inbox's rows all get their seqs here, so records can be
    /// numbered before they reach the database.
    next_seq: i64,
    /// Records in the current file, not yet taken.
    appended: Vec<Record>,
    /// The batch taken and not yet finished: the next batch waits for it.
    taken: Option<Taken>,
    /// Set when a failed append could not be cut off: nothing can be appended safely after it.
    broken: bool,
    /// For each file, the number after that of the last record appended to it: what a sync
    /// must cover.
    last_in: [u64; 2],
    /// Why the committed batch's file could not be emptied, until it is.
    unemptied: Option<String>,
}

impl Journal {
    /// Opens the two files beside the database at `db_path`, and reads back the records left in
    /// them, in order. They must be committed before [`Journal::start`], which empties the files.
    pub(crate) fn open(db_path: &Path, durability: Durability) -> Result<(Journal, Vec<Record>)> {
        let paths = [0, 1].map(|i| {
            let mut name = db_path.as_os_str().to_owned();
            name.push(format!("-inbox-{i}"));
            PathBuf::from(name)
        });
        let open = |path: &PathBuf| {
            OpenOptions::new()
                .read(true)
                .append(true)
                .create(true)
                .open(path)
                .map_err(|e| Error::Other(format!("inbox journal {}: {e}", path.display())))
        };
        let mut files = [open(&paths[0])?, open(&paths[1])?];
        let mut records = Vec::new();
        for (file, path) in files.iter_mut().zip(&paths) {
            let mut bytes = Vec::new();
            file.read_to_end(&mut bytes)
                .map_err(|e| Error::Other(format!("inbox journal {}: {e}", path.display())))?;
            records.extend(decode_all(&bytes, path)?);
        }
        records.sort_by_key(|r| r.number);
        let number = records.last().map_or(0, |r| r.number + 1);
        let syncer = match durability {
            Durability::OsCache => None,
            Durability::Disk => Some(sync::Syncer::new(db_path, &files, &paths, number)?),
        };
        let journal = Journal {
            state: Mutex::new(State {
                files,
                paths,
                current: 0,
                len: 0,
                number,
                next_seq: 1,
                appended: Vec::new(),
                taken: None,
                broken: false,
                last_in: [0; 2],
                unemptied: None,
            }),
            notify: tokio::sync::Notify::new(),
            committed: tokio::sync::Notify::new(),
            hurry: tokio::sync::Notify::new(),
            claimed: Default::default(),
            syncer,
            stall: Mutex::new(None),
            db_path: db_path.to_owned(),
        };
        Ok((journal, records))
    }

    /// Empties both files (their records are committed) and numbers items from `next_seq` on.
    pub(crate) fn start(&self, next_seq: i64) -> Result<()> {
        let mut state = self.lock();
        for i in 0..2 {
            truncate(&state.files[i], &state.paths[i])?;
        }
        state.len = 0;
        state.next_seq = next_seq;
        Ok(())
    }

    /// True for the first caller only: one appservice appends and commits.
    pub(crate) fn claim(&self) -> bool {
        !self.claimed.swap(true, std::sync::atomic::Ordering::AcqRel)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock_unpoisoned()
    }

    /// Hands out `n` seqs for items stored some other way (the store's own receive script).
    pub(crate) fn reserve(&self, n: usize) -> i64 {
        let mut state = self.lock();
        let first = state.next_seq;
        state.next_seq += n as i64;
        first
    }

    /// Appends a transaction; once this returns, it may be answered. Returns the seq of its
    /// first item.
    pub(crate) fn append(
        &self,
        appservice_id: &str,
        txn: TxnName<'_>,
        received_at: i64,
        items: Vec<NewInboxItem>,
        parsed: Option<Parsed>,
    ) -> Result<i64> {
        if let Some(reason) = self.stalled() {
            return Err(Error::Other(format!("not taking transactions: {reason}")));
        }
        let mut state = self.lock();
        if state.broken {
            return Err(Error::Other(
                "the inbox journal could not be written; restart to read it back".into(),
            ));
        }
        let record = Record {
            number: state.number,
            appservice_id: appservice_id.to_owned(),
            txn_id: txn.id.to_owned(),
            digest: txn.digest.to_owned(),
            received_at,
            first_seq: state.next_seq,
            items,
            parsed,
        };
        let bytes = encode(&record);
        let current = state.current;
        if let Err(error) = state.files[current].write_all(&bytes) {
            // A part of the record may be in the file: cut it off, or a start would stop there.
            let len = state.len;
            if state.files[current].set_len(len).is_err() {
                state.broken = true;
            }
            return Err(Error::Other(format!(
                "inbox journal {}: {error}",
                state.paths[current].display()
            )));
        }
        state.len += bytes.len() as u64;
        state.number += 1;
        state.last_in[current] = state.number;
        state.next_seq += record.items.len() as i64;
        let first = record.first_seq;
        state.appended.push(record);
        drop(state);
        self.notify.notify_one();
        Ok(first)
    }

    /// Takes the records appended so far, if any and if no batch is in flight; appends go to
    /// the other file from now on.
    pub(crate) fn take(&self) -> Option<Batch> {
        let mut state = self.lock();
        if state.taken.as_ref().is_some_and(|taken| taken.committed) {
            // The last batch was committed but its file could not be emptied: try again.
            let _ = state.end_turn();
        }
        if state.taken.is_some() || state.appended.is_empty() {
            return None;
        }
        let records = std::mem::take(&mut state.appended);
        let file = state.current;
        state.taken = Some(Taken {
            file,
            records: records.len(),
            items: records.iter().map(|r| r.items.len()).sum(),
            committed: false,
        });
        state.current = 1 - file;
        state.len = 0;
        Some(Batch { records, file })
    }

    /// The batch's records are committed: its file is emptied for its next turn. On an error
    /// the turn is kept, so no batch follows until `take` emptied the file (a start would find
    /// its records again, committed, and skip them as repeats).
    pub(crate) fn finish(&self, batch: &Batch) -> Result<()> {
        let mut state = self.lock();
        if let Some(taken) = state.taken.as_mut().filter(|t| t.file == batch.file) {
            taken.committed = true;
        }
        state.end_turn()?;
        drop(state);
        self.committed.notify_waiters();
        Ok(())
    }

    /// Items not yet committed.
    pub(crate) fn waiting_items(&self) -> usize {
        let state = self.lock();
        let appended: usize = state.appended.iter().map(|r| r.items.len()).sum();
        appended + state.taken.as_ref().map_or(0, |t| t.items)
    }

    /// Records not yet committed.
    pub(crate) fn backlog(&self) -> usize {
        let state = self.lock();
        state.appended.len() + state.taken.as_ref().map_or(0, |t| t.records)
    }
}

impl State {
    /// Empties the file of the committed batch, which ends its turn.
    fn end_turn(&mut self) -> Result<()> {
        if let Some(taken) = &self.taken {
            if let Err(error) = truncate(&self.files[taken.file], &self.paths[taken.file]) {
                self.unemptied = Some(error.to_string());
                return Err(error);
            }
            self.taken = None;
            self.unemptied = None;
        }
        Ok(())
    }
}

fn truncate(file: &File, path: &Path) -> Result<()> {
    file.set_len(0)
        .map_err(|e| Error::Other(format!("inbox journal {}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::{format::HEADER, *};

    pub(super) fn item(payload: &str) -> NewInboxItem {
        NewInboxItem {
            queue_key: "!r:x".into(),
            index: 0,
            kind: "timeline",
            payload: payload.into(),
            event_id: None,
            event_ts: 0,
        }
    }

    /// A journal beside `store.db` in a fresh directory, started, numbering from `first_seq`.
    pub(super) fn started(first_seq: i64) -> (tempfile::TempDir, PathBuf, Journal) {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("store.db");
        let (journal, left) = Journal::open(&db, Durability::OsCache).unwrap();
        assert!(left.is_empty());
        journal.start(first_seq).unwrap();
        (dir, db, journal)
    }

    /// Appends a transaction of one empty event.
    pub(super) fn append(journal: &Journal, txn_id: &str) -> i64 {
        journal
            .append(
                "as",
                TxnName {
                    id: txn_id,
                    digest: "",
                },
                5,
                vec![item("{}")],
                None,
            )
            .unwrap()
    }

    fn txn_ids(db: &Path) -> Vec<String> {
        let (_, records) = Journal::open(db, Durability::OsCache).unwrap();
        records.into_iter().map(|r| r.txn_id).collect()
    }

    #[test]
    fn records_come_back_in_order_across_both_files() {
        let (_dir, db, journal) = started(10);
        assert_eq!(append(&journal, "t1"), 10);
        let batch = journal.take().unwrap();
        assert!(journal.take().is_none(), "one batch at a time");
        assert_eq!(
            journal
                .append(
                    "as",
                    TxnName {
                        id: "t2",
                        digest: "",
                    },
                    6,
                    vec![item("{\"a\":1}"), item("[]")],
                    None,
                )
                .unwrap(),
            11
        );
        assert_eq!(append(&journal, "t3"), 13);
        assert_eq!(journal.backlog(), 3);
        // Stopped before the first batch was committed: everything comes back, in order.
        drop(journal);
        let (journal, left) = Journal::open(&db, Durability::OsCache).unwrap();
        let txns: Vec<_> = left.iter().map(|r| r.txn_id.as_str()).collect();
        assert_eq!(txns, ["t1", "t2", "t3"]);
        assert_eq!(left[1].first_seq, 11);
        assert_eq!(left[1].items[0].payload, "{\"a\":1}");
        assert_eq!(left[1].received_at, 6);
        journal.start(14).unwrap();
        drop(journal);
        let _ = batch;
        assert!(txn_ids(&db).is_empty(), "start empties the files");
    }

    #[test]
    fn a_finished_batch_is_not_read_back() {
        let (_dir, db, journal) = started(1);
        append(&journal, "t1");
        let batch = journal.take().unwrap();
        append(&journal, "t2");
        journal.finish(&batch).unwrap();
        assert_eq!(journal.backlog(), 1);
        let second = journal.take().unwrap();
        assert_eq!(second.records[0].txn_id, "t2");
        // The next turn goes to the emptied file again.
        append(&journal, "t3");
        drop(journal);
        assert_eq!(txn_ids(&db), ["t2", "t3"]);
    }

    #[test]
    fn a_record_cut_short_is_dropped_and_a_damaged_one_stops_the_start() {
        let (_dir, db, journal) = started(1);
        append(&journal, "t1");
        append(&journal, "t2");
        drop(journal);
        let mut path = db.clone().into_os_string();
        path.push("-inbox-0");
        let whole = std::fs::read(&path).unwrap();

        std::fs::write(&path, &whole[..whole.len() - 3]).unwrap();
        assert_eq!(txn_ids(&db), ["t1"]);

        let mut flipped = whole.clone();
        flipped[HEADER + 2] ^= 0xff;
        std::fs::write(&path, &flipped).unwrap();
        let error = Journal::open(&db, Durability::OsCache)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("store.db-inbox-0") && error.contains("damaged record at byte 0"),
            "{error}"
        );
    }

    /// A record keeps its digest and its items' event ids; one written before there were
    /// either (no trailer) still reads, named by its id alone.
    #[test]
    fn a_record_keeps_its_digest_and_event_ids_and_old_records_still_read() {
        let record = Record {
            number: 7,
            appservice_id: "as".into(),
            txn_id: "t1".into(),
            digest: "00ff".into(),
            received_at: 5,
            first_seq: 3,
            items: vec![
                NewInboxItem {
                    event_id: Some("$e".into()),
                    event_ts: 0,
                    ..item("{}")
                },
                item("[]"),
            ],
            parsed: None,
        };
        let bytes = format::encode(&record);
        let read = format::decode(&bytes[HEADER..]).unwrap();
        assert_eq!(read.digest, "00ff");
        let ids: Vec<_> = read.items.iter().map(|i| i.event_id.as_deref()).collect();
        assert_eq!(ids, [Some("$e"), None]);
        // The trailer: the digest, then an id (or "") for each item, each a length and bytes.
        let trailer = 4 + 4 + 4 + 2 + 4;
        let old = format::decode(&bytes[HEADER..bytes.len() - trailer]).unwrap();
        assert_eq!((old.txn_id.as_str(), old.digest.as_str()), ("t1", ""));
        assert!(old.items.iter().all(|i| i.event_id.is_none()));
        assert_eq!(old.items.len(), 2);
    }
}
