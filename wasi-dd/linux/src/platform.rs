//! [`VfioPlatform`]: `wasi_dd::platform::Platform` for one PCI function opened through VFIO.
//!
//! | WASI-dd needs | Keel (`kernel/cells/dd-host`) | here |
//! |---|---|---|
//! | configuration space | ECAM / port 0xcf8 | the config region of the device file, pread/pwrite |
//! | a memory BAR | map its physical address uncached | mmap the BAR region of the device file (pread/pwrite if VFIO does not allow mmap) |
//! | I/O ports | `in`/`out` on the claimed range | pread/pwrite of the I/O BAR region at the port's offset |
//! | DMA memory | physical frames below 4 GiB | zeroed anonymous memory pinned and mapped by `VFIO_IOMMU_MAP_DMA` at an IOVA chosen here |
//! | the interrupt | MSI, else INTx through the IOAPIC | MSI, else INTx, through `VFIO_DEVICE_SET_IRQS` on an eventfd |
//! | level-triggered INTx | masked on delivery, unmasked on acknowledge | VFIO masks it on delivery; acknowledge unmasks it |
//!
//! Under VFIO the process never sees a physical address: a BAR is a region of the device file,
//! so [`wasi_dd::types::Bar::base`] holds this platform's name for the region (see
//! [`bar_key`]); wasi-dd never shows it to drivers. A DMA buffer's device address is its IOVA:
//! the IOMMU lets the device reach the buffers this platform mapped and nothing else.

use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use wasi_dd::config_space;
use wasi_dd::platform::{DmaMemory, InterruptLine, LogLevel, MmioWindow, Platform, PlatformError};
use wasi_dd::types::{Access, Bar, BarKind, DeviceId, PciAddress, PciFunction};

use crate::iova::IovaAllocator;
use crate::sys::{self, Interest, Mapping};
use crate::vfio::uapi::{self, Container, Device, RegionInfo};
use crate::vfio::{IommuLayout, Vfio};

/// The name this platform gives BAR `index` in [`Bar::base`]: memory BARs far above any port
/// number, I/O BARs 4 KiB apart in the 16-bit port space (wasi-dd requires `base + size` of
/// an I/O BAR to fit 16 bits; PCI I/O BARs are at most 256 bytes).
pub fn bar_key(index: u8, kind: BarKind) -> u64 {
    match kind {
        BarKind::Io => (u64::from(index) + 1) << 12,
        BarKind::Memory32 | BarKind::Memory64 => (u64::from(index) + 1) << 40,
    }
}

/// Largest I/O BAR this platform names (see [`bar_key`]).
const MAX_IO_BAR: u64 = 1 << 12;

struct BarRegion {
    bar: Bar,
    region: RegionInfo,
}

/// DMA bookkeeping shared by the platform and every live buffer (which unmaps itself on drop).
struct DmaSpace {
    container: Arc<Container>,
    iova: Mutex<IovaAllocator>,
}

/// The platform for one function opened through VFIO.
pub struct VfioPlatform {
    vfio: Vfio,
    function: PciFunction,
    config: RegionInfo,
    bars: Vec<BarRegion>,
    dma: Arc<DmaSpace>,
    interrupt: Mutex<Option<Arc<IrqState>>>,
    epoch: Instant,
    verbose: bool,
}

/// Reads `access` bytes (not `W64`) of a region at `offset`, little-endian.
fn region_read(device: &Device, region: &RegionInfo, offset: u64, access: Access) -> Option<u32> {
    let width = access.bytes() as usize;
    if width > 4 {
        return None;
    }
    let mut bytes = [0u8; 4];
    device
        .file()
        .read_exact_at(&mut bytes[..width], region.offset.checked_add(offset)?)
        .ok()?;
    Some(u32::from_le_bytes(bytes))
}

fn region_write(device: &Device, region: &RegionInfo, offset: u64, access: Access, value: u32) {
    let width = access.bytes() as usize;
    if width > 4 {
        return;
    }
    if let Some(at) = region.offset.checked_add(offset) {
        let _ = device
            .file()
            .write_all_at(&value.to_le_bytes()[..width], at);
    }
}

/// The function's identity from its configuration space (`read` gives a register, `None` if
/// it cannot), and its header type (0 for a device, 1 for a bridge).
pub(crate) fn read_identity(
    read: impl Fn(u64, Access) -> Option<u32>,
) -> Result<(DeviceId, u32), String> {
    let vendor = read(0x00, Access::W16).ok_or("cannot read configuration space")?;
    if vendor == 0xffff {
        return Err(String::from(
            "the function answers configuration reads with all ones (gone, or powered off)",
        ));
    }
    let header = read(0x0e, Access::W8).unwrap_or(0) & 0x7f;
    let (subsystem_vendor, subsystem) = if header == 0 {
        (
            read(0x2c, Access::W16).unwrap_or(0),
            read(0x2e, Access::W16).unwrap_or(0),
        )
    } else {
        (0, 0)
    };
    let id = DeviceId {
        vendor: vendor as u16,
        device: read(0x02, Access::W16).unwrap_or(0) as u16,
        subsystem_vendor: subsystem_vendor as u16,
        subsystem: subsystem as u16,
        class: read(0x0b, Access::W8).unwrap_or(0) as u8,
        subclass: read(0x0a, Access::W8).unwrap_or(0) as u8,
        prog_if: read(0x09, Access::W8).unwrap_or(0) as u8,
        revision: read(0x08, Access::W8).unwrap_or(0) as u8,
    };
    Ok((id, header))
}

impl VfioPlatform {
    /// The platform over an opened device: reads its identity and sizes its BARs from VFIO's
    /// regions (a 64-bit BAR's upper half is a region of size 0 and is skipped).
    pub fn new(
        vfio: Vfio,
        layout: &IommuLayout,
        address: PciAddress,
        verbose: bool,
    ) -> Result<Self, String> {
        let device = &vfio.device;
        let config = device
            .region(uapi::PCI_CONFIG_REGION_INDEX)
            .map_err(|e| format!("VFIO_DEVICE_GET_REGION_INFO (configuration space): {e}"))?;
        let read = |offset: u64, access: Access| region_read(device, &config, offset, access);
        let (id, header) = read_identity(read)?;
        let mut bars = Vec::new();
        let bar_count = if header == 0 { 6 } else { 2 };
        for index in 0..bar_count.min(vfio.info.regions) {
            let region = device
                .region(uapi::PCI_BAR0_REGION_INDEX + index)
                .map_err(|e| format!("VFIO_DEVICE_GET_REGION_INFO (BAR {index}): {e}"))?;
            if region.size == 0 {
                continue;
            }
            let register = read(0x10 + 4 * u64::from(index), Access::W32).unwrap_or(0);
            let kind = if register & 1 != 0 {
                BarKind::Io
            } else if (register >> 1) & 0b11 == 0b10 {
                BarKind::Memory64
            } else {
                BarKind::Memory32
            };
            if kind == BarKind::Io && region.size > MAX_IO_BAR {
                continue;
            }
            let index = index as u8;
            bars.push(BarRegion {
                bar: Bar {
                    index,
                    kind,
                    base: bar_key(index, kind),
                    size: region.size,
                    prefetchable: kind != BarKind::Io && register & (1 << 3) != 0,
                },
                region,
            });
        }
        let function = PciFunction {
            address,
            id,
            bars: bars.iter().map(|b| b.bar).collect(),
        };
        let dma = Arc::new(DmaSpace {
            container: Arc::clone(&vfio.container),
            iova: Mutex::new(layout.allocator()),
        });
        Ok(VfioPlatform {
            vfio,
            function,
            config,
            bars,
            dma,
            interrupt: Mutex::new(None),
            epoch: Instant::now(),
            verbose,
        })
    }

    /// The VFIO regions and interrupts, for `wasi-dd-run info`.
    pub fn describe(&self) -> Vec<String> {
        let mut lines = Vec::new();
        lines.push(format!(
            "VFIO: IOMMU group {}, {} regions, {} interrupt kinds, {}reset",
            self.vfio.group,
            self.vfio.info.regions,
            self.vfio.info.irqs,
            if self.vfio.info.flags & uapi::DEVICE_FLAGS_RESET != 0 {
                ""
            } else {
                "no "
            }
        ));
        for b in &self.bars {
            lines.push(format!(
                "BAR {}: {:?}, {} bytes{}{}",
                b.bar.index,
                b.bar.kind,
                b.region.size,
                if b.bar.prefetchable {
                    ", prefetchable"
                } else {
                    ""
                },
                if b.region.flags & uapi::REGION_INFO_FLAG_MMAP != 0 {
                    ", mappable"
                } else {
                    ", read/write only"
                },
            ));
        }
        for (index, name) in [
            (uapi::PCI_INTX_IRQ_INDEX, "INTx"),
            (uapi::PCI_MSI_IRQ_INDEX, "MSI"),
        ] {
            if let Ok(irq) = self.vfio.device.irq(index) {
                lines.push(format!("{name}: {} vector(s)", irq.count));
            }
        }
        let free = self.dma.iova.lock().map(|a| a.free_bytes()).unwrap_or(0);
        lines.push(format!("IOVA space for DMA buffers: {} MiB", free >> 20));
        lines
    }

    fn bar(&self, base: u64) -> Option<&BarRegion> {
        self.bars.iter().find(|b| b.bar.base == base)
    }

    fn io_bar(&self, port: u16) -> Option<(&BarRegion, u64)> {
        self.bars.iter().find_map(|b| {
            let offset = u64::from(port).checked_sub(b.bar.base)?;
            (b.bar.kind == BarKind::Io && offset < b.bar.size).then_some((b, offset))
        })
    }

    fn route(&self, index: u32) -> Result<LinuxInterrupt, PlatformError> {
        let device = &self.vfio.device;
        let info = device.irq(index).map_err(|_| PlatformError::Unsupported)?;
        let eventfd = sys::eventfd().map_err(|_| PlatformError::OutOfMemory)?;
        device
            .trigger_eventfd(index, eventfd.as_fd())
            .map_err(|_| PlatformError::DeviceError)?;
        let level =
            index == uapi::PCI_INTX_IRQ_INDEX || info.flags & uapi::IRQ_INFO_AUTOMASKED != 0;
        let state = Arc::new(IrqState::new(
            IrqSource::Vfio {
                device: Arc::clone(device),
                index,
                eventfd,
                maskable: info.flags & uapi::IRQ_INFO_MASKABLE != 0,
            },
            level,
        ));
        if let Ok(mut slot) = self.interrupt.lock() {
            *slot = Some(Arc::clone(&state));
        }
        Ok(LinuxInterrupt(state))
    }
}

/// A mapped (or, if VFIO does not allow mapping it, read and written) memory BAR.
pub enum VfioMmio {
    Mapped(Mapping),
    Region {
        device: Arc<Device>,
        region: RegionInfo,
    },
}

impl MmioWindow for VfioMmio {
    fn read(&self, offset: u64, access: Access) -> u64 {
        // An access wasi-dd let through never fails here; a device reads all ones for an
        // absent register, and so does a failure.
        match self {
            VfioMmio::Mapped(mapping) => mapping.read_value(offset, access).unwrap_or(u64::MAX),
            VfioMmio::Region { device, region } => {
                let width = access.bytes() as usize;
                let mut bytes = [0u8; 8];
                match offset.checked_add(region.offset) {
                    Some(at) if device.file().read_exact_at(&mut bytes[..width], at).is_ok() => {
                        u64::from_le_bytes(bytes)
                    }
                    _ => u64::MAX,
                }
            }
        }
    }

    fn write(&self, offset: u64, access: Access, value: u64) {
        match self {
            VfioMmio::Mapped(mapping) => {
                let _ = mapping.write_value(offset, access, value);
            }
            VfioMmio::Region { device, region } => {
                let width = access.bytes() as usize;
                if let Some(at) = offset.checked_add(region.offset) {
                    let _ = device
                        .file()
                        .write_all_at(&value.to_le_bytes()[..width], at);
                }
            }
        }
    }
}

/// A DMA buffer: zeroed anonymous memory, pinned and mapped at `iova` for the device.
pub struct VfioDma {
    memory: Mapping,
    iova: u64,
    len: u64,
    space: Arc<DmaSpace>,
}

impl Drop for VfioDma {
    fn drop(&mut self) {
        let size = self.memory.len() as u64;
        match self.space.container.unmap_dma(self.iova, size) {
            Ok(()) => {
                if let Ok(mut iova) = self.space.iova.lock() {
                    iova.free(self.iova, size);
                }
            }
            // The device may still reach these pages (VFIO keeps them pinned): never hand the
            // addresses out again.
            Err(e) => eprintln!(
                "wasi-dd-run: VFIO_IOMMU_UNMAP_DMA {:#x}+{size:#x}: {e}; IOVA range retired",
                self.iova
            ),
        }
    }
}

impl DmaMemory for VfioDma {
    fn len(&self) -> u64 {
        self.len
    }

    fn device_address(&self) -> u64 {
        self.iova
    }

    fn read(&self, offset: u64, out: &mut [u8]) {
        if self.memory.read_bytes(offset, out).is_none() {
            out.fill(0);
        }
    }

    fn write(&self, offset: u64, data: &[u8]) {
        let _ = self.memory.write_bytes(offset, data);
    }

    fn read_value(&self, offset: u64, access: Access) -> u64 {
        self.memory.read_value(offset, access).unwrap_or(0)
    }

    fn write_value(&self, offset: u64, access: Access, value: u64) {
        let _ = self.memory.write_value(offset, access, value);
    }
}

/// The state of the function's interrupt, shared by the driver's `interrupt` handle and the
/// runner's loop (which waits on its file together with its own files). Counted as in Keel:
/// `fired` grows as the file is read, a successful wait consumes up to it.
pub struct IrqState {
    source: IrqSource,
    /// Level-triggered (INTx): masked on each delivery (by VFIO, or by `uio_pci_generic` with
    /// the command register's INTx-disable bit) until it is unmasked.
    level: bool,
    fired: AtomicU64,
    consumed: AtomicU64,
    masked_by_driver: AtomicBool,
}

/// Where an interrupt arrives.
enum IrqSource {
    /// A VFIO interrupt index signalling an eventfd.
    Vfio {
        device: Arc<Device>,
        index: u32,
        eventfd: File,
        maskable: bool,
    },
    /// `/dev/uioN` of `uio_pci_generic` (INTx only): a read gives the total number of
    /// interrupts so far. Its handler masks INTx with the command register's INTx-disable bit;
    /// clearing that bit through the function's sysfs `config` file unmasks it (the driver has
    /// no `irqcontrol`: writing to `/dev/uioN` fails with ENOSYS).
    Uio {
        file: File,
        config: File,
        seen: AtomicU64,
    },
}

impl IrqState {
    fn new(source: IrqSource, level: bool) -> IrqState {
        IrqState {
            source,
            level,
            fired: AtomicU64::new(0),
            consumed: AtomicU64::new(0),
            masked_by_driver: AtomicBool::new(false),
        }
    }

    /// The INTx of a function bound to `uio_pci_generic`, from its `/dev/uioN` opened
    /// non-blocking and its sysfs `config` file;
    /// `seen` is the device's interrupt count when the file was opened (its sysfs `event`).
    pub(crate) fn uio(file: File, config: File, seen: u64) -> IrqState {
        let state = IrqState::new(
            IrqSource::Uio {
                file,
                config,
                seen: AtomicU64::new(seen),
            },
            true,
        );
        // Counts from here: what the device raised before belongs to nobody.
        state.drain();
        state.fired.store(0, Ordering::Release);
        state.set_intx(true);
        state
    }

    /// The file to poll with other files.
    pub fn fd(&self) -> BorrowedFd<'_> {
        match &self.source {
            IrqSource::Vfio { eventfd, .. } => eventfd.as_fd(),
            IrqSource::Uio { file, .. } => file.as_fd(),
        }
    }

    /// Reads what the file counted into `fired` (without blocking).
    fn drain(&self) {
        match &self.source {
            IrqSource::Vfio { eventfd, .. } => {
                let mut counter = [0u8; 8];
                if let Ok(8) = (&*eventfd).read(&mut counter) {
                    self.fired
                        .fetch_add(u64::from_ne_bytes(counter), Ordering::AcqRel);
                }
            }
            IrqSource::Uio { file, seen, .. } => {
                let mut total = [0u8; 4];
                if let Ok(4) = (&*file).read(&mut total) {
                    let total = u64::from(u32::from_ne_bytes(total));
                    let before = seen.swap(total, Ordering::AcqRel);
                    let new = total.wrapping_sub(before) & u64::from(u32::MAX);
                    self.fired.fetch_add(new, Ordering::AcqRel);
                }
            }
        }
    }

    /// True (once) if the interrupt fired since the last time a wait or `take` said so.
    pub fn take(&self) -> bool {
        self.drain();
        let fired = self.fired.load(Ordering::Acquire);
        self.consumed.swap(fired, Ordering::AcqRel) != fired
    }

    pub fn count(&self) -> u64 {
        self.drain();
        self.fired.load(Ordering::Acquire)
    }

    fn wait(&self, timeout_ns: u64) -> bool {
        if self.take() {
            return true;
        }
        let _ = sys::poll(
            &[(self.fd(), Interest::Read)],
            Some(Duration::from_nanos(timeout_ns)),
        );
        self.take()
    }

    fn acknowledge(&self) {
        if self.level && !self.masked_by_driver.load(Ordering::Acquire) {
            self.set_intx(true);
        }
    }

    fn set_masked(&self, masked: bool) {
        self.masked_by_driver.store(masked, Ordering::Release);
        self.set_intx(!masked);
    }

    /// Unmasks (`enabled`) or masks the interrupt where the source can.
    fn set_intx(&self, enabled: bool) {
        match &self.source {
            IrqSource::Vfio {
                device,
                index,
                maskable,
                ..
            } => {
                if *maskable || (enabled && self.level) {
                    let _ = if enabled {
                        device.unmask_irq(*index)
                    } else {
                        device.mask_irq(*index)
                    };
                }
            }
            IrqSource::Uio { config, .. } => {
                let mut command = [0u8; 2];
                let at = u64::from(config_space::COMMAND);
                let intx_disable = config_space::COMMAND_INTX_DISABLE as u16;
                if config.read_exact_at(&mut command, at).is_ok() {
                    let old = u16::from_le_bytes(command);
                    let new = if enabled {
                        old & !intx_disable
                    } else {
                        old | intx_disable
                    };
                    if new != old {
                        let _ = config.write_all_at(&new.to_le_bytes(), at);
                    }
                }
            }
        }
    }

    /// Turns the interrupt off for good (the driver's handle is gone).
    fn disable(&self) {
        match &self.source {
            IrqSource::Vfio { device, index, .. } => {
                let _ = device.disable_irq(*index);
            }
            IrqSource::Uio { .. } => self.set_intx(false),
        }
    }
}

/// The driver's handle on the interrupt; dropping it turns the interrupt off.
pub struct LinuxInterrupt(Arc<IrqState>);

impl LinuxInterrupt {
    pub(crate) fn new(state: Arc<IrqState>) -> LinuxInterrupt {
        LinuxInterrupt(state)
    }
}

impl Drop for LinuxInterrupt {
    fn drop(&mut self) {
        self.0.disable();
    }
}

impl InterruptLine for LinuxInterrupt {
    fn wait(&self, timeout_ns: u64) -> bool {
        self.0.wait(timeout_ns)
    }

    fn acknowledge(&self) {
        self.0.acknowledge();
    }

    fn mask(&self) {
        self.0.set_masked(true);
    }

    fn unmask(&self) {
        self.0.set_masked(false);
    }

    fn count(&self) -> u64 {
        self.0.count()
    }
}

/// What the runner needs of a Linux platform besides [`Platform`]: the function it opened, and
/// its interrupt once the driver asked for it (to wait on together with the runner's files).
pub trait LinuxPlatform: Platform<Interrupt = LinuxInterrupt> {
    fn function(&self) -> &PciFunction;
    fn interrupt(&self) -> Option<Arc<IrqState>>;
}

impl LinuxPlatform for VfioPlatform {
    fn function(&self) -> &PciFunction {
        &self.function
    }

    fn interrupt(&self) -> Option<Arc<IrqState>> {
        self.interrupt.lock().ok()?.clone()
    }
}

/// [`Platform::sleep_ns`] for both Linux platforms. Register settling times are mostly
/// microseconds: those are spun rather than paying a scheduler round trip (tens of
/// microseconds) for each.
pub(crate) fn sleep(ns: u64) {
    if ns < 50_000 {
        let deadline = Instant::now() + Duration::from_nanos(ns);
        while Instant::now() < deadline {
            std::hint::spin_loop();
        }
    } else {
        std::thread::sleep(Duration::from_nanos(ns));
    }
}

/// [`Platform::log`] for both Linux platforms: a line on standard error stamped with the time
/// since `epoch`; debug lines only if `verbose`.
pub(crate) fn log_line(epoch: Instant, verbose: bool, level: LogLevel, message: &str) {
    if level == LogLevel::Debug && !verbose {
        return;
    }
    let level = match level {
        LogLevel::Error => "error",
        LogLevel::Warn => "warning",
        LogLevel::Info => "info",
        LogLevel::Debug => "debug",
    };
    let elapsed = epoch.elapsed();
    eprintln!(
        "[{:5}.{:06}] {level}: {message}",
        elapsed.as_secs(),
        elapsed.subsec_micros()
    );
}

impl Platform for VfioPlatform {
    type Mmio = VfioMmio;
    type Dma = VfioDma;
    type Interrupt = LinuxInterrupt;

    fn config_read(&self, _function: PciAddress, offset: u16, access: Access) -> u32 {
        region_read(&self.vfio.device, &self.config, u64::from(offset), access).unwrap_or(u32::MAX)
    }

    fn config_write(&self, _function: PciAddress, offset: u16, access: Access, value: u32) {
        region_write(
            &self.vfio.device,
            &self.config,
            u64::from(offset),
            access,
            value,
        );
    }

    fn config_space_size(&self, _function: PciAddress) -> u16 {
        self.config.size.min(4096) as u16
    }

    fn map_mmio(&self, base: u64, size: u64) -> Result<VfioMmio, PlatformError> {
        let bar = self.bar(base).ok_or(PlatformError::Unsupported)?;
        let region = bar.region;
        if size > region.size {
            return Err(PlatformError::Unsupported);
        }
        if region.flags & uapi::REGION_INFO_FLAG_MMAP != 0 {
            let length = region.size.next_multiple_of(sys::page_size());
            if let Ok(length) = usize::try_from(length)
                && let Ok(mapping) = Mapping::shared(self.vfio.device.fd(), region.offset, length)
            {
                return Ok(VfioMmio::Mapped(mapping));
            }
        }
        // VFIO may refuse to map a BAR (one smaller than a page, or holding the MSI-X table on
        // older kernels): reads and writes of the region still work, one system call each.
        if region.flags & (uapi::REGION_INFO_FLAG_READ | uapi::REGION_INFO_FLAG_WRITE) == 0 {
            return Err(PlatformError::Unsupported);
        }
        Ok(VfioMmio::Region {
            device: Arc::clone(&self.vfio.device),
            region,
        })
    }

    fn port_read(&self, port: u16, access: Access) -> u32 {
        match self.io_bar(port) {
            Some((bar, offset)) => {
                region_read(&self.vfio.device, &bar.region, offset, access).unwrap_or(u32::MAX)
            }
            None => u32::MAX,
        }
    }

    fn port_write(&self, port: u16, access: Access, value: u32) {
        if let Some((bar, offset)) = self.io_bar(port) {
            region_write(&self.vfio.device, &bar.region, offset, access, value);
        }
    }

    fn allocate_dma(
        &self,
        _function: PciAddress,
        size: u64,
        align: u64,
    ) -> Result<VfioDma, PlatformError> {
        let (length, iova) = {
            let mut allocator = self
                .dma
                .iova
                .lock()
                .map_err(|_| PlatformError::OutOfMemory)?;
            let length = allocator.rounded(size).ok_or(PlatformError::OutOfMemory)?;
            let iova = allocator
                .allocate(length, align)
                .ok_or(PlatformError::OutOfMemory)?;
            (length, iova)
        };
        let give_back = |error| {
            if let Ok(mut allocator) = self.dma.iova.lock() {
                allocator.free(iova, length);
            }
            error
        };
        let memory = usize::try_from(length)
            .ok()
            .and_then(|length| Mapping::anonymous(length).ok())
            .ok_or_else(|| give_back(PlatformError::OutOfMemory))?;
        if let Err(e) = self.dma.container.map_dma(&memory, iova) {
            self.log(
                LogLevel::Warn,
                &format!(
                    "VFIO_IOMMU_MAP_DMA of {length} bytes: {e} (pinned memory counts against \
                     RLIMIT_MEMLOCK: ulimit -l)"
                ),
            );
            return Err(give_back(PlatformError::OutOfMemory));
        }
        Ok(VfioDma {
            memory,
            iova,
            len: size,
            space: Arc::clone(&self.dma),
        })
    }

    fn route_interrupt(&self, _function: PciAddress) -> Result<LinuxInterrupt, PlatformError> {
        let has = |index| {
            self.vfio
                .device
                .irq(index)
                .is_ok_and(|irq| irq.count > 0 && irq.flags & uapi::IRQ_INFO_EVENTFD != 0)
        };
        if has(uapi::PCI_MSI_IRQ_INDEX) {
            self.route(uapi::PCI_MSI_IRQ_INDEX)
        } else if has(uapi::PCI_INTX_IRQ_INDEX) {
            self.route(uapi::PCI_INTX_IRQ_INDEX)
        } else {
            Err(PlatformError::Unsupported)
        }
    }

    fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    fn sleep_ns(&self, ns: u64) {
        sleep(ns);
    }

    fn log(&self, level: LogLevel, message: &str) {
        log_line(self.epoch, self.verbose, level, message);
    }
}
