//! Plain types shared by the host runtime and platforms.

/// A PCI function's address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PciAddress {
    pub segment: u16,
    pub bus: u8,
    pub device: u8,
    pub function: u8,
}

/// Width of one access.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    W8,
    W16,
    W32,
    W64,
}

impl Access {
    pub const fn bytes(self) -> u64 {
        match self {
            Access::W8 => 1,
            Access::W16 => 2,
            Access::W32 => 4,
            Access::W64 => 8,
        }
    }
}

/// Identification registers of a PCI function.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceId {
    pub vendor: u16,
    pub device: u16,
    pub subsystem_vendor: u16,
    pub subsystem: u16,
    pub class: u8,
    pub subclass: u8,
    pub prog_if: u8,
    pub revision: u8,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BarKind {
    Memory32,
    Memory64,
    Io,
}

/// One implemented BAR, as the host's PCI enumeration sized it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bar {
    pub index: u8,
    pub kind: BarKind,
    /// Physical address (memory) or port number (I/O).
    pub base: u64,
    pub size: u64,
    pub prefetchable: bool,
}

/// Everything the host knows about the one PCI function it gives a driver instance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PciFunction {
    pub address: PciAddress,
    pub id: DeviceId,
    pub bars: alloc::vec::Vec<Bar>,
}
