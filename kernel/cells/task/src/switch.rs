//! The one place the scheduler touches raw task contexts.
#![allow(unsafe_code)]

use crate::scheduler::Task;
use keel_arch::context::{self, SavedContext};

/// Switches from `prev` to `next`. Both tasks are kept alive by the scheduler (the current task
/// and the reap slot hold them) until the switch completes.
pub(crate) fn switch(prev: &Task, next: &Task) {
    let prev_ctx: *mut SavedContext = prev.context.get();
    let next_ctx: *const SavedContext = next.context.get();
    // SAFETY: interrupts are off (the caller holds `HeldInterrupts`); a context is only
    // accessed here, by the one switch that leaves or enters its task, and both `Task`s outlive
    // it (see above). `next`'s context was saved by `switch` or prepared by `prepare_stack`.
    unsafe { context::switch(prev_ctx, next_ctx) };
}

// SAFETY: the only unsynchronised field of `Task` is its saved context, which is accessed
// solely by `switch` above with interrupts off on the one core that runs the task.
unsafe impl Sync for Task {}
