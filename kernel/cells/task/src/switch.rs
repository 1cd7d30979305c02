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

/// Continues the interrupted current task in `target` at the top of its own stack, abandoning
/// every frame on it (the task overflowed its stack and is being ended).
pub(crate) fn restart_on_own_stack(
    context: &mut keel_arch::interrupts::InterruptedContext,
    stack_top: u64,
    target: extern "C" fn() -> !,
) {
    // SAFETY: `stack_top` is the top of the current task's own mapped stack; the task never
    // resumes the abandoned frames (it exits in `target`), and `target` never returns.
    unsafe { context.restart_on_stack(stack_top, target as *const () as u64) };
}
