//! A WASI-dd driver for QEMU's `edu` teaching device (1234:11e8), run by Keel's driver manager
//! to prove the whole path on real (emulated) hardware: MMIO registers, a computation that
//! signals completion by interrupt, and DMA both ways through buffers the host granted.
//! Scenario: `edu`.
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
