//! Cost of one MMIO access through WASI-dd from a component (single calls, and batches), against
//! the same access made natively through the same `Platform` trait, on the host CPU.
//!
//! `cargo run --release -p wasi-dd --example bench-host [-- OUT.md]` (or `keel bench-dd`, which
//! builds the drivers first). Needs `target/drivers-wasm/test-cost.wasm` from
//! `keel build-drivers`. Writes a markdown table to OUT.md (default
//! `target/bench/wasi-dd-host.md`) and prints it.

use std::hint::black_box;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use wasi_dd::platform::{DmaMemory, InterruptLine, LogLevel, MmioWindow, Platform, PlatformError};
use wasi_dd::types::{Access, Bar, BarKind, DeviceId, PciAddress, PciFunction};
use wasi_dd::{DriverHost, TestDriver};
use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Engine, Store};

/// Errors as messages: the example needs no error crate.
type Error = String;

/// A multiple of every batch size.
const ACCESSES: u64 = 1 << 20;
/// Operations per `batch` call: the goal is set at 32; 256 shows the per-op cost alone.
const BATCHES: [u64; 2] = [32, 256];
const ROUNDS: usize = 5;
const BAR_SIZE: u64 = 0x1000;
const REGISTER: u64 = 0x100;

/// Registers as memory: relaxed atomics, so every access really happens.
struct MemoryWindow {
    words: Arc<Vec<AtomicU64>>,
}

impl MmioWindow for MemoryWindow {
    fn read(&self, offset: u64, access: Access) -> u64 {
        let word = self.words[(offset / 8) as usize].load(Ordering::Relaxed);
        let shift = (offset % 8) * 8;
        let mask = if access == Access::W64 {
            u64::MAX
        } else {
            (1 << (access.bytes() * 8)) - 1
        };
        (word >> shift) & mask
    }

    fn write(&self, offset: u64, access: Access, value: u64) {
        let slot = &self.words[(offset / 8) as usize];
        if access == Access::W64 {
            slot.store(value, Ordering::Relaxed);
            return;
        }
        let shift = (offset % 8) * 8;
        let mask = ((1u64 << (access.bytes() * 8)) - 1) << shift;
        let old = slot.load(Ordering::Relaxed);
        slot.store((old & !mask) | ((value << shift) & mask), Ordering::Relaxed);
    }
}

struct HeapDma(Mutex<Vec<u8>>);

impl DmaMemory for HeapDma {
    fn len(&self) -> u64 {
        self.0.lock().unwrap().len() as u64
    }
    fn device_address(&self) -> u64 {
        0x1000
    }
    fn read(&self, offset: u64, out: &mut [u8]) {
        let data = self.0.lock().unwrap();
        out.copy_from_slice(&data[offset as usize..offset as usize + out.len()]);
    }
    fn write(&self, offset: u64, bytes: &[u8]) {
        let mut data = self.0.lock().unwrap();
        data[offset as usize..offset as usize + bytes.len()].copy_from_slice(bytes);
    }
    fn read_value(&self, offset: u64, access: Access) -> u64 {
        let data = self.0.lock().unwrap();
        (0..access.bytes())
            .rev()
            .fold(0, |v, i| (v << 8) | u64::from(data[(offset + i) as usize]))
    }
    fn write_value(&self, offset: u64, access: Access, value: u64) {
        let mut data = self.0.lock().unwrap();
        for i in 0..access.bytes() {
            data[(offset + i) as usize] = (value >> (8 * i)) as u8;
        }
    }
}

struct NoInterrupt;

impl InterruptLine for NoInterrupt {
    fn wait(&self, _timeout_ns: u64) -> bool {
        false
    }
    fn acknowledge(&self) {}
    fn mask(&self) {}
    fn unmask(&self) {}
    fn count(&self) -> u64 {
        0
    }
}

/// A host "machine" with one memory BAR backed by ordinary memory.
struct BenchPlatform {
    registers: Arc<Vec<AtomicU64>>,
    config: Mutex<[u8; 256]>,
    start: Instant,
}

impl Platform for BenchPlatform {
    type Mmio = MemoryWindow;
    type Dma = HeapDma;
    type Interrupt = NoInterrupt;

    fn config_read(&self, _: PciAddress, offset: u16, access: Access) -> u32 {
        let config = self.config.lock().unwrap();
        (0..access.bytes()).rev().fold(0, |v, i| {
            (v << 8) | u32::from(config[offset as usize + i as usize])
        })
    }
    fn config_write(&self, _: PciAddress, offset: u16, access: Access, value: u32) {
        let mut config = self.config.lock().unwrap();
        for i in 0..access.bytes() as usize {
            config[offset as usize + i] = (value >> (8 * i)) as u8;
        }
    }
    fn config_space_size(&self, _: PciAddress) -> u16 {
        256
    }
    fn map_mmio(&self, _base: u64, _size: u64) -> Result<MemoryWindow, PlatformError> {
        Ok(MemoryWindow {
            words: self.registers.clone(),
        })
    }
    fn port_read(&self, _port: u16, _access: Access) -> u32 {
        0
    }
    fn port_write(&self, _port: u16, _access: Access, _value: u32) {}
    fn allocate_dma(
        &self,
        _: PciAddress,
        size: u64,
        _align: u64,
    ) -> Result<HeapDma, PlatformError> {
        Ok(HeapDma(Mutex::new(vec![0; size as usize])))
    }
    fn route_interrupt(&self, _: PciAddress) -> Result<NoInterrupt, PlatformError> {
        Err(PlatformError::Unsupported)
    }
    fn now_ns(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }
    fn sleep_ns(&self, ns: u64) {
        std::thread::sleep(Duration::from_nanos(ns));
    }
    fn log(&self, level: LogLevel, message: &str) {
        eprintln!("{level:?}: {message}");
    }
}

fn function() -> PciFunction {
    PciFunction {
        address: PciAddress {
            segment: 0,
            bus: 0,
            device: 4,
            function: 0,
        },
        id: DeviceId {
            vendor: 0x1234,
            device: 0x5678,
            subsystem_vendor: 0,
            subsystem: 0,
            class: 0xff,
            subclass: 0,
            prog_if: 0,
            revision: 0,
        },
        bars: vec![Bar {
            index: 0,
            kind: BarKind::Memory32,
            base: 0xfe00_0000,
            size: BAR_SIZE,
            prefetchable: false,
        }],
    }
}

fn platform() -> Arc<BenchPlatform> {
    Arc::new(BenchPlatform {
        registers: Arc::new((0..BAR_SIZE / 8).map(|_| AtomicU64::new(0)).collect()),
        config: Mutex::new([0; 256]),
        start: Instant::now(),
    })
}

fn median(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(|a, b| a.total_cmp(b));
    samples[samples.len() / 2]
}

/// Nanoseconds per access of `scenario`, run by a fresh instance each round.
fn through_wasi_dd(
    engine: &Engine,
    component: &Component,
    linker: &Linker<DriverHost<BenchPlatform>>,
    scenario: &str,
) -> Result<f64, Error> {
    let mut samples = Vec::new();
    for _ in 0..ROUNDS {
        let mut store = Store::new(engine, DriverHost::new(platform(), function()));
        let driver = TestDriver::instantiate(&mut store, component, linker)
            .map_err(|e| format!("instantiating: {e:#}"))?;
        let device = store.data_mut().device().map_err(|e| format!("{e:#}"))?;
        let start = Instant::now();
        let answer = driver
            .call_run(&mut store, device, scenario)
            .map_err(|e| format!("{scenario}: {e:#}"))?;
        let elapsed = start.elapsed();
        if let Err(failure) = answer {
            return Err(format!("{scenario}: {failure}"));
        }
        samples.push(elapsed.as_nanos() as f64 / ACCESSES as f64);
    }
    Ok(median(samples))
}

fn native(write: bool) -> f64 {
    let platform = platform();
    let window = platform.map_mmio(0xfe00_0000, BAR_SIZE).expect("mapping");
    let mut samples = Vec::new();
    for _ in 0..ROUNDS {
        let start = Instant::now();
        for i in 0..ACCESSES {
            if write {
                window.write(black_box(REGISTER), Access::W32, black_box(i & 0xffff_ffff));
            } else {
                black_box(window.read(black_box(REGISTER), Access::W32));
            }
        }
        samples.push(start.elapsed().as_nanos() as f64 / ACCESSES as f64);
    }
    median(samples)
}

fn main() -> Result<(), Error> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let output = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target/bench/wasi-dd-host.md"));
    let driver = root.join("target/drivers-wasm/test-cost.wasm");
    if !driver.is_file() {
        return Err(format!(
            "{} is missing: run `keel build-drivers` first",
            driver.display()
        ));
    }
    let mut config = Config::new();
    config.wasm_component_model(true);
    let engine = Engine::new(&config).map_err(|e| format!("{e:#}"))?;
    let component = Component::from_file(&engine, &driver).map_err(|e| format!("{e:#}"))?;
    let mut linker = Linker::new(&engine);
    wasi_dd::add_to_linker(&mut linker, |host: &mut DriverHost<BenchPlatform>| host)
        .map_err(|e| format!("{e:#}"))?;

    let native_read = native(false);
    let native_write = native(true);
    let mut rows = vec![
        (
            "read",
            "native, `MmioWindow::read`".to_string(),
            native_read,
            native_read,
        ),
        (
            "write",
            "native, `MmioWindow::write`".to_string(),
            native_write,
            native_write,
        ),
    ];
    for (access, baseline) in [("read", native_read), ("write", native_write)] {
        let single = format!("{access} {ACCESSES}");
        rows.push((
            access,
            "WASI-dd, one call per access".to_string(),
            through_wasi_dd(&engine, &component, &linker, &single)?,
            baseline,
        ));
        for batch in BATCHES {
            for (kind, call) in [("batch", "batch"), ("packed", "batch-packed")] {
                let scenario = format!("{kind}-{access} {ACCESSES} {batch}");
                rows.push((
                    access,
                    format!("WASI-dd, `{call}` of {batch}"),
                    through_wasi_dd(&engine, &component, &linker, &scenario)?,
                    baseline,
                ));
            }
        }
    }
    let mut table = format!(
        "# WASI-dd on the host: cost of one 32-bit MMIO access\n\n\
         {ACCESSES} accesses per round, median of {ROUNDS} rounds, Cranelift, registers backed \
         by host memory (so \"native\" is the cost of the `Platform` call alone, not of a \
         device).\n\n\
         | access | how | ns per access | vs native |\n|---|---|---:|---:|\n"
    );
    for (access, how, ns, baseline) in rows {
        table.push_str(&format!(
            "| {access} | {how} | {ns:.2} | {:.1}x |\n",
            ns / baseline
        ));
    }
    if let Some(dir) = output.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    }
    std::fs::write(&output, &table).map_err(|e| format!("writing {}: {e}", output.display()))?;
    print!("{table}");
    eprintln!("written to {}", output.display());
    Ok(())
}
