//! A WASI-dd driver for QEMU's `edu` teaching device (1234:11e8), run by Keel's driver manager
//! to prove the whole path on real (emulated) hardware: MMIO registers, a computation that
//! signals completion by interrupt, and DMA both ways through buffers the host granted.
//! Scenarios: `edu`, and `dma-escape`, a hostile one for a host that confines device DMA with an
//! IOMMU (the Linux runner over VFIO): it tells the device to read and write memory it was never
//! granted or has given back, and reports whether the device got through. Keel confines no
//! device DMA yet, so its image never runs `dma-escape`: there the writes would land.
//!
//! Registers of BAR 0 (QEMU's docs/specs/edu.rst): 0x00 identification `0xRRrr00ed`, 0x04
//! liveness (reads back inverted), 0x08 factorial, 0x20 status (0x01 computing, 0x80 interrupt
//! when done), 0x24 interrupt status, 0x60 raise, 0x64 acknowledge, 0x80/0x88/0x90/0x98 DMA
//! source, destination, count and command (0x01 start, 0x02 device to RAM, 0x04 interrupt).
//! The device's own DMA window is at 0x40000.

#![deny(unsafe_code)]

#[allow(unsafe_code)]
mod bindings {
    wit_bindgen::generate!({ path: "../../wit/dd", world: "test-driver" });
}

use bindings::wasi_dd::dd::irq::Interrupt;
use bindings::wasi_dd::dd::mmio::MmioRegion;
use bindings::wasi_dd::dd::pci::Device;
use bindings::wasi_dd::dd::platform::{LogLevel, log};
use bindings::wasi_dd::dd::types::{BatchError, ErrorCode, RegOp, RegPoll, RegWrite, Width};

const IDENTIFICATION: u64 = 0x00;
const LIVENESS: u64 = 0x04;
const FACTORIAL: u64 = 0x08;
const STATUS: u64 = 0x20;
const STATUS_COMPUTING: u64 = 0x01;
const STATUS_IRQ_ON_DONE: u64 = 0x80;
const IRQ_STATUS: u64 = 0x24;
const IRQ_ACK: u64 = 0x64;
const DMA_SOURCE: u64 = 0x80;
const DMA_DESTINATION: u64 = 0x88;
const DMA_COUNT: u64 = 0x90;
const DMA_COMMAND: u64 = 0x98;
const DMA_START: u64 = 0x01;
const DMA_TO_RAM: u64 = 0x02;
const DMA_IRQ: u64 = 0x04;
const DEVICE_WINDOW: u64 = 0x40000;
/// Interrupt status bits: factorial done, DMA done.
const IRQ_FACTORIAL: u64 = 0x001;
const IRQ_DMA: u64 = 0x100;
const SECOND_NS: u64 = 1_000_000_000;

struct Driver;

impl bindings::Guest for Driver {
    fn run(device: Device, scenario: String) -> Result<String, String> {
        match scenario.as_str() {
            "edu" => edu(&device),
            "dma-escape" => dma_escape(&device),
            other => Err(format!("unknown scenario {other:?}")),
        }
    }
}

#[allow(unsafe_code)]
mod export {
    use super::Driver;
    crate::bindings::export!(Driver with_types_in crate::bindings);
}

trait Step<T> {
    fn step(self, what: &str) -> Result<T, String>;
}

impl<T> Step<T> for Result<T, ErrorCode> {
    fn step(self, what: &str) -> Result<T, String> {
        self.map_err(|code| format!("{what}: {}", code.name()))
    }
}

impl<T> Step<T> for Result<T, BatchError> {
    fn step(self, what: &str) -> Result<T, String> {
        self.map_err(|e| format!("{what}: op {} {}", e.index, e.code.name()))
    }
}

fn write(offset: u64, width: Width, value: u64) -> RegOp {
    RegOp::Write(RegWrite {
        offset,
        width,
        value,
    })
}

fn edu(device: &Device) -> Result<String, String> {
    let registers = device.map_bar(0).step("map-bar 0")?;
    let id = registers
        .read(IDENTIFICATION, Width::W32)
        .step("identification")?;
    if id & 0xff != 0xed {
        return Err(format!("not an edu device: identification {id:#x}"));
    }
    let version = format!("{}.{}", id >> 24, (id >> 16) & 0xff);
    registers
        .write(LIVENESS, Width::W32, 0x1234_5678)
        .step("liveness write")?;
    let inverted = registers.read(LIVENESS, Width::W32).step("liveness read")?;
    if inverted != !0x1234_5678u32 as u64 {
        return Err(format!("liveness: wrote 0x12345678, read {inverted:#x}"));
    }
    // The device signals by MSI, which is a memory write: it needs bus mastering like DMA.
    device.set_bus_mastering(true).step("bus mastering")?;
    let interrupt = device.interrupt().step("interrupt")?;
    let factorial = factorial(&registers, &interrupt, 10)?;
    if factorial != 3_628_800 {
        return Err(format!("10! read as {factorial}"));
    }
    let bytes = dma_round_trip(device, &registers, &interrupt)?;
    let report = format!(
        "edu {version}: liveness ok, 10! = {factorial} by interrupt, DMA {bytes} B round trip ok, {} interrupts",
        interrupt.count()
    );
    log(LogLevel::Info, &report);
    Ok(report)
}

/// Waits for the interrupt, then checks and acknowledges `cause` at the device and the host.
fn await_interrupt(
    registers: &MmioRegion,
    interrupt: &Interrupt,
    cause: u64,
    what: &str,
) -> Result<(), String> {
    if !interrupt.wait(SECOND_NS).step(what)? {
        return Err(format!("{what}: no interrupt within a second"));
    }
    let status = registers
        .read(IRQ_STATUS, Width::W32)
        .step("interrupt status")?;
    if status & cause == 0 {
        return Err(format!(
            "{what}: interrupt status {status:#x} lacks {cause:#x}"
        ));
    }
    registers
        .write(IRQ_ACK, Width::W32, status)
        .step("interrupt acknowledge")?;
    interrupt.acknowledge().step("host acknowledge")?;
    Ok(())
}

fn factorial(registers: &MmioRegion, interrupt: &Interrupt, n: u64) -> Result<u64, String> {
    registers
        .batch(&[
            write(STATUS, Width::W32, STATUS_IRQ_ON_DONE),
            write(FACTORIAL, Width::W32, n),
        ])
        .step("start factorial")?;
    await_interrupt(registers, interrupt, IRQ_FACTORIAL, "factorial")?;
    let done = registers
        .batch(&[
            RegOp::Poll(RegPoll {
                offset: STATUS,
                width: Width::W32,
                mask: STATUS_COMPUTING,
                expect: 0,
                timeout_ns: SECOND_NS,
            }),
            RegOp::Read(bindings::wasi_dd::dd::types::RegRead {
                offset: FACTORIAL,
                width: Width::W32,
            }),
        ])
        .step("read factorial")?;
    Ok(done[1])
}

/// Sends a pattern to the device's window by DMA and fetches it back into a second buffer.
fn dma_round_trip(
    device: &Device,
    registers: &MmioRegion,
    interrupt: &Interrupt,
) -> Result<u64, String> {
    const LEN: u64 = 256;
    let pattern: Vec<u8> = (0..LEN).map(|i| (i as u8).wrapping_mul(7) ^ 0x5a).collect();
    let outgoing = device.allocate_dma(4096, 4096).step("allocate dma")?;
    let incoming = device.allocate_dma(4096, 4096).step("allocate dma")?;
    outgoing.write(0, &pattern).step("fill buffer")?;
    let transfer = |source: u64, destination: u64, command: u64| {
        registers.batch(&[
            write(DMA_SOURCE, Width::W64, source),
            write(DMA_DESTINATION, Width::W64, destination),
            write(DMA_COUNT, Width::W64, LEN),
            write(DMA_COMMAND, Width::W64, command),
        ])
    };
    let outgoing_address = outgoing.device_address().step("device address")?;
    let incoming_address = incoming.device_address().step("device address")?;
    transfer(outgoing_address, DEVICE_WINDOW, DMA_START | DMA_IRQ).step("DMA to device")?;
    await_interrupt(registers, interrupt, IRQ_DMA, "DMA to device")?;
    transfer(
        DEVICE_WINDOW,
        incoming_address,
        DMA_START | DMA_TO_RAM | DMA_IRQ,
    )
    .step("DMA to RAM")?;
    await_interrupt(registers, interrupt, IRQ_DMA, "DMA to RAM")?;
    let back = incoming.read(0, LEN).step("read buffer")?;
    if back != pattern {
        let first = back.iter().zip(&pattern).position(|(a, b)| a != b);
        return Err(format!("DMA round trip differs at byte {first:?}"));
    }
    Ok(LEN)
}

const ESCAPE_LEN: u64 = 256;
/// What the driver leaves in the device's window before each hostile transfer.
const WINDOW_MARK: u8 = 0xa5;

/// Sets the device up for DMA: its registers and interrupt, bus mastering on.
fn dma_ready(device: &Device) -> Result<(MmioRegion, Interrupt), String> {
    let registers = device.map_bar(0).step("map-bar 0")?;
    device.set_bus_mastering(true).step("bus mastering")?;
    let interrupt = device.interrupt().step("interrupt")?;
    Ok((registers, interrupt))
}

/// One DMA of [`ESCAPE_LEN`] bytes, waited for by interrupt.
fn transfer(
    registers: &MmioRegion,
    interrupt: &Interrupt,
    source: u64,
    destination: u64,
    to_ram: bool,
    what: &str,
) -> Result<(), String> {
    let direction = if to_ram { DMA_TO_RAM } else { 0 };
    registers
        .batch(&[
            write(DMA_SOURCE, Width::W64, source),
            write(DMA_DESTINATION, Width::W64, destination),
            write(DMA_COUNT, Width::W64, ESCAPE_LEN),
            write(DMA_COMMAND, Width::W64, DMA_START | direction | DMA_IRQ),
        ])
        .step(what)?;
    await_interrupt(registers, interrupt, IRQ_DMA, what)
}

/// The device's window, fetched into `probe` by a legitimate DMA.
fn window(
    registers: &MmioRegion,
    interrupt: &Interrupt,
    probe: &bindings::wasi_dd::dd::dma::DmaBuffer,
) -> Result<Vec<u8>, String> {
    let address = probe.device_address().step("device address")?;
    transfer(
        registers,
        interrupt,
        DEVICE_WINDOW,
        address,
        true,
        "fetch window",
    )?;
    probe.read(0, ESCAPE_LEN).step("read probe")
}

/// Fills the device's window with [`WINDOW_MARK`] from `mark`, by a legitimate DMA.
fn mark_window(
    registers: &MmioRegion,
    interrupt: &Interrupt,
    mark: &bindings::wasi_dd::dd::dma::DmaBuffer,
) -> Result<(), String> {
    let address = mark.device_address().step("device address")?;
    transfer(
        registers,
        interrupt,
        address,
        DEVICE_WINDOW,
        false,
        "mark window",
    )
}

/// `blocked` or `LEAKED`, and the first bytes the device saw.
fn verdict(leaked: bool, seen: &[u8]) -> String {
    let first: Vec<String> = seen.iter().take(4).map(|b| format!("{b:02x}")).collect();
    let outcome = if leaked { "LEAKED" } else { "blocked" };
    format!("{outcome} (device saw {}...)", first.join(" "))
}

/// The hostile scenario: a buffer filled with a secret and given back, then the device told to
/// read it (a device-side use after free), to write into it, and to read address 0, which no
/// host grants. Each line says what the device saw; with an IOMMU every one is blocked and
/// the host's IOMMU logs a fault for it.
fn dma_escape(device: &Device) -> Result<String, String> {
    let (registers, interrupt) = dma_ready(device)?;
    let mark = device.allocate_dma(4096, 4096).step("allocate dma")?;
    let probe = device.allocate_dma(4096, 4096).step("allocate dma")?;
    mark.write(0, &[WINDOW_MARK; ESCAPE_LEN as usize])
        .step("fill mark")?;

    let secret: Vec<u8> = (0..ESCAPE_LEN).map(|i| (i as u8) ^ 0x3c).collect();
    let freed = device.allocate_dma(4096, 4096).step("allocate dma")?;
    freed.write(0, &secret).step("fill secret")?;
    let freed_address = freed.device_address().step("device address")?;
    drop(freed);

    let mut report = Vec::new();
    mark_window(&registers, &interrupt, &mark)?;
    transfer(
        &registers,
        &interrupt,
        freed_address,
        DEVICE_WINDOW,
        false,
        "read a freed buffer",
    )?;
    let seen = window(&registers, &interrupt, &probe)?;
    report.push(format!(
        "read of freed {freed_address:#x}: {}",
        verdict(seen == secret, &seen)
    ));

    // The window still holds the mark: the device writes it over the freed buffer.
    mark_window(&registers, &interrupt, &mark)?;
    transfer(
        &registers,
        &interrupt,
        DEVICE_WINDOW,
        freed_address,
        true,
        "write a freed buffer",
    )?;
    report.push(format!("write to freed {freed_address:#x}: issued"));

    mark_window(&registers, &interrupt, &mark)?;
    transfer(
        &registers,
        &interrupt,
        0,
        DEVICE_WINDOW,
        false,
        "read address 0",
    )?;
    let seen = window(&registers, &interrupt, &probe)?;
    // Blocked, the window keeps the mark or holds what the IOMMU returns for a refused read.
    let uniform = seen.iter().all(|&b| b == seen[0]);
    report.push(format!("read of 0x0: {}", verdict(!uniform, &seen)));
    let report = format!("dma-escape: {}", report.join("; "));
    log(LogLevel::Info, &report);
    Ok(report)
}
