//! Unwinding, as in Theseus: a failing task's stack is unwound with the DWARF call-frame
//! information in `.eh_frame` (read with gimli), and every landing pad the compiler emitted runs,
//! so every value the task owned is dropped and its frames, pages, heap blocks, locks and channel
//! ends go back.
//!
//! Keel's unwinder is single-phase: it walks frames from the point of failure and lands in the
//! first landing pad it finds. A cleanup pad ends in `_Unwind_Resume`, which continues the walk;
//! the catch pad of [`catch_unwind`] ends it. Nothing else uses the Itanium two-phase protocol,
//! so `rust_eh_personality` exists only because the compiler names it.
//!
//! Three things start an unwind: a Rust panic, a CPU exception raised by task code, and a
//! `kill`. The last two arrive in an interrupt handler, which cannot unwind itself; it redirects
//! the interrupted context into `keel_unwind_from_interrupt`, which runs on the task's own stack
//! as if the interrupted instruction had called it.
#![cfg_attr(not(test), no_std)]
#![feature(core_intrinsics, panic_can_unwind)]
#![allow(internal_features)]
#![deny(unsafe_op_in_unsafe_fn)]

extern crate alloc;

pub mod lsda;
mod walk;

use alloc::boxed::Box;
use alloc::format;
use alloc::string::String;
use core::fmt::{self, Write};
use core::mem::ManuallyDrop;
use core::ops::Range;
use keel_arch::interrupts::{Fault, InterruptedContext};
use keel_sync::IrqSafeMutex;
use spin::Once;
pub use walk::{Registers, UnwindSections, WalkError, Walker};

/// Why a task ended without returning.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Failure {
    /// It panicked; the message.
    Panic(String),
    /// A CPU exception in its code; the report.
    Fault(String),
    /// It was killed.
    Killed,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Panic(msg) => write!(f, "panicked: {msg}"),
            Failure::Fault(report) => write!(f, "killed by {report}"),
            Failure::Killed => f.write_str("killed"),
        }
    }
}

/// The in-flight exception: a heap object whose address travels through landing pads in RAX.
#[repr(C)]
struct Exception {
    failure: Failure,
}

/// Runs `f`; if an unwind reaches this frame, returns the [`Failure`] that started it.
pub fn catch_unwind<R, F: FnOnce() -> R>(f: F) -> Result<R, Failure> {
    union Data<F, R> {
        f: ManuallyDrop<F>,
        r: ManuallyDrop<R>,
        p: ManuallyDrop<Failure>,
    }
    fn do_call<F: FnOnce() -> R, R>(data: *mut u8) {
        // SAFETY: `data` points to the `Data` below, whose `f` is initialised.
        unsafe {
            let data = &mut *(data as *mut Data<F, R>);
            let f = ManuallyDrop::take(&mut data.f);
            data.r = ManuallyDrop::new(f());
        }
    }
    fn do_catch<F: FnOnce() -> R, R>(data: *mut u8, exception: *mut u8) {
        // SAFETY: `exception` is the `Box<Exception>` raised by `start_unwind`, whose ownership
        // passes to the catcher; `f` was consumed by `do_call`.
        unsafe {
            let data = &mut *(data as *mut Data<F, R>);
            let exception = Box::from_raw(exception as *mut Exception);
            data.p = ManuallyDrop::new(exception.failure);
        }
    }
    let mut data = Data {
        f: ManuallyDrop::new(f),
    };
    let ptr = &mut data as *mut Data<F, R> as *mut u8;
    // SAFETY: the two functions uphold the intrinsic's contract as described above.
    let caught = unsafe { core::intrinsics::catch_unwind(do_call::<F, R>, ptr, do_catch::<F, R>) };
    // SAFETY: exactly one of `r` (no unwind) and `p` (caught) was written.
    unsafe {
        if caught == 0 {
            Ok(ManuallyDrop::into_inner(data.r))
        } else {
            Err(ManuallyDrop::into_inner(data.p))
        }
    }
}

/// Starts unwinding the current stack with `failure`. Returns only if no frame caught it: the
/// walk reached the stack's end or a frame without unwind information.
pub fn start_unwind(failure: Failure) -> WalkError {
    let exception = Box::into_raw(Box::new(Exception { failure }));
    // SAFETY: the assembly entry captures this frame's registers and walks from there; it only
    // returns when no landing pad was found, and then the exception is still ours.
    let code = unsafe { keel_unwind_begin(exception) };
    // SAFETY: nothing took ownership (no landing pad ran).
    drop(unsafe { Box::from_raw(exception) });
    LAST_ERROR.lock().take().unwrap_or(if code == 0 {
        WalkError::EndOfStack
    } else {
        WalkError::BadEhFrame
    })
}

static LAST_ERROR: IrqSafeMutex<Option<WalkError>> = IrqSafeMutex::new(None);

/// Called when an unwind started by a fault or kill, or resumed by a cleanup pad, finds no
/// catcher: the task layer ends the task without unwinding further (its remaining resources
/// leak, the kernel goes on).
pub type UncaughtHook = fn(Failure) -> !;
static UNCAUGHT_HOOK: Once<UncaughtHook> = Once::new();

/// The current task's stack range, so that the unwinder never reads outside it.
pub type StackBoundsHook = fn() -> Option<Range<u64>>;
static STACK_BOUNDS_HOOK: Once<StackBoundsHook> = Once::new();

pub fn set_uncaught_hook(hook: UncaughtHook) {
    UNCAUGHT_HOOK.call_once(|| hook);
}

pub fn set_stack_bounds_hook(hook: StackBoundsHook) {
    STACK_BOUNDS_HOOK.call_once(|| hook);
}

fn uncaught(failure: Failure) -> ! {
    match UNCAUGHT_HOOK.get() {
        Some(hook) => hook(failure),
        None => fatal(format_args!("uncaught unwind: {failure}")),
    }
}

static SECTIONS: Once<UnwindSections> = Once::new();

/// Tells the unwinder where the kernel image's unwind sections are (from the linker script).
pub fn init(sections: UnwindSections) {
    SECTIONS.call_once(|| sections);
}

/// Walks from `regs` (the frame that called the capture entry) to the first frame with a
/// landing pad and returns that frame's registers, set up for landing. All heap state of the
/// walk is dropped before the caller lands: landing abandons this stack frame.
fn find_landing(exception: *mut Exception, regs: &Registers) -> Result<Registers, WalkError> {
    let sections = SECTIONS.get().ok_or(WalkError::BadEhFrame)?;
    let mut walker = Walker::new(sections)?;
    let bounds = STACK_BOUNDS_HOOK.get().and_then(|hook| hook());
    let read = |addr: u64| -> Result<u64, WalkError> {
        let inside = bounds
            .as_ref()
            .is_none_or(|b| addr >= b.start && addr + 8 <= b.end);
        if !inside || !addr.is_multiple_of(8) {
            return Err(WalkError::BadStackAccess(addr));
        }
        // SAFETY: the address is aligned and inside the current task's mapped stack.
        Ok(unsafe { core::ptr::read(addr as *const u64) })
    };
    let mut regs = *regs;
    for _ in 0..4096 {
        let pc = regs.gp[walk::PC];
        if pc == 0 {
            return Err(WalkError::EndOfStack);
        }
        // Return addresses point after the call: look up the instruction before.
        let lookup = pc - 1;
        let fde = walker.fde(lookup)?;
        if let Some(pad) = landing_pad(&fde, lookup) {
            regs.gp[0] = exception as u64;
            regs.gp[1] = pad.selector as u64;
            regs.gp[walk::PC] = pad.address;
            return Ok(regs);
        }
        regs = walker.step(&fde, &regs, lookup, &read)?;
    }
    Err(WalkError::EndOfStack)
}

fn landing_pad(
    fde: &gimli::FrameDescriptionEntry<gimli::EndianSlice<'static, gimli::LittleEndian>>,
    ip: u64,
) -> Option<lsda::LandingPad> {
    let address = Walker::lsda(fde)?;
    let table = except_table();
    if !table.contains(&address) {
        return None;
    }
    // SAFETY: the LSDA lies inside `.gcc_except_table`, which is mapped read-only for the
    // kernel's lifetime; the slice ends at the section's end.
    let bytes = unsafe {
        core::slice::from_raw_parts(address as *const u8, (table.end - address) as usize)
    };
    lsda::find_landing_pad(bytes, address, fde.initial_address(), ip)
        .ok()
        .flatten()
}

#[cfg(target_os = "none")]
fn except_table() -> Range<u64> {
    // SAFETY: symbols the linker script defines; only their addresses are taken, never read.
    unsafe extern "C" {
        static __gcc_except_table_start: u8;
        static __gcc_except_table_end: u8;
    }
    (&raw const __gcc_except_table_start) as u64..(&raw const __gcc_except_table_end) as u64
}

#[cfg(not(target_os = "none"))]
fn except_table() -> Range<u64> {
    0..0
}

/// Entry from the capture assembly. `resume` is nonzero for `_Unwind_Resume`, which must not
/// return.
#[unsafe(no_mangle)]
extern "C" fn keel_unwind_walk(exception: *mut Exception, regs: &Registers, resume: u64) -> u64 {
    let error = match find_landing(exception, regs) {
        // SAFETY: the registers are those of the frame owning the landing pad, as the compiler
        // expects them there (callee-saved restored, RSP at the call site); nothing on this
        // frame needs dropping.
        Ok(landing) => unsafe { keel_unwind_land(&landing) },
        Err(e) => e,
    };
    if resume != 0 {
        // SAFETY: a cleanup pad handed the exception back; nobody else owns it now.
        let exception = unsafe { Box::from_raw(exception) };
        uncaught(exception.failure);
    }
    *LAST_ERROR.lock() = Some(error);
    1
}

#[cfg(target_os = "none")]
core::arch::global_asm!(
    ".pushsection .text.keel_unwind, \"ax\"",
    // Captures the caller's callee-saved registers, stack pointer and return address into a
    // `Registers` on the stack and walks from there.
    ".macro KEEL_CAPTURE resume",
    "sub rsp, 136",
    ".cfi_adjust_cfa_offset 136",
    "mov [rsp + 24], rbx",
    "mov [rsp + 48], rbp",
    "mov [rsp + 96], r12",
    "mov [rsp + 104], r13",
    "mov [rsp + 112], r14",
    "mov [rsp + 120], r15",
    "lea rax, [rsp + 144]",
    "mov [rsp + 56], rax",
    "mov rax, [rsp + 136]",
    "mov [rsp + 128], rax",
    "mov rsi, rsp",
    "mov edx, \\resume",
    "call keel_unwind_walk",
    ".endm",
    ".global keel_unwind_begin",
    "keel_unwind_begin:",
    ".cfi_startproc",
    "KEEL_CAPTURE 0",
    "add rsp, 136",
    ".cfi_adjust_cfa_offset -136",
    "ret",
    ".cfi_endproc",
    ".global _Unwind_Resume",
    "_Unwind_Resume:",
    ".cfi_startproc",
    "KEEL_CAPTURE 1",
    "ud2",
    ".cfi_endproc",
    // Restores a frame's registers and jumps to its landing pad.
    ".global keel_unwind_land",
    "keel_unwind_land:",
    "mov rax, [rdi + 0]",
    "mov rdx, [rdi + 8]",
    "mov rbx, [rdi + 24]",
    "mov rbp, [rdi + 48]",
    "mov r12, [rdi + 96]",
    "mov r13, [rdi + 104]",
    "mov r14, [rdi + 112]",
    "mov r15, [rdi + 120]",
    "mov rcx, [rdi + 128]",
    "mov rsp, [rdi + 56]",
    "jmp rcx",
    // Entered from an interrupt handler's redirect with the interrupted stack and registers
    // and a return address of the interrupted instruction + 1 on the stack.
    ".global keel_unwind_from_interrupt",
    "keel_unwind_from_interrupt:",
    ".cfi_startproc",
    "push rbp",
    ".cfi_def_cfa_offset 16",
    ".cfi_offset rbp, -16",
    "mov rbp, rsp",
    ".cfi_def_cfa_register rbp",
    "and rsp, -16",
    "call keel_unwind_pending_cause",
    "ud2",
    ".cfi_endproc",
    ".popsection",
);

#[cfg(target_os = "none")]
#[allow(improper_ctypes)] // the exception is opaque to the assembly
// SAFETY: the assembly above defines these entry points with exactly these signatures.
unsafe extern "C" {
    fn keel_unwind_begin(exception: *mut Exception) -> u64;
    fn keel_unwind_land(regs: &Registers) -> !;
    fn keel_unwind_from_interrupt();
}

#[cfg(not(target_os = "none"))]
unsafe fn keel_unwind_begin(_exception: *mut Exception) -> u64 {
    1
}
#[cfg(not(target_os = "none"))]
unsafe fn keel_unwind_land(_regs: &Registers) -> ! {
    unreachable!("host builds never unwind")
}
#[cfg(not(target_os = "none"))]
extern "C" fn keel_unwind_from_interrupt() {}

/// What the redirected context should unwind with. Written in the interrupt handler (no heap
/// allocation there: the interrupted code may hold the heap lock), read by the redirect target.
#[derive(Clone, Copy, Debug)]
pub enum AsyncCause {
    Fault(Fault),
    Kill,
}

static PENDING_CAUSE: IrqSafeMutex<Option<AsyncCause>> = IrqSafeMutex::new(None);

/// Makes the interrupted task code unwind with `cause` as soon as the handler returns.
pub fn unwind_interrupted(context: &mut InterruptedContext, cause: AsyncCause) {
    *PENDING_CAUSE.lock() = Some(cause);
    // SAFETY: the target is the assembly shim above: it never returns, realigns the stack, and
    // its CFI attributes its caller to the interrupted instruction.
    unsafe { context.redirect_as_call(keel_unwind_from_interrupt as *const () as u64) };
}

// "C-unwind": the unwind this starts passes through this very frame.
#[unsafe(no_mangle)]
extern "C-unwind" fn keel_unwind_pending_cause() -> ! {
    let cause = PENDING_CAUSE.lock().take();
    keel_arch::cpu::enable_interrupts();
    let failure = match cause {
        Some(AsyncCause::Fault(fault)) => Failure::Fault(format!("{fault}")),
        Some(AsyncCause::Kill) | None => Failure::Killed,
    };
    let _ = start_unwind(failure.clone());
    uncaught(failure)
}

/// Prints a last report on the console and halts the machine.
pub fn fatal(args: fmt::Arguments) -> ! {
    let _ = write!(
        keel_arch::serial::EmergencyWriter,
        "\r\nKEEL FATAL: {args}\r\nsystem halted.\r\n"
    );
    keel_arch::cpu::halt_forever()
}

/// The body of the kernel's `#[panic_handler]`: unwinds the panicking task, or, in the
/// kernel's core context (boot, idle, an interrupt handler), reports and halts.
pub fn on_panic(info: &core::panic::PanicInfo) -> ! {
    let message = match info.location() {
        Some(loc) => format!("{} at {}:{}", info.message(), loc.file(), loc.line()),
        None => format!("{}", info.message()),
    };
    if keel_arch::interrupts::in_interrupt() {
        fatal(format_args!("panic in an interrupt handler: {message}"));
    }
    if !info.can_unwind() {
        fatal(format_args!("panic that cannot unwind: {message}"));
    }
    let error = start_unwind(Failure::Panic(message.clone()));
    fatal(format_args!(
        "panic outside any task: {message} ({error:?})"
    ))
}
