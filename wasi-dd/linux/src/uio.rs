//! [`UioPlatform`]: the fallback for machines without an IOMMU, where VFIO refuses devices
//! (Debian's kernel has no VFIO no-IOMMU mode). **DMA is not confined**: the device is given
//! physical addresses and can read and write any memory, so a faulty or hostile driver can
//! corrupt the kernel. The runner takes this path only when told `--unconfined`, and says so.
//!
//! | WASI-dd needs | here |
//! |---|---|
//! | configuration space | pread/pwrite of the function's sysfs `config` file |
//! | a memory BAR | mmap of its sysfs `resourceN` file |
//! | I/O ports | pread/pwrite of the I/O BAR's `resourceN` file at the port's offset |
//! | DMA memory | 2 MiB huge pages below 4 GiB, locked; a buffer is carved from one, and its device address is its physical address (`/proc/self/pagemap`). Like DPDK's, they are assumed not to move (the kernel migrates huge pages only to offline memory or to make contiguous room) |
//! | the interrupt | INTx through `uio_pci_generic`'s `/dev/uioN` (no MSI): it masks INTx on delivery (the command register's INTx-disable bit), acknowledge clears the bit through `config` |

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use wasi_dd::platform::{DmaMemory, LogLevel, MmioWindow, Platform, PlatformError};
use wasi_dd::types::{Access, Bar, BarKind, PciAddress, PciFunction};

use crate::iova::IovaAllocator;
use crate::pci::{self, SysfsFunction, SysfsResource};
use crate::platform::{
    IrqState, LinuxInterrupt, LinuxPlatform, bar_key, log_line, read_identity, sleep,
};
use crate::sys::{self, Mapping};

/// What the runner prints before driving a function this way.
pub const UNCONFINED_WARNING: &str = "no IOMMU: the device's DMA is not confined (UIO). It \
    can read and write all memory; a faulty or hostile driver can corrupt the kernel";

/// The size of the huge pages DMA buffers are carved from, and so the largest buffer.
pub const HUGE_PAGE: u64 = 2 << 20;
/// Huge pages one instance may take (32 MiB of DMA memory).
const MAX_HUGE_PAGES: usize = 16;
/// Devices with 32-bit DMA (and QEMU's `edu`, 28-bit) reach only low memory: huge pages the
/// kernel places above this are given back.
const DMA_LIMIT: u64 = 1 << 32;
const SMALL_PAGE: u64 = 4096;

/// A function's BAR and the sysfs file that maps or reads it.
struct SysfsBar {
    bar: Bar,
    file: File,
}

/// The platform for one function bound to `uio_pci_generic`.
pub struct UioPlatform {
    function: PciFunction,
    config: File,
    config_size: u16,
    bars: Vec<SysfsBar>,
    uio: PathBuf,
    dma: Arc<Mutex<HugePagePool>>,
    interrupt: Mutex<Option<Arc<IrqState>>>,
    epoch: Instant,
    verbose: bool,
}

fn open_rw(path: &Path) -> Result<File, String> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| format!("opening {}: {e}", path.display()))
}

fn read_width(file: &File, at: u64, access: Access) -> Option<u32> {
    let width = access.bytes() as usize;
    if width > 4 {
        return None;
    }
    let mut bytes = [0u8; 4];
    file.read_exact_at(&mut bytes[..width], at).ok()?;
    Some(u32::from_le_bytes(bytes))
}

fn write_width(file: &File, at: u64, access: Access, value: u32) {
    let width = access.bytes() as usize;
    if width <= 4 {
        let _ = file.write_all_at(&value.to_le_bytes()[..width], at);
    }
}

impl UioPlatform {
    /// The platform over `function`, which `uio_pci_generic` has: its config file, its BARs
    /// from `resource`, its `/dev/uioN`.
    pub fn open(function: &SysfsFunction, verbose: bool) -> Result<UioPlatform, String> {
        let name = &function.name;
        let uio = function
            .uio_device()
            .ok_or_else(|| format!("{name} has no UIO device (is it bound to uio_pci_generic?)"))?;
        let path = function.path();
        let config = open_rw(&path.join("config"))?;
        let config_size = config
            .metadata()
            .map(|m| m.len().min(4096) as u16)
            .map_err(|e| format!("{name}: config: {e}"))?;
        let (id, _) = read_identity(|offset, access| read_width(&config, offset, access))?;
        let resources = std::fs::read_to_string(path.join("resource"))
            .map_err(|e| format!("{name}: resource: {e}"))?;
        let mut bars = Vec::new();
        for SysfsResource {
            index,
            size,
            kind,
            prefetchable,
            ..
        } in pci::parse_resources(&resources)
        {
            if kind == BarKind::Io && size > 1 << 12 {
                continue;
            }
            let file = open_rw(&path.join(format!("resource{index}")))?;
            bars.push(SysfsBar {
                bar: Bar {
                    index,
                    kind,
                    base: bar_key(index, kind),
                    size,
                    prefetchable,
                },
                file,
            });
        }
        Ok(UioPlatform {
            function: PciFunction {
                address: function.address,
                id,
                bars: bars.iter().map(|b| b.bar).collect(),
            },
            config,
            config_size,
            bars,
            uio,
            dma: Arc::new(Mutex::new(HugePagePool::default())),
            interrupt: Mutex::new(None),
            epoch: Instant::now(),
            verbose,
        })
    }

    fn io_bar(&self, port: u16) -> Option<(&SysfsBar, u64)> {
        self.bars.iter().find_map(|b| {
            let offset = u64::from(port).checked_sub(b.bar.base)?;
            (b.bar.kind == BarKind::Io && offset < b.bar.size).then_some((b, offset))
        })
    }
}

/// A memory BAR mapped from its `resourceN` file.
pub struct UioMmio(Mapping);

impl MmioWindow for UioMmio {
    fn read(&self, offset: u64, access: Access) -> u64 {
        self.0.read_value(offset, access).unwrap_or(u64::MAX)
    }

    fn write(&self, offset: u64, access: Access, value: u64) {
        let _ = self.0.write_value(offset, access, value);
    }
}

/// One huge page and where it is in physical memory.
struct HugePage {
    memory: Mapping,
    physical: u64,
}

/// The huge pages of an instance, each with the free ranges of its physical addresses.
/// Pages are kept until the instance ends (then the device is quiesced first).
#[derive(Default)]
struct HugePagePool {
    pages: Vec<(Arc<HugePage>, IovaAllocator)>,
}

impl HugePagePool {
    /// A buffer of `size` bytes (rounded up to 4 KiB) at a multiple of `align`, in a page
    /// that has room or in a new one from `new_page`: (its page, physical address, length).
    fn allocate(
        &mut self,
        size: u64,
        align: u64,
        new_page: impl FnOnce() -> Result<HugePage, String>,
    ) -> Result<(Arc<HugePage>, u64, u64), String> {
        if size > HUGE_PAGE || align > HUGE_PAGE {
            return Err(format!(
                "unconfined DMA buffers are at most one huge page ({} KiB); {size} bytes \
                 aligned to {align} were asked for",
                HUGE_PAGE >> 10
            ));
        }
        let length = size.next_multiple_of(SMALL_PAGE);
        for (page, free) in &mut self.pages {
            if let Some(physical) = free.allocate(length, align) {
                return Ok((Arc::clone(page), physical, length));
            }
        }
        if self.pages.len() >= MAX_HUGE_PAGES {
            return Err(format!(
                "the instance has all {MAX_HUGE_PAGES} huge pages it may take"
            ));
        }
        let page = Arc::new(new_page()?);
        let mut free = IovaAllocator::new(
            &[(page.physical, page.physical + HUGE_PAGE)],
            (0, DMA_LIMIT),
            &[],
            SMALL_PAGE,
        );
        let physical = free
            .allocate(length, align)
            .ok_or("a fresh huge page cannot hold the buffer")?;
        self.pages.push((Arc::clone(&page), free));
        Ok((page, physical, length))
    }

    fn free(&mut self, physical: u64, length: u64) {
        if let Some((_, free)) = self
            .pages
            .iter_mut()
            .find(|(page, _)| (page.physical..page.physical + HUGE_PAGE).contains(&physical))
        {
            free.free(physical, length);
        }
    }
}

/// Huge pages tried for one below [`DMA_LIMIT`] before giving up.
const HUGE_PAGE_TRIES: usize = 8;

/// Maps a huge page below [`DMA_LIMIT`] (asking the kernel for more if none is free). Pages that
/// lie above it are held until one fits, so that the kernel does not hand the same ones back,
/// then given back.
fn new_huge_page() -> Result<HugePage, String> {
    let mut refused = Vec::new();
    for _ in 0..HUGE_PAGE_TRIES {
        let memory = match Mapping::huge(HUGE_PAGE as usize) {
            Ok(memory) => memory,
            Err(_) => {
                reserve_one_more_huge_page()?;
                Mapping::huge(HUGE_PAGE as usize).map_err(|e| {
                    format!(
                        "no free 2 MiB huge page for DMA ({e}); reserve some: echo 16 > \
                         {NR_HUGE_PAGES}"
                    )
                })?
            }
        };
        let physical = physical_address(memory.address())?;
        if physical % HUGE_PAGE != 0 {
            return Err(format!(
                "the huge page at physical {physical:#x} is not 2 MiB aligned"
            ));
        }
        if physical + HUGE_PAGE <= DMA_LIMIT {
            return Ok(HugePage { memory, physical });
        }
        refused.push(memory);
    }
    Err(format!(
        "{HUGE_PAGE_TRIES} huge pages all lie above 4 GiB, out of reach of 32-bit DMA; reserve \
         them early (hugepages=N on the kernel command line) so that they come from low memory"
    ))
}

/// The reservation of 2 MiB huge pages.
const NR_HUGE_PAGES: &str = "/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages";

/// Raises the reservation of 2 MiB huge pages by one (root may).
fn reserve_one_more_huge_page() -> Result<(), String> {
    let now: u64 = std::fs::read_to_string(NR_HUGE_PAGES)
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .ok_or_else(|| format!("cannot read {NR_HUGE_PAGES} (no 2 MiB huge pages here)"))?;
    std::fs::write(NR_HUGE_PAGES, format!("{}", now + 1))
        .map_err(|e| format!("reserving a huge page for DMA ({NR_HUGE_PAGES}): {e}"))
}

/// The physical address of the page at `virtual_address` from `/proc/self/pagemap`: a 64-bit
/// entry per 4 KiB page, bit 63 present, bits 0..55 the frame number (zero unless the process
/// has `CAP_SYS_ADMIN`).
fn physical_address(virtual_address: u64) -> Result<u64, String> {
    let pagemap =
        File::open("/proc/self/pagemap").map_err(|e| format!("opening /proc/self/pagemap: {e}"))?;
    let mut entry = [0u8; 8];
    pagemap
        .read_exact_at(&mut entry, virtual_address / SMALL_PAGE * 8)
        .map_err(|e| format!("reading /proc/self/pagemap: {e}"))?;
    frame_of_pagemap_entry(u64::from_le_bytes(entry))
        .map(|frame| frame * SMALL_PAGE + virtual_address % SMALL_PAGE)
        .ok_or_else(|| {
            String::from(
                "/proc/self/pagemap hides physical addresses (the runner needs CAP_SYS_ADMIN \
                 for unconfined DMA)",
            )
        })
}

/// The frame number of a present page's page-map entry; `None` if absent or hidden.
pub fn frame_of_pagemap_entry(entry: u64) -> Option<u64> {
    let present = entry & (1 << 63) != 0;
    let frame = entry & ((1 << 55) - 1);
    (present && frame != 0).then_some(frame)
}

/// A DMA buffer in a huge page, at a physical address.
pub struct UioDma {
    page: Arc<HugePage>,
    physical: u64,
    length: u64,
    len: u64,
    pool: Arc<Mutex<HugePagePool>>,
}

impl UioDma {
    fn offset(&self, offset: u64) -> u64 {
        self.physical - self.page.physical + offset
    }
}

impl Drop for UioDma {
    fn drop(&mut self) {
        if let Ok(mut pool) = self.pool.lock() {
            pool.free(self.physical, self.length);
        }
    }
}

impl DmaMemory for UioDma {
    fn len(&self) -> u64 {
        self.len
    }

    fn device_address(&self) -> u64 {
        self.physical
    }

    fn read(&self, offset: u64, out: &mut [u8]) {
        if self
            .page
            .memory
            .read_bytes(self.offset(offset), out)
            .is_none()
        {
            out.fill(0);
        }
    }

    fn write(&self, offset: u64, data: &[u8]) {
        let _ = self.page.memory.write_bytes(self.offset(offset), data);
    }

    fn read_value(&self, offset: u64, access: Access) -> u64 {
        self.page
            .memory
            .read_value(self.offset(offset), access)
            .unwrap_or(0)
    }

    fn write_value(&self, offset: u64, access: Access, value: u64) {
        let _ = self
            .page
            .memory
            .write_value(self.offset(offset), access, value);
    }
}

impl Platform for UioPlatform {
    type Mmio = UioMmio;
    type Dma = UioDma;
    type Interrupt = LinuxInterrupt;

    fn config_read(&self, _function: PciAddress, offset: u16, access: Access) -> u32 {
        read_width(&self.config, u64::from(offset), access).unwrap_or(u32::MAX)
    }

    fn config_write(&self, _function: PciAddress, offset: u16, access: Access, value: u32) {
        write_width(&self.config, u64::from(offset), access, value);
    }

    fn config_space_size(&self, _function: PciAddress) -> u16 {
        self.config_size
    }

    fn map_mmio(&self, base: u64, size: u64) -> Result<UioMmio, PlatformError> {
        let bar = self
            .bars
            .iter()
            .find(|b| b.bar.base == base && b.bar.kind != BarKind::Io)
            .ok_or(PlatformError::Unsupported)?;
        if size > bar.bar.size {
            return Err(PlatformError::Unsupported);
        }
        let length = usize::try_from(bar.bar.size.next_multiple_of(sys::page_size()))
            .map_err(|_| PlatformError::Unsupported)?;
        Mapping::shared(std::os::fd::AsFd::as_fd(&bar.file), 0, length)
            .map(UioMmio)
            .map_err(|e| {
                self.log(
                    LogLevel::Warn,
                    &format!("mapping BAR {} from sysfs: {e}", bar.bar.index),
                );
                PlatformError::DeviceError
            })
    }

    fn port_read(&self, port: u16, access: Access) -> u32 {
        self.io_bar(port)
            .and_then(|(bar, offset)| read_width(&bar.file, offset, access))
            .unwrap_or(u32::MAX)
    }

    fn port_write(&self, port: u16, access: Access, value: u32) {
        if let Some((bar, offset)) = self.io_bar(port) {
            write_width(&bar.file, offset, access, value);
        }
    }

    fn allocate_dma(
        &self,
        _function: PciAddress,
        size: u64,
        align: u64,
    ) -> Result<UioDma, PlatformError> {
        let allocated = self
            .dma
            .lock()
            .map_err(|_| PlatformError::OutOfMemory)?
            .allocate(size, align, new_huge_page);
        let (page, physical, length) = allocated.map_err(|why| {
            self.log(LogLevel::Warn, &why);
            PlatformError::OutOfMemory
        })?;
        let buffer = UioDma {
            page,
            physical,
            length,
            len: size,
            pool: Arc::clone(&self.dma),
        };
        // Pages are reused within the instance: a buffer starts zeroed, as a fresh one would.
        buffer.write(0, &vec![0u8; length as usize]);
        Ok(buffer)
    }

    fn route_interrupt(&self, _function: PciAddress) -> Result<LinuxInterrupt, PlatformError> {
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&self.uio)
            .map_err(|e| {
                self.log(
                    LogLevel::Warn,
                    &format!("opening {}: {e}", self.uio.display()),
                );
                PlatformError::Unsupported
            })?;
        let config = self
            .config
            .try_clone()
            .map_err(|_| PlatformError::OutOfMemory)?;
        // The device's count so far: a read of the file gives the total, and only once it
        // differs from the count at open.
        let seen = self
            .uio
            .file_name()
            .map(|name| Path::new("/sys/class/uio").join(name).join("event"))
            .and_then(|path| std::fs::read_to_string(path).ok())
            .and_then(|text| text.trim().parse().ok())
            .unwrap_or(0);
        let state = Arc::new(IrqState::uio(file, config, seen));
        if let Ok(mut slot) = self.interrupt.lock() {
            *slot = Some(Arc::clone(&state));
        }
        Ok(LinuxInterrupt::new(state))
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

impl LinuxPlatform for UioPlatform {
    fn function(&self) -> &PciFunction {
        &self.function
    }

    fn interrupt(&self) -> Option<Arc<IrqState>> {
        self.interrupt.lock().ok()?.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Plain memory standing in for a huge page at `physical`.
    fn fake_page(physical: u64) -> Result<HugePage, String> {
        Ok(HugePage {
            memory: Mapping::anonymous(HUGE_PAGE as usize).map_err(|e| e.to_string())?,
            physical,
        })
    }

    #[test]
    fn buffers_are_carved_from_huge_pages_and_given_back() {
        let mut pool = HugePagePool::default();
        let (first, a, a_len) = pool.allocate(100, 8, || fake_page(0x40_0000)).unwrap();
        assert_eq!((a, a_len), (0x40_0000, 4096));
        let (_, b, b_len) = pool
            .allocate(8192, 8192, || panic!("the first page has room"))
            .unwrap();
        assert_eq!((b, b_len), (0x40_2000, 8192));
        // A buffer that does not fit what is left takes a second page.
        let (second, c, _) = pool
            .allocate(HUGE_PAGE, 4096, || fake_page(0x80_0000))
            .unwrap();
        assert_eq!(c, 0x80_0000);
        assert!(!Arc::ptr_eq(&first, &second));
        pool.free(a, a_len);
        let (_, again, _) = pool
            .allocate(4096, 4096, || panic!("a was given back"))
            .unwrap();
        assert_eq!(again, a);
    }

    #[test]
    fn buffers_larger_than_a_huge_page_are_refused_saying_why() {
        let mut pool = HugePagePool::default();
        let Err(why) = pool.allocate(HUGE_PAGE + 1, 8, || panic!("never asked")) else {
            panic!("a buffer larger than a huge page was given");
        };
        assert!(why.contains("at most one huge page"), "{why}");
        let mut pages = 0;
        let full = (0..=MAX_HUGE_PAGES).find_map(|_| {
            pool.allocate(HUGE_PAGE, 4096, || {
                pages += 1;
                fake_page(pages * HUGE_PAGE)
            })
            .err()
        });
        assert!(full.is_some_and(|why| why.contains("huge pages it may take")));
    }

    /// A function in a fake sysfs tree as `uio_pci_generic` leaves it: a config file with an
    /// ID and a header, a 4 KiB memory BAR 0 and a 32-port I/O BAR 2 (plain files).
    fn fake_function(with_uio: bool) -> (PathBuf, SysfsFunction) {
        let root = std::env::temp_dir().join(format!(
            "wasi-dd-linux-uio-{}-{with_uio}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&root);
        let device = root.join("bus/pci/devices/0000:00:05.0");
        std::fs::create_dir_all(&device).unwrap();
        let mut config = vec![0u8; 256];
        config[..4].copy_from_slice(&[0x34, 0x12, 0xe8, 0x11]);
        config[0x0a..0x0c].copy_from_slice(&[0x00, 0xff]);
        std::fs::write(device.join("config"), &config).unwrap();
        std::fs::write(
            device.join("resource"),
            "0x00000000fea00000 0x00000000fea00fff 0x0000000000040200\n\
             0x0000000000000000 0x0000000000000000 0x0000000000000000\n\
             0x000000000000d000 0x000000000000d01f 0x0000000000040101\n",
        )
        .unwrap();
        std::fs::write(device.join("resource0"), vec![0u8; 4096]).unwrap();
        std::fs::write(device.join("resource2"), vec![0u8; 32]).unwrap();
        if with_uio {
            std::fs::create_dir_all(device.join("uio/uio3")).unwrap();
        }
        let function = crate::pci::Sysfs::at(&root)
            .function(PciAddress {
                segment: 0,
                bus: 0,
                device: 5,
                function: 0,
            })
            .unwrap();
        (root, function)
    }

    #[test]
    fn a_function_is_reached_through_its_sysfs_files() {
        let (root, function) = fake_function(true);
        let platform = UioPlatform::open(&function, false).unwrap();
        let at = function.address;
        assert_eq!(platform.uio, PathBuf::from("/dev/uio3"));
        let id = platform.function().id;
        assert_eq!((id.vendor, id.device, id.class), (0x1234, 0x11e8, 0xff));
        let bars = &platform.function().bars;
        assert_eq!(bars.len(), 2);
        assert_eq!(
            (bars[0].index, bars[0].kind, bars[0].size),
            (0, BarKind::Memory32, 4096)
        );
        assert_eq!(
            (bars[1].index, bars[1].kind, bars[1].size),
            (2, BarKind::Io, 32)
        );

        platform.config_write(at, 0x04, Access::W16, 0x0406);
        assert_eq!(platform.config_read(at, 0x04, Access::W16), 0x0406);
        assert_eq!(platform.config_read(at, 0x00, Access::W32), 0x11e8_1234);
        assert_eq!(platform.config_space_size(at), 256);

        let mmio = platform.map_mmio(bars[0].base, 4096).unwrap();
        mmio.write(0x10, Access::W32, 0xdead_beef);
        assert_eq!(mmio.read(0x10, Access::W32), 0xdead_beef);
        assert!(
            platform.map_mmio(bars[0].base, 8192).is_err(),
            "larger than the BAR"
        );
        assert!(platform.map_mmio(bars[1].base, 32).is_err(), "an I/O BAR");
        drop(mmio);
        let bar0 = std::fs::read(function.path().join("resource0")).unwrap();
        assert_eq!(
            bar0[0x10..0x14],
            0xdead_beefu32.to_le_bytes(),
            "shared with the file"
        );

        let port = bars[1].base as u16;
        platform.port_write(port + 4, Access::W16, 0xabcd);
        assert_eq!(platform.port_read(port + 4, Access::W16), 0xabcd);
        assert_eq!(
            platform.port_read(port + 32, Access::W8),
            u32::MAX,
            "past the BAR"
        );
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn a_function_without_uio_is_refused() {
        let (root, function) = fake_function(false);
        let Err(why) = UioPlatform::open(&function, false) else {
            panic!("opened without a UIO device");
        };
        assert!(why.contains("uio_pci_generic"), "{why}");
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn page_map_entries_give_frames_only_when_present_and_shown() {
        assert_eq!(frame_of_pagemap_entry((1 << 63) | 0x1234), Some(0x1234));
        // Bits 55..63 are flags (soft-dirty, exclusive, file, swapped), not the frame.
        assert_eq!(
            frame_of_pagemap_entry((1 << 63) | (1 << 56) | (1 << 55) | 0x42),
            Some(0x42)
        );
        assert_eq!(frame_of_pagemap_entry(0x1234), None, "not present");
        assert_eq!(
            frame_of_pagemap_entry(1 << 63),
            None,
            "hidden without the capability"
        );
    }
}
