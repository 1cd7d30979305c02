//! Addresses, access widths and the configuration-access trait.

use core::fmt;

/// A function's address: PCI segment (group), bus, device (0-31) and function (0-7).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Address {
    pub segment: u16,
    pub bus: u8,
    pub device: u8,
    pub function: u8,
}

impl Address {
    /// `None` unless `device < 32` and `function < 8`.
    pub fn new(segment: u16, bus: u8, device: u8, function: u8) -> Option<Self> {
        (device < 32 && function < 8).then_some(Self {
            segment,
            bus,
            device,
            function,
        })
    }
}

/// `bb:dd.f` as lspci prints it, with a `ssss:` prefix on segments other than 0.
impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.segment != 0 {
            write!(f, "{:04x}:", self.segment)?;
        }
        write!(f, "{:02x}:{:02x}.{}", self.bus, self.device, self.function)
    }
}

/// The width of one configuration access.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Width {
    U8,
    U16,
    U32,
}

impl Width {
    pub const fn bytes(self) -> u16 {
        match self {
            Width::U8 => 1,
            Width::U16 => 2,
            Width::U32 => 4,
        }
    }

    /// The value truncated to this width.
    pub const fn truncate(self, value: u32) -> u32 {
        match self {
            Width::U8 => value & 0xFF,
            Width::U16 => value & 0xFFFF,
            Width::U32 => value,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PciError {
    /// No enumeration has run (no access method installed).
    NotInitialized,
    /// The address names no function found by the enumeration.
    NoSuchFunction,
    /// The offset is not a multiple of the access width.
    Misaligned,
    /// The access reaches past the function's configuration space.
    OutOfRange,
}

impl fmt::Display for PciError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PciError::NotInitialized => "PCI is not initialized",
            PciError::NoSuchFunction => "no such PCI function",
            PciError::Misaligned => "offset not aligned to the access width",
            PciError::OutOfRange => "offset outside the configuration space",
        })
    }
}

/// Checks that a `width` access at `offset` is aligned and inside `space_size` bytes.
pub fn check_access(offset: u16, width: Width, space_size: u16) -> Result<(), PciError> {
    if !offset.is_multiple_of(width.bytes()) {
        return Err(PciError::Misaligned);
    }
    if u32::from(offset) + u32::from(width.bytes()) > u32::from(space_size) {
        return Err(PciError::OutOfRange);
    }
    Ok(())
}

/// A way to reach configuration space.
///
/// Callers keep `offset` aligned to the width and inside [`ConfigAccess::space_size`] (see
/// [`check_access`]). A function that does not exist reads as all ones, as on real buses.
pub trait ConfigAccess: Send {
    /// Bytes of configuration space per function: 4096 with ECAM, 256 with the legacy ports.
    fn space_size(&self) -> u16;

    /// A short name of the method, for the boot log.
    fn name(&self) -> &'static str;

    /// Reads `width` bytes at `offset` (zero-extended).
    fn read(&mut self, address: Address, offset: u16, width: Width) -> u32;

    /// Writes the low `width` bytes of `value` at `offset`, with exactly that access width (no
    /// read-modify-write of neighbouring registers, which may have write-one-to-clear bits).
    fn write(&mut self, address: Address, offset: u16, width: Width, value: u32);

    fn read_u8(&mut self, address: Address, offset: u16) -> u8 {
        self.read(address, offset, Width::U8) as u8
    }

    fn read_u16(&mut self, address: Address, offset: u16) -> u16 {
        self.read(address, offset, Width::U16) as u16
    }

    fn read_u32(&mut self, address: Address, offset: u16) -> u32 {
        self.read(address, offset, Width::U32)
    }

    fn write_u16(&mut self, address: Address, offset: u16, value: u16) {
        self.write(address, offset, Width::U16, value.into());
    }

    fn write_u32(&mut self, address: Address, offset: u16, value: u32) {
        self.write(address, offset, Width::U32, value);
    }
}
