//! The boot sequence.

use crate::HEAP;
use alloc::string::String;
use keel_arch::ioapic::{Polarity, Trigger};
use keel_console::log;
use keel_memory::{KernelSection, MapFlags, PhysAddr};
use keel_sync::Once;
use multiboot2::{BootInformation, BootInformationHeader, MemoryAreaType};

const MULTIBOOT2_MAGIC: u32 = 0x36D7_6289;
const LOCAL_APIC_DEFAULT: u64 = 0xFEE0_0000;
const IOAPIC_DEFAULT: u64 = 0xFEC0_0000;
const HEAP_INITIAL: usize = 4 << 20;

/// Facts gathered at boot that commands use later.
pub struct BootFacts {
    pub command_line: String,
    pub boot_ms: u64,
}

pub static FACTS: Once<BootFacts> = Once::new();

/// Addresses the linker script defines.
mod symbols {
    #![allow(unsafe_code)]
    // SAFETY: symbols the linker script defines; only their addresses are taken, never read.
    unsafe extern "C" {
        static __kernel_start: u8;
        static __text_start: u8;
        static __text_end: u8;
        static __rodata_start: u8;
        static __rodata_end: u8;
        static __data_start: u8;
        static __kernel_end: u8;
        static __GNU_EH_FRAME_HDR: u8;
        static __eh_frame_hdr_end: u8;
        static __eh_frame: u8;
        static __eh_frame_end: u8;
        static boot_stack_bottom: u8;
    }
    pub fn kernel_start() -> u64 {
        (&raw const __kernel_start) as u64
    }
    pub fn text() -> (u64, u64) {
        (
            (&raw const __text_start) as u64,
            (&raw const __text_end) as u64,
        )
    }
    pub fn rodata() -> (u64, u64) {
        (
            (&raw const __rodata_start) as u64,
            (&raw const __rodata_end) as u64,
        )
    }
    pub fn data() -> (u64, u64) {
        (
            (&raw const __data_start) as u64,
            (&raw const __kernel_end) as u64,
        )
    }
    pub fn boot_stack() -> core::ops::Range<u64> {
        {
            let bottom = (&raw const boot_stack_bottom) as u64;
            bottom..bottom + keel_arch::boot::BOOT_STACK_SIZE as u64
        }
    }
    pub fn unwind_sections() -> keel_unwind::UnwindSections {
        let hdr = (&raw const __GNU_EH_FRAME_HDR) as u64;
        let hdr_end = (&raw const __eh_frame_hdr_end) as u64;
        let eh = (&raw const __eh_frame) as u64;
        let eh_end = (&raw const __eh_frame_end) as u64;
        // SAFETY: the linker script places these sections in the read-only part of the image,
        // mapped for the kernel's whole life, between these symbols.
        let (eh_frame_hdr, eh_frame) = unsafe {
            (
                core::slice::from_raw_parts(hdr as *const u8, (hdr_end - hdr) as usize),
                core::slice::from_raw_parts(eh as *const u8, (eh_end - eh) as usize),
            )
        };
        keel_unwind::UnwindSections {
            eh_frame_hdr,
            eh_frame,
            eh_frame_address: eh,
            text: kernel_start()..text().1,
        }
    }
}

#[repr(C, align(8))]
struct BootInfoCopy([u8; 64 * 1024]);
static BOOT_INFO_COPY: keel_sync::IrqSafeMutex<BootInfoCopy> =
    keel_sync::IrqSafeMutex::new(BootInfoCopy([0; 64 * 1024]));

#[allow(unsafe_code)]
fn copy_boot_information(info: &BootInformation, address: u64) {
    let size = info.total_size();
    if size > 64 * 1024 {
        fail("multiboot2 information larger than 64 KiB");
    }
    // SAFETY: `info` was just parsed from `address` and is `size` bytes long, identity-mapped by
    // the boot page tables.
    let bytes = unsafe { core::slice::from_raw_parts(address as *const u8, size) };
    BOOT_INFO_COPY.lock().0[..size].copy_from_slice(bytes);
}

#[allow(unsafe_code)]
fn load_boot_information(address: u64) -> Option<BootInformation<'static>> {
    // SAFETY: GRUB passed this address of a multiboot2 information structure (checked by the
    // magic), which lies in reserved RAM that stays mapped and untouched.
    unsafe { BootInformation::load(address as *const BootInformationHeader).ok() }
}

fn fail(what: &str) -> ! {
    keel_unwind::fatal(format_args!("boot failed: {what}"))
}

pub fn start(magic: u32, info_address: u32) -> ! {
    keel_arch::serial::init();
    keel_time::calibrate();
    keel_console::set_clock(keel_time::now_ns);
    keel_time::init_wall_clock();
    log!("Keel {} booting", env!("CARGO_PKG_VERSION"));
    if magic != MULTIBOOT2_MAGIC {
        fail("not started by a multiboot2 loader");
    }
    keel_arch::gdt::init();
    keel_arch::interrupts::init();
    keel_arch::pic::disable();
    let features = keel_arch::cpu::features();
    if !features.sse2 || !features.fxsr || !features.apic {
        fail("the CPU lacks SSE2, FXSR or a local APIC");
    }
    let mut model = [0u8; 48];
    log!(
        "cpu: {}, TSC {} MHz",
        keel_arch::cpu::model_name(&mut model),
        keel_time::tsc_hz() / 1_000_000
    );

    // Identity-mapped by the boot page tables until our own are live.
    let info = load_boot_information(info_address as u64)
        .unwrap_or_else(|| fail("multiboot2 information unreadable"));
    copy_boot_information(&info, info_address as u64);
    init_memory(&info, info_address as u64);

    // GRUB may place the information in the unused tail of a kernel segment's last page, which
    // our tables map only as part of the image: keep reading the copy made before the switch.
    let copy = BOOT_INFO_COPY.lock();
    let info = load_boot_information(copy.0.as_ptr() as u64)
        .unwrap_or_else(|| fail("copy of the multiboot2 information unreadable"));
    let command_line = info
        .command_line_tag()
        .and_then(|t| t.cmdline().ok())
        .map(String::from)
        .unwrap_or_default();
    if !command_line.is_empty() {
        log!("command line: {command_line}");
    }

    let root = match (info.rsdp_v2_tag(), info.rsdp_v1_tag()) {
        (Some(v2), _) => keel_acpi_info::RootTable::Known {
            revision: v2.revision(),
            address: v2.xsdt_address() as u64,
        },
        (None, Some(v1)) => keel_acpi_info::RootTable::Known {
            revision: 0,
            address: v1.rsdt_address() as u64,
        },
        (None, None) => keel_acpi_info::RootTable::SearchBios,
    };
    let acpi = match keel_acpi_info::read(root) {
        Ok(acpi) => {
            log!(
                "acpi: local APIC {:#x}, {} IOAPIC(s), soft-off {:?}",
                acpi.local_apic_address,
                acpi.io_apics.len(),
                acpi.soft_off
            );
            Some(acpi)
        }
        Err(e) => {
            log!("acpi: tables unusable ({e:?}); using PC defaults");
            None
        }
    };
    init_interrupt_controllers(acpi.as_ref());
    init_pci(acpi.as_ref());
    if let Some(acpi) = acpi {
        SOFT_OFF.call_once(|| acpi.soft_off);
    }
    crate::programs::register(boot_programs(&info));
    let drivers = boot_drivers(&info);
    keel_console::set_interrupt_hook(crate::programs::interrupt_foreground);
    drop(copy);
    keel_task::init(symbols::boot_stack());
    keel_task::set_guest_fault_filter(keel_wasm_platform::on_guest_fault);
    keel_task::set_guest_kill_stop(keel_wasm_platform::stop_for_kill);
    let boot_ms = keel_time::now_ns() / 1_000_000;
    FACTS.call_once(|| BootFacts {
        command_line,
        boot_ms,
    });

    crate::storage::start();
    crate::drivers::start(drivers);
    let shell = keel_task::Builder::new("shell")
        .critical()
        .stack_size(256 * 1024)
        .spawn(|| keel_shell::run(crate::commands::COMMANDS, crate::programs::run_by_name));
    if shell.is_err() {
        fail("could not start the shell");
    }
    let frames = keel_memory::frame_stats();
    log!(
        "boot complete in {} ms: {} MiB RAM free of {} MiB",
        boot_ms,
        (frames.free * 4096) >> 20,
        (frames.total * 4096) >> 20
    );
    keel_arch::cpu::enable_interrupts();
    keel_task::idle_loop()
}

fn init_memory(info: &BootInformation, info_address: u64) {
    let Some(map) = info.memory_map_tag() else {
        fail("no memory map from the boot loader")
    };
    for area in map.memory_areas() {
        log!(
            "memory map: {:#014x}-{:#014x} {:?}",
            area.start_address(),
            area.end_address(),
            area.typ()
        );
    }
    let mut usable = alloc_free_vec();
    for area in map
        .memory_areas()
        .iter()
        .filter(|a| a.typ() == MemoryAreaType::Available)
    {
        usable.push((area.start_address(), area.size()));
    }
    let kernel = (symbols::kernel_start(), symbols::data().1);
    let mut reserved = alloc_free_vec();
    reserved.push((0, 0x10_0000)); // firmware and legacy areas below 1 MiB
    reserved.push((kernel.0, kernel.1 - kernel.0));
    reserved.push((info_address, info.total_size() as u64));
    for module in info.module_tags() {
        let start = module.start_address() as u64;
        reserved.push((start, module.end_address() as u64 - start));
    }
    if let Err(e) = keel_memory::init_frames(usable.iter().copied(), reserved.iter().copied()) {
        fail_with("frame allocator", e);
    }
    let sections = [
        KernelSection {
            start: kernel.0,
            end: symbols::text().1,
            flags: MapFlags::ReadExecute,
        },
        KernelSection {
            start: symbols::rodata().0,
            end: symbols::rodata().1,
            flags: MapFlags::RODATA,
        },
        KernelSection {
            start: symbols::data().0,
            end: symbols::data().1,
            flags: MapFlags::DATA,
        },
    ];
    // SAFETY-relevant contract: the sections come from the linker script and cover the running
    // image, including the boot stack (in .bss).
    if let Err(e) = switch_address_space(&sections, &usable) {
        fail_with("page tables", e);
    }
    if let Err(e) = HEAP.init(HEAP_INITIAL) {
        fail_with("heap", e);
    }
    keel_unwind::init(symbols::unwind_sections());
    let stats = keel_memory::frame_stats();
    log!(
        "memory: {} frames free of {} usable",
        stats.free,
        stats.total
    );
}

/// A small fixed list for boot, before the heap exists.
fn alloc_free_vec() -> heapless_list::List {
    heapless_list::List::default()
}

mod heapless_list {
    pub struct List {
        items: [(u64, u64); 64],
        len: usize,
    }
    impl Default for List {
        fn default() -> Self {
            Self {
                items: [(0, 0); 64],
                len: 0,
            }
        }
    }
    impl List {
        pub fn push(&mut self, item: (u64, u64)) {
            if self.len < self.items.len() {
                self.items[self.len] = item;
                self.len += 1;
            }
        }
        pub fn iter(&self) -> impl Iterator<Item = &(u64, u64)> + Clone {
            self.items[..self.len].iter()
        }
    }
}

#[allow(unsafe_code)]
fn switch_address_space(
    sections: &[KernelSection],
    usable: &heapless_list::List,
) -> Result<(), keel_memory::MemoryError> {
    // SAFETY: `sections` are the linker's description of this very image (see caller).
    unsafe { keel_memory::init_kernel_address_space(sections, usable.iter().copied()) }
}

fn fail_with(what: &str, e: impl core::fmt::Display) -> ! {
    keel_unwind::fatal(format_args!("boot failed: {what}: {e}"))
}

/// Maps a device's register page uncached.
static SOFT_OFF: Once<Option<(u16, u16)>> = Once::new();

/// Enumerates PCI: through ECAM where the MCFG describes it, else through the legacy ports.
fn init_pci(acpi: Option<&keel_acpi_info::AcpiInfo>) {
    let regions: alloc::vec::Vec<keel_pci::EcamRegion> = acpi
        .map(|a| a.pci_config_regions.as_slice())
        .unwrap_or_default()
        .iter()
        .map(|r| keel_pci::EcamRegion {
            base: r.base,
            segment: r.segment,
            bus_start: r.bus_start,
            bus_end: r.bus_end,
        })
        .collect();
    for r in &regions {
        log!(
            "pci: ECAM at {:#x}, segment {}, buses {:02x}-{:02x}",
            r.base,
            r.segment,
            r.bus_start,
            r.bus_end
        );
    }
    // The configuration mechanism's ports belong to the PCI layer for good: no driver may
    // claim them as an I/O range.
    match keel_arch::ports::claim(0xCF8, 8) {
        Ok(ports) => core::mem::forget(ports),
        Err(e) => log!("pci: configuration ports already claimed ({e:?})"),
    }
    let report = keel_pci::init(&regions);
    log!(
        "pci: {} functions found (configuration access through {})",
        report.functions,
        report.mechanism
    );
}

fn init_interrupt_controllers(acpi: Option<&keel_acpi_info::AcpiInfo>) {
    let lapic_address = acpi.map_or(LOCAL_APIC_DEFAULT, |a| a.local_apic_address);
    let (ioapic_address, gsi_base) = acpi
        .and_then(|a| a.io_apics.first())
        .map_or((IOAPIC_DEFAULT, 0), |io| (io.address, io.gsi_base));
    let serial = acpi.map_or(
        keel_acpi_info::IrqRoute {
            gsi: keel_arch::serial::COM1_IRQ as u32,
            active_low: false,
            level_triggered: false,
        },
        |a| a.isa_irq(keel_arch::serial::COM1_IRQ),
    );
    let lapic = keel_memory::map_device(PhysAddr::new(lapic_address), 4096)
        .unwrap_or_else(|e| fail_with("local APIC", e));
    if let Err(e) = keel_arch::apic::init(lapic) {
        fail_with("local APIC", e);
    }
    let ioapic = keel_memory::map_device(PhysAddr::new(ioapic_address), 4096)
        .unwrap_or_else(|e| fail_with("IOAPIC", e));
    match keel_arch::ioapic::init(ioapic, gsi_base) {
        Ok(lines) => log!(
            "interrupts: local APIC {}, IOAPIC with {} lines",
            keel_arch::apic::id(),
            lines
        ),
        Err(e) => fail_with("IOAPIC", e),
    }
    if serial.gsi >= keel_arch::ioapic::MAX_IRQS as u32
        || !keel_arch::interrupts::set_irq_handler(
            serial.gsi as u8,
            keel_shell::on_serial_interrupt,
        )
    {
        fail("the serial port's interrupt line is out of range");
    }
    let trigger = if serial.level_triggered {
        Trigger::Level
    } else {
        Trigger::Edge
    };
    let polarity = if serial.active_low {
        Polarity::ActiveLow
    } else {
        Polarity::ActiveHigh
    };
    if let Err(e) = keel_arch::ioapic::route(serial.gsi, trigger, polarity, keel_arch::apic::id()) {
        fail_with("routing the serial interrupt", format_args!("{e:?}"));
    }
    let ticks_per_10ms = keel_arch::apic::measure_timer_ticks(10_000);
    let per_tick = ticks_per_10ms * 100 / keel_task::TICK_HZ;
    keel_arch::apic::start_periodic_timer(per_tick as u32);
    log!(
        "timer: {} Hz ({} APIC ticks each)",
        keel_task::TICK_HZ,
        per_tick
    );
}

/// Powers off: ACPI soft-off (FADT PM1a control block, `\\_S5` sleep type), then QEMU's
/// debug-exit device as a last resort.
pub fn power_off() {
    if let Some(Some((port, slp_typ))) = SOFT_OFF.get() {
        keel_arch::power::acpi_soft_off(*port, *slp_typ);
    }
    keel_arch::power::qemu_debug_exit(0);
}

/// The multiboot2 modules, each a precompiled program named by its command line. They lie in
/// RAM reserved at boot and stay there, reachable through the direct map.
/// The boot image's driver modules (command line `driver NAME ...`).
fn boot_drivers(info: &BootInformation) -> alloc::vec::Vec<crate::drivers::BootDriver> {
    let mut drivers = alloc::vec::Vec::new();
    for module in info.module_tags() {
        let line = module.cmdline().unwrap_or("").trim();
        let Some(manifest) = line.strip_prefix("driver ") else {
            continue;
        };
        let start = module.start_address() as u64;
        let len = (module.end_address() as u64).saturating_sub(start);
        drivers.push(crate::drivers::BootDriver {
            manifest: String::from(manifest),
            artifact: module_bytes(start, len),
        });
    }
    if !drivers.is_empty() {
        log!("drivers: {} in the boot image", drivers.len());
    }
    drivers
}

fn boot_programs(info: &BootInformation) -> alloc::vec::Vec<crate::programs::BootProgram> {
    let mut programs = alloc::vec::Vec::new();
    for module in info.module_tags() {
        let name = module.cmdline().unwrap_or("").trim();
        let start = module.start_address() as u64;
        let len = (module.end_address() as u64).saturating_sub(start);
        if name.starts_with("driver ") {
            continue;
        }
        if name.is_empty() || len == 0 {
            log!("boot module at {start:#x} has no name; ignored");
            continue;
        }
        programs.push(crate::programs::BootProgram {
            name: String::from(name),
            artifact: module_bytes(start, len),
        });
    }
    if !programs.is_empty() {
        log!("programs: {} in the boot image", programs.len());
    }
    programs
}

#[allow(unsafe_code)]
fn module_bytes(start: u64, len: u64) -> &'static [u8] {
    let virt = keel_memory::phys_to_virt(PhysAddr::new(start));
    // SAFETY: the boot loader placed the module in RAM, which `init_memory` reserved (it is never
    // allocated) and the direct map covers; nothing writes it.
    unsafe { core::slice::from_raw_parts(virt.as_ptr::<u8>(), len as usize) }
}
