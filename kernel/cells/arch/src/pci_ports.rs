//! PCI configuration mechanism #1: the CONFIG_ADDRESS (0xCF8) and CONFIG_DATA (0xCFC) ports,
//! which reach the first 256 bytes of every function's configuration space on segment 0.
//!
//! An access is two port operations (select, then transfer), so one lock covers both.

use keel_sync::IrqSafeMutex;
use x86_64::instructions::port::Port;

const CONFIG_ADDRESS: u16 = 0xCF8;
const CONFIG_DATA: u16 = 0xCFC;
const ENABLE: u32 = 1 << 31;

/// Serializes the select-then-transfer pairs.
static PORTS: IrqSafeMutex<()> = IrqSafeMutex::new(());

/// A register in legacy configuration space. Built only through [`LegacyRegister::new`], which
/// checks the numbers, so every access below selects a well-formed CONFIG_ADDRESS value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LegacyRegister {
    bus: u8,
    device: u8,
    function: u8,
    offset: u8,
}

impl LegacyRegister {
    /// `device` < 32, `function` < 8; `offset` must be aligned to the access width used later
    /// (checked there).
    pub fn new(bus: u8, device: u8, function: u8, offset: u8) -> Option<Self> {
        (device < 32 && function < 8).then_some(Self {
            bus,
            device,
            function,
            offset,
        })
    }

    fn select(&self) -> u32 {
        ENABLE
            | (self.bus as u32) << 16
            | (self.device as u32) << 11
            | (self.function as u32) << 8
            | (self.offset as u32 & 0xFC)
    }

    /// The CONFIG_DATA byte lane of this register.
    fn data_port(&self) -> u16 {
        CONFIG_DATA + (self.offset & 3) as u16
    }
}

/// Reads a byte.
pub fn read_u8(register: LegacyRegister) -> u8 {
    let _guard = PORTS.lock();
    // SAFETY: 0xCF8/0xCFC..0xCFF are the PCI configuration ports of every PC chipset; selecting
    // a register and reading a data lane has no effect on memory. The lock keeps the pair whole.
    unsafe {
        Port::<u32>::new(CONFIG_ADDRESS).write(register.select());
        Port::<u8>::new(register.data_port()).read()
    }
}

/// Reads a 16-bit register; `None` if the offset is not 2-byte aligned.
pub fn read_u16(register: LegacyRegister) -> Option<u16> {
    if register.offset & 1 != 0 {
        return None;
    }
    let _guard = PORTS.lock();
    // SAFETY: as in `read_u8`; the aligned word lies within one data dword.
    Some(unsafe {
        Port::<u32>::new(CONFIG_ADDRESS).write(register.select());
        Port::<u16>::new(register.data_port()).read()
    })
}

/// Reads a 32-bit register; `None` if the offset is not 4-byte aligned.
pub fn read_u32(register: LegacyRegister) -> Option<u32> {
    if register.offset & 3 != 0 {
        return None;
    }
    let _guard = PORTS.lock();
    // SAFETY: as in `read_u8`.
    Some(unsafe {
        Port::<u32>::new(CONFIG_ADDRESS).write(register.select());
        Port::<u32>::new(CONFIG_DATA).read()
    })
}

/// Writes a byte.
pub fn write_u8(register: LegacyRegister, value: u8) {
    let _guard = PORTS.lock();
    // SAFETY: the configuration ports as in `read_u8`. What the write means to the device
    // (moving a BAR, enabling bus mastering) is the caller's business, as for any register
    // write through a safe MMIO mapping.
    unsafe {
        Port::<u32>::new(CONFIG_ADDRESS).write(register.select());
        Port::<u8>::new(register.data_port()).write(value);
    }
}

/// Writes a 16-bit register; `false` (and nothing written) if the offset is not 2-byte aligned.
pub fn write_u16(register: LegacyRegister, value: u16) -> bool {
    if register.offset & 1 != 0 {
        return false;
    }
    let _guard = PORTS.lock();
    // SAFETY: as in `write_u8`.
    unsafe {
        Port::<u32>::new(CONFIG_ADDRESS).write(register.select());
        Port::<u16>::new(register.data_port()).write(value);
    }
    true
}

/// Writes a 32-bit register; `false` (and nothing written) if the offset is not 4-byte aligned.
pub fn write_u32(register: LegacyRegister, value: u32) -> bool {
    if register.offset & 3 != 0 {
        return false;
    }
    let _guard = PORTS.lock();
    // SAFETY: as in `write_u8`.
    unsafe {
        Port::<u32>::new(CONFIG_ADDRESS).write(register.select());
        Port::<u32>::new(CONFIG_DATA).write(value);
    }
    true
}
