//! Wait queues: block the current task until a condition holds.

use crate::scheduler::{self, Task, TaskState};
use alloc::collections::VecDeque;
use alloc::sync::Arc;
use keel_sync::{HeldInterrupts, IrqSafeMutex};

pub struct WaitQueue {
    waiters: IrqSafeMutex<VecDeque<Arc<Task>>>,
}

impl WaitQueue {
    pub const fn new() -> Self {
        Self {
            waiters: IrqSafeMutex::new(VecDeque::new()),
        }
    }

    /// Blocks until `condition` returns `Some`. The condition is checked with interrupts off,
    /// so a wake-up between the check and the block cannot be lost. A task killed while
    /// waiting unwinds from here.
    pub fn wait_until<T>(&self, mut condition: impl FnMut() -> Option<T>) -> T {
        loop {
            {
                let _held = HeldInterrupts::hold();
                if let Some(value) = condition() {
                    return value;
                }
                let current = scheduler::current_task();
                current.set_state(TaskState::Blocked);
                self.waiters.lock().push_back(current);
                scheduler::schedule();
            }
            scheduler::unwind_if_killed();
        }
    }

    /// Like [`WaitQueue::wait_until`], but gives up after `timeout`: `None` if the condition
    /// still does not hold then.
    pub fn wait_timeout<T>(
        &self,
        timeout: core::time::Duration,
        mut condition: impl FnMut() -> Option<T>,
    ) -> Option<T> {
        let deadline = scheduler::ticks() + scheduler::ticks_for(timeout);
        loop {
            {
                let _held = HeldInterrupts::hold();
                if let Some(value) = condition() {
                    return Some(value);
                }
                if scheduler::ticks() >= deadline {
                    return None;
                }
                let current = scheduler::current_task();
                current.set_state(TaskState::Blocked);
                self.waiters.lock().push_back(current.clone());
                scheduler::wake_at(deadline, current.clone());
                scheduler::schedule();
                // Woken by the deadline rather than a notify: leave the queue.
                self.waiters.lock().retain(|t| !Arc::ptr_eq(t, &current));
            }
            scheduler::unwind_if_killed();
        }
    }

    /// Wakes the longest waiter; returns whether one was woken.
    pub fn notify_one(&self) -> bool {
        loop {
            let Some(task) = self.waiters.lock().pop_front() else {
                return false;
            };
            if scheduler::wake(&task) {
                return true;
            }
        }
    }

    pub fn notify_all(&self) {
        let waiters = core::mem::take(&mut *self.waiters.lock());
        for task in waiters {
            scheduler::wake(&task);
        }
    }
}

impl Default for WaitQueue {
    fn default() -> Self {
        Self::new()
    }
}

/// An event count: a waiter reads [`EventCount::count`], looks at whatever it waits for, and if
/// that is not there yet waits until the count moves past what it read. A notification between
/// the look and the wait is therefore never lost (a plain [`WaitQueue`] wait would sleep it out).
pub struct EventCount {
    count: core::sync::atomic::AtomicU64,
    waiters: WaitQueue,
}

impl EventCount {
    pub const fn new() -> Self {
        Self {
            count: core::sync::atomic::AtomicU64::new(0),
            waiters: WaitQueue::new(),
        }
    }

    /// How many notifications there have been.
    pub fn count(&self) -> u64 {
        self.count.load(core::sync::atomic::Ordering::Acquire)
    }

    /// Counts an event and wakes every waiter.
    pub fn notify_all(&self) {
        self.count
            .fetch_add(1, core::sync::atomic::Ordering::AcqRel);
        self.waiters.notify_all();
    }

    /// Waits until the count is no longer `seen`, or `timeout` passes; true if it moved.
    pub fn wait_past(&self, seen: u64, timeout: core::time::Duration) -> bool {
        self.waiters
            .wait_timeout(timeout, || (self.count() != seen).then_some(()))
            .is_some()
    }
}

impl Default for EventCount {
    fn default() -> Self {
        Self::new()
    }
}
