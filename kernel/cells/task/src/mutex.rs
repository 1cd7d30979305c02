//! A sleeping mutex: waiters block instead of spinning. Its guard unlocks on drop, including
//! when the holder unwinds.

use crate::WaitQueue;
use core::ops::{Deref, DerefMut};

pub struct Mutex<T> {
    inner: spin::Mutex<T>,
    waiters: WaitQueue,
}

pub struct MutexGuard<'a, T> {
    // Field order: unlock first, then wake a waiter.
    guard: Option<spin::MutexGuard<'a, T>>,
    waiters: &'a WaitQueue,
}

impl<T> Mutex<T> {
    pub const fn new(value: T) -> Self {
        Self {
            inner: spin::Mutex::new(value),
            waiters: WaitQueue::new(),
        }
    }

    pub fn lock(&self) -> MutexGuard<'_, T> {
        let guard = self.waiters.wait_until(|| self.inner.try_lock());
        MutexGuard {
            guard: Some(guard),
            waiters: &self.waiters,
        }
    }

    pub fn try_lock(&self) -> Option<MutexGuard<'_, T>> {
        self.inner.try_lock().map(|g| MutexGuard {
            guard: Some(g),
            waiters: &self.waiters,
        })
    }

    pub fn is_locked(&self) -> bool {
        self.inner.is_locked()
    }
}

impl<T> Deref for MutexGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        self.guard.as_ref().expect("guard present until drop")
    }
}

impl<T> DerefMut for MutexGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        self.guard.as_mut().expect("guard present until drop")
    }
}

impl<T> Drop for MutexGuard<'_, T> {
    fn drop(&mut self) {
        drop(self.guard.take());
        self.waiters.notify_one();
    }
}
