//! WASI-dd drivers in the boot image (multiboot2 modules whose command line starts with
//! `driver `): bound to PCI functions by `keel-dd-host` at boot, and the `drivers` command.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use keel_console::println;
use keel_dd_host::{ConfigSpace, DriverImage, DriverState};
use wasi_dd::types::{Access, Bar, BarKind, DeviceId, PciAddress, PciFunction};

/// A driver module as the boot loader left it: its manifest line and compressed component.
pub struct BootDriver {
    pub manifest: String,
    pub artifact: &'static [u8],
}

/// Configuration space through `keel-pci`, for driver hosts.
struct PciConfig;

fn address(a: PciAddress) -> keel_pci::Address {
    keel_pci::Address {
        segment: a.segment,
        bus: a.bus,
        device: a.device,
        function: a.function,
    }
}

fn width(access: Access) -> keel_pci::Width {
    match access {
        Access::W8 => keel_pci::Width::U8,
        Access::W16 => keel_pci::Width::U16,
        Access::W32 | Access::W64 => keel_pci::Width::U32,
    }
}

impl ConfigSpace for PciConfig {
    fn read(&self, function: PciAddress, offset: u16, access: Access) -> u32 {
        keel_pci::config_read(address(function), offset, width(access)).unwrap_or(u32::MAX)
    }

    fn write(&self, function: PciAddress, offset: u16, access: Access, value: u32) {
        let _ = keel_pci::config_write(address(function), offset, width(access), value);
    }

    fn size(&self, function: PciAddress) -> u16 {
        keel_pci::config_space_size(address(function)).unwrap_or(256)
    }
}

static PCI_CONFIG: PciConfig = PciConfig;

/// What a driver host is told about a function `keel-pci` found.
fn describe(function: &keel_pci::Function) -> PciFunction {
    let a = function.address;
    let (subsystem_vendor, subsystem) = function.subsystem.unwrap_or((0, 0));
    PciFunction {
        address: PciAddress {
            segment: a.segment,
            bus: a.bus,
            device: a.device,
            function: a.function,
        },
        id: DeviceId {
            vendor: function.vendor_id,
            device: function.device_id,
            subsystem_vendor,
            subsystem,
            class: function.class,
            subclass: function.subclass,
            prog_if: function.prog_if,
            revision: function.revision,
        },
        bars: function
            .bars
            .iter()
            .map(|bar| Bar {
                index: bar.index,
                kind: match bar.kind {
                    keel_pci::BarKind::Memory32 => BarKind::Memory32,
                    keel_pci::BarKind::Memory64 => BarKind::Memory64,
                    keel_pci::BarKind::Io => BarKind::Io,
                },
                base: bar.base,
                size: bar.size,
                prefetchable: bar.prefetchable,
            })
            .collect(),
    }
}

/// Loads the boot image's drivers and binds them, in a task of its own so that the prompt
/// does not wait for them.
pub fn start(drivers: Vec<BootDriver>) {
    if drivers.is_empty() {
        return;
    }
    keel_dd_host::begin_binding();
    let spawned = keel_task::Builder::new("driver-manager").spawn(move || {
        let engine = match keel_wasm::engine() {
            Ok(engine) => engine,
            Err(e) => {
                println!("drivers: WebAssembly is unavailable: {e}");
                keel_dd_host::end_binding();
                return;
            }
        };
        let mut images = Vec::new();
        for driver in drivers {
            match image(&driver) {
                Ok(image) => images.push(image),
                Err(why) => println!("drivers: {why}"),
            }
        }
        let functions: Vec<PciFunction> = keel_pci::functions().iter().map(describe).collect();
        keel_dd_host::bind_all(engine, &PCI_CONFIG, &functions, images);
        keel_dd_host::end_binding();
    });
    if spawned.is_err() {
        keel_dd_host::end_binding();
        println!("drivers: cannot start the driver manager");
    }
}

fn image(driver: &BootDriver) -> Result<DriverImage, String> {
    let manifest = keel_dd_host::parse_manifest(&driver.manifest).map_err(|e| format!("{e}"))?;
    let artifact = lz4_flex::decompress_size_prepended(driver.artifact)
        .map_err(|e| format!("{}: its compressed image is damaged ({e})", manifest.name))?;
    Ok(DriverImage { manifest, artifact })
}

/// The PCI function `keel-pci` found with this vendor and device id, as a driver host sees it.
pub fn function_with_id(vendor: u16, device: u16) -> Option<PciFunction> {
    keel_pci::functions()
        .iter()
        .find(|f| f.vendor_id == vendor && f.device_id == device)
        .map(describe)
}

/// `drivers [-v]`: every bound driver instance with its device, state and interrupts handled;
/// `-v` adds the last lines each one logged. `drivers restart NAME [KEY=VALUE...]` starts a
/// driver again where its instance ended, with those parameters.
pub fn list(args: &[String]) -> Result<(), String> {
    const USAGE: &str = "usage: drivers [-v] | drivers restart NAME [KEY=VALUE...]";
    if let [command, name, parameters @ ..] = args
        && command == "restart"
    {
        let parameters = parameters
            .iter()
            .map(|word| {
                word.split_once('=')
                    .map(|(k, v)| (String::from(k), String::from(v)))
                    .ok_or_else(|| format!("'{word}' is not KEY=VALUE ({USAGE})"))
            })
            .collect::<Result<Vec<_>, String>>()?;
        let started = keel_dd_host::manager::restart(name, parameters)?;
        println!("{name}: {started} instance(s) restarted");
        return Ok(());
    }
    let verbose = match args {
        [] => false,
        [flag] if flag == "-v" => true,
        _ => return Err(String::from(USAGE)),
    };
    let records = keel_dd_host::records();
    if keel_dd_host::binding() {
        println!("(the driver manager is still binding the boot image's drivers)");
    }
    if records.is_empty() {
        println!("no drivers bound");
        return Ok(());
    }
    println!(
        "{:<9} {:<11} {:<16} {:>5} {:<9} DETAIL",
        "DEVICE", "ID", "DRIVER", "TASK", "STATE"
    );
    for record in records {
        let a = record.function.address;
        let (state, detail) = match &record.state {
            DriverState::Starting => ("starting", String::new()),
            DriverState::Running => ("running", String::new()),
            DriverState::Finished(report) => ("finished", report.clone()),
            DriverState::Failed(why) => ("failed", why.clone()),
        };
        println!(
            "{:02x}:{:02x}.{:<3} {:04x}:{:04x}   {:<16} {:>5} {:<9} interrupts={} {}",
            a.bus,
            a.device,
            a.function,
            record.function.id.vendor,
            record.function.id.device,
            record.driver,
            record.task,
            state,
            record.interrupts(),
            detail.replace('\n', "; ")
        );
        if verbose {
            if !record.parameters.is_empty() {
                let words: Vec<String> = record
                    .parameters
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect();
                println!("    parameters: {}", words.join(" "));
            }
            for line in record.log() {
                println!("    {line}");
            }
        }
    }
    Ok(())
}
