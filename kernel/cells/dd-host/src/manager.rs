//! The driver manager: matches driver components from the boot image to PCI functions, runs
//! one instance per function in its own task and store, and keeps a record for `drivers`.
//!
//! A driver module's boot command line says what it drives:
//! `driver NAME world=test-driver match=1234:11e8,class=0c03 [scenario=edu]`.
//! `match` entries are `vendor:device` or `class=CCSS` (class and subclass, hex).

use crate::platform::{ConfigSpace, KeelPlatform};
use alloc::format;
use alloc::string::{String, ToString};
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt;
use keel_sync::IrqSafeMutex;
use wasi_dd::types::PciFunction;
use wasi_dd::{DriverHost, TestDriver};
use wasmtime::component::{Component, Linker};
use wasmtime::{Engine, Store};

/// What a driver matches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeviceMatch {
    Id { vendor: u16, device: u16 },
    Class { class: u8, subclass: u8 },
}

impl DeviceMatch {
    fn matches(&self, function: &PciFunction) -> bool {
        match *self {
            DeviceMatch::Id { vendor, device } => {
                function.id.vendor == vendor && function.id.device == device
            }
            DeviceMatch::Class { class, subclass } => {
                function.id.class == class && function.id.subclass == subclass
            }
        }
    }
}

/// Which WASI-dd world a driver component exports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DriverWorld {
    Test,
    Nic,
    Block,
}

/// What a driver module's command line says about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Manifest {
    pub name: String,
    pub world: DriverWorld,
    pub matches: Vec<DeviceMatch>,
    /// For test drivers: the scenario to run at boot.
    pub scenario: Option<String>,
    /// Bound at boot (`bind=boot`, the default), or only run on request (`bind=manual`, for
    /// the benchmark drivers).
    pub bind_at_boot: bool,
}

/// A driver component from the boot image, with its manifest.
pub struct DriverImage {
    pub manifest: Manifest,
    /// The precompiled component (`keel-aot` output), already decompressed.
    pub artifact: Vec<u8>,
}

/// Why a driver module's command line is not usable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManifestError(pub String);

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Parses `NAME world=... match=... [scenario=...] [bind=boot|manual]` (the part after
/// `driver `).
pub fn parse_manifest(line: &str) -> Result<Manifest, ManifestError> {
    let mut words = line.split_whitespace();
    let name = words
        .next()
        .ok_or_else(|| ManifestError("a driver module needs a name".into()))?;
    let (mut world, mut matches, mut scenario, mut bind_at_boot) = (None, Vec::new(), None, true);
    for word in words {
        let (key, value) = word
            .split_once('=')
            .ok_or_else(|| ManifestError(format!("{name}: '{word}' is not key=value")))?;
        match key {
            "world" => {
                world = Some(match value {
                    "test-driver" => DriverWorld::Test,
                    "nic-driver" => DriverWorld::Nic,
                    "block-driver" => DriverWorld::Block,
                    other => {
                        return Err(ManifestError(format!("{name}: unknown world '{other}'")));
                    }
                })
            }
            "match" => {
                for rule in value.split(',') {
                    matches.push(parse_match(rule).ok_or_else(|| {
                        ManifestError(format!(
                            "{name}: bad match '{rule}' (want VVVV:DDDD or class=CCSS)"
                        ))
                    })?);
                }
            }
            "scenario" => scenario = Some(value.to_string()),
            "bind" => {
                bind_at_boot = match value {
                    "boot" => true,
                    "manual" => false,
                    other => {
                        return Err(ManifestError(format!(
                            "{name}: bind={other} (want boot or manual)"
                        )));
                    }
                }
            }
            other => return Err(ManifestError(format!("{name}: unknown key '{other}'"))),
        }
    }
    let world = world.ok_or_else(|| ManifestError(format!("{name}: no world=")))?;
    if matches.is_empty() {
        return Err(ManifestError(format!("{name}: no match=")));
    }
    Ok(Manifest {
        name: name.to_string(),
        world,
        matches,
        scenario,
        bind_at_boot,
    })
}

fn parse_match(rule: &str) -> Option<DeviceMatch> {
    if let Some(class) = rule.strip_prefix("class=") {
        let code = u16::from_str_radix(class, 16)
            .ok()
            .filter(|_| class.len() == 4)?;
        return Some(DeviceMatch::Class {
            class: (code >> 8) as u8,
            subclass: code as u8,
        });
    }
    let (vendor, device) = rule.split_once(':')?;
    Some(DeviceMatch::Id {
        vendor: u16::from_str_radix(vendor, 16).ok()?,
        device: u16::from_str_radix(device, 16).ok()?,
    })
}

/// Where a driver instance is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DriverState {
    Starting,
    /// Initialized and serving its device.
    Running,
    /// A test driver's scenario passed; its report.
    Finished(String),
    /// It failed, trapped or was refused; why.
    Failed(String),
}

/// One bound driver, for `drivers`.
#[derive(Clone)]
pub struct DriverRecord {
    pub function: PciFunction,
    pub driver: String,
    pub state: DriverState,
    pub task: u64,
    /// The parameters the instance was started with.
    pub parameters: Vec<(String, String)>,
    interrupts: Arc<crate::platform::InterruptSlot>,
    log: Arc<crate::platform::DriverLog>,
}

impl DriverRecord {
    /// Interrupts delivered to this instance so far.
    pub fn interrupts(&self) -> u64 {
        self.interrupts.count()
    }

    /// The last lines the instance logged.
    pub fn log(&self) -> Vec<String> {
        self.log.lines()
    }
}

static RECORDS: IrqSafeMutex<Vec<DriverRecord>> = IrqSafeMutex::new(Vec::new());
static BINDING: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

/// Whether the driver manager is still loading drivers and binding them.
pub fn binding() -> bool {
    BINDING.load(core::sync::atomic::Ordering::Acquire)
}

/// Marks the driver manager as busy while the boot image's drivers are loaded and bound.
pub fn begin_binding() {
    BINDING.store(true, core::sync::atomic::Ordering::Release);
}

pub fn end_binding() {
    BINDING.store(false, core::sync::atomic::Ordering::Release);
}

/// The bound drivers, in binding order.
pub fn records() -> Vec<DriverRecord> {
    RECORDS.lock().clone()
}

fn set_state(index: usize, state: DriverState) {
    if let Some(record) = RECORDS.lock().get_mut(index) {
        record.state = state;
    }
}

/// Kernel stack for a driver task: Wasmtime's Wasm stack limit plus host calls.
const DRIVER_STACK: usize = 1 << 20;

/// The boot image's drivers, each with its component once loaded.
struct Loaded {
    image: Arc<DriverImage>,
    component: Option<Result<LoadedComponent, String>>,
}

static IMAGES: IrqSafeMutex<Vec<Loaded>> = IrqSafeMutex::new(Vec::new());
static ENGINE: spin::Once<&'static Engine> = spin::Once::new();
static CONFIG: spin::Once<&'static dyn ConfigSpace> = spin::Once::new();

/// The component of boot driver `index`, loaded on first use.
fn component(
    engine: &Engine,
    index: usize,
) -> Option<(Arc<DriverImage>, Result<LoadedComponent, String>)> {
    let image = IMAGES.lock().get(index)?.image.clone();
    if let Some(loaded) = IMAGES.lock()[index].component.clone() {
        return Some((image, loaded));
    }
    // Deserializing takes a while: not under the lock. Should another load have finished
    // meanwhile, its result is kept (its code is the one registered as stoppable).
    let loaded = load_component(engine, &image.artifact);
    let kept = IMAGES.lock()[index].component.get_or_insert(loaded).clone();
    Some((image, kept))
}

/// Binds every function that a boot-bound driver matches (the first matching driver wins) and
/// starts each instance in its own task. Drivers marked `bind=manual` are kept for
/// [`run_manual`]. Returns how many instances were started.
pub fn bind_all(
    engine: &'static Engine,
    config: &'static dyn ConfigSpace,
    functions: &[PciFunction],
    images: Vec<DriverImage>,
) -> usize {
    ENGINE.call_once(|| engine);
    CONFIG.call_once(|| config);
    {
        let mut loaded = IMAGES.lock();
        for image in images {
            loaded.push(Loaded {
                image: Arc::new(image),
                component: None,
            });
        }
    }
    let boot_bound: Vec<(usize, Vec<DeviceMatch>)> = IMAGES
        .lock()
        .iter()
        .enumerate()
        .filter(|(_, l)| l.image.manifest.bind_at_boot)
        .map(|(i, l)| (i, l.image.manifest.matches.clone()))
        .collect();
    let mut started = 0;
    for function in functions {
        let Some(&(index, _)) = boot_bound
            .iter()
            .find(|(_, matches)| matches.iter().any(|m| m.matches(function)))
        else {
            continue;
        };
        let Some((image, component)) = component(engine, index) else {
            continue;
        };
        let record_index = {
            let mut records = RECORDS.lock();
            records.push(DriverRecord {
                function: function.clone(),
                driver: image.manifest.name.clone(),
                state: DriverState::Starting,
                task: 0,
                parameters: Vec::new(),
                interrupts: Arc::new(crate::platform::InterruptSlot::default()),
                log: Arc::new(crate::platform::DriverLog::default()),
            });
            records.len() - 1
        };
        match component {
            Ok(component) => {
                if start_instance(record_index, image, component.component, Vec::new()) {
                    started += 1;
                }
            }
            Err(why) => set_state(record_index, DriverState::Failed(why)),
        }
    }
    started
}

/// Starts an instance of `image` for the function of record `record_index`, in a task of its
/// own, with fresh interrupt and log slots. Returns whether the task started.
fn start_instance(
    record_index: usize,
    image: Arc<DriverImage>,
    component: Component,
    parameters: Vec<(String, String)>,
) -> bool {
    let (Some(&engine), Some(&config)) = (ENGINE.get(), CONFIG.get()) else {
        return false;
    };
    let interrupts = Arc::new(crate::platform::InterruptSlot::default());
    let log = Arc::new(crate::platform::DriverLog::default());
    let function = {
        let mut records = RECORDS.lock();
        let Some(record) = records.get_mut(record_index) else {
            return false;
        };
        record.state = DriverState::Starting;
        record.parameters = parameters.clone();
        record.interrupts = interrupts.clone();
        record.log = log.clone();
        record.function.clone()
    };
    let task_name = format!("driver {}", image.manifest.name);
    let spawned = keel_task::Builder::new(&task_name)
        .stack_size(DRIVER_STACK)
        .cooperative_kill()
        .spawn(move || {
            let scenario = image.manifest.scenario.as_deref();
            let instance = Instance {
                engine,
                config,
                image: &image,
                component: &component,
                record: Some(record_index),
                parameters,
            };
            let state = match instance.run(function, scenario, interrupts, log) {
                // However far it got (init, a first call), a kill ends it as a kill.
                Err(_) | Ok(DriverState::Failed(_)) if keel_task::kill_requested() => {
                    DriverState::Failed(String::from("killed"))
                }
                Ok(state) => state,
                Err(why) => DriverState::Failed(why),
            };
            set_state(record_index, state);
        });
    match spawned {
        Ok(handle) => {
            if let Some(record) = RECORDS.lock().get_mut(record_index) {
                record.task = handle.id();
            }
            true
        }
        Err(e) => {
            set_state(
                record_index,
                DriverState::Failed(format!("cannot start a task: {e:?}")),
            );
            false
        }
    }
}

/// Starts driver `name` again on the functions where its instance has ended (failed, trapped,
/// killed or finished), with `parameters`. Returns how many instances started; an instance
/// still running is left alone (kill its task first).
pub fn restart(name: &str, parameters: Vec<(String, String)>) -> Result<usize, String> {
    let engine = *ENGINE.get().ok_or("the driver manager has not started")?;
    let index = IMAGES
        .lock()
        .iter()
        .position(|l| l.image.manifest.name == name)
        .ok_or_else(|| format!("no driver named '{name}' in the boot image"))?;
    let (image, component) = component(engine, index).ok_or("no such driver")?;
    let component = component?.component;
    let ended: Vec<usize> = RECORDS
        .lock()
        .iter()
        .enumerate()
        .filter(|(_, r)| r.driver == name)
        .filter(|(_, r)| matches!(r.state, DriverState::Failed(_) | DriverState::Finished(_)))
        .map(|(i, _)| i)
        .collect();
    if ended.is_empty() {
        return Err(format!(
            "no ended instance of {name} (a running one must be killed first; see 'drivers')"
        ));
    }
    Ok(ended
        .into_iter()
        .filter(|&record| {
            start_instance(record, image.clone(), component.clone(), parameters.clone())
        })
        .count())
}

/// Runs the `bind=manual` test driver `name` on `function` with `scenario`, in a task of its
/// own, and returns its report (benchmarks use this). The instance is gone when it returns.
pub fn run_manual(name: &str, function: &PciFunction, scenario: &str) -> Result<String, String> {
    let (engine, config) = match (ENGINE.get(), CONFIG.get()) {
        (Some(engine), Some(config)) => (*engine, *config),
        _ => return Err(String::from("the driver manager has not started")),
    };
    let index = IMAGES
        .lock()
        .iter()
        .position(|l| l.image.manifest.name == name)
        .ok_or_else(|| format!("no driver named '{name}' in the boot image"))?;
    let (image, component) = component(engine, index).ok_or("no such driver")?;
    let component = component?.component;
    if image.manifest.world != DriverWorld::Test {
        return Err(format!("{name} is not a test driver"));
    }
    let function = function.clone();
    let scenario = String::from(scenario);
    let handle = keel_task::Builder::new(&format!("driver {name}"))
        .stack_size(DRIVER_STACK)
        .cooperative_kill()
        .spawn(move || {
            let instance = Instance {
                engine,
                config,
                image: &image,
                component: &component,
                record: None,
                parameters: Vec::new(),
            };
            instance.run(
                function,
                Some(&scenario),
                Arc::new(crate::platform::InterruptSlot::default()),
                Arc::new(crate::platform::DriverLog::default()),
            )
        })
        .map_err(|e| format!("cannot start a task: {e:?}"))?;
    match handle.join() {
        Ok(Ok(DriverState::Finished(report))) => Ok(report),
        Ok(Ok(DriverState::Failed(why)) | Err(why)) => Err(why),
        Ok(Ok(other)) => Err(format!("ended as {other:?}")),
        Err(failure) => Err(format!("its task failed: {failure:?}")),
    }
}

/// A store's call hook for drivers: a trap on the way back from a host call once the task is to
/// be killed (the loops and the manager then report the kill).
pub(crate) fn stop_if_killed(
    watch: &keel_task::KillWatch,
    hook: wasmtime::CallHook,
) -> wasmtime::Result<()> {
    if matches!(hook, wasmtime::CallHook::ReturningFromHost) && watch.requested() {
        Err(wasmtime::Trap::Interrupt.into())
    } else {
        Ok(())
    }
}

/// A deserialized driver and the registration that lets a kill stop it inside its code.
#[derive(Clone)]
struct LoadedComponent {
    component: Component,
    _killable: Arc<keel_wasm_platform::KillableCode>,
}

fn load_component(engine: &Engine, artifact: &[u8]) -> Result<LoadedComponent, String> {
    if Engine::detect_precompiled(artifact) != Some(wasmtime::Precompiled::Component) {
        return Err(String::from("not a precompiled WASI-dd component"));
    }
    #[allow(unsafe_code)]
    // SAFETY: Wasmtime checks the header, version, settings and CPU features before use; the
    // bytes come from the boot image, which Keel trusts to hold what `keel-aot` wrote.
    let component = unsafe { Component::deserialize(engine, artifact) }
        .map_err(|e| format!("not a usable driver: {e:#}"))?;
    let killable = keel_wasm_platform::KillableCode::register(
        artifact,
        component.text(),
        component.functions().map(|f| (f.offset, f.len)),
    )
    .map_err(|why| format!("its code cannot be stopped: {why}"))?;
    Ok(LoadedComponent {
        component,
        _killable: Arc::new(killable),
    })
}

/// What an instance is made from.
struct Instance<'a> {
    engine: &'a Engine,
    config: &'static dyn ConfigSpace,
    image: &'a DriverImage,
    component: &'a Component,
    /// The `drivers` record to update when a serving driver is up.
    record: Option<usize>,
    parameters: Vec<(String, String)>,
}

impl Instance<'_> {
    /// Instantiates the driver for `function` and runs it: a test driver's scenario to its end.
    fn run(
        &self,
        function: PciFunction,
        scenario: Option<&str>,
        interrupts: Arc<crate::platform::InterruptSlot>,
        log: Arc<crate::platform::DriverLog>,
    ) -> Result<DriverState, String> {
        let (engine, component, image) = (self.engine, self.component, self.image);
        let name = &image.manifest.name;
        let slot = interrupts.clone();
        let address = function.address;
        // Declared before the store, so dropped after it: the line is given back only once the
        // host has turned the device's interrupts and bus mastering off.
        let _line = crate::platform::ReleaseLineAtEnd(slot.clone());
        let platform = KeelPlatform::for_function(self.config, name, &function, interrupts, log)
            .map_err(|e| format!("its I/O ports are not available: {e:?}"))?;
        let host = DriverHost::new(Arc::new(platform), function)
            .with_name(name)
            .with_parameters(self.parameters.clone());
        let mut store = Store::new(engine, host);
        // A driver whose task is to be killed stops when it next returns from a host call (a
        // wait, a sleep); in its own code the timer tick stops it (keel_wasm_platform::kill).
        let watch = keel_task::kill_watch();
        store.call_hook(move |_, hook| stop_if_killed(&watch, hook));
        let mut linker = Linker::new(engine);
        wasi_dd::add_to_linker(&mut linker, |host| host).map_err(|e| format!("{e:#}"))?;
        match image.manifest.world {
            DriverWorld::Test => {
                let driver = TestDriver::instantiate(&mut store, component, &linker)
                    .map_err(|e| format!("cannot instantiate: {e:#}"))?;
                let device = store.data_mut().device().map_err(|e| format!("{e:#}"))?;
                let scenario = scenario.unwrap_or("default");
                match driver.call_run(&mut store, device, scenario) {
                    Ok(Ok(report)) => Ok(DriverState::Finished(report)),
                    Ok(Err(why)) => Ok(DriverState::Failed(why)),
                    Err(_) if keel_task::kill_requested() => {
                        Ok(DriverState::Failed(String::from("killed")))
                    }
                    Err(trap) => Ok(DriverState::Failed(format!("trapped: {trap:#}"))),
                }
            }
            DriverWorld::Nic => {
                let driver = wasi_dd::NicDriver::instantiate(&mut store, component, &linker)
                    .map_err(|e| format!("cannot instantiate: {e:#}"))?;
                let record = self.record;
                crate::nic::serve(&mut store, &driver, &slot, || {
                    if let Some(record) = record {
                        set_state(record, DriverState::Running);
                    }
                })
                .map(DriverState::Finished)
            }
            DriverWorld::Block => {
                let driver = wasi_dd::BlockDriver::instantiate(&mut store, component, &linker)
                    .map_err(|e| format!("cannot instantiate: {e:#}"))?;
                let record = self.record;
                crate::block::serve(&mut store, &driver, name, address, &slot, || {
                    if let Some(record) = record {
                        set_state(record, DriverState::Running);
                    }
                })
                .map(DriverState::Finished)
            }
        }
    }
}
