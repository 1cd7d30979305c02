//! [`DriverHost`]: one driver instance's capabilities, and the WASI-dd interfaces implemented on
//! it. Every misuse is answered with an `error-code` value; no host function traps or panics.

use alloc::format;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec;
use alloc::vec::Vec;
use core::ops::Range;

use wasmtime::component::{HasSelf, Linker, Resource, ResourceTable};

use crate::bindings::host::DriverHost as DriverHostWorld;
use crate::bindings::host::wasi_dd::dd::{dma, irq, mmio, pci, platform, ports, types};
use crate::config_space::{COMMAND, COMMAND_INTX_DISABLE};
use crate::platform::{DmaMemory, InterruptLine, LogLevel, MmioWindow, Platform, PlatformError};
use crate::registers::{
    Registers, access, check_access, check_span, check_value, run_batch, run_packed_batch,
};
use crate::types::{Access, Bar, BarKind, PciFunction};
use types::{BatchError, ErrorCode, RegOp, Width};

/// Per-instance limits on what a driver may take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest single DMA buffer, in bytes.
    pub max_dma_buffer: u64,
    /// DMA memory the instance may hold at once, in bytes.
    pub max_dma_total: u64,
    /// Longer log messages are cut to this many bytes.
    pub max_log_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_dma_buffer: 16 << 20,
            max_dma_total: 64 << 20,
            max_log_bytes: 1024,
        }
    }
}

/// The largest DMA alignment hosts must support.
pub const MAX_DMA_ALIGN: u64 = 4096;

/// Configuration-space offsets of the header fields the host uses (and `COMMAND`).
const STATUS: u16 = 0x06;
const CAPABILITIES_POINTER: u16 = 0x34;
/// The type-0 header: registers below this offset are the host's.
const HEADER_END: u64 = 0x40;
const COMMAND_IO_SPACE: u32 = 1 << 0;
const COMMAND_MEMORY_SPACE: u32 = 1 << 1;
const COMMAND_BUS_MASTER: u32 = 1 << 2;
const STATUS_CAPABILITIES: u32 = 1 << 4;
const CAPABILITY_MSI: u32 = 0x05;
const CAPABILITY_MSI_X: u32 = 0x11;
const MSI_X_CAPABILITY_BYTES: u32 = 12;

/// Length of an MSI capability from its message control register: 10 bytes, 4 more with a
/// 64-bit address, 10 more with per-vector masking.
fn msi_capability_bytes(control: u32) -> u32 {
    let mut bytes = 10;
    if control & (1 << 7) != 0 {
        bytes += 4;
    }
    if control & (1 << 8) != 0 {
        bytes += 10;
    }
    bytes
}

/// What the device handle stands for: the function the instance was given. Its capabilities
/// and their bookkeeping live in the [`DriverHost`], shared by every handle to it.
struct DeviceEntry;

struct MmioEntry<W> {
    window: W,
    size: u64,
}

struct PortEntry {
    base: u16,
    size: u32,
}

struct DmaEntry<D> {
    /// `None` once freed: every later call answers `stale-handle`.
    memory: Option<D>,
    size: u64,
}

struct InterruptEntry<I> {
    line: I,
}

/// The host state of one driver instance: the PCI function it was given, the platform, its
/// handles, and what it has taken so far (each BAR and the interrupt are handed out once per
/// instance, dropping the handle does not give them back; DMA memory is counted against
/// [`Limits::max_dma_total`] until freed or dropped).
pub struct DriverHost<P: Platform> {
    platform: Arc<P>,
    function: PciFunction,
    table: ResourceTable,
    limits: Limits,
    name: String,
    bars_handed_out: Vec<u8>,
    interrupt_handed_out: bool,
    dma_in_use: u64,
    /// Configuration-space ranges the driver may not write beyond the header (MSI and MSI-X
    /// capabilities: an MSI message is a DMA write the host must choose). Found on first use.
    host_owned_config: Option<Vec<Range<u32>>>,
    parameters: Vec<(String, String)>,
    /// The driver turned bus mastering on at some point (the only way it can: the command
    /// register is the host's).
    bus_mastering_enabled: bool,
}

/// A driver instance ends (returned, trapped or killed): its device must stop touching memory
/// before the DMA buffers in `table` are freed right after this, and must stop interrupting.
/// So if the driver ever enabled either, bus mastering goes off (no DMA, no MSI) and INTx is
/// disabled, whatever state the driver left the device in.
impl<P: Platform> Drop for DriverHost<P> {
    fn drop(&mut self) {
        if self.bus_mastering_enabled || self.interrupt_handed_out {
            self.update_command(COMMAND_BUS_MASTER, COMMAND_INTX_DISABLE);
        }
    }
}

impl<P: Platform> DriverHost<P> {
    /// A host for a driver of `function`, with the default [`Limits`]. Log lines are prefixed
    /// with the function's address until [`DriverHost::with_name`] names the driver.
    pub fn new(platform: Arc<P>, function: PciFunction) -> Self {
        let a = function.address;
        let name = format!(
            "{:04x}:{:02x}:{:02x}.{}",
            a.segment, a.bus, a.device, a.function
        );
        DriverHost {
            platform,
            function,
            table: ResourceTable::new(),
            limits: Limits::default(),
            name,
            bars_handed_out: Vec::new(),
            interrupt_handed_out: false,
            parameters: Vec::new(),
            bus_mastering_enabled: false,
            dma_in_use: 0,
            host_owned_config: None,
        }
    }

    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Names the driver in its log lines.
    pub fn with_name(mut self, name: &str) -> Self {
        self.name = String::from(name);
        self
    }

    /// Gives the driver `parameters` (what its `platform.parameters` call returns).
    pub fn with_parameters(mut self, parameters: Vec<(String, String)>) -> Self {
        self.parameters = parameters;
        self
    }

    /// A new handle to the device, to pass to the driver's `init` (or `run`).
    pub fn device(&mut self) -> wasmtime::Result<Resource<pci::Device>> {
        let entry = self.table.push(DeviceEntry)?;
        Ok(Resource::new_own(entry.rep()))
    }

    pub fn function(&self) -> &PciFunction {
        &self.function
    }

    pub fn platform(&self) -> &Arc<P> {
        &self.platform
    }

    /// Bytes of DMA memory the driver holds now.
    pub fn dma_in_use(&self) -> u64 {
        self.dma_in_use
    }

    /// Allocates a DMA buffer for the host's own use with this driver: frames to send, empty
    /// receive buffers, sectors to read into. The handle is passed to the driver's exports (it
    /// counts towards the instance's DMA limits like the driver's own buffers).
    pub fn allocate_buffer(&mut self, size: u64) -> Result<Resource<dma::DmaBuffer>, ErrorCode> {
        self.allocate(size, MAX_DMA_ALIGN)
    }

    /// A DMA buffer within this instance's limits (for the driver or the host).
    fn allocate(&mut self, size: u64, align: u64) -> Result<Resource<dma::DmaBuffer>, ErrorCode> {
        if size == 0 || size > self.limits.max_dma_buffer {
            return Err(ErrorCode::OutOfRange);
        }
        if !align.is_power_of_two() {
            return Err(ErrorCode::OutOfRange);
        }
        if align > MAX_DMA_ALIGN {
            return Err(ErrorCode::Unsupported);
        }
        if self.dma_in_use.saturating_add(size) > self.limits.max_dma_total {
            return Err(ErrorCode::OutOfMemory);
        }
        let memory = self
            .platform
            .allocate_dma(self.function.address, size, align)
            .map_err(platform_error)?;
        if memory.len() < size {
            return Err(ErrorCode::OutOfMemory);
        }
        let entry = DmaEntry {
            memory: Some(memory),
            size,
        };
        let handle = self.table.push(entry).map_err(|_| ErrorCode::OutOfMemory)?;
        self.dma_in_use += size;
        Ok(Resource::new_own(handle.rep()))
    }

    /// Copies `data` into a buffer at `offset` (the host filling a frame to send).
    pub fn write_buffer(
        &mut self,
        buffer: &Resource<dma::DmaBuffer>,
        offset: u64,
        data: &[u8],
    ) -> Result<(), ErrorCode> {
        let window = self.dma_entry(buffer)?;
        check_span(offset, data.len() as u64, window.size)?;
        window.memory.write(offset, data);
        Ok(())
    }

    /// Copies `out.len()` bytes of a buffer from `offset` (the host taking a received frame).
    pub fn read_buffer(
        &mut self,
        buffer: &Resource<dma::DmaBuffer>,
        offset: u64,
        out: &mut [u8],
    ) -> Result<(), ErrorCode> {
        let window = self.dma_entry(buffer)?;
        check_span(offset, out.len() as u64, window.size)?;
        window.memory.read(offset, out);
        Ok(())
    }

    /// Gives a buffer the host holds back (a `Resource` dropped on the host side frees
    /// nothing: the memory stays in the instance's table until this).
    pub fn free_buffer(&mut self, buffer: Resource<dma::DmaBuffer>) {
        let _ = dma::HostDmaBuffer::drop(self, buffer);
    }

    /// Size of a buffer, or `None` for a handle that is not a live buffer of this instance.
    pub fn buffer_size(&mut self, buffer: &Resource<dma::DmaBuffer>) -> Option<u64> {
        self.dma_entry(buffer).ok().map(|window| window.size)
    }

    /// The handles of this instance (DMA buffers the host hands to a driver are pushed here).
    pub fn table(&mut self) -> &mut ResourceTable {
        &mut self.table
    }

    fn memory_bar(&self, index: u8) -> Result<Bar, ErrorCode> {
        self.function
            .bars
            .iter()
            .find(|bar| bar.index == index && bar.kind != BarKind::Io && bar.size > 0)
            .copied()
            .ok_or(ErrorCode::NoSuchResource)
    }

    fn io_bar_info(&self, index: u8) -> Result<Bar, ErrorCode> {
        self.function
            .bars
            .iter()
            .find(|bar| bar.index == index && bar.kind == BarKind::Io && bar.size > 0)
            .copied()
            .ok_or(ErrorCode::NoSuchResource)
    }

    fn update_command(&self, clear: u32, set: u32) {
        let address = self.function.address;
        let command = self.platform.config_read(address, COMMAND, Access::W16);
        let updated = (command & !clear) | set;
        if updated != command {
            self.platform
                .config_write(address, COMMAND, Access::W16, updated);
        }
    }

    fn config_size(&self) -> u64 {
        u64::from(self.platform.config_space_size(self.function.address))
    }

    fn host_owned_config(&mut self) -> &[Range<u32>] {
        if self.host_owned_config.is_none() {
            self.host_owned_config = Some(self.find_interrupt_capabilities());
        }
        self.host_owned_config.as_deref().unwrap_or(&[])
    }

    /// Walks the capability list (bounded: a looping list ends the walk).
    fn find_interrupt_capabilities(&self) -> Vec<Range<u32>> {
        let address = self.function.address;
        let read8 = |offset: u32| {
            self.platform
                .config_read(address, offset as u16, Access::W8)
        };
        let mut ranges = Vec::new();
        let status = self.platform.config_read(address, STATUS, Access::W16);
        if status & STATUS_CAPABILITIES == 0 {
            return ranges;
        }
        let limit = self.config_size().min(256) as u32;
        let mut pointer = read8(u32::from(CAPABILITIES_POINTER)) & 0xfc;
        for _ in 0..48 {
            if u64::from(pointer) < HEADER_END || pointer + 2 > limit {
                break;
            }
            let length = match read8(pointer) {
                CAPABILITY_MSI => {
                    let control =
                        self.platform
                            .config_read(address, (pointer + 2) as u16, Access::W16);
                    msi_capability_bytes(control)
                }
                CAPABILITY_MSI_X => MSI_X_CAPABILITY_BYTES,
                _ => 0,
            };
            if length > 0 {
                ranges.push(pointer..pointer + length);
            }
            pointer = read8(pointer + 1) & 0xfc;
        }
        ranges
    }

    fn mmio_entry(&self, r: &Resource<mmio::MmioRegion>) -> Result<&MmioEntry<P::Mmio>, ErrorCode> {
        self.table
            .get(&Resource::new_borrow(r.rep()))
            .map_err(|_| ErrorCode::StaleHandle)
    }

    fn port_entry(&self, r: &Resource<ports::PortRange>) -> Result<PortWindow<'_, P>, ErrorCode> {
        let entry: &PortEntry = self
            .table
            .get(&Resource::new_borrow(r.rep()))
            .map_err(|_| ErrorCode::StaleHandle)?;
        Ok(PortWindow {
            platform: &*self.platform,
            base: entry.base,
            size: entry.size,
        })
    }

    fn dma_entry(&self, r: &Resource<dma::DmaBuffer>) -> Result<DmaWindow<'_, P::Dma>, ErrorCode> {
        let entry: &DmaEntry<P::Dma> = self
            .table
            .get(&Resource::new_borrow(r.rep()))
            .map_err(|_| ErrorCode::StaleHandle)?;
        let memory = entry.memory.as_ref().ok_or(ErrorCode::StaleHandle)?;
        Ok(DmaWindow {
            memory,
            size: entry.size,
        })
    }

    fn interrupt_entry(
        &self,
        r: &Resource<irq::Interrupt>,
    ) -> Result<&InterruptEntry<P::Interrupt>, ErrorCode> {
        self.table
            .get(&Resource::new_borrow(r.rep()))
            .map_err(|_| ErrorCode::StaleHandle)
    }

    /// Removes a handle's entry; a missing entry is the canonical ABI's business, not ours.
    fn delete<T: 'static, E: 'static>(&mut self, r: Resource<T>) -> Option<E> {
        self.table.delete(Resource::<E>::new_own(r.rep())).ok()
    }
}

/// Registers the WASI-dd host interfaces in `linker`; `get` finds the instance's
/// [`DriverHost`] in the store's data.
pub fn add_to_linker<T: 'static, P: Platform>(
    linker: &mut Linker<T>,
    get: fn(&mut T) -> &mut DriverHost<P>,
) -> wasmtime::Result<()> {
    DriverHostWorld::add_to_linker::<T, HasSelf<DriverHost<P>>>(linker, get)
}

fn platform_error(error: PlatformError) -> ErrorCode {
    match error {
        PlatformError::OutOfMemory => ErrorCode::OutOfMemory,
        PlatformError::Unsupported | PlatformError::DeviceError => ErrorCode::Unsupported,
    }
}

impl<W: MmioWindow> Registers for MmioEntry<W> {
    fn size(&self) -> u64 {
        self.size
    }
    fn load(&self, offset: u64, width: Access) -> u64 {
        self.window.read(offset, width)
    }
    fn store(&self, offset: u64, width: Access, value: u64) {
        self.window.write(offset, width, value)
    }
}

struct PortWindow<'a, P> {
    platform: &'a P,
    base: u16,
    size: u32,
}

impl<P: Platform> Registers for PortWindow<'_, P> {
    fn size(&self) -> u64 {
        u64::from(self.size)
    }
    fn supports(&self, width: Access) -> Result<(), ErrorCode> {
        if width == Access::W64 {
            Err(ErrorCode::Unsupported)
        } else {
            Ok(())
        }
    }
    // `io-bar` checked that base + size fits the 16-bit port space.
    fn load(&self, offset: u64, width: Access) -> u64 {
        u64::from(self.platform.port_read(self.base + offset as u16, width))
    }
    fn store(&self, offset: u64, width: Access, value: u64) {
        self.platform
            .port_write(self.base + offset as u16, width, value as u32)
    }
}

struct DmaWindow<'a, D> {
    memory: &'a D,
    size: u64,
}

impl<D: DmaMemory> Registers for DmaWindow<'_, D> {
    fn size(&self) -> u64 {
        self.size
    }
    fn load(&self, offset: u64, width: Access) -> u64 {
        self.memory.read_value(offset, width)
    }
    fn store(&self, offset: u64, width: Access, value: u64) {
        self.memory.write_value(offset, width, value)
    }
}

fn stale_batch() -> BatchError {
    BatchError {
        index: 0,
        code: ErrorCode::StaleHandle,
    }
}

impl<P: Platform> types::Host for DriverHost<P> {}
impl<P: Platform> mmio::Host for DriverHost<P> {}
impl<P: Platform> ports::Host for DriverHost<P> {}
impl<P: Platform> dma::Host for DriverHost<P> {}
impl<P: Platform> irq::Host for DriverHost<P> {}
impl<P: Platform> pci::Host for DriverHost<P> {}

impl<P: Platform> mmio::HostMmioRegion for DriverHost<P> {
    fn size(&mut self, r: Resource<mmio::MmioRegion>) -> u64 {
        self.mmio_entry(&r).map_or(0, |e| e.size)
    }

    fn read(
        &mut self,
        r: Resource<mmio::MmioRegion>,
        offset: u64,
        width: Width,
    ) -> Result<u64, ErrorCode> {
        self.mmio_entry(&r)?.read(offset, access(width))
    }

    fn write(
        &mut self,
        r: Resource<mmio::MmioRegion>,
        offset: u64,
        width: Width,
        value: u64,
    ) -> Result<(), ErrorCode> {
        self.mmio_entry(&r)?.write(offset, access(width), value)
    }

    fn batch(
        &mut self,
        r: Resource<mmio::MmioRegion>,
        ops: Vec<RegOp>,
    ) -> Result<Vec<u64>, BatchError> {
        let entry = self.mmio_entry(&r).map_err(|_| stale_batch())?;
        run_batch(entry, &*self.platform, &ops)
    }

    fn batch_packed(
        &mut self,
        r: Resource<mmio::MmioRegion>,
        words: Vec<u64>,
    ) -> Result<Vec<u64>, BatchError> {
        let entry = self.mmio_entry(&r).map_err(|_| stale_batch())?;
        run_packed_batch(entry, &*self.platform, &words)
    }

    fn drop(&mut self, r: Resource<mmio::MmioRegion>) -> wasmtime::Result<()> {
        self.delete::<_, MmioEntry<P::Mmio>>(r);
        Ok(())
    }
}

impl<P: Platform> ports::HostPortRange for DriverHost<P> {
    fn size(&mut self, r: Resource<ports::PortRange>) -> u32 {
        self.port_entry(&r).map_or(0, |p| p.size)
    }

    fn read(
        &mut self,
        r: Resource<ports::PortRange>,
        offset: u32,
        width: Width,
    ) -> Result<u32, ErrorCode> {
        let value = self
            .port_entry(&r)?
            .read(u64::from(offset), access(width))?;
        Ok(value as u32)
    }

    fn write(
        &mut self,
        r: Resource<ports::PortRange>,
        offset: u32,
        width: Width,
        value: u32,
    ) -> Result<(), ErrorCode> {
        self.port_entry(&r)?
            .write(u64::from(offset), access(width), u64::from(value))
    }

    fn batch(
        &mut self,
        r: Resource<ports::PortRange>,
        ops: Vec<RegOp>,
    ) -> Result<Vec<u64>, BatchError> {
        let window = self.port_entry(&r).map_err(|_| stale_batch())?;
        run_batch(&window, &*self.platform, &ops)
    }

    fn batch_packed(
        &mut self,
        r: Resource<ports::PortRange>,
        words: Vec<u64>,
    ) -> Result<Vec<u64>, BatchError> {
        let window = self.port_entry(&r).map_err(|_| stale_batch())?;
        run_packed_batch(&window, &*self.platform, &words)
    }

    fn drop(&mut self, r: Resource<ports::PortRange>) -> wasmtime::Result<()> {
        self.delete::<_, PortEntry>(r);
        Ok(())
    }
}

impl<P: Platform> dma::HostDmaBuffer for DriverHost<P> {
    fn size(&mut self, r: Resource<dma::DmaBuffer>) -> u64 {
        self.table
            .get(&Resource::<DmaEntry<P::Dma>>::new_borrow(r.rep()))
            .map_or(0, |e| e.size)
    }

    fn device_address(&mut self, r: Resource<dma::DmaBuffer>) -> Result<u64, ErrorCode> {
        Ok(self.dma_entry(&r)?.memory.device_address())
    }

    fn read(
        &mut self,
        r: Resource<dma::DmaBuffer>,
        offset: u64,
        len: u64,
    ) -> Result<Vec<u8>, ErrorCode> {
        let window = self.dma_entry(&r)?;
        check_span(offset, len, window.size)?;
        let mut data = vec![0; usize::try_from(len).map_err(|_| ErrorCode::OutOfRange)?];
        window.memory.read(offset, &mut data);
        Ok(data)
    }

    fn write(
        &mut self,
        r: Resource<dma::DmaBuffer>,
        offset: u64,
        data: Vec<u8>,
    ) -> Result<(), ErrorCode> {
        let window = self.dma_entry(&r)?;
        check_span(offset, data.len() as u64, window.size)?;
        window.memory.write(offset, &data);
        Ok(())
    }

    fn batch(
        &mut self,
        r: Resource<dma::DmaBuffer>,
        ops: Vec<RegOp>,
    ) -> Result<Vec<u64>, BatchError> {
        let window = self.dma_entry(&r).map_err(|_| stale_batch())?;
        run_batch(&window, &*self.platform, &ops)
    }

    fn batch_packed(
        &mut self,
        r: Resource<dma::DmaBuffer>,
        words: Vec<u64>,
    ) -> Result<Vec<u64>, BatchError> {
        let window = self.dma_entry(&r).map_err(|_| stale_batch())?;
        run_packed_batch(&window, &*self.platform, &words)
    }

    fn free(&mut self, r: Resource<dma::DmaBuffer>) -> Result<(), ErrorCode> {
        let entry: &mut DmaEntry<P::Dma> = self
            .table
            .get_mut(&Resource::new_borrow(r.rep()))
            .map_err(|_| ErrorCode::StaleHandle)?;
        let memory = entry.memory.take().ok_or(ErrorCode::StaleHandle)?;
        self.dma_in_use -= entry.size;
        drop(memory);
        Ok(())
    }

    fn drop(&mut self, r: Resource<dma::DmaBuffer>) -> wasmtime::Result<()> {
        if let Some(entry) = self.delete::<_, DmaEntry<P::Dma>>(r)
            && entry.memory.is_some()
        {
            self.dma_in_use -= entry.size;
        }
        Ok(())
    }
}

impl<P: Platform> irq::HostInterrupt for DriverHost<P> {
    fn wait(&mut self, r: Resource<irq::Interrupt>, timeout_ns: u64) -> Result<bool, ErrorCode> {
        Ok(self.interrupt_entry(&r)?.line.wait(timeout_ns))
    }

    fn acknowledge(&mut self, r: Resource<irq::Interrupt>) -> Result<(), ErrorCode> {
        self.interrupt_entry(&r)?.line.acknowledge();
        Ok(())
    }

    fn mask(&mut self, r: Resource<irq::Interrupt>) -> Result<(), ErrorCode> {
        self.interrupt_entry(&r)?.line.mask();
        Ok(())
    }

    fn unmask(&mut self, r: Resource<irq::Interrupt>) -> Result<(), ErrorCode> {
        self.interrupt_entry(&r)?.line.unmask();
        Ok(())
    }

    fn count(&mut self, r: Resource<irq::Interrupt>) -> u64 {
        self.interrupt_entry(&r).map_or(0, |e| e.line.count())
    }

    fn drop(&mut self, r: Resource<irq::Interrupt>) -> wasmtime::Result<()> {
        self.delete::<_, InterruptEntry<P::Interrupt>>(r);
        Ok(())
    }
}

impl<P: Platform> platform::Host for DriverHost<P> {
    fn now_ns(&mut self) -> u64 {
        self.platform.now_ns()
    }

    fn sleep_ns(&mut self, ns: u64) {
        self.platform.sleep_ns(ns)
    }

    fn parameters(&mut self) -> Vec<(String, String)> {
        self.parameters.clone()
    }

    fn log(&mut self, level: platform::LogLevel, message: String) {
        let level = match level {
            platform::LogLevel::Error => LogLevel::Error,
            platform::LogLevel::Warn => LogLevel::Warn,
            platform::LogLevel::Info => LogLevel::Info,
            platform::LogLevel::Debug => LogLevel::Debug,
        };
        let mut end = message.len().min(self.limits.max_log_bytes);
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        self.platform
            .log(level, &format!("{}: {}", self.name, &message[..end]));
    }
}

impl<P: Platform> pci::HostDevice for DriverHost<P> {
    fn address(&mut self, _: Resource<pci::Device>) -> pci::PciAddress {
        let a = self.function.address;
        pci::PciAddress {
            segment: a.segment,
            bus: a.bus,
            device: a.device,
            function: a.function,
        }
    }

    fn id(&mut self, _: Resource<pci::Device>) -> pci::DeviceId {
        let id = self.function.id;
        pci::DeviceId {
            vendor: id.vendor,
            device: id.device,
            subsystem_vendor: id.subsystem_vendor,
            subsystem: id.subsystem,
            class: id.class,
            subclass: id.subclass,
            prog_if: id.prog_if,
            revision: id.revision,
        }
    }

    fn bars(&mut self, _: Resource<pci::Device>) -> Vec<pci::BarInfo> {
        self.function
            .bars
            .iter()
            .map(|bar| pci::BarInfo {
                index: bar.index,
                kind: match bar.kind {
                    BarKind::Memory32 => pci::BarKind::Memory32,
                    BarKind::Memory64 => pci::BarKind::Memory64,
                    BarKind::Io => pci::BarKind::Io,
                },
                size: bar.size,
                prefetchable: bar.prefetchable,
            })
            .collect()
    }

    fn map_bar(
        &mut self,
        _: Resource<pci::Device>,
        index: u8,
    ) -> Result<Resource<mmio::MmioRegion>, ErrorCode> {
        let bar = self.memory_bar(index)?;
        if self.bars_handed_out.contains(&index) {
            return Err(ErrorCode::InUse);
        }
        let window = self
            .platform
            .map_mmio(bar.base, bar.size)
            .map_err(platform_error)?;
        let entry = MmioEntry {
            window,
            size: bar.size,
        };
        let handle = self.table.push(entry).map_err(|_| ErrorCode::OutOfMemory)?;
        self.bars_handed_out.push(index);
        self.update_command(0, COMMAND_MEMORY_SPACE);
        Ok(Resource::new_own(handle.rep()))
    }

    fn io_bar(
        &mut self,
        _: Resource<pci::Device>,
        index: u8,
    ) -> Result<Resource<ports::PortRange>, ErrorCode> {
        let bar = self.io_bar_info(index)?;
        if self.bars_handed_out.contains(&index) {
            return Err(ErrorCode::InUse);
        }
        let end = bar.base.checked_add(bar.size);
        let (Ok(base), Ok(size), Some(0..=0x1_0000)) =
            (u16::try_from(bar.base), u32::try_from(bar.size), end)
        else {
            return Err(ErrorCode::Unsupported);
        };
        let handle = self
            .table
            .push(PortEntry { base, size })
            .map_err(|_| ErrorCode::OutOfMemory)?;
        self.bars_handed_out.push(index);
        self.update_command(0, COMMAND_IO_SPACE);
        Ok(Resource::new_own(handle.rep()))
    }

    fn interrupt(
        &mut self,
        _: Resource<pci::Device>,
    ) -> Result<Resource<irq::Interrupt>, ErrorCode> {
        if self.interrupt_handed_out {
            return Err(ErrorCode::InUse);
        }
        let line = self
            .platform
            .route_interrupt(self.function.address)
            .map_err(platform_error)?;
        let handle = self
            .table
            .push(InterruptEntry { line })
            .map_err(|_| ErrorCode::OutOfMemory)?;
        self.interrupt_handed_out = true;
        Ok(Resource::new_own(handle.rep()))
    }

    fn set_bus_mastering(
        &mut self,
        _: Resource<pci::Device>,
        enable: bool,
    ) -> Result<(), ErrorCode> {
        if enable {
            self.bus_mastering_enabled = true;
            self.update_command(0, COMMAND_BUS_MASTER);
        } else {
            self.update_command(COMMAND_BUS_MASTER, 0);
        }
        Ok(())
    }

    fn config_read(
        &mut self,
        _: Resource<pci::Device>,
        offset: u32,
        width: Width,
    ) -> Result<u32, ErrorCode> {
        let width = access(width);
        if width == Access::W64 {
            return Err(ErrorCode::Unsupported);
        }
        check_access(u64::from(offset), width, self.config_size())?;
        Ok(self
            .platform
            .config_read(self.function.address, offset as u16, width))
    }

    fn config_write(
        &mut self,
        _: Resource<pci::Device>,
        offset: u32,
        width: Width,
        value: u32,
    ) -> Result<(), ErrorCode> {
        let width = access(width);
        if width == Access::W64 {
            return Err(ErrorCode::Unsupported);
        }
        check_access(u64::from(offset), width, self.config_size())?;
        check_value(u64::from(value), width)?;
        if u64::from(offset) < HEADER_END {
            return Err(ErrorCode::Denied);
        }
        let end = offset + width.bytes() as u32;
        if self
            .host_owned_config()
            .iter()
            .any(|owned| offset < owned.end && owned.start < end)
        {
            return Err(ErrorCode::Denied);
        }
        self.platform
            .config_write(self.function.address, offset as u16, width, value);
        Ok(())
    }

    fn allocate_dma(
        &mut self,
        _: Resource<pci::Device>,
        size: u64,
        align: u64,
    ) -> Result<Resource<dma::DmaBuffer>, ErrorCode> {
        self.allocate(size, align)
    }

    fn drop(&mut self, r: Resource<pci::Device>) -> wasmtime::Result<()> {
        self.delete::<_, DeviceEntry>(r);
        Ok(())
    }
}
