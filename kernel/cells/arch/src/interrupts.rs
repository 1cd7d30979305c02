//! The IDT: every CPU exception is reported through a fault hook; the timer and device
//! interrupts call the hooks the upper cells register.

use crate::{apic, gdt, ioapic, serial::EmergencyWriter};
use core::fmt::{self, Write};
use core::sync::atomic::{AtomicU32, Ordering};
use keel_sync::IrqSafeMutex;
use spin::Once;
use x86_64::registers::control::Cr2;
use x86_64::structures::idt::{
    InterruptDescriptorTable, InterruptStackFrame, InterruptStackFrameValue, PageFaultErrorCode,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultKind {
    DivideError,
    Debug,
    NonMaskableInterrupt,
    Breakpoint,
    Overflow,
    BoundRangeExceeded,
    InvalidOpcode,
    DeviceNotAvailable,
    DoubleFault,
    InvalidTss,
    SegmentNotPresent,
    StackSegmentFault,
    GeneralProtection,
    PageFault,
    X87FloatingPoint,
    AlignmentCheck,
    MachineCheck,
    SimdFloatingPoint,
    Virtualization,
    ControlProtection,
}

impl FaultKind {
    pub fn name(&self) -> &'static str {
        match self {
            FaultKind::DivideError => "divide error",
            FaultKind::Debug => "debug exception",
            FaultKind::NonMaskableInterrupt => "non-maskable interrupt",
            FaultKind::Breakpoint => "breakpoint",
            FaultKind::Overflow => "overflow",
            FaultKind::BoundRangeExceeded => "bound range exceeded",
            FaultKind::InvalidOpcode => "invalid opcode",
            FaultKind::DeviceNotAvailable => "device not available",
            FaultKind::DoubleFault => "double fault",
            FaultKind::InvalidTss => "invalid TSS",
            FaultKind::SegmentNotPresent => "segment not present",
            FaultKind::StackSegmentFault => "stack-segment fault",
            FaultKind::GeneralProtection => "general protection fault",
            FaultKind::PageFault => "page fault",
            FaultKind::X87FloatingPoint => "x87 floating-point exception",
            FaultKind::AlignmentCheck => "alignment check",
            FaultKind::MachineCheck => "machine check",
            FaultKind::SimdFloatingPoint => "SIMD floating-point exception",
            FaultKind::Virtualization => "virtualization exception",
            FaultKind::ControlProtection => "control protection exception",
        }
    }
}

/// A CPU exception, as reported to the fault hook and printed.
#[derive(Clone, Copy, Debug)]
pub struct Fault {
    pub kind: FaultKind,
    pub vector: u8,
    pub error_code: Option<u64>,
    /// The faulting address (CR2) for page faults.
    pub address: Option<u64>,
    pub rip: u64,
    pub rsp: u64,
    /// The fault happened inside an interrupt handler.
    pub in_interrupt: bool,
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (vector {})", self.kind.name(), self.vector)?;
        if let Some(addr) = self.address {
            write!(f, " at {addr:#x}")?;
        }
        if let Some(code) = self.error_code {
            write!(f, ", error code {code:#x}")?;
            if self.kind == FaultKind::PageFault {
                let code = PageFaultErrorCode::from_bits_truncate(code);
                let present = code.contains(PageFaultErrorCode::PROTECTION_VIOLATION);
                let access = if code.contains(PageFaultErrorCode::INSTRUCTION_FETCH) {
                    "instruction fetch"
                } else if code.contains(PageFaultErrorCode::CAUSED_BY_WRITE) {
                    "write"
                } else {
                    "read"
                };
                let why = if present {
                    "protection violation"
                } else {
                    "not present"
                };
                write!(f, " ({access}, {why})")?;
            }
        }
        write!(f, ", rip={:#x} rsp={:#x}", self.rip, self.rsp)
    }
}

/// The interrupted code's state, which a hook may redirect.
pub struct InterruptedContext<'a> {
    frame: &'a mut InterruptStackFrame,
}

impl InterruptedContext<'_> {
    pub fn instruction_pointer(&self) -> u64 {
        self.frame.instruction_pointer.as_u64()
    }
    pub fn stack_pointer(&self) -> u64 {
        self.frame.stack_pointer.as_u64()
    }
    pub fn interrupts_were_enabled(&self) -> bool {
        self.frame.cpu_flags.bits() & (1 << 9) != 0
    }

    /// Abandons the interrupted code's stack: continues in `target` on the stack whose top is
    /// `stack_top`, with interrupts enabled. For ending a task whose stack overflowed.
    ///
    /// # Safety
    /// `stack_top` must be the top of a mapped stack nothing else uses, and `target` must never
    /// return and must not need anything from the abandoned stack.
    pub unsafe fn restart_on_stack(&mut self, stack_top: u64, target: u64) {
        let update = |f: &mut InterruptStackFrameValue| {
            f.instruction_pointer = x86_64::VirtAddr::new(target);
            // As at a function entry after a call: RSP + 8 is 16-byte aligned.
            f.stack_pointer = x86_64::VirtAddr::new((stack_top & !0xF) - 8);
            f.cpu_flags = x86_64::registers::rflags::RFlags::from_bits_truncate(
                f.cpu_flags.bits() | (1 << 9),
            );
        };
        // SAFETY: the caller vouches for the stack and the target (see above).
        unsafe { self.frame.as_mut().update(update) };
    }

    /// Makes the interrupted code continue as if its current instruction had called `target`
    /// (the return address is that instruction + 1, so an unwinder attributes the frame to it),
    /// with interrupts disabled.
    ///
    /// # Safety
    /// `target` must never return, must realign the stack before calling compiled code, and
    /// must tolerate running with interrupts off until it enables them.
    pub unsafe fn redirect_as_call(&mut self, target: u64) {
        let trampoline = crate::context::set_redirect(self.instruction_pointer() + 1, target);
        let update = |f: &mut InterruptStackFrameValue| {
            f.instruction_pointer = x86_64::VirtAddr::new(trampoline);
            f.cpu_flags = x86_64::registers::rflags::RFlags::from_bits_truncate(
                f.cpu_flags.bits() & !(1 << 9),
            );
        };
        // SAFETY: the frame is the live interrupt frame; iretq will continue in the trampoline
        // on the same stack, which the caller vouches for.
        unsafe { self.frame.as_mut().update(update) };
    }
}

/// Returns true when it took care of the fault (for example, by redirecting the context so that
/// the faulting task unwinds). Otherwise the kernel reports the fault and halts.
pub type FaultHook = fn(&Fault, &mut InterruptedContext) -> bool;
pub type TickHook = fn(&mut InterruptedContext);
/// Runs in interrupt context with the line that fired.
pub type IrqHandler = fn(line: u8);

/// Device interrupt lines: `0..ioapic::MAX_IRQS` are IOAPIC inputs (GSIs), the next
/// [`MSI_LINES`] are message-signalled (MSI) vectors a device writes to directly.
pub const MSI_LINES: u8 = 16;
pub const MSI_LINE_BASE: u8 = ioapic::MAX_IRQS;
pub const DEVICE_LINES: u8 = ioapic::MAX_IRQS + MSI_LINES;

/// The vector of a device interrupt line.
pub const fn line_vector(line: u8) -> u8 {
    ioapic::IRQ_VECTOR_BASE + line
}

/// The MSI message (address, data) that makes a device raise MSI line `line` on this CPU:
/// fixed delivery, edge-triggered, to the local APIC `apic_id`.
pub fn msi_message(line: u8, apic_id: u32) -> Option<(u64, u32)> {
    if !(MSI_LINE_BASE..DEVICE_LINES).contains(&line) {
        return None;
    }
    Some((
        0xFEE0_0000 | (u64::from(apic_id) << 12),
        u32::from(line_vector(line)),
    ))
}

static FAULT_HOOK: Once<FaultHook> = Once::new();
static TICK_HOOK: Once<TickHook> = Once::new();
static IRQ_HANDLERS: IrqSafeMutex<[Option<IrqHandler>; DEVICE_LINES as usize]> =
    IrqSafeMutex::new([None; DEVICE_LINES as usize]);
static IRQ_COUNTS: [AtomicU32; DEVICE_LINES as usize] =
    [const { AtomicU32::new(0) }; DEVICE_LINES as usize];
static INTERRUPT_DEPTH: AtomicU32 = AtomicU32::new(0);

pub fn set_fault_hook(hook: FaultHook) {
    FAULT_HOOK.call_once(|| hook);
}
pub fn set_tick_hook(hook: TickHook) {
    TICK_HOOK.call_once(|| hook);
}
/// Installs the handler for device interrupt line `irq` (a GSI below 24, or an MSI line).
pub fn set_irq_handler(irq: u8, handler: IrqHandler) -> bool {
    match IRQ_HANDLERS.lock().get_mut(irq as usize) {
        Some(slot) => {
            *slot = Some(handler);
            true
        }
        None => false,
    }
}
pub fn irq_count(irq: u8) -> u32 {
    IRQ_COUNTS
        .get(irq as usize)
        .map_or(0, |c| c.load(Ordering::Relaxed))
}
/// True while an interrupt handler (not a task) is running on this core.
pub fn in_interrupt() -> bool {
    INTERRUPT_DEPTH.load(Ordering::Relaxed) > 0
}

struct Depth;
impl Depth {
    fn enter() -> Self {
        INTERRUPT_DEPTH.fetch_add(1, Ordering::Relaxed);
        Depth
    }
}
impl Drop for Depth {
    fn drop(&mut self) {
        INTERRUPT_DEPTH.fetch_sub(1, Ordering::Relaxed);
    }
}

fn report_and_halt(fault: &Fault, why: &str) -> ! {
    let _ = write!(
        EmergencyWriter,
        "\r\nKEEL FATAL: {why}: {fault}\r\nsystem halted.\r\n"
    );
    crate::cpu::halt_forever()
}

fn handle_fault(
    frame: &mut InterruptStackFrame,
    kind: FaultKind,
    vector: u8,
    error_code: Option<u64>,
) {
    let address = (kind == FaultKind::PageFault).then(Cr2::read_raw);
    let fault = Fault {
        kind,
        vector,
        error_code,
        address,
        rip: frame.instruction_pointer.as_u64(),
        rsp: frame.stack_pointer.as_u64(),
        in_interrupt: in_interrupt(),
    };
    let _depth = Depth::enter();
    let mut context = InterruptedContext { frame };
    let handled = match FAULT_HOOK.get() {
        Some(hook) if !fault.in_interrupt => hook(&fault, &mut context),
        _ => false,
    };
    if !handled {
        report_and_halt(&fault, "exception in kernel core context");
    }
}

macro_rules! fault_handler {
    ($name:ident, $kind:expr, $vector:expr) => {
        extern "x86-interrupt" fn $name(mut frame: InterruptStackFrame) {
            handle_fault(&mut frame, $kind, $vector, None);
        }
    };
    ($name:ident, $kind:expr, $vector:expr, code) => {
        extern "x86-interrupt" fn $name(mut frame: InterruptStackFrame, code: u64) {
            handle_fault(&mut frame, $kind, $vector, Some(code));
        }
    };
}

fault_handler!(divide_error, FaultKind::DivideError, 0);
fault_handler!(debug, FaultKind::Debug, 1);
fault_handler!(overflow, FaultKind::Overflow, 4);
fault_handler!(bound_range, FaultKind::BoundRangeExceeded, 5);
fault_handler!(invalid_opcode, FaultKind::InvalidOpcode, 6);
fault_handler!(device_not_available, FaultKind::DeviceNotAvailable, 7);
fault_handler!(invalid_tss, FaultKind::InvalidTss, 10, code);
fault_handler!(segment_not_present, FaultKind::SegmentNotPresent, 11, code);
fault_handler!(stack_segment, FaultKind::StackSegmentFault, 12, code);
fault_handler!(general_protection, FaultKind::GeneralProtection, 13, code);
fault_handler!(x87_floating_point, FaultKind::X87FloatingPoint, 16);
fault_handler!(alignment_check, FaultKind::AlignmentCheck, 17, code);
fault_handler!(simd_floating_point, FaultKind::SimdFloatingPoint, 19);
fault_handler!(virtualization, FaultKind::Virtualization, 20);
fault_handler!(control_protection, FaultKind::ControlProtection, 21, code);

extern "x86-interrupt" fn page_fault(mut frame: InterruptStackFrame, code: PageFaultErrorCode) {
    handle_fault(&mut frame, FaultKind::PageFault, 14, Some(code.bits()));
}

extern "x86-interrupt" fn breakpoint(frame: InterruptStackFrame) {
    let _ = write!(
        EmergencyWriter,
        "breakpoint at {:#x}\r\n",
        frame.instruction_pointer.as_u64()
    );
}

extern "x86-interrupt" fn nmi(frame: InterruptStackFrame) {
    let _ = write!(
        EmergencyWriter,
        "NMI at {:#x}\r\n",
        frame.instruction_pointer.as_u64()
    );
}

fn unrecoverable(frame: &InterruptStackFrame, kind: FaultKind, vector: u8, code: Option<u64>) -> ! {
    let fault = Fault {
        kind,
        vector,
        error_code: code,
        address: (kind == FaultKind::DoubleFault).then(Cr2::read_raw),
        rip: frame.instruction_pointer.as_u64(),
        rsp: frame.stack_pointer.as_u64(),
        in_interrupt: in_interrupt(),
    };
    report_and_halt(
        &fault,
        "unrecoverable exception (a kernel stack overflow causes a double fault)",
    )
}

extern "x86-interrupt" fn double_fault(frame: InterruptStackFrame, code: u64) -> ! {
    unrecoverable(&frame, FaultKind::DoubleFault, 8, Some(code))
}

extern "x86-interrupt" fn machine_check(frame: InterruptStackFrame) -> ! {
    unrecoverable(&frame, FaultKind::MachineCheck, 18, None)
}

extern "x86-interrupt" fn timer(mut frame: InterruptStackFrame) {
    apic::end_of_interrupt();
    if let Some(hook) = TICK_HOOK.get() {
        hook(&mut InterruptedContext { frame: &mut frame });
    }
}

extern "x86-interrupt" fn device_irq<const IRQ: u8>(_frame: InterruptStackFrame) {
    {
        let _depth = Depth::enter();
        IRQ_COUNTS[IRQ as usize].fetch_add(1, Ordering::Relaxed);
        let handler = IRQ_HANDLERS.lock()[IRQ as usize];
        if let Some(handler) = handler {
            handler(IRQ);
        }
    }
    apic::end_of_interrupt();
}

extern "x86-interrupt" fn spurious(_frame: InterruptStackFrame) {}

extern "x86-interrupt" fn apic_error(_frame: InterruptStackFrame) {
    apic::end_of_interrupt();
}

static IDT: Once<InterruptDescriptorTable> = Once::new();

macro_rules! set_irqs {
    ($idt:ident, $($n:literal)*) => {
        $( $idt[line_vector($n)].set_handler_fn(device_irq::<$n>); )*
    };
}

pub fn init() {
    let idt = IDT.call_once(|| {
        let mut idt = InterruptDescriptorTable::new();
        idt.divide_error.set_handler_fn(divide_error);
        idt.debug.set_handler_fn(debug);
        // SAFETY: the IST indices name stacks set up in `gdt::init`.
        unsafe {
            idt.non_maskable_interrupt
                .set_handler_fn(nmi)
                .set_stack_index(gdt::NMI_IST);
            idt.double_fault
                .set_handler_fn(double_fault)
                .set_stack_index(gdt::DOUBLE_FAULT_IST);
        }
        idt.breakpoint.set_handler_fn(breakpoint);
        idt.overflow.set_handler_fn(overflow);
        idt.bound_range_exceeded.set_handler_fn(bound_range);
        idt.invalid_opcode.set_handler_fn(invalid_opcode);
        idt.device_not_available
            .set_handler_fn(device_not_available);
        idt.invalid_tss.set_handler_fn(invalid_tss);
        idt.segment_not_present.set_handler_fn(segment_not_present);
        idt.stack_segment_fault.set_handler_fn(stack_segment);
        idt.general_protection_fault
            .set_handler_fn(general_protection);
        // SAFETY: the IST index names the page-fault stack set up in `gdt::init`; the handler
        // never faults itself (it only reads CR2 and calls the fault hook).
        unsafe {
            idt.page_fault
                .set_handler_fn(page_fault)
                .set_stack_index(gdt::PAGE_FAULT_IST);
        }
        idt.x87_floating_point.set_handler_fn(x87_floating_point);
        idt.alignment_check.set_handler_fn(alignment_check);
        idt.machine_check.set_handler_fn(machine_check);
        idt.simd_floating_point.set_handler_fn(simd_floating_point);
        idt.virtualization.set_handler_fn(virtualization);
        idt.cp_protection_exception
            .set_handler_fn(control_protection);
        idt[apic::TIMER_VECTOR].set_handler_fn(timer);
        set_irqs!(idt, 0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23
            24 25 26 27 28 29 30 31 32 33 34 35 36 37 38 39);
        idt[apic::ERROR_VECTOR].set_handler_fn(apic_error);
        idt[apic::SPURIOUS_VECTOR].set_handler_fn(spurious);
        // Legacy PIC vectors (masked, but a spurious IRQ 7/15 can still arrive).
        for v in 0xF0..0xF8u8 {
            idt[v].set_handler_fn(spurious);
        }
        idt
    });
    idt.load();
}
