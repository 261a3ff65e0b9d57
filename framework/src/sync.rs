//! Locks that a panic elsewhere does not break.
//!
//! A std lock is "poisoned" when a thread panics while holding it, and every later `lock()`
//! returns an error. Trestle's locks guard caches and counters that each critical section
//! leaves whole (a map insert, a counter bump), and a panicking handler is caught and logged
//! by the framework; refusing every later lock would turn one failed event into an appservice
//! that answers nothing. So the framework, its crates and its plugins take the guard either
//! way, through these traits, instead of repeating `unwrap_or_else(PoisonError::into_inner)`.

use std::sync::{Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// [`Mutex::lock`] that takes the guard even after a holder panicked (see the module).
pub trait MutexExt<T: ?Sized> {
    /// Locks, whether or not the mutex is poisoned.
    fn lock_unpoisoned(&self) -> MutexGuard<'_, T>;
}

impl<T: ?Sized> MutexExt<T> for Mutex<T> {
    fn lock_unpoisoned(&self) -> MutexGuard<'_, T> {
        self.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// [`RwLock::read`] and [`RwLock::write`] that take the guard even after a holder panicked
/// (see the module).
pub trait RwLockExt<T: ?Sized> {
    /// Locks for reading, whether or not the lock is poisoned.
    fn read_unpoisoned(&self) -> RwLockReadGuard<'_, T>;
    /// Locks for writing, whether or not the lock is poisoned.
    fn write_unpoisoned(&self) -> RwLockWriteGuard<'_, T>;
}

impl<T: ?Sized> RwLockExt<T> for RwLock<T> {
    fn read_unpoisoned(&self) -> RwLockReadGuard<'_, T> {
        self.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write_unpoisoned(&self) -> RwLockWriteGuard<'_, T> {
        self.write().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lock_a_panicking_holder_poisoned_is_still_taken() {
        let mutex = std::sync::Arc::new(Mutex::new(1));
        let holder = mutex.clone();
        let _ = std::thread::spawn(move || {
            let _guard = holder.lock().unwrap();
            panic!("a handler failed while holding the lock");
        })
        .join();
        assert!(mutex.is_poisoned());
        *mutex.lock_unpoisoned() += 1;
        assert_eq!(*mutex.lock_unpoisoned(), 2);

        let rw = std::sync::Arc::new(RwLock::new(1));
        let holder = rw.clone();
        let _ = std::thread::spawn(move || {
            let _guard = holder.write().unwrap();
            panic!("a handler failed while holding the lock");
        })
        .join();
        assert!(rw.is_poisoned());
        *rw.write_unpoisoned() += 1;
        assert_eq!(*rw.read_unpoisoned(), 2);
    }
}
