//! Switching between task stacks, preparing a new task's stack, and redirecting an interrupted
//! context so that it unwinds.

use core::arch::{global_asm, naked_asm};
use core::sync::atomic::{AtomicU64, Ordering};

/// Saves the callee-saved registers on the current stack, stores the stack pointer in
/// `*save_rsp`, switches to `next_rsp` and restores the registers saved there.
///
/// # Safety
/// `next_rsp` must be a stack pointer saved by this function or made by [`prepare_stack`], whose
/// stack is still mapped; interrupts must be disabled.
#[unsafe(naked)]
pub unsafe extern "C" fn switch_stacks(save_rsp: *mut u64, next_rsp: u64) {
    naked_asm!(
        "push rbp",
        "push rbx",
        "push r12",
        "push r13",
        "push r14",
        "push r15",
        "mov [rdi], rsp",
        "mov rsp, rsi",
        "pop r15",
        "pop r14",
        "pop r13",
        "pop r12",
        "pop rbx",
        "pop rbp",
        "ret",
    )
}

// The first frame of every task. `.cfi_undefined rip` marks it as the outermost frame, so an
// unwinder stops here cleanly.
global_asm!(
    ".pushsection .text.keel_task_trampoline, \"ax\"",
    ".global keel_task_trampoline",
    "keel_task_trampoline:",
    ".cfi_startproc",
    ".cfi_undefined rip",
    "mov rdi, r12",
    "call r13",
    "ud2",
    ".cfi_endproc",
    ".popsection",
);

// SAFETY: the assembly above defines this symbol; only its address is taken.
unsafe extern "C" {
    fn keel_task_trampoline();
}

/// Lays out a new task's stack so that switching to it calls `entry(arg)`. `stack` is the task's
/// whole stack; returns the stack pointer to switch to.
pub fn prepare_stack(stack: &mut [u64], entry: extern "C" fn(u64) -> !, arg: u64) -> Option<u64> {
    let top_addr = stack.as_ptr_range().end as u64 & !0xF;
    let top_index = (top_addr - stack.as_ptr() as u64) as usize / 8;
    if top_index < 8 {
        return None;
    }
    // Pushed by `switch_stacks`, lowest address first: r15, r14, r13, r12, rbx, rbp, return.
    let frame = [
        0,
        0,
        entry as *const () as u64,
        arg,
        0,
        0,
        keel_task_trampoline as *const () as u64,
    ];
    let base = top_index - frame.len();
    stack[base..top_index].copy_from_slice(&frame);
    Some(top_addr - 8 * frame.len() as u64)
}

/// Where the redirect trampoline "returns" to (the interrupted instruction + 1) and what it
/// jumps to. Written with interrupts off and read before they come back on; per-CPU once Keel
/// runs on more than one core.
#[unsafe(no_mangle)]
static KEEL_REDIRECT_RETURN: AtomicU64 = AtomicU64::new(0);
#[unsafe(no_mangle)]
static KEEL_REDIRECT_TARGET: AtomicU64 = AtomicU64::new(0);

global_asm!(
    ".pushsection .text.keel_redirect_trampoline, \"ax\"",
    ".global keel_redirect_trampoline",
    "keel_redirect_trampoline:",
    "push qword ptr [rip + KEEL_REDIRECT_RETURN]",
    "jmp qword ptr [rip + KEEL_REDIRECT_TARGET]",
    ".popsection",
);

// SAFETY: the assembly above defines this symbol; only its address is taken.
unsafe extern "C" {
    fn keel_redirect_trampoline();
}

pub(crate) fn set_redirect(return_address: u64, target: u64) -> u64 {
    KEEL_REDIRECT_RETURN.store(return_address, Ordering::SeqCst);
    KEEL_REDIRECT_TARGET.store(target, Ordering::SeqCst);
    keel_redirect_trampoline as *const () as u64
}

/// What a switched-out task keeps: its stack pointer and its x87/SSE registers.
#[repr(C, align(16))]
pub struct SavedContext {
    fx: crate::cpu::FxState,
    rsp: u64,
}

impl SavedContext {
    pub fn new(rsp: u64) -> Self {
        Self {
            fx: crate::cpu::FxState::default(),
            rsp,
        }
    }
}

/// Saves the running task's state into `prev` and continues with `next`.
///
/// # Safety
/// Interrupts must be off. `prev` must stay valid until the next switch back to it and `next`
/// must hold a context saved by this function or made with [`prepare_stack`] whose stack is
/// mapped. No other code may access either context during the switch.
pub unsafe fn switch(prev: *mut SavedContext, next: *const SavedContext) {
    // SAFETY: the caller guarantees both pointers are valid and unaliased for the switch.
    unsafe {
        (*prev).fx.save();
        (*next).fx.restore();
        switch_stacks(&raw mut (*prev).rsp, (*next).rsp);
    }
}
