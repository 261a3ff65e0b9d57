use super::{Backend, Membership, Store, now_ms, users};
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

/// Writes per script on SQLite: well under its limit of 32,766 bound parameters.
const SCRIPT_WRITES: usize = 500;

impl Store {
    /// Applies deferred writes in order, in one database transaction (on SQLite, one script
    /// per 500 writes: a single round trip to the connection's thread each).
    pub(crate) async fn apply(&self, writes: &[Write]) -> Result<()> {
        if self.backend == Backend::Sqlite {
            for chunk in writes.chunks(SCRIPT_WRITES) {
                self.apply_script(chunk).await?;
            }
            return Ok(());
        }
        let mut tx = self.begin().await?;
        super::inbox::mark_done(&mut tx, &done_seqs(writes)).await?;
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
        let done = done_seqs(writes);
        let mut sql = String::from("BEGIN;");
        // Parameters are numbered across the whole script.
        let mut n = 0;
        if !done.is_empty() {
            let list: Vec<String> = (0..done.len()).map(|i| format!("${}", i + 2)).collect();
            sql.push_str(&format!(
                "UPDATE inbox SET done_at = $1 WHERE seq IN ({});",
                list.join(", ")
            ));
            n = done.len() + 1;
        }
        for write in writes {
            match write {
                Write::Done(_) => {}
                Write::Registered(_) => {
                    sql.push_str(&renumber(users::SET_REGISTERED, n));
                    n += 1;
                    sql.push(';');
                }
                Write::Membership { .. } => {
                    sql.push_str(&renumber(users::SET_MEMBERSHIP, n));
                    n += 3;
                    sql.push(';');
                }
            }
        }
        sql.push_str("COMMIT;");
        // Scripts differ with every mix of writes: caching them all as prepared statements
        // filled memory with ones never used again. The few shapes of the smallest flushes,
        // common when events come one at a time, are kept.
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).persistent(writes.len() <= 2);
        if !done.is_empty() {
            query = query.bind(now_ms());
            for seq in &done {
                query = query.bind(*seq);
            }
        }
        for write in writes {
            match write {
                Write::Done(_) => {}
                Write::Registered(user_id) => query = query.bind(user_id),
                Write::Membership {
                    room_id,
                    user_id,
                    membership,
                } => query = query.bind(room_id).bind(user_id).bind(membership.as_str()),
            }
        }
        self.script(query).await?;
        Ok(())
    }
}

/// `sql` with each parameter `$k` renumbered `$(k + offset)`.
fn renumber(sql: &str, offset: usize) -> String {
    let mut out = String::with_capacity(sql.len() + 8);
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        out.push(c);
        if c != '$' {
            continue;
        }
        let mut digits = String::new();
        while let Some(d) = chars.next_if(char::is_ascii_digit) {
            digits.push(d);
        }
        match digits.parse::<usize>() {
            Ok(k) => out.push_str(&(k + offset).to_string()),
            Err(_) => out.push_str(&digits),
        }
    }
    out
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

    #[tokio::test]
    async fn one_script_marks_items_done_and_records_ghosts_and_memberships_in_order() {
        let store = Store::in_memory().await.unwrap();
        let items: Vec<NewInboxItem> = (0..3)
            .map(|index| NewInboxItem {
                queue_key: "!r:x".into(),
                index,
                kind: "timeline",
                payload: "{}".into(),
                event_id: None,
            })
            .collect();
        let stored = store
            .receive_transaction_items("as", "t1", items.clone())
            .await
            .unwrap()
            .unwrap();
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

    #[test]
    fn parameters_are_renumbered_whole() {
        assert_eq!(
            renumber("VALUES ($1, $2, $13) -- $x", 21),
            "VALUES ($22, $23, $34) -- $x"
        );
    }

    #[tokio::test]
    async fn a_failed_script_leaves_no_transaction_open() {
        let store = Store::in_memory().await.unwrap();
        sqlx::query("DROP TABLE memberships")
            .execute(store.pool())
            .await
            .unwrap();
        let failing = [Write::Membership {
            room_id: "!r:x".into(),
            user_id: "@g:x".into(),
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
