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
//! Records go to one file while the batch taken before them is committed (a few files,
//! `<database>-inbox-0` and on, take turns), and a file is emptied only once nothing in it is
//! needed at a start. Every record carries a number, a length and a CRC-32, so a start reads
//! the files back in order and commits what it finds before anything else happens. A record
//! cut short by a crash mid-write was never answered and is dropped; a damaged record anywhere
//! else stops the start with an error naming the file, since what follows it cannot be read.
//!
//! **Waiting rows, written late.** An item waiting to be handled has a row in `inbox_pending`
//! (migration 0009), which a handled item's mark deletes. Under a steady load nearly every item
//! is handled within milliseconds of its commit, and writing its row and then deleting it cost
//! 3.7 of the 25.5 µs per record of an eight-record commit (`docs/benchmarks.md`, "Session
//! 38" and "Session 39"). So a commit writes no
//! waiting rows: its batch's file is kept ([`Late`]), and the batch's items that are still not
//! handled get their rows only when the batch is settled, in the commit after it is
//! [`SETTLE_AFTER`] old (or when [`MAX_LATE`] batches are kept), when the inbox is read or
//! counted, or on its own after a lull. A batch whose items are all handled first is emptied
//! with no write to the database at all. A start writes rows for every stored item of the
//! records it reads back, so that what a crash leaves is handled again, as a mark that never
//! reached the database would have it be.
//!
//! With [`Durability::Disk`] an answer also waits for the record to be synced to disk
//! (`sync.rs`), which survives a power loss as well.

use crate::sync::MutexExt;
use std::{
    collections::HashSet,
    fs::{File, OpenOptions},
    io::{Read, Write},
    path::{Path, PathBuf},
    sync::Mutex,
    time::{Duration, Instant},
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

/// Committed batches whose files are kept, their items' waiting rows not all written (see the
/// module's doc), at most. Each holds a file, and a crash has the items of each handled again.
pub(crate) const MAX_LATE: usize = 3;

/// How old a kept batch is when the next commit settles it: after a crash, the items handled
/// in the last `SETTLE_AFTER` are handled again, as with the marks written behind
/// (`queues/writeback.rs`). Under a steady load of one event per transaction nearly every
/// item is handled by then (`docs/benchmarks.md`, "Session 39").
pub(crate) const SETTLE_AFTER: Duration = Duration::from_millis(10);

/// The files: one for appends, one for the batch being committed, [`MAX_LATE`] kept and one
/// more, so that a file that could not be emptied yet holds nothing up.
const FILES: usize = MAX_LATE + 3;

/// One received transaction.
pub(crate) struct Record {
    /// Appends are numbered, so that a start can put the files' records in order.
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
}

/// A committed batch whose file is kept: some of its stored items may have no waiting row yet.
#[derive(Debug)]
struct Late {
    file: usize,
    /// Its stored items not yet handled: each gets its waiting row when the batch is settled.
    open: HashSet<i64>,
    committed_at: Instant,
    /// In a commit that writes the open items' rows: one handled meanwhile is to be marked.
    settling: bool,
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
    files: Vec<File>,
    paths: Vec<PathBuf>,
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
    /// Committed batches whose files are kept, oldest first.
    late: Vec<Late>,
    /// Files whose records are all settled, not yet emptied: a failed truncation, tried again.
    dirty: Vec<usize>,
    /// Set when a failed append could not be cut off: nothing can be appended safely after it.
    broken: bool,
    /// For each file, the number after that of the last record appended to it: what a sync
    /// must cover.
    last_in: Vec<u64>,
    /// Why a settled file could not be emptied, until it is.
    unemptied: Option<String>,
}

impl Journal {
    /// Opens the files beside the database at `db_path`, and reads back the records left in
    /// them, in order. They must be committed before [`Journal::start`], which empties the files.
    pub(crate) fn open(db_path: &Path, durability: Durability) -> Result<(Journal, Vec<Record>)> {
        let paths: Vec<PathBuf> = (0..FILES)
            .map(|i| {
                let mut name = db_path.as_os_str().to_owned();
                name.push(format!("-inbox-{i}"));
                PathBuf::from(name)
            })
            .collect();
        let open = |path: &PathBuf| {
            OpenOptions::new()
                .read(true)
                .append(true)
                .create(true)
                .open(path)
                .map_err(|e| Error::Other(format!("inbox journal {}: {e}", path.display())))
        };
        let mut files = paths.iter().map(open).collect::<Result<Vec<_>>>()?;
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
                late: Vec::new(),
                dirty: Vec::new(),
                broken: false,
                last_in: vec![0; FILES],
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

    /// Empties the files (their records are committed, their items' waiting rows written) and
    /// numbers items from `next_seq` on.
    pub(crate) fn start(&self, next_seq: i64) -> Result<()> {
        let mut state = self.lock();
        for i in 0..FILES {
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
    /// another file from now on. `None` too while no file is free (a settled file could not be
    /// emptied: `Store::journal_unemptied` says why).
    pub(crate) fn take(&self) -> Option<Batch> {
        let mut state = self.lock();
        state.empty_dirty();
        if state.taken.is_some() || state.appended.is_empty() {
            return None;
        }
        let next = state.free_file()?;
        let records = std::mem::take(&mut state.appended);
        let file = state.current;
        state.taken = Some(Taken {
            file,
            records: records.len(),
            items: records.iter().map(|r| r.items.len()).sum(),
        });
        state.current = next;
        state.len = 0;
        Some(Batch { records, file })
    }

    /// The batch's records are committed, `open` the seqs of the items it stored: its file is
    /// kept until they are handled or settled, or emptied now if there are none.
    pub(crate) fn finish(&self, batch: &Batch, open: HashSet<i64>) {
        let mut state = self.lock();
        if state.taken.as_ref().is_some_and(|t| t.file == batch.file) {
            state.taken = None;
        }
        if open.is_empty() {
            state.empty(batch.file);
        } else {
            state.late.push(Late {
                file: batch.file,
                open,
                committed_at: Instant::now(),
                settling: false,
            });
        }
        drop(state);
        self.committed.notify_waiters();
    }

    /// Of the items `seqs`, just handled, those that need a done mark: an item of a kept batch
    /// has no waiting row to delete (unless the batch is being settled). A kept batch whose
    /// items are all handled is emptied here.
    pub(crate) fn handled(&self, mut seqs: Vec<i64>) -> Vec<i64> {
        let mut state = self.lock();
        if state.late.is_empty() {
            return seqs;
        }
        seqs.retain(|seq| {
            for late in &mut state.late {
                if late.open.remove(seq) {
                    return late.settling;
                }
            }
            true
        });
        while let Some(place) = state
            .late
            .iter()
            .position(|late| !late.settling && late.open.is_empty())
        {
            let late = state.late.remove(place);
            state.empty(late.file);
        }
        seqs
    }

    /// Starts settling the kept batches `all`, or those due: [`SETTLE_AFTER`] old, or the
    /// oldest beyond [`MAX_LATE`]` - 1` (so that the batch being committed can be kept).
    /// Returns their open items, whose waiting rows the caller writes, then calls
    /// [`Journal::settled`]; the caller holds the store's connection throughout, so that a mark
    /// of an item handled meanwhile is written after the row.
    pub(crate) fn settle(&self, all: bool) -> Vec<i64> {
        let mut state = self.lock();
        let kept = state.late.len();
        let mut seqs = Vec::new();
        for (place, late) in state.late.iter_mut().enumerate() {
            let due =
                all || late.committed_at.elapsed() >= SETTLE_AFTER || kept - place >= MAX_LATE;
            // One still marked settling was left so by a settle that never ended (its
            // future dropped): its rows are written again, which changes nothing written.
            if due || late.settling {
                late.settling = true;
                seqs.extend(late.open.iter().copied());
            }
        }
        seqs
    }

    /// The batches being settled are settled (their files emptied), or, if `written` is false,
    /// kept as they were, for a later settle to write their remaining open items.
    pub(crate) fn settled(&self, written: bool) {
        let mut state = self.lock();
        if !written {
            for late in &mut state.late {
                late.settling = false;
            }
            return;
        }
        while let Some(place) = state.late.iter().position(|late| late.settling) {
            let late = state.late.remove(place);
            state.empty(late.file);
        }
    }

    /// Whether committed batches' files are kept, to be settled.
    pub(crate) fn keeps_batches(&self) -> bool {
        !self.lock().late.is_empty()
    }

    /// Whether records wait for a file to go to before they can be taken: every other file
    /// is kept or could not be emptied.
    pub(crate) fn out_of_files(&self) -> bool {
        let state = self.lock();
        !state.appended.is_empty() && state.taken.is_none() && state.free_file().is_none()
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
    /// A file holding nothing needed: not appended to, taken, kept or waiting to be emptied.
    fn free_file(&self) -> Option<usize> {
        (0..FILES).find(|&file| {
            file != self.current
                && self.taken.as_ref().is_none_or(|t| t.file != file)
                && self.late.iter().all(|late| late.file != file)
                && !self.dirty.contains(&file)
        })
    }

    /// Empties `file`, whose records are settled; one that cannot be is tried again by
    /// [`Journal::take`], and holds its place meanwhile.
    fn empty(&mut self, file: usize) {
        match truncate(&self.files[file], &self.paths[file]) {
            Ok(()) => {}
            Err(error) => {
                self.unemptied = Some(error.to_string());
                self.dirty.push(file);
            }
        }
    }

    /// Tries again to empty the files that could not be; the report goes once all are.
    fn empty_dirty(&mut self) {
        for file in std::mem::take(&mut self.dirty) {
            self.empty(file);
        }
        if self.dirty.is_empty() {
            self.unemptied = None;
        }
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
        journal.finish(&batch, HashSet::new());
        assert_eq!(journal.backlog(), 1);
        let second = journal.take().unwrap();
        assert_eq!(second.records[0].txn_id, "t2");
        // The next turn goes to the emptied file again.
        append(&journal, "t3");
        drop(journal);
        assert_eq!(txn_ids(&db), ["t2", "t3"]);
    }

    /// A committed batch whose items are not all handled is kept, and read back at a start,
    /// until they are handled (no mark needed, the file emptied) or settled.
    #[test]
    fn a_batch_is_kept_until_its_items_are_handled_or_settled() {
        let (_dir, db, journal) = started(1);
        let first = append(&journal, "t1");
        let second = append(&journal, "t2");
        let batch = journal.take().unwrap();
        journal.finish(&batch, HashSet::from([first, second]));
        assert_eq!(txn_ids(&db), ["t1", "t2"], "kept");
        assert_eq!(journal.handled(vec![first, 99]), [99], "no row to delete");
        assert_eq!(txn_ids(&db), ["t1", "t2"], "t2 is not handled yet");
        assert!(journal.handled(vec![second]).is_empty());
        assert!(txn_ids(&db).is_empty(), "emptied once all are handled");
        assert!(!journal.keeps_batches());

        // Settled: the items not handled get their rows, and one handled meanwhile is marked.
        let third = append(&journal, "t3");
        let fourth = append(&journal, "t4");
        let batch = journal.take().unwrap();
        journal.finish(&batch, HashSet::from([third, fourth]));
        let finished = Instant::now();
        let early = journal.settle(false);
        if finished.elapsed() < SETTLE_AFTER {
            assert!(early.is_empty(), "not due yet");
        }
        let mut settling = journal.settle(true);
        settling.sort();
        assert_eq!(settling, [third, fourth]);
        assert_eq!(
            journal.handled(vec![third]),
            [third],
            "its row is being written"
        );
        // The settle failed: kept as it was, but for the item handled meanwhile.
        journal.settled(false);
        assert_eq!(journal.settle(true), [fourth]);
        journal.settled(true);
        assert!(txn_ids(&db).is_empty());
        assert_eq!(journal.handled(vec![fourth]), [fourth], "settled: marked");
    }

    /// A settle that never ended (its future dropped before `settled`) leaves its batches to
    /// the next one, which writes their rows again before their file is emptied.
    #[test]
    fn a_settle_that_never_ended_is_taken_up_by_the_next() {
        let (_dir, db, journal) = started(1);
        let seq = append(&journal, "t1");
        let batch = journal.take().unwrap();
        journal.finish(&batch, HashSet::from([seq]));
        assert_eq!(journal.settle(true), [seq]);
        assert_eq!(journal.settle(false), [seq], "not due, but left settling");
        journal.settled(true);
        assert!(txn_ids(&db).is_empty());
        assert!(!journal.keeps_batches());
    }

    /// At most `MAX_LATE` batches are kept: the next commit settles the oldest beyond that,
    /// and those `SETTLE_AFTER` old.
    #[test]
    fn the_oldest_kept_batches_are_due() {
        let (_dir, _db, journal) = started(1);
        let mut seqs = Vec::new();
        let started = Instant::now();
        for i in 0..MAX_LATE {
            let seq = append(&journal, &format!("t{i}"));
            let batch = journal.take().unwrap();
            journal.finish(&batch, HashSet::from([seq]));
            seqs.push(seq);
        }
        let due = journal.settle(false);
        if started.elapsed() < SETTLE_AFTER {
            assert_eq!(due, [seqs[0]], "room for one more");
        } else {
            // A slow machine: the others are due by their age as well.
            assert!(due.contains(&seqs[0]));
        }
        journal.settled(true);
        std::thread::sleep(SETTLE_AFTER);
        let mut due = journal.settle(false);
        due.sort();
        assert_eq!(due, seqs[1..]);
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
