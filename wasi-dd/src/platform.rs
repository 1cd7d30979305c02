//! [`Platform`]: what a kernel provides so that WASI-dd drivers run on it. Small on purpose:
//! an OS developer porting WASI-dd implements this trait and nothing else.
//!
//! Every method works on one PCI function the host chose to give a driver. The platform does
//! the raw, unsafe work (volatile MMIO, `in`/`out`, physical memory); `wasi-dd` does all the
//! checking (offsets against BAR sizes, ports against ranges, config-space rules, handle
//! ownership) before it calls the platform, so platform methods may assume their arguments are
//! in range.

use crate::types::{Access, PciAddress};

/// Why a platform operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlatformError {
    /// No memory (or no DMA-capable memory) for the request.
    OutOfMemory,
    /// The machine or kernel cannot do this (no I/O ports, no interrupt routing, ...).
    Unsupported,
    /// The device did not answer or refused the operation.
    DeviceError,
}

/// One mapped memory BAR. Offsets are checked by the caller: `offset + width <= size`, and
/// `offset` is a multiple of the width.
pub trait MmioWindow: Send {
    fn read(&self, offset: u64, access: Access) -> u64;
    fn write(&self, offset: u64, access: Access, value: u64);
}

/// Physically contiguous, zeroed memory that a device can reach. Offsets and lengths are
/// checked by the caller against [`DmaMemory::len`].
pub trait DmaMemory: Send {
    fn len(&self) -> u64;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The address the device uses for byte 0 (a physical or IOMMU address).
    fn device_address(&self) -> u64;
    fn read(&self, offset: u64, out: &mut [u8]);
    fn write(&self, offset: u64, data: &[u8]);
    /// A naturally aligned access of `access` width (the caller checked the alignment).
    fn read_value(&self, offset: u64, access: Access) -> u64;
    fn write_value(&self, offset: u64, access: Access, value: u64);
}

/// A device's interrupt, routed to the host.
pub trait InterruptLine: Send {
    /// Waits until the interrupt has fired at least once since the last successful wait, or
    /// until `timeout_ns` passes. True if it fired.
    fn wait(&self, timeout_ns: u64) -> bool;
    /// The device stopped asserting the line: unmask it if the platform masked it on delivery.
    fn acknowledge(&self);
    fn mask(&self);
    fn unmask(&self);
    /// How many times it fired since it was routed.
    fn count(&self) -> u64;
}

/// What a kernel provides to run WASI-dd drivers.
pub trait Platform: Send + Sync + 'static {
    type Mmio: MmioWindow;
    type Dma: DmaMemory;
    type Interrupt: InterruptLine;

    /// Reads `access` bytes of the function's configuration space (offset checked and aligned).
    fn config_read(&self, function: PciAddress, offset: u16, access: Access) -> u32;
    /// Writes configuration space (the caller allows only permitted registers).
    fn config_write(&self, function: PciAddress, offset: u16, access: Access, value: u32);
    /// Size of the function's configuration space: 4096 with ECAM, 256 with legacy access.
    fn config_space_size(&self, function: PciAddress) -> u16;
    /// Maps `size` bytes of device memory at physical address `base` uncached.
    fn map_mmio(&self, base: u64, size: u64) -> Result<Self::Mmio, PlatformError>;
    /// Reads an I/O port (`Access::W64` never reaches here).
    fn port_read(&self, port: u16, access: Access) -> u32;
    fn port_write(&self, port: u16, access: Access, value: u32);
    /// Allocates zeroed DMA memory for `function`, `align` a power of two.
    fn allocate_dma(
        &self,
        function: PciAddress,
        size: u64,
        align: u64,
    ) -> Result<Self::Dma, PlatformError>;
    /// Routes the function's interrupt to the host (MSI or INTx, the platform's choice).
    fn route_interrupt(&self, function: PciAddress) -> Result<Self::Interrupt, PlatformError>;
    /// Monotonic nanoseconds.
    fn now_ns(&self) -> u64;
    fn sleep_ns(&self, ns: u64);
    /// A line of driver log, already prefixed with the driver's name by the caller.
    fn log(&self, level: LogLevel, message: &str);
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
}
