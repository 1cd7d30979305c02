//! Device interrupts for drivers: MSI when the function has the capability, else its INTx pin
//! routed through the IOAPIC. A fired interrupt is counted and wakes the driver's task; a
//! level-triggered line stays masked until the driver acknowledges it.

use alloc::sync::Arc;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use keel_arch::interrupts::{DEVICE_LINES, MSI_LINE_BASE};
use keel_sync::IrqSafeMutex;
use keel_task::WaitQueue;

/// One interrupt line as drivers see it.
pub struct LineState {
    pub line: u8,
    /// An IOAPIC input (GSI) that is level-triggered: masked on delivery, unmasked on ack.
    pub level_gsi: Option<u32>,
    fired: AtomicU64,
    consumed: AtomicU64,
    masked_by_driver: AtomicBool,
    /// Set by [`LineState::poke`]: the next wait returns at once.
    poked: AtomicBool,
    waiters: WaitQueue,
}

impl LineState {
    fn new(line: u8, level_gsi: Option<u32>) -> Self {
        Self {
            line,
            level_gsi,
            fired: AtomicU64::new(0),
            consumed: AtomicU64::new(0),
            masked_by_driver: AtomicBool::new(false),
            poked: AtomicBool::new(false),
            waiters: WaitQueue::new(),
        }
    }

    pub fn count(&self) -> u64 {
        self.fired.load(Ordering::Acquire)
    }

    /// Wakes the waiter without an interrupt (the host has work for the driver's loop).
    pub fn poke(&self) {
        self.poked.store(true, Ordering::Release);
        self.waiters.notify_all();
    }

    /// Waits until the line fired since the last successful wait, or `timeout_ns` passed, or
    /// someone poked it.
    pub fn wait(&self, timeout_ns: u64) -> bool {
        let pending = || {
            (self.poked.load(Ordering::Acquire)
                || self.fired.load(Ordering::Acquire) != self.consumed.load(Ordering::Acquire))
            .then_some(())
        };
        self.waiters
            .wait_timeout(core::time::Duration::from_nanos(timeout_ns), pending);
        self.poked.store(false, Ordering::Release);
        let fired = self.fired.load(Ordering::Acquire);
        self.consumed.swap(fired, Ordering::AcqRel) != fired
    }

    pub fn acknowledge(&self) {
        if let Some(gsi) = self.level_gsi
            && !self.masked_by_driver.load(Ordering::Acquire)
        {
            let _ = keel_arch::ioapic::set_masked(gsi, false);
        }
    }

    pub fn set_masked(&self, masked: bool) {
        self.masked_by_driver.store(masked, Ordering::Release);
        if let Some(gsi) = self.level_gsi {
            let _ = keel_arch::ioapic::set_masked(gsi, masked);
        }
    }
}

/// Lines handed to drivers, by line number.
static LINES: IrqSafeMutex<[Option<Arc<LineState>>; DEVICE_LINES as usize]> =
    IrqSafeMutex::new([const { None }; DEVICE_LINES as usize]);

fn on_interrupt(line: u8) {
    let state = LINES.lock()[line as usize].clone();
    if let Some(state) = state {
        if let Some(gsi) = state.level_gsi {
            // The device keeps the line asserted until its driver clears the cause.
            let _ = keel_arch::ioapic::set_masked(gsi, true);
        }
        state.fired.fetch_add(1, Ordering::AcqRel);
        state.waiters.notify_all();
    }
}

/// Why an interrupt could not be set up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RouteFailure {
    NoFreeLine,
    Unroutable,
}

/// A free MSI line with its handler installed.
pub fn allocate_msi_line() -> Result<Arc<LineState>, RouteFailure> {
    let mut lines = LINES.lock();
    let line = (MSI_LINE_BASE..DEVICE_LINES)
        .find(|&l| lines[l as usize].is_none())
        .ok_or(RouteFailure::NoFreeLine)?;
    let state = Arc::new(LineState::new(line, None));
    lines[line as usize] = Some(state.clone());
    drop(lines);
    keel_arch::interrupts::set_irq_handler(line, on_interrupt);
    Ok(state)
}

/// Gives an MSI line back. Call it once the line's device can no longer send it (its driver
/// instance ended and the host turned bus mastering off). Legacy lines are shared and stay
/// routed.
pub fn release(state: &Arc<LineState>) {
    if state.level_gsi.is_some() {
        return;
    }
    let mut lines = LINES.lock();
    if let Some(slot) = lines.get_mut(state.line as usize)
        && slot.as_ref().is_some_and(|s| Arc::ptr_eq(s, state))
    {
        *slot = None;
    }
}

/// The (shared) state of IOAPIC input `gsi`, routed level-triggered, active high, the first
/// time it is asked for.
pub fn legacy_line(gsi: u32) -> Result<Arc<LineState>, RouteFailure> {
    let line = u8::try_from(gsi)
        .ok()
        .filter(|&l| l < keel_arch::ioapic::MAX_IRQS)
        .ok_or(RouteFailure::Unroutable)?;
    let mut lines = LINES.lock();
    if let Some(state) = &lines[line as usize] {
        return Ok(state.clone());
    }
    let state = Arc::new(LineState::new(line, Some(gsi)));
    lines[line as usize] = Some(state.clone());
    drop(lines);
    if !keel_arch::interrupts::set_irq_handler(line, on_interrupt) {
        return Err(RouteFailure::Unroutable);
    }
    keel_arch::ioapic::route(
        gsi,
        keel_arch::ioapic::Trigger::Level,
        keel_arch::ioapic::Polarity::ActiveHigh,
        keel_arch::apic::id(),
    )
    .map_err(|_| RouteFailure::Unroutable)?;
    Ok(state)
}

/// The IOAPIC input a bus-0 function's INTx pin (1 = INTA) reaches on QEMU's q35 chipset
/// (ICH9): slots 0-24 start at PIRQ E + (slot mod 4) and rotate through E-H, slots 25-31
/// start at PIRQ A and rotate through A-D (slot 30, the PCIe-PCI bridge, through E-H); PIRQ
/// A-H are GSIs 16-23 in APIC mode. This is what q35's ACPI `_PRT` says; Keel has no AML
/// interpreter to read it.
pub fn q35_intx_gsi(slot: u8, pin: u8) -> Option<u32> {
    if !(1..=4).contains(&pin) || slot > 31 {
        return None;
    }
    let pin = u32::from(pin - 1);
    let (first_link, head) = match slot {
        0..=0x17 => (4, u32::from(slot) & 3),
        0x18 | 0x1e => (4, 0),
        _ => (0, 0),
    };
    Some(16 + first_link + (head + pin) % 4)
}
