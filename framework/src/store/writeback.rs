use super::{Backend, Membership, Store, users};
use crate::Result;

/// One write that may lag behind (see `queues/writeback.rs`): its loss in a crash costs a
/// repeat, never an event.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Write {
    /// An inbox item was handled.
    Done(i64),
    /// A ghost is registered on the homeserver.
    Registered(String),
    /// One of our users' membership in a room.
    Membership {
        room_id: String,
        user_id: String,
        membership: Membership,
    },
}

/// The deferred writes' statements on SQLite, whose texts never change: the writes come as
/// JSON arrays, one per table, in the order they were made (an upsert applies them in
/// `json_each`'s order, so the last write to a row wins). A script written out per mix of writes
/// was prepared again at nearly every flush: where each event makes a ghost, parsing and
/// preparing it cost a fifth of all the appservice's instructions. Each takes its own
/// parameters of the three every flush binds.
macro_rules! mark_done {
    () => {
        super::inbox::mark_done_sql!("$1")
    };
}

macro_rules! register {
    () => {
        "INSERT INTO ghosts (user_id, registered) \
         SELECT value, 1 FROM json_each($2) WHERE true ORDER BY key \
         ON CONFLICT (user_id) DO UPDATE SET registered = 1; "
    };
}

macro_rules! set_memberships {
    () => {
        "INSERT INTO memberships (room_id, user_id, membership) \
         SELECT value ->> 0, value ->> 1, value ->> 2 FROM json_each($3) WHERE true ORDER BY key \
         ON CONFLICT (room_id, user_id) DO UPDATE SET membership = excluded.membership; "
    };
}

/// The script for a flush whose lists of marks, registrations and memberships are non-empty
/// as given: the statements of those lists only (a statement over an empty list still costs
/// its step), or `None` if every list is empty. Seven fixed texts, each prepared once by the
/// connection. Each is a transaction of its own even with one statement, so that a failed
/// script is rolled back as every script is (`script_on`).
fn apply_script(done: bool, registered: bool, memberships: bool) -> Option<&'static str> {
    macro_rules! transaction {
        ($($statement:expr),+) => {
            concat!("BEGIN; ", $($statement,)+ "COMMIT;")
        };
    }
    Some(match (done, registered, memberships) {
        (false, false, false) => return None,
        (true, false, false) => transaction!(mark_done!()),
        (false, true, false) => transaction!(register!()),
        (false, false, true) => transaction!(set_memberships!()),
        (true, true, false) => transaction!(mark_done!(), register!()),
        (true, false, true) => transaction!(mark_done!(), set_memberships!()),
        (false, true, true) => transaction!(register!(), set_memberships!()),
        (true, true, true) => transaction!(mark_done!(), register!(), set_memberships!()),
    })
}

impl Store {
    /// Applies deferred writes in order, in one database transaction (on SQLite, one script:
    /// a single round trip to the connection's thread).
    pub(crate) async fn apply(&self, writes: &[Write]) -> Result<()> {
        if self.backend == Backend::Sqlite {
            return self.apply_script(writes).await;
        }
        let mut tx = self.begin().await?;
        super::inbox::mark_done(&mut tx, self.backend, &done_seqs(writes)).await?;
        for write in writes {
            match write {
                Write::Done(_) => {}
                Write::Registered(user_id) => {
                    sqlx::query(users::SET_REGISTERED)
                        .bind(user_id)
                        .execute(&mut *tx)
                        .await?;
                }
                Write::Membership {
                    room_id,
                    user_id,
                    membership,
                } => {
                    sqlx::query(users::SET_MEMBERSHIP)
                        .bind(room_id)
                        .bind(user_id)
                        .bind(membership.as_str())
                        .execute(&mut *tx)
                        .await?;
                }
            }
        }
        tx.commit().await?;
        Ok(())
    }

    async fn apply_script(&self, writes: &[Write]) -> Result<()> {
        let mut done = Vec::new();
        let mut registered = Vec::new();
        let mut memberships = Vec::new();
        for write in writes {
            match write {
                Write::Done(seq) => done.push(*seq),
                Write::Registered(user_id) => registered.push(user_id.as_str()),
                Write::Membership {
                    room_id,
                    user_id,
                    membership,
                } => memberships.push([room_id.as_str(), user_id.as_str(), membership.as_str()]),
            }
        }
        let Some(script) = apply_script(
            !done.is_empty(),
            !registered.is_empty(),
            !memberships.is_empty(),
        ) else {
            return Ok(());
        };
        let query = sqlx::query(script)
            .bind(json_list(&done)?)
            .bind(json_list(&registered)?)
            .bind(json_list(&memberships)?);
        self.script(query).await?;
        Ok(())
    }
}

/// `items` as a JSON array, or NULL for none, which `json_each` reads as no rows.
fn json_list<T: serde::Serialize>(items: &[T]) -> Result<Option<String>> {
    if items.is_empty() {
        return Ok(None);
    }
    Ok(Some(serde_json::to_string(items)?))
}

fn done_seqs(writes: &[Write]) -> Vec<i64> {
    writes
        .iter()
        .filter_map(|w| match w {
            Write::Done(seq) => Some(*seq),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{NewInboxItem, TxnName};

    /// `count` timeline items of one room, without event ids.
    fn timeline_items(count: usize) -> Vec<NewInboxItem> {
        (0..count)
            .map(|index| NewInboxItem {
                queue_key: "!r:x".into(),
                index,
                kind: "timeline",
                payload: "{}".into(),
                event_id: None,
                event_ts: 0,
            })
            .collect()
    }

    /// The inbox items stored for a new transaction of `items`.
    async fn receive(store: &Store, items: Vec<NewInboxItem>) -> Vec<crate::store::InboxItem> {
        store
            .receive_transaction_items("as", "t1", items)
            .await
            .unwrap()
            .unwrap()
    }

    #[tokio::test]
    async fn one_script_marks_items_done_and_records_ghosts_and_memberships_in_order() {
        let store = Store::in_memory().await.unwrap();
        let items = timeline_items(3);
        let stored = receive(&store, items.clone()).await;
        assert_eq!(store.inbox_depth("as").await.unwrap(), 3);
        let member = |membership: Membership| Write::Membership {
            room_id: "!r:x".into(),
            user_id: "@g:x".into(),
            membership,
        };
        store
            .apply(&[
                Write::Done(stored[0].seq),
                member(Membership::Join),
                Write::Registered("@g:x".into()),
                Write::Done(stored[2].seq),
                member(Membership::Leave),
                member(Membership::Join),
            ])
            .await
            .unwrap();
        assert_eq!(store.inbox_depth("as").await.unwrap(), 1);
        assert_eq!(store.registered_ghosts().await.unwrap(), ["@g:x"]);
        assert_eq!(
            store
                .membership("!r:x", "@g:x")
                .await
                .unwrap()
                .map(Membership::as_str),
            Some("join"),
            "the last of several writes to one row wins"
        );
        // A resent transaction stores nothing and hands nothing over.
        assert!(
            store
                .receive_transaction_items("as", "t1", items)
                .await
                .unwrap()
                .is_none()
        );
        assert_eq!(store.inbox_depth("as").await.unwrap(), 1);
    }

    #[tokio::test]
    async fn done_marks_ride_along_with_the_next_transaction_even_a_repeated_one() {
        marks_ride_along(Store::in_memory().await.unwrap()).await;
        // On a file, the framework's own connection numbers the items.
        let (_dir, store) = crate::store::tests::on_file().await;
        marks_ride_along(store).await;
    }

    async fn marks_ride_along(store: Store) {
        let item = |index| NewInboxItem {
            queue_key: "!r:x".into(),
            index,
            kind: "timeline",
            payload: "{}".into(),
            event_id: None,
            event_ts: 0,
        };
        let txn = |id| TxnName { id, digest: "" };
        let first: Vec<_> = store
            .receive_and_mark_done("as", txn("t1"), vec![item(0), item(1)], &[])
            .await
            .unwrap()
            .unwrap()
            .items
            .into_iter()
            .flatten()
            .collect();
        let second = store
            .receive_and_mark_done("as", txn("t2"), vec![item(0)], &[first[0].seq])
            .await
            .unwrap()
            .unwrap();
        assert_eq!(second.items.len(), 1);
        assert_eq!(store.inbox_depth("as").await.unwrap(), 2);
        // A resent transaction stores nothing, but the marks it carried are written.
        let resent = store
            .receive_and_mark_done("as", txn("t2"), vec![item(0)], &[first[1].seq])
            .await
            .unwrap();
        assert!(resent.is_none());
        assert_eq!(store.inbox_depth("as").await.unwrap(), 1);
    }

    /// A flush runs the statements of its non-empty lists only, in a transaction, and each mix of lists writes what it holds and nothing else.
    #[tokio::test]
    async fn a_flush_runs_the_statements_of_its_non_empty_lists_only() {
        assert_eq!(apply_script(false, false, false), None);
        let mixes: Vec<[bool; 3]> = (1..8)
            .map(|bits: u8| [bits & 1 != 0, bits & 2 != 0, bits & 4 != 0])
            .collect();
        for [done, registered, memberships] in mixes.iter().copied() {
            let script = apply_script(done, registered, memberships).unwrap();
            assert_eq!(script.contains("json_each($1)"), done, "{script}");
            assert_eq!(script.contains("json_each($2)"), registered, "{script}");
            assert_eq!(script.contains("json_each($3)"), memberships, "{script}");
            assert!(script.starts_with("BEGIN; "), "{script}");
            let statements = [done, registered, memberships]
                .iter()
                .filter(|&&b| b)
                .count();
            assert_eq!(script.matches("; ").count(), statements + 1, "{script}");
        }
        let store = Store::in_memory().await.unwrap();
        let stored = receive(&store, timeline_items(mixes.len())).await;
        let mut pending = stored.len();
        let mut ghosts = Vec::new();
        for (i, [done, registered, memberships]) in mixes.iter().copied().enumerate() {
            let ghost = format!("@g{i}:x");
            let mut writes = Vec::new();
            if done {
                writes.push(Write::Done(stored[i].seq));
                pending -= 1;
            }
            if registered {
                writes.push(Write::Registered(ghost.clone()));
                ghosts.push(ghost.clone());
            }
            if memberships {
                writes.push(Write::Membership {
                    room_id: "!r:x".into(),
                    user_id: ghost.clone(),
                    membership: Membership::Join,
                });
            }
            store.apply(&writes).await.unwrap();
            assert_eq!(
                store.inbox_depth("as").await.unwrap(),
                pending as i64,
                "{i}"
            );
            let mut registered_now = store.registered_ghosts().await.unwrap();
            registered_now.sort();
            assert_eq!(registered_now, ghosts, "{i}");
            assert_eq!(
                store.membership("!r:x", &ghost).await.unwrap().is_some(),
                memberships,
                "{i}"
            );
        }
        store.apply(&[]).await.unwrap();
    }

    #[tokio::test]
    async fn a_failed_script_leaves_no_transaction_open() {
        let store = Store::in_memory().await.unwrap();
        // Every flush runs the same script, so the failure is one row's, not the schema's.
        sqlx::query(
            "CREATE TRIGGER refuse BEFORE INSERT ON memberships WHEN NEW.user_id = '@bad:x' \
             BEGIN SELECT RAISE(ABORT, 'refused'); END",
        )
        .execute(store.pool())
        .await
        .unwrap();
        let failing = [Write::Membership {
            room_id: "!r:x".into(),
            user_id: "@bad:x".into(),
            membership: Membership::Join,
        }];
        assert!(store.apply(&failing).await.is_err());
        // Were the script's transaction still open, this would nest a BEGIN and fail.
        store
            .apply(&[Write::Registered("@g:x".into())])
            .await
            .unwrap();
        assert_eq!(store.registered_ghosts().await.unwrap(), ["@g:x"]);
    }
}
