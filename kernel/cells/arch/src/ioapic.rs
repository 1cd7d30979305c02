//! The I/O APIC: routes device interrupt lines (GSIs) to vectors on this core.

use keel_memory::{MappedPages, MemoryError};
use keel_sync::IrqSafeMutex;

const IOREGSEL: usize = 0x00;
const IOWIN: usize = 0x10;
const VERSION: u32 = 0x01;

/// Vectors for device interrupts: GSI n arrives on vector `IRQ_VECTOR_BASE + n`.
pub const IRQ_VECTOR_BASE: u8 = 48;
pub const MAX_IRQS: u8 = 24;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trigger {
    Edge,
    Level,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Polarity {
    ActiveHigh,
    ActiveLow,
}

struct IoApic {
    registers: MappedPages,
    gsi_base: u32,
    entries: u32,
}

static IOAPIC: IrqSafeMutex<Option<IoApic>> = IrqSafeMutex::new(None);

impl IoApic {
    fn read(&mut self, reg: u32) -> u32 {
        let _ = self.registers.write_volatile_u32(IOREGSEL, reg);
        self.registers.read_volatile_u32(IOWIN).unwrap_or(0)
    }
    fn write(&mut self, reg: u32, value: u32) {
        let _ = self.registers.write_volatile_u32(IOREGSEL, reg);
        let _ = self.registers.write_volatile_u32(IOWIN, value);
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RouteError {
    NoIoApic,
    GsiOutOfRange,
}

/// Takes ownership of the IOAPIC's registers and masks every line.
pub fn init(registers: MappedPages, gsi_base: u32) -> Result<u32, MemoryError> {
    let mut ioapic = IoApic {
        registers,
        gsi_base,
        entries: 0,
    };
    ioapic.entries = ((ioapic.read(VERSION) >> 16) & 0xFF) + 1;
    for i in 0..ioapic.entries {
        ioapic.write(0x10 + 2 * i, 1 << 16);
        ioapic.write(0x11 + 2 * i, 0);
    }
    let entries = ioapic.entries;
    *IOAPIC.lock() = Some(ioapic);
    Ok(entries)
}

/// Masks or unmasks `gsi` (a level-triggered line stays masked while its device is serviced).
pub fn set_masked(gsi: u32, masked: bool) -> Result<(), RouteError> {
    let mut guard = IOAPIC.lock();
    let ioapic = guard.as_mut().ok_or(RouteError::NoIoApic)?;
    let index = gsi
        .checked_sub(ioapic.gsi_base)
        .filter(|&i| i < ioapic.entries)
        .ok_or(RouteError::GsiOutOfRange)?;
    let low = ioapic.read(0x10 + 2 * index);
    let low = if masked {
        low | 1 << 16
    } else {
        low & !(1 << 16)
    };
    ioapic.write(0x10 + 2 * index, low);
    Ok(())
}

/// Routes `gsi` to vector `IRQ_VECTOR_BASE + gsi` on the APIC `apic_id`, unmasked.
pub fn route(
    gsi: u32,
    trigger: Trigger,
    polarity: Polarity,
    apic_id: u32,
) -> Result<u8, RouteError> {
    let mut guard = IOAPIC.lock();
    let ioapic = guard.as_mut().ok_or(RouteError::NoIoApic)?;
    let index = gsi
        .checked_sub(ioapic.gsi_base)
        .ok_or(RouteError::GsiOutOfRange)?;
    if index >= ioapic.entries || gsi >= MAX_IRQS as u32 {
        return Err(RouteError::GsiOutOfRange);
    }
    let vector = IRQ_VECTOR_BASE + gsi as u8;
    let mut low = vector as u32;
    if polarity == Polarity::ActiveLow {
        low |= 1 << 13;
    }
    if trigger == Trigger::Level {
        low |= 1 << 15;
    }
    ioapic.write(0x11 + 2 * index, apic_id << 24);
    ioapic.write(0x10 + 2 * index, low);
    Ok(vector)
}
