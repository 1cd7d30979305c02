//! Tasks: Keel's unit of execution. One address space, preemptive round-robin scheduling on a
//! periodic timer, blocking through wait queues.
//!
//! Every task runs inside `catch_unwind`: when it panics, faults or is killed, its stack is
//! unwound and all it owned is dropped; the joiner receives the [`Failure`].
#![no_std]
#![deny(unsafe_code)]

extern crate alloc;

mod channel;
mod mutex;
mod scheduler;
mod switch;
mod wait;

pub use channel::{Receiver, RecvError, SendError, Sender, channel};
pub use keel_unwind::Failure;
pub use mutex::{Mutex, MutexGuard};
pub use scheduler::{
    Builder, GuestFaultFilter, JoinHandle, KillError, KillWatch, TICK_HZ, TaskId, TaskInfo,
    TaskState, current_id, idle_loop, init, kill, kill_requested, kill_watch, report_memory_use,
    request_kill, set_guest_fault_filter, set_guest_kill_stop, sleep, spawn, task_list, ticks,
    tls_get, tls_set, yield_now,
};
pub use wait::{EventCount, WaitQueue};
