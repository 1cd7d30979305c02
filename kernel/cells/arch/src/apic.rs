//! The local APIC (xAPIC, memory-mapped): end of interrupt and the preemption timer.

use keel_memory::{MappedPages, MemoryError};
use keel_sync::IrqSafeMutex;

const ID: usize = 0x20;
const EOI: usize = 0xB0;
const SPURIOUS: usize = 0xF0;
const LVT_TIMER: usize = 0x320;
const LVT_LINT0: usize = 0x350;
const LVT_LINT1: usize = 0x360;
const LVT_ERROR: usize = 0x370;
const TIMER_INITIAL: usize = 0x380;
const TIMER_CURRENT: usize = 0x390;
const TIMER_DIVIDE: usize = 0x3E0;

const MASKED: u32 = 1 << 16;
const PERIODIC: u32 = 1 << 17;

pub const TIMER_VECTOR: u8 = 32;
pub const ERROR_VECTOR: u8 = 0xFE;
pub const SPURIOUS_VECTOR: u8 = 0xFF;

pub struct LocalApic {
    registers: MappedPages,
}

static LAPIC: IrqSafeMutex<Option<LocalApic>> = IrqSafeMutex::new(None);

impl LocalApic {
    fn read(&self, reg: usize) -> u32 {
        self.registers.read_volatile_u32(reg).unwrap_or(0)
    }
    fn write(&mut self, reg: usize, value: u32) {
        let _ = self.registers.write_volatile_u32(reg, value);
    }
}

/// Takes ownership of the APIC's register page (mapped uncached) and enables the APIC with
/// LINT0/LINT1 masked and the timer stopped.
pub fn init(registers: MappedPages) -> Result<(), MemoryError> {
    if registers.size_in_bytes() < 4096 {
        return Err(MemoryError::OutOfBounds);
    }
    let mut apic = LocalApic { registers };
    apic.write(SPURIOUS, (1 << 8) | SPURIOUS_VECTOR as u32);
    apic.write(LVT_LINT0, MASKED);
    apic.write(LVT_LINT1, MASKED);
    apic.write(LVT_ERROR, ERROR_VECTOR as u32);
    apic.write(LVT_TIMER, MASKED);
    apic.write(TIMER_DIVIDE, 0b0011); // divide by 16
    *LAPIC.lock() = Some(apic);
    Ok(())
}

pub fn id() -> u32 {
    LAPIC.lock().as_ref().map_or(0, |a| a.read(ID) >> 24)
}

pub fn end_of_interrupt() {
    if let Some(apic) = LAPIC.lock().as_mut() {
        apic.write(EOI, 0);
    }
}

/// Counts APIC timer ticks (divide-by-16) over `micros` of PIT time.
pub fn measure_timer_ticks(micros: u64) -> u64 {
    let start = 0xFFFF_FFFFu32;
    let remaining = crate::pit::measure(
        micros,
        || {
            if let Some(apic) = LAPIC.lock().as_mut() {
                apic.write(LVT_TIMER, MASKED);
                apic.write(TIMER_INITIAL, start);
            }
        },
        || {
            LAPIC
                .lock()
                .as_ref()
                .map_or(start, |a| a.read(TIMER_CURRENT))
        },
    );
    (start - remaining) as u64
}

/// Starts the periodic timer interrupt every `ticks` APIC timer ticks.
pub fn start_periodic_timer(ticks: u32) {
    if let Some(apic) = LAPIC.lock().as_mut() {
        apic.write(TIMER_DIVIDE, 0b0011);
        apic.write(LVT_TIMER, PERIODIC | TIMER_VECTOR as u32);
        apic.write(TIMER_INITIAL, ticks.max(1));
    }
}
