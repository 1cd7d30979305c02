//! `wasi-dd-run`: binds a driver component to a PCI function through VFIO (or, without an
//! IOMMU and only when told `--unconfined`, through UIO) and serves it to Linux by its world: a
//! TAP interface for a nic-driver, NBD devices for a block-driver, a report for a test-driver.
//! Every check that can be made before touching the device is made first (address, binding,
//! IOMMU group, component and world against the class).

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread::JoinHandle;
use std::time::Instant;

use wasi_dd::DriverHost;
use wasi_dd::bindings::block_driver::exports::wasi_dd::dd::block::DiskInfo;
use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Engine, Store};

use crate::block::{self, BlockServer};
use crate::nbd;
use crate::nic::{self, NicLoop};
use crate::pci::{self, Sysfs, SysfsFunction, UIO_PCI_GENERIC, VFIO_PCI};
use crate::platform::{LinuxPlatform, VfioPlatform};
use crate::sys::{self, Interest, NbdControl, NbdDevice, Tap};
use crate::uio::{UNCONFINED_WARNING, UioPlatform};
use crate::vfio::{NO_IOMMU, Vfio};
use crate::world::{self, World};

/// What `wasi-dd-run run` was asked to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunOptions {
    pub address: String,
    pub driver: PathBuf,
    /// `key=value` words for the driver (`scenario` is the runner's, for test drivers).
    pub parameters: Vec<(String, String)>,
    /// Hand the function to vfio-pci (or uio_pci_generic) if it is not bound to it.
    pub bind: bool,
    /// Without an IOMMU, drive the function through UIO with DMA unconfined.
    pub unconfined: bool,
    pub tap: String,
    /// The first `/dev/nbdN` to consider for disks.
    pub first_nbd: u32,
    pub verbose: bool,
}

impl RunOptions {
    pub fn new(address: &str, driver: &Path) -> RunOptions {
        RunOptions {
            address: address.to_string(),
            driver: driver.to_path_buf(),
            parameters: Vec::new(),
            bind: false,
            unconfined: false,
            tap: String::from("wdd0"),
            first_nbd: 0,
            verbose: false,
        }
    }
}

/// The engine: Cranelift for the host CPU, the component model, and epoch interruption (so
/// that a signal can end a driver call that never returns).
pub fn engine() -> Result<Engine, String> {
    let mut config = Config::new();
    config.wasm_component_model(true);
    config.epoch_interruption(true);
    Engine::new(&config).map_err(|e| format!("creating the Wasmtime engine: {e:#}"))
}

/// Reads and compiles a driver component and finds its world.
pub fn load_driver(engine: &Engine, path: &Path) -> Result<(Component, World), String> {
    let shown = path.display();
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {shown}: {e}"))?;
    world::check_binary(&bytes).map_err(|why| format!("{shown} is no driver: {why}"))?;
    let component = Component::from_binary(engine, &bytes)
        .map_err(|e| format!("{shown} is no valid component: {e:#}"))?;
    let world = world::detect(engine, &component).map_err(|why| format!("{shown}: {why}"))?;
    Ok((component, world))
}

/// `wasi-dd-run inspect DRIVER.wasm`: the world of a component.
pub fn inspect(path: &Path) -> Result<String, String> {
    let engine = engine()?;
    let (_, world) = load_driver(&engine, path)?;
    Ok(format!("{}: {world}", path.display()))
}

/// How the runner reaches a function.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Binding {
    /// vfio-pci: DMA confined by the IOMMU.
    Vfio,
    /// uio_pci_generic, on a machine without an IOMMU: DMA unconfined.
    Uio,
}

/// The function at `address`, bound to vfio-pci, or without an IOMMU and if `unconfined`, to
/// uio_pci_generic (after `--bind` if asked).
fn bound_function(
    address: &str,
    bind: bool,
    unconfined: bool,
) -> Result<(SysfsFunction, Binding), String> {
    let address = pci::parse_address(address)?;
    let function = Sysfs::default().function(address)?;
    let (driver, binding) = match function.iommu_group() {
        Some(_) => (VFIO_PCI, Binding::Vfio),
        None if unconfined => (UIO_PCI_GENERIC, Binding::Uio),
        None => return Err(format!("{}: {NO_IOMMU}", function.name)),
    };
    match function.driver().as_deref() {
        Some(current) if current == driver.name => {}
        current if bind => {
            function.bind_to(driver)?;
            eprintln!(
                "wasi-dd-run: {} handed to {}{}",
                function.name,
                driver.name,
                current.map(|d| format!(" (was {d})")).unwrap_or_default()
            );
        }
        current => {
            let now = match current {
                Some(other) => format!("is bound to {other}"),
                None => String::from("has no driver"),
            };
            return Err(format!(
                "{} {now}, not {}. Hand it over:\n{}\nor run again with --bind.",
                function.name,
                driver.name,
                function.instructions_for(driver)
            ));
        }
    }
    Ok((function, binding))
}

/// `wasi-dd-run info ADDRESS`: what Linux and VFIO say about a function.
pub fn info(address: &str) -> Result<Vec<String>, String> {
    let parsed = pci::parse_address(address)?;
    let function = Sysfs::default().function(parsed)?;
    let mut lines = vec![format!("{}:", function.name)];
    let (class, subclass) = function.class()?;
    let ids =
        ["vendor", "device"].map(|name| pci::read_attribute(&function, name).unwrap_or_default());
    lines.push(format!(
        "  id {}:{}, class {class:02x}{subclass:02x} ({}), takes a {}",
        ids[0].trim_start_matches("0x"),
        ids[1].trim_start_matches("0x"),
        pci::class_name(class),
        World::for_class(class)
    ));
    lines.push(format!(
        "  driver: {}",
        function.driver().unwrap_or_else(|| String::from("none"))
    ));
    let Some(group) = function.iommu_group() else {
        lines.push(format!("  {NO_IOMMU}"));
        if function.driver().as_deref() == Some(UIO_PCI_GENERIC.name) {
            let platform = UioPlatform::open(&function, false)?;
            for bar in &platform.function().bars {
                lines.push(format!(
                    "  BAR {}: {:?}, {} bytes",
                    bar.index, bar.kind, bar.size
                ));
            }
            if let Some(uio) = function.uio_device() {
                lines.push(format!("  INTx through {}", uio.display()));
            }
        }
        return Ok(lines);
    };
    lines.push(format!("  IOMMU group {group}"));
    for (member, driver) in function.group_members() {
        lines.push(format!(
            "    shares it with {member} ({})",
            driver.as_deref().unwrap_or("no driver")
        ));
    }
    if function.driver().as_deref() == Some("vfio-pci") {
        let (vfio, layout) = Vfio::open(&function)?;
        let platform = VfioPlatform::new(vfio, &layout, parsed, false)?;
        lines.extend(platform.describe().into_iter().map(|l| format!("  {l}")));
    }
    Ok(lines)
}

/// Signals, turned into a clean stop: the first one asks the serving loops to stop (they poll
/// [`Stopper::event`]); one more than `patience` also interrupts a driver call in progress (a
/// driver that never returns), through Wasmtime's epochs.
struct Stopper {
    signals: AtomicU32,
    /// Signals before a running driver call is interrupted: 1 while a single call is the whole
    /// job (init, a test scenario), 2 while a loop serves Linux.
    patience: AtomicU32,
    event: File,
}

impl Stopper {
    fn start(engine: &Engine) -> Result<Arc<Stopper>, String> {
        let signals = sys::termination_signals().map_err(|e| format!("setting up signals: {e}"))?;
        let stopper = Arc::new(Stopper {
            signals: AtomicU32::new(0),
            patience: AtomicU32::new(1),
            event: sys::eventfd().map_err(|e| format!("eventfd: {e}"))?,
        });
        let shared = Arc::clone(&stopper);
        let engine = engine.clone();
        std::thread::Builder::new()
            .name(String::from("signals"))
            .spawn(move || {
                let mut signals = signals;
                loop {
                    if sys::poll(&[(signals.as_fd(), Interest::Read)], None).is_err() {
                        return;
                    }
                    let mut info = [0u8; 128];
                    if !matches!(signals.read(&mut info), Ok(n) if n > 0) {
                        continue;
                    }
                    shared.signals.fetch_add(1, Ordering::AcqRel);
                    engine.increment_epoch();
                    let _ = (&shared.event).write_all(&1u64.to_ne_bytes());
                }
            })
            .map_err(|e| format!("starting the signal thread: {e}"))?;
        Ok(stopper)
    }

    fn interrupting(&self) -> bool {
        self.signals.load(Ordering::Acquire) >= self.patience.load(Ordering::Acquire)
    }
}

/// `wasi-dd-run run`: binds, instantiates and serves until the driver fails or a signal.
pub fn run(options: &RunOptions) -> Result<(), String> {
    // Signals are taken over first: from here on a SIGINT or SIGTERM is never lost (a shell
    // starts background jobs with SIGINT ignored, and a default action would kill the process
    // mid-DMA); it ends the run at the next point that checks.
    let engine = engine()?;
    let stopper = Stopper::start(&engine)?;
    let (function, binding) = bound_function(&options.address, options.bind, options.unconfined)?;
    let name = function.name.clone();
    let (class, subclass) = function.class()?;
    let compile_start = Instant::now();
    let (component, world) = load_driver(&engine, &options.driver)?;
    world::check_fits(world, class, subclass, &name)?;
    eprintln!(
        "wasi-dd-run: {} is a {world}; compiled in {} ms",
        options.driver.display(),
        compile_start.elapsed().as_millis()
    );
    // Pinned DMA memory counts against RLIMIT_MEMLOCK.
    if let Ok(Some(limit)) = sys::raise_memlock_limit()
        && limit < (96 << 20)
    {
        eprintln!(
            "wasi-dd-run: warning: locked memory is limited to {} KiB (ulimit -l); DMA \
             allocations beyond it fail",
            limit >> 10
        );
    }
    if stopper.signals.load(Ordering::Acquire) > 0 {
        return Err(String::from("stopped by a signal"));
    }
    match &binding {
        Binding::Vfio => {
            let (vfio, layout) = Vfio::open(&function)?;
            let platform = VfioPlatform::new(vfio, &layout, function.address, options.verbose)?;
            serve(
                Arc::new(platform),
                &engine,
                &component,
                world,
                options,
                &stopper,
            )
        }
        Binding::Uio => {
            eprintln!("wasi-dd-run: warning: {UNCONFINED_WARNING}");
            let platform = UioPlatform::open(&function, options.verbose)?;
            serve(
                Arc::new(platform),
                &engine,
                &component,
                world,
                options,
                &stopper,
            )
        }
    }
}

/// Instantiates the driver on `platform` and serves it by its world until it fails or a
/// signal.
fn serve<P: LinuxPlatform>(
    platform: Arc<P>,
    engine: &Engine,
    component: &Component,
    world: World,
    options: &RunOptions,
    stopper: &Arc<Stopper>,
) -> Result<(), String> {
    let name = pci::address_name(platform.function().address);
    let driver_name = options
        .driver
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| String::from("driver"));
    let mut parameters = options.parameters.clone();
    let scenario = if world == World::Test {
        let position = parameters.iter().position(|(key, _)| key == "scenario");
        position.map(|p| parameters.remove(p).1)
    } else {
        None
    };
    let host = DriverHost::new(Arc::clone(&platform), platform.function().clone())
        .with_name(&driver_name)
        .with_parameters(parameters);
    let mut store = Store::new(engine, host);
    let epoch_stopper = Arc::clone(stopper);
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(move |_| {
        Ok(if epoch_stopper.interrupting() {
            wasmtime::UpdateDeadline::Interrupt
        } else {
            wasmtime::UpdateDeadline::Continue(1)
        })
    });
    let mut linker = Linker::new(engine);
    wasi_dd::add_to_linker(&mut linker, |host: &mut DriverHost<P>| host)
        .map_err(|e| format!("{e:#}"))?;
    let irq = {
        let platform = Arc::clone(&platform);
        move || platform.interrupt()
    };
    match world {
        World::Test => {
            let driver = wasi_dd::TestDriver::instantiate(&mut store, component, &linker)
                .map_err(|e| format!("cannot instantiate {driver_name}: {e:#}"))?;
            let device = store.data_mut().device().map_err(|e| format!("{e:#}"))?;
            let scenario = scenario.unwrap_or_else(|| String::from("default"));
            match driver.call_run(&mut store, device, &scenario) {
                Ok(Ok(report)) => {
                    println!("{report}");
                    Ok(())
                }
                Ok(Err(why)) => Err(format!("scenario {scenario} failed: {why}")),
                Err(trap) => Err(format!("{driver_name} trapped: {trap:#}")),
            }
        }
        World::Nic => {
            let mut tap = Tap::open(&options.tap).map_err(|e| {
                format!(
                    "creating TAP interface {}: {e} (needs /dev/net/tun, CONFIG_TUN, and \
                     CAP_NET_ADMIN)",
                    options.tap
                )
            })?;
            let driver = wasi_dd::NicDriver::instantiate(&mut store, component, &linker)
                .map_err(|e| format!("cannot instantiate {driver_name}: {e:#}"))?;
            let (state, mac) = NicLoop::start(&mut store, &driver)?;
            tap.set_mac(mac)
                .map_err(|e| format!("setting the MAC address of {}: {e}", tap.name()))?;
            tap.set_up()
                .map_err(|e| format!("bringing {} up: {e}", tap.name()))?;
            println!(
                "{}: {driver_name} on {name}, MAC {} (try: udhcpc -i {})",
                tap.name(),
                mac.map(|b| format!("{b:02x}")).join(":"),
                tap.name()
            );
            stopper.patience.store(2, Ordering::Release);
            let counters = nic::serve(&mut store, &driver, state, &mut tap, irq, &stopper.event)?;
            eprintln!(
                "wasi-dd-run: {}: received {} frames ({} bytes, {} dropped), sent {} ({} bytes, \
                 {} dropped); {} rounds, {} after an interrupt, {} timed out, {} ms busy, {} ms waiting",
                tap.name(),
                counters.received,
                counters.received_bytes,
                counters.received_dropped,
                counters.sent,
                counters.sent_bytes,
                counters.sent_dropped,
                counters.rounds,
                counters.interrupts,
                counters.timeouts,
                counters.busy_ns / 1_000_000,
                counters.waiting_ns / 1_000_000
            );
            Ok(())
        }
        World::Block => {
            let driver = wasi_dd::BlockDriver::instantiate(&mut store, component, &linker)
                .map_err(|e| format!("cannot instantiate {driver_name}: {e:#}"))?;
            let disks = block::start(&mut store, &driver)?;
            if disks.is_empty() {
                return Err(format!("{driver_name} found no disks on {name}"));
            }
            let mut attached = Vec::new();
            let mut connections = Vec::new();
            let mut next = options.first_nbd;
            for disk in disks {
                let (nbd, stream) = match attach_nbd(&disk, &mut next) {
                    Ok(pair) => pair,
                    Err(why) => {
                        detach_all(attached, true);
                        return Err(why);
                    }
                };
                println!(
                    "{}: disk {} of {driver_name} on {name}: {} ({} sectors of {} bytes, {} MiB)",
                    nbd.path.display(),
                    disk.index,
                    disk.model.trim(),
                    disk.sector_count,
                    disk.sector_size,
                    (disk.sector_count * u64::from(disk.sector_size)) >> 20
                );
                connections.push((nbd.path.display().to_string(), disk, stream));
                attached.push(nbd);
            }
            let mut server = match BlockServer::new(connections) {
                Ok(server) => server,
                Err(e) => {
                    detach_all(attached, true);
                    return Err(format!("NBD connections: {e}"));
                }
            };
            stopper.patience.store(2, Ordering::Release);
            let devices: Vec<Arc<NbdDevice>> =
                attached.iter().map(|a| Arc::clone(&a.device)).collect();
            let served = block::serve(
                &mut store,
                &driver,
                &mut server,
                irq,
                &stopper.event,
                || {
                    for device in &devices {
                        let _ = device.control(NbdControl::Disconnect);
                    }
                },
            );
            let counters = server.counters;
            // Closing the connections ends the kernel's side, if it is still there.
            drop(server);
            detach_all(attached, served.is_err());
            eprintln!(
                "wasi-dd-run: {} reads ({} bytes), {} writes ({} bytes), {} flushes, {} errors",
                counters.reads,
                counters.bytes_read,
                counters.writes,
                counters.bytes_written,
                counters.flushes,
                counters.errors
            );
            served
        }
    }
}

/// One `/dev/nbdN` running a connection (its `NBD_DO_IT` in a thread).
struct AttachedNbd {
    path: PathBuf,
    device: Arc<NbdDevice>,
    thread: JoinHandle<()>,
}

/// Waits for every device's thread, asking the kernel to disconnect the devices first if
/// `disconnect` (after a failure: a served connection closes by itself).
fn detach_all(attached: Vec<AttachedNbd>, disconnect: bool) {
    for nbd in attached.iter().filter(|_| disconnect) {
        let _ = nbd.device.control(NbdControl::Disconnect);
    }
    for nbd in attached {
        let _ = nbd.thread.join();
    }
}

/// Whether `/dev/nbdN` is connected already (the kernel shows its server's pid).
fn nbd_in_use(number: u32) -> bool {
    Path::new(&format!("/sys/block/nbd{number}/pid")).exists()
}

/// Connects the next free `/dev/nbdN` (from `*next`) to a new socket pair for `disk`.
fn attach_nbd(
    disk: &DiskInfo,
    next: &mut u32,
) -> Result<(AttachedNbd, std::os::unix::net::UnixStream), String> {
    loop {
        let number = *next;
        let path = PathBuf::from(format!("/dev/nbd{number}"));
        if !path.exists() {
            return Err(if number == 0 {
                String::from("there is no /dev/nbd0: load Linux's NBD driver (modprobe nbd)")
            } else {
                format!("no free NBD device from /dev/nbd{number} on (modprobe nbd nbds_max=N)")
            });
        }
        *next += 1;
        if nbd_in_use(number) {
            continue;
        }
        let device =
            NbdDevice::open(&path).map_err(|e| format!("opening {}: {e}", path.display()))?;
        let (ours, theirs) =
            std::os::unix::net::UnixStream::pair().map_err(|e| format!("socketpair: {e}"))?;
        let setup = [
            // Flags first: Linux applies them (a write cache that is flushed) when the size
            // is set.
            NbdControl::SetFlags(nbd::FLAG_HAS_FLAGS | nbd::FLAG_SEND_FLUSH),
            NbdControl::SetBlockSize(u64::from(disk.sector_size)),
            NbdControl::SetSizeBlocks(disk.sector_count),
            NbdControl::SetSocket(sys::raw(theirs.as_fd())),
        ];
        for control in setup {
            device
                .control(control)
                .map_err(|e| format!("{}: {control:?}: {e}", path.display()))?;
        }
        let device = Arc::new(device);
        let running = Arc::clone(&device);
        let shown = path.display().to_string();
        let thread = std::thread::Builder::new()
            .name(format!("nbd{number}"))
            .spawn(move || {
                if let Err(e) = running.control(NbdControl::DoIt) {
                    eprintln!("wasi-dd-run: {shown}: NBD_DO_IT ended: {e}");
                }
                let _ = running.control(NbdControl::ClearQueue);
                let _ = running.control(NbdControl::ClearSocket);
                // The kernel's end of the connection lives until the device stops.
                drop(theirs);
            })
            .map_err(|e| format!("starting a thread: {e}"))?;
        // Linux reads the partition table at the first open after the device started (it
        // marks the disk for a scan when it sets its size, which is after the pid appears):
        // open it once then, from a thread, as the reads are served by the loop this thread is
        // about to run, so that /dev/nbdNpM appear without waiting for someone to open the disk.
        let scan = path.clone();
        let _ = std::thread::Builder::new()
            .name(format!("nbd{number}-scan"))
            .spawn(move || {
                let size = format!("/sys/block/nbd{number}/size");
                for _ in 0..1000 {
                    let sized = std::fs::read_to_string(&size)
                        .is_ok_and(|s| s.trim().parse::<u64>().is_ok_and(|n| n > 0));
                    if nbd_in_use(number) && sized {
                        let _ = File::open(&scan);
                        return;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
            });
        return Ok((
            AttachedNbd {
                path,
                device,
                thread,
            },
            ours,
        ));
    }
}
