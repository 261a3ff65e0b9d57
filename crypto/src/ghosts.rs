//! The ghosts' Olm machines that are open. Each holds a matrix-sdk-sqlite connection pool (about
//! five open files and a few hundred KB resident, see docs/e2ee.md), so a bridge with thousands
//! of ghosts keeps only the most recently used open and reopens the others when they send again
//! (milliseconds: the store is on disk).

use std::{
    collections::HashMap,
    sync::{
        Arc, Weak,
        atomic::{AtomicU64, Ordering},
    },
};

use trestle::{Result, ruma::OwnedUserId};

use crate::machine::Machine;

struct Open<T = Machine> {
    machine: Arc<T>,
    /// When it was last handed out, on `Ghosts::clock`.
    used: u64,
}

/// The open ghost machines, at most `limit` of them when none is in use.
pub(crate) struct Ghosts {
    open: tokio::sync::Mutex<HashMap<OwnedUserId, Open>>,
    clock: AtomicU64,
    limit: usize,
}

impl Ghosts {
    pub(crate) fn new(limit: usize) -> Ghosts {
        Ghosts {
            open: Default::default(),
            clock: AtomicU64::new(0),
            limit: limit.max(1),
        }
    }

    /// `user`'s machine, opened with `open` if it is not open (`None` from `open`: the user has
    /// no device). Opening holds the lock: one user's store is never opened twice.
    pub(crate) async fn get_or_open<F>(
        &self,
        user: &OwnedUserId,
        open: F,
    ) -> Result<Option<Arc<Machine>>>
    where
        F: Future<Output = Result<Option<Machine>>>,
    {
        let mut machines = self.open.lock().await;
        let now = self.clock.fetch_add(1, Ordering::Relaxed);
        if let Some(entry) = machines.get_mut(user) {
            entry.used = now;
            let machine = entry.machine.clone();
            // Machines that were in use when others opened may be idle now.
            close_least_recently_used(&mut machines, self.limit);
            return Ok(Some(machine));
        }
        let Some(machine) = open.await? else {
            return Ok(None);
        };
        let machine = Arc::new(machine);
        machines.insert(
            user.clone(),
            Open {
                machine: machine.clone(),
                used: now,
            },
        );
        close_least_recently_used(&mut machines, self.limit);
        Ok(Some(machine))
    }

    /// The open machines.
    pub(crate) async fn all(&self) -> Vec<Arc<Machine>> {
        let machines = self.open.lock().await;
        machines.values().map(|o| o.machine.clone()).collect()
    }

    /// `user`'s open machine if it is the one `machine` points to (not closed, nor closed and
    /// opened again), without counting as a use.
    pub(crate) async fn open_instance(
        &self,
        user: &OwnedUserId,
        machine: &Weak<Machine>,
    ) -> Option<Arc<Machine>> {
        let machines = self.open.lock().await;
        let open = &machines.get(user)?.machine;
        std::ptr::eq(Arc::as_ptr(open), machine.as_ptr()).then(|| open.clone())
    }

    /// How many are open.
    pub(crate) async fn count(&self) -> usize {
        self.open.lock().await.len()
    }
}

/// Closes the least recently used machines beyond `limit`. A machine some task still holds is
/// left open: closing it from the map while in use would let a second machine open the same
/// store.
fn close_least_recently_used<T>(machines: &mut HashMap<OwnedUserId, Open<T>>, limit: usize) {
    while machines.len() > limit {
        let idle = machines
            .iter()
            .filter(|(_, o)| Arc::strong_count(&o.machine) == 1)
            .min_by_key(|(_, o)| o.used)
            .map(|(user, _)| user.clone());
        match idle {
            Some(user) => {
                machines.remove(&user);
            }
            None => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_least_recently_used_idle_machines_are_closed() {
        let user = |n: u32| OwnedUserId::try_from(format!("@g_{n}:x")).unwrap();
        let mut machines: HashMap<OwnedUserId, Open<u32>> = (0..4)
            .map(|n| {
                let open = Open {
                    machine: Arc::new(n),
                    used: u64::from(10 - n),
                };
                (user(n), open)
            })
            .collect();
        // In use elsewhere: stays open although the least recently used.
        let held = machines[&user(3)].machine.clone();
        close_least_recently_used(&mut machines, 2);
        let mut left: Vec<u32> = machines.values().map(|o| *o.machine).collect();
        left.sort();
        assert_eq!(left, [0, 3]);
        // Everything in use: nothing can close, the limit is exceeded for now.
        let held_too = machines[&user(0)].machine.clone();
        close_least_recently_used(&mut machines, 1);
        assert_eq!(machines.len(), 2);
        drop((held, held_too));
        close_least_recently_used(&mut machines, 1);
        assert_eq!(machines.len(), 1);
    }
}
