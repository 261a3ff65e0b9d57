use super::Store;
use crate::{Result, writeback::Write};

impl Store {
    /// Applies deferred writes in order, in one database transaction.
    pub(crate) async fn apply(&self, writes: &[Write]) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        let done: Vec<i64> = writes
            .iter()
            .filter_map(|w| match w {
                Write::Done(seq) => Some(*seq),
                _ => None,
            })
            .collect();
        super::inbox::mark_done(&mut tx, &done).await?;
        for write in writes {
            match write {
                Write::Done(_) => {}
                Write::Registered(user_id) => {
                    sqlx::query(super::users::SET_REGISTERED)
                        .bind(user_id)
                        .execute(&mut *tx)
                        .await?;
                }
                Write::Membership {
                    room_id,
                    user_id,
                    membership,
                } => {
                    sqlx::query(super::users::SET_MEMBERSHIP)
                        .bind(room_id)
                        .bind(user_id)
                        .bind(membership)
                        .execute(&mut *tx)
                        .await?;
                }
            }
        }
        tx.commit().await?;
        Ok(())
    }
}
