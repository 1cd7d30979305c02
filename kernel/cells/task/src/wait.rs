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
