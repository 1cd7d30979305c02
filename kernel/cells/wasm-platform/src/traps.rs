//! `wasmtime_init_traps`: the handler Wasmtime gives for CPU faults in Wasm code.
//!
//! Wasmtime calls `wasmtime_init_traps` from `Engine::new` only when `signals_based_traps` is
//! on. Keel configures `signals_based_traps(false)`: compiled code checks bounds, division and
//! stack limits explicitly and traps by calling into the runtime, so [`trap_handler`] stays
//! `None` and no CPU fault is ever a Wasm trap.

use core::ptr;
use core::sync::atomic::{AtomicPtr, Ordering};

/// `wasmtime_trap_handler_t` of `capi.rs`.
///
/// Call it from a CPU exception handler with the faulting `ip` and `rbp` and, for a page fault,
/// the faulting address (CR2). If it returns, the fault was not in Wasm code. If it was, it does
/// not return: it sets `rsp`/`rbp` to the frame of the Wasm entry trampoline and jumps there (no
/// `iretq`). Hence the exception handler must run on the interrupted task's stack, hold no lock
/// and no value with a destructor, and re-enable interrupts first if the interrupted context
/// had them on (an interrupt gate cleared IF, and nothing will restore RFLAGS).
pub type TrapHandler =
    extern "C" fn(ip: usize, fp: usize, has_faulting_addr: bool, faulting_addr: usize);

static HANDLER: AtomicPtr<()> = AtomicPtr::new(ptr::null_mut());

/// Stores `handler` (every `Engine` passes the same function). Returns 0.
#[unsafe(no_mangle)]
pub extern "C" fn wasmtime_init_traps(handler: TrapHandler) -> i32 {
    HANDLER.store(handler as *mut (), Ordering::Release);
    0
}

/// The handler Wasmtime registered, if any (none while `signals_based_traps` is off).
pub fn trap_handler() -> Option<TrapHandler> {
    let raw = HANDLER.load(Ordering::Acquire);
    if raw.is_null() {
        return None;
    }
    // SAFETY: `HANDLER` only ever holds null or a `TrapHandler` stored by
    // `wasmtime_init_traps`; function and data pointers have the same size and representation
    // on x86_64.
    Some(unsafe { core::mem::transmute::<*mut (), TrapHandler>(raw) })
}
