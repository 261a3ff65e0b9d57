#!/usr/bin/env python3
"""WAL frames per commit of the inbox's SQLite tables, in a model of the receive path.

Each frame is one 4 KiB page a commit writes to the WAL (and later copies into the database),
so frames per commit is what a schema change costs or saves the journal's commits, whatever
the machine's speed. The model commits what one event per transaction commits: the
transaction's name, the event's inbox row (and its indexes), and the done mark of the event
before; commits of fifty events, with the events' index led by their ids or by their times;
and, for ghosts, batches of registrations and joins. It uses Python's own SQLite, not
the bundled one, which is enough for counting pages.

    python3 bench/wal-frames.py
"""
import os
import random
import sqlite3
import string
import tempfile


def fresh(path):
    for suffix in ("", "-wal", "-shm"):
        try:
            os.remove(path + suffix)
        except FileNotFoundError:
            pass
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("PRAGMA wal_autocheckpoint=0")
    return db


def frames_since(db, path, before):
    return (os.path.getsize(path + "-wal") - before) / (4096 + 24)


def inbox(path, events_index, without_rowid, warm=20000, measured=2000):
    db = fresh(path)
    tail = " WITHOUT ROWID" if without_rowid else ""
    db.execute(
        "CREATE TABLE transactions (appservice_id TEXT NOT NULL, txn_id TEXT NOT NULL, "
        "received_at INTEGER NOT NULL, digest TEXT, PRIMARY KEY (appservice_id, txn_id))" + tail
    )
    db.execute(
        "CREATE TABLE inbox (seq INTEGER PRIMARY KEY, appservice_id TEXT NOT NULL, "
        "queue_key TEXT NOT NULL, item_key TEXT NOT NULL, kind TEXT NOT NULL, "
        "payload TEXT NOT NULL, received_at INTEGER NOT NULL, done_at INTEGER, event_id TEXT)"
    )
    db.execute(
        "CREATE INDEX inbox_pending ON inbox (appservice_id, queue_key, seq) "
        "WHERE done_at IS NULL"
    )
    if events_index:
        db.execute(
            "CREATE UNIQUE INDEX inbox_events ON inbox (appservice_id, event_id) "
            "WHERE event_id IS NOT NULL"
        )

    def commit(i):
        db.execute("BEGIN")
        db.execute("UPDATE inbox SET done_at = ? WHERE seq = ?", (i, i - 1))
        db.execute(
            "INSERT OR REPLACE INTO transactions VALUES (?, ?, ?, ?)", ("as", str(i), i, "d" * 43)
        )
        event_id = "$" + "".join(random.choice(string.ascii_letters) for _ in range(43))
        db.execute(
            "INSERT INTO inbox VALUES (?, ?, ?, ?, ?, ?, ?, NULL, ?)",
            (i, "as", "!room%d:hs" % (i % 20), "%d.0" % i, "timeline", "x" * 600, i, event_id),
        )
        db.execute("COMMIT")

    for i in range(1, warm + 1):
        commit(i)
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    before = os.path.getsize(path + "-wal")
    for i in range(warm + 1, warm + 1 + measured):
        commit(i)
    return frames_since(db, path, before) / measured


def inbox_batches(path, events_index, marks="update", per_commit=50, warm=400, measured=100):
    """WAL frames per event when each commit stores `per_commit` events, as a journal batch of
    one transaction of fifty does, with the events' index led by `events_index`. The done marks
    of the batch before are `update`s of their rows with a partial index of pending rows (before
    0009), rows of a `table` of their own (without any way to find the pending rows), or deletes
    from a `pending` table of the rows waiting, filled by a trigger (0009)."""
    db = fresh(path)
    db.execute(
        "CREATE TABLE inbox (seq INTEGER PRIMARY KEY, appservice_id TEXT NOT NULL, "
        "queue_key TEXT NOT NULL, item_key TEXT NOT NULL, kind TEXT NOT NULL, "
        "payload TEXT NOT NULL, received_at INTEGER NOT NULL, done_at INTEGER, event_id TEXT, "
        "event_ts INTEGER)"
    )
    if marks == "update":
        db.execute(
            "CREATE INDEX inbox_pending ON inbox (appservice_id, queue_key, seq) "
            "WHERE done_at IS NULL"
        )
    elif marks == "pending":
        db.execute(
            "CREATE TABLE inbox_pending (seq INTEGER PRIMARY KEY, appservice_id TEXT NOT NULL, "
            "queue_key TEXT NOT NULL)"
        )
        db.execute(
            "CREATE TRIGGER inbox_pending_on_insert AFTER INSERT ON inbox BEGIN "
            "INSERT INTO inbox_pending VALUES (new.seq, new.appservice_id, new.queue_key); END"
        )
    else:
        db.execute("CREATE TABLE inbox_done (seq INTEGER PRIMARY KEY)")
    db.execute(
        "CREATE UNIQUE INDEX inbox_events ON inbox (%s) WHERE event_id IS NOT NULL" % events_index
    )
    seq = 0

    def commit():
        nonlocal seq
        db.execute("BEGIN")
        if marks == "update":
            db.execute(
                "UPDATE inbox SET done_at = 1 WHERE seq > ? AND seq <= ?", (seq - per_commit, seq)
            )
        elif marks == "pending":
            db.execute(
                "DELETE FROM inbox_pending WHERE seq > ? AND seq <= ?", (seq - per_commit, seq)
            )
        else:
            db.executemany(
                "INSERT INTO inbox_done VALUES (?)", [(s,) for s in range(seq - per_commit + 1, seq + 1)]
            )
        for _ in range(per_commit):
            seq += 1
            event_id = "$" + "".join(random.choice(string.ascii_letters) for _ in range(43))
            db.execute(
                "INSERT INTO inbox VALUES (?, ?, ?, ?, ?, ?, ?, NULL, ?, ?)",
                (seq, "as", "!room%d:hs" % (seq % 20), "%d.0" % seq, "timeline", "x" * 300,
                 seq, event_id, 1_700_000_000_000 + seq),
            )
        db.execute("COMMIT")

    for _ in range(warm):
        commit()
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    before = os.path.getsize(path + "-wal")
    for _ in range(measured):
        commit()
    return frames_since(db, path, before) / (measured * per_commit)


def ghosts(path, without_rowid, per_commit=5, commits=600):
    db = fresh(path)
    tail = " WITHOUT ROWID" if without_rowid else ""
    db.execute(
        "CREATE TABLE ghosts (user_id TEXT PRIMARY KEY NOT NULL, registered INTEGER NOT NULL "
        "DEFAULT 0, display_name TEXT, avatar_url TEXT)" + tail
    )
    db.execute(
        "CREATE TABLE memberships (room_id TEXT NOT NULL, user_id TEXT NOT NULL, "
        "membership TEXT NOT NULL, PRIMARY KEY (room_id, user_id))" + tail
    )

    def batch(count):
        db.execute("BEGIN")
        for _ in range(count):
            user = "@bench_" + "".join(random.choice(string.ascii_lowercase) for _ in range(10))
            db.execute(
                "INSERT INTO ghosts (user_id, registered) VALUES (?, 1) "
                "ON CONFLICT (user_id) DO UPDATE SET registered = 1",
                (user + ":hs",),
            )
            db.execute(
                "INSERT INTO memberships VALUES (?, ?, 'join') ON CONFLICT (room_id, user_id) "
                "DO UPDATE SET membership = excluded.membership",
                ("!room%d:hs" % random.randrange(20), user + ":hs"),
            )
        db.execute("COMMIT")

    for _ in range(2000):
        batch(10)
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    before = os.path.getsize(path + "-wal")
    for _ in range(commits):
        batch(per_commit)
    return frames_since(db, path, before) / commits


def main():
    with tempfile.TemporaryDirectory() as dir:
        path = os.path.join(dir, "model.db")
        for label, events_index, without_rowid in [
            ("before the events' index (0004)", False, False),
            ("with the events' index", True, False),
            ("and transactions WITHOUT ROWID (0005)", True, True),
        ]:
            random.seed(1)
            frames = inbox(path, events_index, without_rowid)
            print(f"one-event commit, {label}: {frames:.2f} frames")
        for label, events_index in [
            ("led by the ids (0004)", "appservice_id, event_id"),
            ("led by the events' times (0008)", "appservice_id, event_ts, event_id"),
        ]:
            random.seed(1)
            frames = inbox_batches(path, events_index)
            print(f"fifty events per commit, the events' index {label}: {frames:.2f} frames an event")
        random.seed(1)
        frames = inbox_batches(path, "appservice_id, event_ts, event_id", marks="table")
        print(f"the same by time, done marks in a table of their own: {frames:.2f} frames an event")
        random.seed(1)
        frames = inbox_batches(path, "appservice_id, event_ts, event_id", marks="pending")
        print(f"the same by time, the rows waiting in a table (0009): {frames:.2f} frames an event")
        for label, without_rowid in [("rowid tables", False), ("WITHOUT ROWID (0006)", True)]:
            random.seed(1)
            print(f"five new ghosts per commit, {label}: {ghosts(path, without_rowid):.2f} frames")


if __name__ == "__main__":
    main()
