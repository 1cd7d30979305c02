//! `wasmtime_init_traps`: the handler Wasmtime gives for CPU faults in Wasm code, and the path
//! from Keel's exception handlers to it.
//!
//! With signals-based traps, Wasm code does not check bounds against guard regions or test for
//! division by zero itself: the CPU faults (#PF in a guard region, #DE, #UD for `unreachable`)
//! and [`on_guest_fault`] sends such a fault, when it hit compiled Wasm code, to Wasmtime's
//! handler, which resumes the program's entry with a trap.

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

/// The fault being turned into a Wasm trap: written with interrupts off in the exception
/// handler, read by the trampoline before it turns them back on (per-CPU with SMP).
#[unsafe(no_mangle)]
static KEEL_WASM_TRAP_PC: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);
#[unsafe(no_mangle)]
static KEEL_WASM_TRAP_ADDR: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);
#[unsafe(no_mangle)]
static KEEL_WASM_TRAP_HAS_ADDR: core::sync::atomic::AtomicU8 = core::sync::atomic::AtomicU8::new(0);
#[unsafe(no_mangle)]
static KEEL_WASM_TRAP_HANDLER: AtomicPtr<()> = AtomicPtr::new(ptr::null_mut());

// Runs on the faulting task's stack with its registers (RBP is the Wasm frame pointer) and
// interrupts off: loads the fault, turns interrupts on (Wasm code runs with them on) and calls
// Wasmtime's handler, which does not return for a fault in Wasm code. Should it return, `ud2`
// makes the task fail like any other faulting task.
core::arch::global_asm!(
    ".pushsection .text.keel_wasm_trap_trampoline, \"ax\"",
    ".global keel_wasm_trap_trampoline",
    "keel_wasm_trap_trampoline:",
    "mov rdi, qword ptr [rip + KEEL_WASM_TRAP_PC]",
    "mov rsi, rbp",
    "movzx edx, byte ptr [rip + KEEL_WASM_TRAP_HAS_ADDR]",
    "mov rcx, qword ptr [rip + KEEL_WASM_TRAP_ADDR]",
    "mov rax, qword ptr [rip + KEEL_WASM_TRAP_HANDLER]",
    "and rsp, -16",
    "sti",
    "call rax",
    "ud2",
    ".popsection",
);

// SAFETY: the assembly above defines this symbol; only its address is taken.
unsafe extern "C" {
    fn keel_wasm_trap_trampoline();
}

/// Stops a task that was asked to die, when the timer interrupted it inside a compiled Wasm
/// function: Wasmtime's handler gets a trap site of that code (see [`crate::kill`]) and the
/// task's frame pointer, and unwinds the Wasm frames to the store's entry. Returns false (and
/// changes nothing) anywhere else: host code notices the kill request itself.
pub fn stop_for_kill(context: &mut keel_arch::interrupts::InterruptedContext) -> bool {
    let Some(handler) = trap_handler() else {
        return false;
    };
    let Some(trap_site) = crate::kill::trap_site_for(context.instruction_pointer() as usize) else {
        return false;
    };
    let ordering = Ordering::SeqCst;
    KEEL_WASM_TRAP_PC.store(trap_site as u64, ordering);
    KEEL_WASM_TRAP_ADDR.store(0, ordering);
    KEEL_WASM_TRAP_HAS_ADDR.store(0, ordering);
    KEEL_WASM_TRAP_HANDLER.store(handler as *mut (), ordering);
    // SAFETY: as for a fault: the trampoline never returns, realigns the stack, reads the trap
    // before enabling interrupts, and RBP and the stack are the interrupted task's own (a Wasm
    // function's frame, where Wasmtime's handler expects one).
    unsafe { context.redirect_as_call(keel_wasm_trap_trampoline as *const () as u64) };
    true
}

/// Page-fault error code bit: the page was present (a protection violation, not a missing page).
const PAGE_FAULT_PRESENT: u64 = 1 << 0;

/// Keel's guest-fault filter. A page fault on a Wasmtime page that may be used but is not yet
/// backed commits it and resumes (from Wasm code or from the host touching linear memory); a
/// CPU exception in compiled Wasm code becomes a Wasm trap. Returns false for every other fault
/// (the task layer then handles it as usual).
pub fn on_guest_fault(
    fault: &keel_arch::interrupts::Fault,
    context: &mut keel_arch::interrupts::InterruptedContext,
) -> bool {
    use crate::vm::DemandFault;
    use keel_arch::interrupts::FaultKind;
    if fault.kind == FaultKind::PageFault
        && fault
            .error_code
            .is_some_and(|code| code & PAGE_FAULT_PRESENT == 0)
        && let Some(address) = fault.address
    {
        match crate::vm::commit_on_fault(address as usize) {
            DemandFault::Committed => return true,
            DemandFault::NotDemand => {}
            DemandFault::OutOfMemory => {
                let _ = core::fmt::Write::write_fmt(
                    &mut keel_arch::serial::EmergencyWriter,
                    format_args!("\r\nout of memory: no frame left for a page at {address:#x}\r\n"),
                );
            }
        }
    }
    let Some(handler) = trap_handler() else {
        return false;
    };
    let is_trap_kind = matches!(
        fault.kind,
        FaultKind::PageFault
            | FaultKind::DivideError
            | FaultKind::InvalidOpcode
            | FaultKind::GeneralProtection
    );
    if !is_trap_kind || !crate::vm::is_wasm_code(fault.rip as usize) {
        return false;
    }
    let ordering = Ordering::SeqCst;
    KEEL_WASM_TRAP_PC.store(fault.rip, ordering);
    KEEL_WASM_TRAP_ADDR.store(fault.address.unwrap_or(0), ordering);
    KEEL_WASM_TRAP_HAS_ADDR.store(fault.address.is_some() as u8, ordering);
    KEEL_WASM_TRAP_HANDLER.store(handler as *mut (), ordering);
    // SAFETY: the trampoline above never returns, realigns the stack before calling, and reads
    // the fault before enabling interrupts; RBP and the stack are the faulting task's own.
    unsafe { context.redirect_as_call(keel_wasm_trap_trampoline as *const () as u64) };
    true
}
