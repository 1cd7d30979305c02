//! A fake PCI function behind a fake [`Platform`], for the host tests: a register file with side
//! effects, an I/O port range, configuration space with an MSI capability, DMA memory as
//! vectors, an interrupt that register writes fire, and a clock that only moves when used.
//! Every access that reaches it is recorded, and any access outside what the host granted is
//! recorded as a violation.

#![allow(dead_code)]

pub mod ahci;
pub mod e1000;

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use wasi_dd::platform::{DmaMemory, InterruptLine, LogLevel, MmioWindow, Platform, PlatformError};
use wasi_dd::types::{Access, Bar, BarKind, DeviceId, PciAddress, PciFunction};
use wasi_dd::{DriverHost, Limits, TestDriver};
use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Engine, Store};

pub const BAR0_BASE: u64 = 0xfebc_0000;
pub const BAR0_SIZE: u64 = 0x1000;
pub const PORT_BASE: u64 = 0xc000;
pub const PORT_COUNT: u64 = 0x40;
pub const BAR2_BASE: u64 = 0x8_0000_0000;
pub const BAR2_SIZE: u64 = 0x2000;
pub const DMA_BASE: u64 = 0x4000_0000;

/// Registers of BAR 0.
pub const CTRL: u64 = 0x000;
pub const CTRL_RESET: u64 = 1 << 31;
pub const STATUS: u64 = 0x008;
pub const STATUS_VALUE: u64 = 0x83;
pub const ICR: u64 = 0x0c0;
pub const ICS: u64 = 0x0c8;
/// Reads of CTRL that still show RESET after it was set.
pub const RESET_READS: u32 = 3;
/// How far the clock moves on each `now_ns`.
pub const CLOCK_STEP_NS: u64 = 100;

pub const MSI_CAPABILITY: usize = 0x50;
pub const VENDOR_CAPABILITY: usize = 0x60;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    ConfigRead {
        offset: u16,
        width: Access,
    },
    ConfigWrite {
        offset: u16,
        width: Access,
        value: u32,
    },
    MapMmio {
        base: u64,
        size: u64,
    },
    UnmapMmio {
        base: u64,
    },
    MmioRead {
        base: u64,
        offset: u64,
        width: Access,
    },
    MmioWrite {
        base: u64,
        offset: u64,
        width: Access,
        value: u64,
    },
    PortRead {
        port: u16,
        width: Access,
    },
    PortWrite {
        port: u16,
        width: Access,
        value: u32,
    },
    AllocateDma {
        size: u64,
        align: u64,
        address: u64,
    },
    FreeDma {
        address: u64,
    },
    DmaRead {
        address: u64,
        offset: u64,
        len: u64,
    },
    DmaWrite {
        address: u64,
        offset: u64,
        len: u64,
    },
    RouteInterrupt,
    Sleep(u64),
    Log(LogLevel, String),
}

#[derive(Default)]
struct Interrupt {
    masked: bool,
    /// Delivered and not yet consumed by a wait.
    pending: bool,
    /// Fired while masked: delivered on unmask.
    deferred: bool,
    count: u64,
}

pub struct State {
    pub events: Vec<Event>,
    pub violations: Vec<String>,
    pub config: [u8; 256],
    pub bar0: Vec<u8>,
    pub bar2: Vec<u8>,
    pub ports: Vec<u8>,
    reset_reads_left: u32,
    icr: u64,
    interrupt: Interrupt,
    pub now: u64,
    next_dma: u64,
    pub dma_live: Vec<(u64, u64)>,
}

fn load(bytes: &[u8], offset: u64, width: Access) -> u64 {
    let mut value = 0u64;
    for i in (0..width.bytes()).rev() {
        value = (value << 8) | u64::from(bytes[(offset + i) as usize]);
    }
    value
}

fn store(bytes: &mut [u8], offset: u64, width: Access, value: u64) {
    for i in 0..width.bytes() {
        bytes[(offset + i) as usize] = (value >> (8 * i)) as u8;
    }
}

fn fits(offset: u64, width: Access, size: u64) -> bool {
    offset.is_multiple_of(width.bytes())
        && offset.checked_add(width.bytes()).is_some_and(|e| e <= size)
}

impl State {
    fn new() -> Self {
        let mut config = [0u8; 256];
        let mut put = |offset: usize, width: Access, value: u64| {
            store(&mut config, offset as u64, width, value)
        };
        put(0x00, Access::W16, 0x8086);
        put(0x02, Access::W16, 0x100e);
        put(0x06, Access::W16, 0x0010);
        put(0x08, Access::W8, 0x03);
        put(0x0b, Access::W8, 0x02);
        put(0x10, Access::W32, BAR0_BASE);
        put(0x14, Access::W32, PORT_BASE | 1);
        put(0x18, Access::W32, (BAR2_BASE & 0xffff_ffff) | 0xc);
        put(0x1c, Access::W32, BAR2_BASE >> 32);
        put(0x2c, Access::W16, 0x1af4);
        put(0x2e, Access::W16, 0x1100);
        put(0x34, Access::W8, MSI_CAPABILITY as u64);
        put(0x3c, Access::W8, 11);
        put(0x3d, Access::W8, 1);
        put(MSI_CAPABILITY, Access::W8, 0x05);
        put(MSI_CAPABILITY + 1, Access::W8, VENDOR_CAPABILITY as u64);
        put(MSI_CAPABILITY + 2, Access::W16, 0x0080);
        put(VENDOR_CAPABILITY, Access::W8, 0x09);
        put(VENDOR_CAPABILITY + 1, Access::W8, 0);
        put(VENDOR_CAPABILITY + 2, Access::W8, 0x10);
        State {
            events: Vec::new(),
            violations: Vec::new(),
            config,
            bar0: vec![0; BAR0_SIZE as usize],
            bar2: vec![0; BAR2_SIZE as usize],
            ports: vec![0; PORT_COUNT as usize],
            reset_reads_left: 0,
            icr: 0,
            interrupt: Interrupt::default(),
            now: 1_000_000,
            next_dma: DMA_BASE,
            dma_live: Vec::new(),
        }
    }

    fn fire(&mut self) {
        if self.interrupt.masked {
            self.interrupt.deferred = true;
        } else {
            self.interrupt.pending = true;
            self.interrupt.count += 1;
        }
    }

    fn bar0_read(&mut self, offset: u64, width: Access) -> u64 {
        match offset {
            CTRL if width == Access::W32 => {
                if self.reset_reads_left > 0 {
                    self.reset_reads_left -= 1;
                } else {
                    let value = load(&self.bar0, CTRL, width) & !CTRL_RESET;
                    store(&mut self.bar0, CTRL, width, value);
                }
                load(&self.bar0, CTRL, width)
            }
            STATUS if width == Access::W32 => STATUS_VALUE,
            ICR if width == Access::W32 => std::mem::take(&mut self.icr),
            _ => load(&self.bar0, offset, width),
        }
    }

    fn bar0_write(&mut self, offset: u64, width: Access, value: u64) {
        match offset {
            CTRL if width == Access::W32 => {
                if value & CTRL_RESET != 0 {
                    self.reset_reads_left = RESET_READS;
                }
                store(&mut self.bar0, CTRL, width, value);
            }
            STATUS if width == Access::W32 => {}
            ICS if width == Access::W32 => {
                self.icr |= value;
                if value != 0 {
                    self.fire();
                }
            }
            _ => store(&mut self.bar0, offset, width, value),
        }
    }
}

/// The fake platform. Clones share one device.
#[derive(Clone)]
pub struct FakePlatform {
    state: Arc<Mutex<State>>,
}

impl FakePlatform {
    pub fn new() -> Self {
        FakePlatform {
            state: Arc::new(Mutex::new(State::new())),
        }
    }

    pub fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn events(&self) -> Vec<Event> {
        self.state().events.clone()
    }

    pub fn violations(&self) -> Vec<String> {
        self.state().violations.clone()
    }

    /// The function as the host's PCI enumeration would describe it.
    pub fn function() -> PciFunction {
        PciFunction {
            address: PciAddress {
                segment: 0,
                bus: 0,
                device: 3,
                function: 0,
            },
            id: DeviceId {
                vendor: 0x8086,
                device: 0x100e,
                subsystem_vendor: 0x1af4,
                subsystem: 0x1100,
                class: 0x02,
                subclass: 0x00,
                prog_if: 0x00,
                revision: 0x03,
            },
            bars: vec![
                Bar {
                    index: 0,
                    kind: BarKind::Memory32,
                    base: BAR0_BASE,
                    size: BAR0_SIZE,
                    prefetchable: false,
                },
                Bar {
                    index: 1,
                    kind: BarKind::Io,
                    base: PORT_BASE,
                    size: PORT_COUNT,
                    prefetchable: false,
                },
                Bar {
                    index: 2,
                    kind: BarKind::Memory64,
                    base: BAR2_BASE,
                    size: BAR2_SIZE,
                    prefetchable: true,
                },
            ],
        }
    }

    fn is_ours(&self, function: PciAddress) -> bool {
        function == Self::function().address
    }
}

pub struct FakeWindow {
    state: Arc<Mutex<State>>,
    base: u64,
    size: u64,
}

impl FakeWindow {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl MmioWindow for FakeWindow {
    fn read(&self, offset: u64, access: Access) -> u64 {
        let mut state = self.state();
        state.events.push(Event::MmioRead {
            base: self.base,
            offset,
            width: access,
        });
        if !fits(offset, access, self.size) {
            state
                .violations
                .push(format!("mmio read {:#x}+{offset:#x}", self.base));
            return 0;
        }
        if self.base == BAR0_BASE {
            state.bar0_read(offset, access)
        } else {
            load(&state.bar2, offset, access)
        }
    }

    fn write(&self, offset: u64, access: Access, value: u64) {
        let mut state = self.state();
        state.events.push(Event::MmioWrite {
            base: self.base,
            offset,
            width: access,
            value,
        });
        if !fits(offset, access, self.size) {
            state
                .violations
                .push(format!("mmio write {:#x}+{offset:#x}", self.base));
            return;
        }
        if self.base == BAR0_BASE {
            state.bar0_write(offset, access, value);
        } else {
            store(&mut state.bar2, offset, access, value);
        }
    }
}

impl Drop for FakeWindow {
    fn drop(&mut self) {
        let base = self.base;
        self.state().events.push(Event::UnmapMmio { base });
    }
}

pub struct FakeDma {
    state: Arc<Mutex<State>>,
    address: u64,
    data: Mutex<Vec<u8>>,
}

impl FakeDma {
    fn record(&self, event: Event, ok: bool) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if !ok {
            state.violations.push(format!("dma access {event:?}"));
        }
        state.events.push(event);
    }
}

impl DmaMemory for FakeDma {
    fn len(&self) -> u64 {
        self.data.lock().unwrap().len() as u64
    }

    fn device_address(&self) -> u64 {
        self.address
    }

    fn read(&self, offset: u64, out: &mut [u8]) {
        let data = self.data.lock().unwrap();
        let ok = offset as usize + out.len() <= data.len();
        if ok {
            out.copy_from_slice(&data[offset as usize..offset as usize + out.len()]);
        }
        drop(data);
        let len = out.len() as u64;
        let address = self.address;
        self.record(
            Event::DmaRead {
                address,
                offset,
                len,
            },
            ok,
        );
    }

    fn write(&self, offset: u64, bytes: &[u8]) {
        let mut data = self.data.lock().unwrap();
        let ok = offset as usize + bytes.len() <= data.len();
        if ok {
            data[offset as usize..offset as usize + bytes.len()].copy_from_slice(bytes);
        }
        drop(data);
        let len = bytes.len() as u64;
        let address = self.address;
        self.record(
            Event::DmaWrite {
                address,
                offset,
                len,
            },
            ok,
        );
    }

    fn read_value(&self, offset: u64, access: Access) -> u64 {
        let data = self.data.lock().unwrap();
        let ok = fits(offset, access, data.len() as u64);
        let value = if ok { load(&data, offset, access) } else { 0 };
        drop(data);
        let address = self.address;
        self.record(
            Event::DmaRead {
                address,
                offset,
                len: access.bytes(),
            },
            ok,
        );
        value
    }

    fn write_value(&self, offset: u64, access: Access, value: u64) {
        let mut data = self.data.lock().unwrap();
        let ok = fits(offset, access, data.len() as u64);
        if ok {
            store(&mut data, offset, access, value);
        }
        drop(data);
        let address = self.address;
        self.record(
            Event::DmaWrite {
                address,
                offset,
                len: access.bytes(),
            },
            ok,
        );
    }
}

impl Drop for FakeDma {
    fn drop(&mut self) {
        let address = self.address;
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.events.push(Event::FreeDma { address });
        state.dma_live.retain(|(a, _)| *a != address);
    }
}

pub struct FakeInterrupt {
    state: Arc<Mutex<State>>,
}

impl FakeInterrupt {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl InterruptLine for FakeInterrupt {
    fn wait(&self, timeout_ns: u64) -> bool {
        let mut state = self.state();
        if std::mem::take(&mut state.interrupt.pending) {
            return true;
        }
        state.now += timeout_ns;
        false
    }

    fn acknowledge(&self) {}

    fn mask(&self) {
        self.state().interrupt.masked = true;
    }

    fn unmask(&self) {
        let mut state = self.state();
        state.interrupt.masked = false;
        if std::mem::take(&mut state.interrupt.deferred) {
            state.fire();
        }
    }

    fn count(&self) -> u64 {
        self.state().interrupt.count
    }
}

impl Platform for FakePlatform {
    type Mmio = FakeWindow;
    type Dma = FakeDma;
    type Interrupt = FakeInterrupt;

    fn config_read(&self, function: PciAddress, offset: u16, access: Access) -> u32 {
        let mut state = self.state();
        state.events.push(Event::ConfigRead {
            offset,
            width: access,
        });
        if !self.is_ours(function) || access == Access::W64 || !fits(offset.into(), access, 256) {
            state.violations.push(format!("config read {offset:#x}"));
            return 0;
        }
        load(&state.config, offset.into(), access) as u32
    }

    fn config_write(&self, function: PciAddress, offset: u16, access: Access, value: u32) {
        let mut state = self.state();
        state.events.push(Event::ConfigWrite {
            offset,
            width: access,
            value,
        });
        if !self.is_ours(function) || access == Access::W64 || !fits(offset.into(), access, 256) {
            state.violations.push(format!("config write {offset:#x}"));
            return;
        }
        store(&mut state.config, offset.into(), access, value.into());
    }

    fn config_space_size(&self, _function: PciAddress) -> u16 {
        256
    }

    fn map_mmio(&self, base: u64, size: u64) -> Result<FakeWindow, PlatformError> {
        let mut state = self.state();
        state.events.push(Event::MapMmio { base, size });
        if !matches!(
            (base, size),
            (BAR0_BASE, BAR0_SIZE) | (BAR2_BASE, BAR2_SIZE)
        ) {
            state
                .violations
                .push(format!("map {base:#x} size {size:#x}"));
        }
        Ok(FakeWindow {
            state: self.state.clone(),
            base,
            size,
        })
    }

    fn port_read(&self, port: u16, access: Access) -> u32 {
        let mut state = self.state();
        state.events.push(Event::PortRead {
            port,
            width: access,
        });
        let offset = u64::from(port).wrapping_sub(PORT_BASE);
        if access == Access::W64 || !fits(offset, access, PORT_COUNT) {
            state.violations.push(format!("port read {port:#x}"));
            return 0;
        }
        load(&state.ports, offset, access) as u32
    }

    fn port_write(&self, port: u16, access: Access, value: u32) {
        let mut state = self.state();
        state.events.push(Event::PortWrite {
            port,
            width: access,
            value,
        });
        let offset = u64::from(port).wrapping_sub(PORT_BASE);
        if access == Access::W64 || !fits(offset, access, PORT_COUNT) {
            state.violations.push(format!("port write {port:#x}"));
            return;
        }
        store(&mut state.ports, offset, access, value.into());
    }

    fn allocate_dma(
        &self,
        function: PciAddress,
        size: u64,
        align: u64,
    ) -> Result<FakeDma, PlatformError> {
        let mut state = self.state();
        if !self.is_ours(function) || !align.is_power_of_two() || size == 0 {
            state
                .violations
                .push(format!("allocate {size} align {align}"));
        }
        let address = state.next_dma.next_multiple_of(align.max(4096));
        state.next_dma = address + size;
        state.events.push(Event::AllocateDma {
            size,
            align,
            address,
        });
        state.dma_live.push((address, size));
        Ok(FakeDma {
            state: self.state.clone(),
            address,
            data: Mutex::new(vec![0; size as usize]),
        })
    }

    fn route_interrupt(&self, function: PciAddress) -> Result<FakeInterrupt, PlatformError> {
        let mut state = self.state();
        if !self.is_ours(function) {
            state.violations.push("route another function".into());
        }
        state.events.push(Event::RouteInterrupt);
        Ok(FakeInterrupt {
            state: self.state.clone(),
        })
    }

    fn now_ns(&self) -> u64 {
        let mut state = self.state();
        let now = state.now;
        state.now += CLOCK_STEP_NS;
        now
    }

    fn sleep_ns(&self, ns: u64) {
        let mut state = self.state();
        state.now = state.now.saturating_add(ns);
        state.events.push(Event::Sleep(ns));
    }

    fn log(&self, level: LogLevel, message: &str) {
        self.state().events.push(Event::Log(level, message.into()));
    }
}

/// The engine the tests compile drivers with (Cranelift on the host).
pub fn engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(|| {
        let mut config = Config::new();
        config.wasm_component_model(true);
        Engine::new(&config).expect("a host engine")
    })
}

/// `target/drivers-wasm`, where `keel build-drivers` puts the driver components.
pub fn drivers_dir() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => root.join(dir).join("drivers-wasm"),
        None => root.join("target/drivers-wasm"),
    }
}

/// A driver component, compiled once per test process.
pub fn driver(name: &'static str) -> Component {
    static CACHE: Mutex<Vec<(&'static str, Component)>> = Mutex::new(Vec::new());
    let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, component)) = cache.iter().find(|(n, _)| *n == name) {
        return component.clone();
    }
    let path = drivers_dir().join(format!("{name}.wasm"));
    assert!(
        path.is_file(),
        "{} is missing: build the driver components first with `keel build-drivers` \
         (`cargo run -p keel-toolchain -- build-drivers`, or `make test`)",
        path.display()
    );
    let component = Component::from_file(engine(), &path)
        .unwrap_or_else(|e| panic!("compiling {}: {e:#}", path.display()));
    cache.push((name, component.clone()));
    component
}

/// A store and linker with one [`DriverHost`] over `platform`.
pub fn instance(
    name: &'static str,
    platform: &FakePlatform,
    limits: Limits,
) -> (Store<DriverHost<FakePlatform>>, TestDriver) {
    let mut linker = Linker::new(engine());
    wasi_dd::add_to_linker(&mut linker, |host: &mut DriverHost<FakePlatform>| host)
        .expect("linking WASI-dd");
    let host = DriverHost::new(Arc::new(platform.clone()), FakePlatform::function())
        .with_limits(limits)
        .with_name(name);
    let mut store = Store::new(engine(), host);
    let driver = TestDriver::instantiate(&mut store, &driver(name), &linker)
        .unwrap_or_else(|e| panic!("instantiating {name}: {e:#}"));
    (store, driver)
}

/// Runs `scenario` of driver `name` on a fresh fake device; returns the driver's answer (or the
/// trap) and the platform to inspect.
pub fn run(
    name: &'static str,
    scenario: &str,
    limits: Limits,
) -> (wasmtime::Result<Result<String, String>>, FakePlatform) {
    let platform = FakePlatform::new();
    let (mut store, driver) = instance(name, &platform, limits);
    let device = store.data_mut().device().expect("a device handle");
    let result = driver.call_run(&mut store, device, scenario);
    drop(store);
    (result, platform)
}
