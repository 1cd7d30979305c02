//! [`KeelPlatform`]: WASI-dd's platform trait on Keel's owned memory types. One value per
//! driver instance: it holds the I/O port ranges of the one function it serves.

use crate::interrupts::{self, LineState};
use alloc::sync::Arc;
use alloc::vec::Vec;
use keel_arch::ports::PortRange;
use keel_memory::{CacheMode, MapFlags, MappedPages, PAGE_SIZE, PhysAddr};
use wasi_dd::platform::{DmaMemory, InterruptLine, LogLevel, MmioWindow, Platform, PlatformError};
use wasi_dd::types::{Access, BarKind, PciAddress, PciFunction};

/// Configuration-space access, provided by the kernel's PCI layer.
pub trait ConfigSpace: Send + Sync {
    fn read(&self, function: PciAddress, offset: u16, access: Access) -> u32;
    fn write(&self, function: PciAddress, offset: u16, access: Access, value: u32);
    fn size(&self, function: PciAddress) -> u16;
}

/// DMA memory is taken below 4 GiB, so devices with 32-bit DMA addresses can reach it.
const DMA_LIMIT: u64 = 4 << 30;

pub struct KeelPlatform {
    config: &'static dyn ConfigSpace,
    driver: alloc::string::String,
    /// The function's I/O BARs, claimed for as long as the driver instance lives.
    ports: Vec<PortRange>,
    /// The interrupt line, once the driver asked for it (shared with the driver's record).
    interrupt: Arc<InterruptSlot>,
    log: Arc<DriverLog>,
}

/// The last lines a driver instance logged, for `drivers -v`. Warnings and errors also go to
/// the console; routine lines do not interrupt the shell.
#[derive(Default)]
pub struct DriverLog(keel_sync::IrqSafeMutex<alloc::collections::VecDeque<alloc::string::String>>);

impl DriverLog {
    const KEPT: usize = 16;

    fn push(&self, line: alloc::string::String) {
        let mut lines = self.0.lock();
        if lines.len() == Self::KEPT {
            lines.pop_front();
        }
        lines.push_back(line);
    }

    pub fn lines(&self) -> Vec<alloc::string::String> {
        self.0.lock().iter().cloned().collect()
    }
}

/// The interrupt line a driver instance was given, if any: counted for `drivers`, and what
/// the host's loop for the instance waits on. A driver without an interrupt (one that polls)
/// still gets pokes: the slot has its own flag and queue for that case.
#[derive(Default)]
pub struct InterruptSlot {
    line: spin::Once<Arc<LineState>>,
    poked: core::sync::atomic::AtomicBool,
    waiters: keel_task::WaitQueue,
}

/// Gives an instance's MSI line back when dropped (at the end of the instance).
pub(crate) struct ReleaseLineAtEnd(pub Arc<InterruptSlot>);

impl Drop for ReleaseLineAtEnd {
    fn drop(&mut self) {
        if let Some(line) = self.0.line.get() {
            interrupts::release(line);
        }
    }
}

impl InterruptSlot {
    pub fn count(&self) -> u64 {
        self.line.get().map_or(0, |line| line.count())
    }

    /// Wakes a waiter of [`InterruptSlot::wait`] as if the interrupt fired.
    pub fn poke(&self) {
        match self.line.get() {
            Some(line) => line.poke(),
            None => {
                self.poked
                    .store(true, core::sync::atomic::Ordering::Release);
                self.waiters.notify_all();
            }
        }
    }

    /// Waits for the driver's interrupt or a poke, at most `timeout_ns`; true if the interrupt
    /// fired.
    pub fn wait(&self, timeout_ns: u64) -> bool {
        match self.line.get() {
            Some(line) => line.wait(timeout_ns),
            None => {
                let poked = || {
                    self.poked
                        .swap(false, core::sync::atomic::Ordering::AcqRel)
                        .then_some(())
                };
                self.waiters
                    .wait_timeout(core::time::Duration::from_nanos(timeout_ns), poked);
                false
            }
        }
    }
}

impl KeelPlatform {
    /// The platform for one driver instance serving `function`. Claims its I/O BARs; a port
    /// range in use elsewhere is an error.
    pub fn for_function(
        config: &'static dyn ConfigSpace,
        driver: &str,
        function: &PciFunction,
        interrupt: Arc<InterruptSlot>,
        log: Arc<DriverLog>,
    ) -> Result<Self, keel_arch::ports::PortError> {
        let mut ports = Vec::new();
        for bar in function.bars.iter().filter(|b| b.kind == BarKind::Io) {
            let base =
                u16::try_from(bar.base).map_err(|_| keel_arch::ports::PortError::InvalidRange)?;
            let count =
                u16::try_from(bar.size).map_err(|_| keel_arch::ports::PortError::InvalidRange)?;
            ports.push(keel_arch::ports::claim(base, count)?);
        }
        Ok(Self {
            config,
            driver: driver.into(),
            ports,
            interrupt,
            log,
        })
    }

    fn port(&self, port: u16) -> Option<(&PortRange, u16)> {
        self.ports.iter().find_map(|range| {
            let offset = port.checked_sub(range.base())?;
            (offset < range.count()).then_some((range, offset))
        })
    }
}

pub struct KeelMmio {
    mapping: MappedPages,
    /// Where the BAR starts in the first mapped page.
    start: usize,
}

impl MmioWindow for KeelMmio {
    fn read(&self, offset: u64, access: Access) -> u64 {
        let at = self.start + offset as usize;
        let value = match access {
            Access::W8 => self.mapping.read_volatile::<u8>(at).map(u64::from),
            Access::W16 => self.mapping.read_volatile::<u16>(at).map(u64::from),
            Access::W32 => self.mapping.read_volatile::<u32>(at).map(u64::from),
            Access::W64 => self.mapping.read_volatile::<u64>(at),
        };
        // wasi-dd checked the offset; an error here would be a bug in that check, and a
        // device reads all-ones for an absent register.
        value.unwrap_or(u64::MAX)
    }

    fn write(&self, offset: u64, access: Access, value: u64) {
        let at = self.start + offset as usize;
        let _ = match access {
            Access::W8 => self.mapping.write_volatile(at, value as u8),
            Access::W16 => self.mapping.write_volatile(at, value as u16),
            Access::W32 => self.mapping.write_volatile(at, value as u32),
            Access::W64 => self.mapping.write_volatile(at, value),
        };
    }
}

pub struct KeelDma {
    mapping: MappedPages,
    len: u64,
}

impl DmaMemory for KeelDma {
    fn len(&self) -> u64 {
        self.len
    }

    fn device_address(&self) -> u64 {
        self.mapping
            .physical_address(0)
            .map_or(0, |address| address.as_u64())
    }

    fn read(&self, offset: u64, out: &mut [u8]) {
        let _ = self.mapping.read_bytes_volatile(offset as usize, out);
    }

    fn write(&self, offset: u64, data: &[u8]) {
        let _ = self.mapping.write_bytes_volatile(offset as usize, data);
    }

    fn read_value(&self, offset: u64, access: Access) -> u64 {
        let at = offset as usize;
        match access {
            Access::W8 => self.mapping.read_volatile::<u8>(at).map(u64::from),
            Access::W16 => self.mapping.read_volatile::<u16>(at).map(u64::from),
            Access::W32 => self.mapping.read_volatile::<u32>(at).map(u64::from),
            Access::W64 => self.mapping.read_volatile::<u64>(at),
        }
        .unwrap_or(0)
    }

    fn write_value(&self, offset: u64, access: Access, value: u64) {
        let at = offset as usize;
        let _ = match access {
            Access::W8 => self.mapping.write_volatile(at, value as u8),
            Access::W16 => self.mapping.write_volatile(at, value as u16),
            Access::W32 => self.mapping.write_volatile(at, value as u32),
            Access::W64 => self.mapping.write_volatile(at, value),
        };
    }
}

pub struct KeelInterrupt {
    line: Arc<LineState>,
}

impl InterruptLine for KeelInterrupt {
    fn wait(&self, timeout_ns: u64) -> bool {
        self.line.wait(timeout_ns)
    }
    fn acknowledge(&self) {
        self.line.acknowledge();
    }
    fn mask(&self) {
        self.line.set_masked(true);
    }
    fn unmask(&self) {
        self.line.set_masked(false);
    }
    fn count(&self) -> u64 {
        self.line.count()
    }
}

const COMMAND: u16 = 0x04;
const COMMAND_INTX_DISABLE: u32 = 1 << 10;
const STATUS_CAPABILITIES: u32 = 1 << 4;
const CAPABILITY_MSI: u32 = 0x05;

impl KeelPlatform {
    /// The offset of the function's MSI capability, if it has one.
    fn msi_capability(&self, function: PciAddress) -> Option<u16> {
        let status = self.config.read(function, 0x06, Access::W16);
        if status & STATUS_CAPABILITIES == 0 {
            return None;
        }
        let mut offset = (self.config.read(function, 0x34, Access::W8) & 0xFC) as u16;
        for _ in 0..48 {
            if offset < 0x40 {
                return None;
            }
            let header = self.config.read(function, offset, Access::W16);
            if header & 0xFF == CAPABILITY_MSI {
                return Some(offset);
            }
            offset = ((header >> 8) & 0xFC) as u16;
        }
        None
    }

    fn route_msi(&self, function: PciAddress, cap: u16) -> Result<KeelInterrupt, PlatformError> {
        let line = interrupts::allocate_msi_line().map_err(|_| PlatformError::Unsupported)?;
        let Some((address, data)) =
            keel_arch::interrupts::msi_message(line.line, keel_arch::apic::id())
        else {
            interrupts::release(&line);
            return Err(PlatformError::Unsupported);
        };
        let control = self.config.read(function, cap + 2, Access::W16);
        let is_64bit = control & (1 << 7) != 0;
        self.config
            .write(function, cap + 4, Access::W32, address as u32);
        let data_offset = if is_64bit {
            self.config
                .write(function, cap + 8, Access::W32, (address >> 32) as u32);
            cap + 12
        } else {
            cap + 8
        };
        self.config.write(function, data_offset, Access::W16, data);
        // One vector (multiple-message enable 0), MSI on; INTx off.
        let control = (control & !(0b111 << 4)) | 1;
        self.config.write(function, cap + 2, Access::W16, control);
        let command = self.config.read(function, COMMAND, Access::W16);
        self.config.write(
            function,
            COMMAND,
            Access::W16,
            command | COMMAND_INTX_DISABLE,
        );
        Ok(KeelInterrupt { line })
    }

    fn route_intx(&self, function: PciAddress) -> Result<KeelInterrupt, PlatformError> {
        let pin = self.config.read(function, 0x3D, Access::W8) as u8;
        if pin == 0 {
            return Err(PlatformError::Unsupported);
        }
        // Behind bridges the pin rotates by the device number at each level; Keel routes
        // root-bus functions (every device QEMU's q35 machine attaches by default).
        if function.bus != 0 {
            return Err(PlatformError::Unsupported);
        }
        let gsi =
            interrupts::q35_intx_gsi(function.device, pin).ok_or(PlatformError::Unsupported)?;
        let line = interrupts::legacy_line(gsi).map_err(|_| PlatformError::Unsupported)?;
        let command = self.config.read(function, COMMAND, Access::W16);
        self.config.write(
            function,
            COMMAND,
            Access::W16,
            command & !COMMAND_INTX_DISABLE,
        );
        Ok(KeelInterrupt { line })
    }
}

impl Platform for KeelPlatform {
    type Mmio = KeelMmio;
    type Dma = KeelDma;
    type Interrupt = KeelInterrupt;

    fn config_read(&self, function: PciAddress, offset: u16, access: Access) -> u32 {
        self.config.read(function, offset, access)
    }

    fn config_write(&self, function: PciAddress, offset: u16, access: Access, value: u32) {
        self.config.write(function, offset, access, value);
    }

    fn config_space_size(&self, function: PciAddress) -> u16 {
        self.config.size(function)
    }

    fn map_mmio(&self, base: u64, size: u64) -> Result<KeelMmio, PlatformError> {
        let mapping = keel_memory::map_device(PhysAddr::new(base), size)
            .map_err(|_| PlatformError::DeviceError)?;
        Ok(KeelMmio {
            mapping,
            start: (base % PAGE_SIZE) as usize,
        })
    }

    fn port_read(&self, port: u16, access: Access) -> u32 {
        let Some((range, offset)) = self.port(port) else {
            return u32::MAX;
        };
        match access {
            Access::W8 => range.read_u8(offset).map(u32::from),
            Access::W16 => range.read_u16(offset).map(u32::from),
            Access::W32 | Access::W64 => range.read_u32(offset),
        }
        .unwrap_or(u32::MAX)
    }

    fn port_write(&self, port: u16, access: Access, value: u32) {
        let Some((range, offset)) = self.port(port) else {
            return;
        };
        let _ = match access {
            Access::W8 => range.write_u8(offset, value as u8),
            Access::W16 => range.write_u16(offset, value as u16),
            Access::W32 | Access::W64 => range.write_u32(offset, value),
        };
    }

    fn allocate_dma(
        &self,
        _function: PciAddress,
        size: u64,
        align: u64,
    ) -> Result<KeelDma, PlatformError> {
        if align > PAGE_SIZE || size == 0 {
            return Err(PlatformError::Unsupported);
        }
        let count = size.div_ceil(PAGE_SIZE);
        let frames = keel_memory::allocate_frames_below(count, DMA_LIMIT)
            .map_err(|_| PlatformError::OutOfMemory)?;
        let pages = keel_memory::allocate_pages(count).map_err(|_| PlatformError::OutOfMemory)?;
        let mapping = keel_memory::map(pages, frames, MapFlags::ReadWrite(CacheMode::WriteBack))
            .map_err(|_| PlatformError::OutOfMemory)?;
        let zeros = [0u8; 512];
        for chunk in (0..count * PAGE_SIZE).step_by(zeros.len()) {
            let _ = mapping.write_bytes_volatile(chunk as usize, &zeros);
        }
        Ok(KeelDma { mapping, len: size })
    }

    fn route_interrupt(&self, function: PciAddress) -> Result<KeelInterrupt, PlatformError> {
        let interrupt = match self.msi_capability(function) {
            Some(cap) => self.route_msi(function, cap),
            None => self.route_intx(function),
        }?;
        self.interrupt.line.call_once(|| interrupt.line.clone());
        Ok(interrupt)
    }

    fn now_ns(&self) -> u64 {
        keel_time::now_ns()
    }

    fn sleep_ns(&self, ns: u64) {
        // Device settling times are mostly microseconds: spin for those rather than give up
        // the processor for a whole scheduler tick.
        if ns < 1_000_000 {
            let deadline = keel_time::now_ns().saturating_add(ns);
            while keel_time::now_ns() < deadline {
                core::hint::spin_loop();
            }
        } else {
            keel_task::sleep(core::time::Duration::from_nanos(ns));
        }
    }

    fn log(&self, level: LogLevel, message: &str) {
        let level = match level {
            LogLevel::Error => "error",
            LogLevel::Warn => "warning",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
        };
        let ns = keel_time::now_ns();
        let line = alloc::format!(
            "[{:5}.{:06}] {level}: {message}",
            ns / 1_000_000_000,
            ns % 1_000_000_000 / 1000
        );
        if matches!(level, "error" | "warning") {
            keel_console::println!("[{}] {level}: {message}", self.driver);
        }
        self.log.push(line);
    }
}
