//! Interrupt-safe spin locks.
//!
//! On a preemptive kernel a plain spin lock held by a task that the timer preempts deadlocks the
//! next task that wants it; and a lock shared with an interrupt handler deadlocks the handler. An
//! [`IrqSafeMutex`] therefore disables interrupts on this core for as long as its guard lives and
//! restores the previous interrupt state when the guard drops.
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

use core::ops::{Deref, DerefMut};
use x86_64::instructions::interrupts;

/// A spin lock that keeps interrupts off while held.
pub struct IrqSafeMutex<T: ?Sized> {
    inner: spin::Mutex<T>,
}

/// Interrupts are held off while this value lives; dropping it restores the earlier state.
pub struct HeldInterrupts {
    were_enabled: bool,
}

impl HeldInterrupts {
    pub fn hold() -> Self {
        let were_enabled = interrupts::are_enabled();
        if were_enabled {
            interrupts::disable();
        }
        Self { were_enabled }
    }

    pub fn were_enabled(&self) -> bool {
        self.were_enabled
    }
}

impl Drop for HeldInterrupts {
    fn drop(&mut self) {
        if self.were_enabled {
            interrupts::enable();
        }
    }
}

pub struct IrqSafeMutexGuard<'a, T: ?Sized> {
    // Field order matters: the lock is released before interrupts come back on.
    guard: spin::MutexGuard<'a, T>,
    _held: HeldInterrupts,
}

impl<T> IrqSafeMutex<T> {
    pub const fn new(value: T) -> Self {
        Self {
            inner: spin::Mutex::new(value),
        }
    }
}

impl<T: ?Sized> IrqSafeMutex<T> {
    pub fn lock(&self) -> IrqSafeMutexGuard<'_, T> {
        let held = HeldInterrupts::hold();
        IrqSafeMutexGuard {
            guard: self.inner.lock(),
            _held: held,
        }
    }

    pub fn try_lock(&self) -> Option<IrqSafeMutexGuard<'_, T>> {
        let held = HeldInterrupts::hold();
        self.inner
            .try_lock()
            .map(|guard| IrqSafeMutexGuard { guard, _held: held })
    }

    pub fn is_locked(&self) -> bool {
        self.inner.is_locked()
    }
}

impl<T: ?Sized> Deref for IrqSafeMutexGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.guard
    }
}

impl<T: ?Sized> DerefMut for IrqSafeMutexGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.guard
    }
}

/// A value written once during boot and read freely afterwards.
pub type Once<T> = spin::Once<T>;

impl<T: Default> Default for IrqSafeMutex<T> {
    fn default() -> Self {
        Self::new(T::default())
    }
}
