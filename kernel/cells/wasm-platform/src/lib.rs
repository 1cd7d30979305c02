//! The C-ABI platform that Wasmtime 48.0.8 calls when built without `std` with the features
//! `custom-virtual-memory` and `custom-native-signals` (and, optionally,
//! `custom-sync-primitives`). The declarations live in Wasmtime's
//! `crates/wasmtime/src/runtime/vm/sys/custom/capi.rs`; this crate defines them on Keel's cells:
//!
//! * virtual memory ([`vm`]): every `wasmtime_mmap_new` is a [`keel_memory::Reservation`] kept in
//!   a registry by start address; the other calls find the reservation containing the address;
//! * traps ([`traps`]): the handler Wasmtime registers is stored for Keel's exception handlers,
//!   and a killed task running Wasm is stopped through it ([`kill`]);
//! * task-local storage ([`tls`]): Wasmtime's per-thread pointers are per-task words;
//! * locks ([`sync`]): Wasmtime's `Mutex`/`RwLock` words, used only with
//!   `custom-sync-primitives`, which a preemptive kernel needs (without it Wasmtime panics on
//!   contention).
//!
//! Every function returns an error code instead of panicking: Wasmtime turns a nonzero code into
//! an `Err("os error N")`. The codes are errno values so that the message reads naturally.
//!
//! The kernel binary must reference this crate (`use keel_wasm_platform as _;`) so that it is
//! linked and its `#[no_mangle]` symbols resolve Wasmtime's imports.
#![no_std]
#![deny(unsafe_op_in_unsafe_fn)]

extern crate alloc;

pub mod kill;
pub mod sync;
pub mod tls;
pub mod traps;
pub mod vm;

pub use kill::KillableCode;
pub use traps::{TrapHandler, on_guest_fault, stop_for_kill, trap_handler};
pub use vm::committed_bytes;

/// Error codes returned to Wasmtime (errno numbers, for readable messages).
pub mod error {
    use keel_memory::MemoryError;

    /// An internal inconsistency in the memory cell.
    pub const EIO: i32 = 5;
    /// Out of physical memory or kernel virtual address space.
    pub const ENOMEM: i32 = 12;
    /// An address range that no reservation contains, a misaligned address, unknown flags.
    pub const EINVAL: i32 = 22;
    /// A protection Keel does not offer: writable and executable at once.
    pub const ENOTSUP: i32 = 95;

    pub(crate) fn from_memory(e: MemoryError) -> i32 {
        match e {
            MemoryError::OutOfFrames | MemoryError::OutOfPages | MemoryError::TooFragmented => {
                ENOMEM
            }
            MemoryError::Misaligned
            | MemoryError::OutOfBounds
            | MemoryError::InvalidRequest
            | MemoryError::SizeMismatch => EINVAL,
            MemoryError::InUse
            | MemoryError::DoubleFree
            | MemoryError::AlreadyMapped
            | MemoryError::NotMapped
            | MemoryError::NotWritable
            | MemoryError::NotInitialized => EIO,
        }
    }
}
