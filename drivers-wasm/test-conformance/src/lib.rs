//! A WASI-dd driver that calls every function of the interface once, in order, against the fake
//! device of `wasi-dd`'s tests (register layout below), and reports what it saw, one line per
//! interface. Scenario: `conformance`.

#![deny(unsafe_code)]

#[allow(unsafe_code)]
mod bindings {
    wit_bindgen::generate!({ path: "../../wit/dd", world: "test-driver" });
}

use bindings::wasi_dd::dd::dma::DmaBuffer;
use bindings::wasi_dd::dd::mmio::MmioRegion;
use bindings::wasi_dd::dd::pci::{BarKind, Device};
use bindings::wasi_dd::dd::platform::{LogLevel, log, now_ns, sleep_ns};
use bindings::wasi_dd::dd::ports::PortRange;
use bindings::wasi_dd::dd::types::{
    BatchError, ErrorCode, RegModify, RegOp, RegPoll, RegRead, RegWrite, Width,
};

/// Register offsets of the fake device's BAR 0.
const CTRL: u64 = 0x000;
const CTRL_RESET: u64 = 1 << 31;
const STATUS: u64 = 0x008;
const ICR: u64 = 0x0c0;
const ICS: u64 = 0x0c8;
const SCRATCH: u64 = 0x100;

struct Driver;

impl bindings::Guest for Driver {
    fn run(device: Device, scenario: String) -> Result<String, String> {
        match scenario.as_str() {
            "conformance" => conformance(&device),
            other => Err(format!("unknown scenario {other:?}")),
        }
    }
}

#[allow(unsafe_code)]
mod export {
    use super::Driver;
    crate::bindings::export!(Driver with_types_in crate::bindings);
}

/// Turns an interface error into the scenario's failure, naming the step.
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

fn read(offset: u64, width: Width) -> RegOp {
    RegOp::Read(RegRead { offset, width })
}

fn write(offset: u64, width: Width, value: u64) -> RegOp {
    RegOp::Write(RegWrite {
        offset,
        width,
        value,
    })
}

fn hex_list(values: &[u64]) -> String {
    values
        .iter()
        .map(|v| format!("{v:x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn conformance(device: &Device) -> Result<String, String> {
    let mut lines = vec![identity(device)];
    lines.push(config(device)?);
    let region = device.map_bar(0).step("map-bar 0")?;
    let ports = device.io_bar(1).step("io-bar 1")?;
    lines.push(format!(
        "regions mmio={} ports={}",
        region.size(),
        ports.size()
    ));
    lines.push(mmio_single(&region)?);
    lines.push(mmio_batch(&region)?);
    lines.push(port_access(&ports)?);
    lines.push(dma(device)?);
    lines.push(interrupt(device, &region)?);
    lines.push(bus_mastering(device)?);
    lines.push(time());
    Ok(lines.join("\n"))
}

fn identity(device: &Device) -> String {
    let a = device.address();
    let id = device.id();
    let bars: Vec<String> = device
        .bars()
        .iter()
        .map(|bar| {
            let kind = match bar.kind {
                BarKind::Memory32 => "memory32",
                BarKind::Memory64 => "memory64",
                BarKind::Io => "io",
            };
            let prefetch = if bar.prefetchable {
                ":prefetchable"
            } else {
                ""
            };
            format!("{}:{kind}:{}{prefetch}", bar.index, bar.size)
        })
        .collect();
    format!(
        "device {:04x}:{:02x}:{:02x}.{} id {:04x}:{:04x} sub {:04x}:{:04x} class {:02x}.{:02x}.{:02x} rev {:02x} bars {}",
        a.segment,
        a.bus,
        a.device,
        a.function,
        id.vendor,
        id.device,
        id.subsystem_vendor,
        id.subsystem,
        id.class,
        id.subclass,
        id.prog_if,
        id.revision,
        bars.join(" ")
    )
}

fn config(device: &Device) -> Result<String, String> {
    let ids = device.config_read(0x00, Width::W32).step("config-read 0")?;
    let device_id = device.config_read(0x02, Width::W16).step("config-read 2")?;
    let revision = device.config_read(0x08, Width::W8).step("config-read 8")?;
    let cap_ptr = device
        .config_read(0x34, Width::W8)
        .step("config-read 0x34")?;
    device
        .config_write(0x80, Width::W32, 0xdead_beef)
        .step("config-write 0x80")?;
    device
        .config_write(0x84, Width::W16, 0x1234)
        .step("config-write 0x84")?;
    device
        .config_write(0x86, Width::W8, 0x56)
        .step("config-write 0x86")?;
    let first = device
        .config_read(0x80, Width::W32)
        .step("config-read 0x80")?;
    let second = device
        .config_read(0x84, Width::W32)
        .step("config-read 0x84")?;
    Ok(format!(
        "config {ids:08x} {device_id:04x} {revision:02x} cap-ptr={cap_ptr:02x} scratch={first:08x} {second:08x}"
    ))
}

fn mmio_single(region: &MmioRegion) -> Result<String, String> {
    region
        .write(SCRATCH, Width::W32, 0x1234_5678)
        .step("write w32")?;
    let word = region.read(SCRATCH, Width::W32).step("read w32")?;
    let byte = region.read(SCRATCH + 1, Width::W8).step("read w8")?;
    let half = region.read(SCRATCH + 2, Width::W16).step("read w16")?;
    region
        .write(SCRATCH + 8, Width::W64, 0x0123_4567_89ab_cdef)
        .step("write w64")?;
    let quad = region.read(SCRATCH + 8, Width::W64).step("read w64")?;
    region
        .write(SCRATCH + 0x10, Width::W8, 0xab)
        .step("write w8")?;
    region
        .write(SCRATCH + 0x12, Width::W16, 0xcdef)
        .step("write w16")?;
    let mixed = region.read(SCRATCH + 0x10, Width::W32).step("read mixed")?;
    Ok(format!(
        "mmio {word:08x} {byte:02x} {half:04x} {quad:016x} {mixed:08x}"
    ))
}

fn mmio_batch(region: &MmioRegion) -> Result<String, String> {
    let ops = [
        write(CTRL, Width::W32, CTRL_RESET),
        RegOp::Poll(RegPoll {
            offset: CTRL,
            width: Width::W32,
            mask: CTRL_RESET,
            expect: 0,
            timeout_ns: 1_000_000,
        }),
        read(STATUS, Width::W32),
        RegOp::Modify(RegModify {
            offset: SCRATCH,
            width: Width::W32,
            clear: 0xff,
            set: 0x01,
        }),
        read(SCRATCH, Width::W32),
        RegOp::Delay(500),
        read(SCRATCH + 8, Width::W64),
    ];
    let values = region.batch(&ops).step("mmio batch")?;
    Ok(format!("mmio-batch {}", hex_list(&values)))
}

fn port_access(ports: &PortRange) -> Result<String, String> {
    ports.write(0, Width::W8, 0x5a).step("port write w8")?;
    let byte = ports.read(0, Width::W8).step("port read w8")?;
    ports.write(2, Width::W16, 0xbeef).step("port write w16")?;
    let half = ports.read(2, Width::W16).step("port read w16")?;
    ports
        .write(4, Width::W32, 0xcafe_f00d)
        .step("port write w32")?;
    let word = ports.read(4, Width::W32).step("port read w32")?;
    let ops = [
        write(8, Width::W32, 0x1122_3344),
        read(8, Width::W16),
        RegOp::Modify(RegModify {
            offset: 8,
            width: Width::W32,
            clear: 0xff00,
            set: 0x5500,
        }),
        read(8, Width::W32),
    ];
    let values = ports.batch(&ops).step("port batch")?;
    Ok(format!(
        "ports {byte:02x} {half:04x} {word:08x} batch {}",
        hex_list(&values)
    ))
}

fn dma(device: &Device) -> Result<String, String> {
    let ring = device.allocate_dma(4096, 4096).step("allocate 4096")?;
    let address = ring.device_address().step("device-address")?;
    ring.write(16, &[1, 2, 3, 4, 5]).step("dma write")?;
    let bytes = ring.read(16, 5).step("dma read")?;
    let ops = [
        write(0, Width::W32, 0xa5a5_a5a5),
        write(4, Width::W32, 0x5a5a_5a5a),
        read(0, Width::W64),
        RegOp::Modify(RegModify {
            offset: 0,
            width: Width::W8,
            clear: 0xff,
            set: 0x11,
        }),
        RegOp::Poll(RegPoll {
            offset: 0,
            width: Width::W8,
            mask: 0xff,
            expect: 0x11,
            timeout_ns: 0,
        }),
        read(0, Width::W32),
        RegOp::Delay(100),
    ];
    let values = ring.batch(&ops).step("dma batch")?;
    let small: DmaBuffer = device.allocate_dma(100, 64).step("allocate 100")?;
    let small_address = small.device_address().step("device-address small")?;
    let small_size = small.size();
    small.free().step("free")?;
    let after_free = match small.read(0, 1) {
        Ok(_) => "ok",
        Err(code) => code.name(),
    };
    let bytes: Vec<String> = bytes.iter().map(u8::to_string).collect();
    Ok(format!(
        "dma size={} aligned={} read={} batch {} small={small_size} aligned={} after-free={after_free}",
        ring.size(),
        address % 4096 == 0 && address != 0,
        bytes.join(","),
        hex_list(&values),
        small_address % 64 == 0 && small_address != 0,
    ))
}

fn interrupt(device: &Device, region: &MmioRegion) -> Result<String, String> {
    let irq = device.interrupt().step("interrupt")?;
    let initial = irq.count();
    let idle = irq.wait(1_000).step("wait idle")?;
    region.write(ICS, Width::W32, 0x1).step("write ICS")?;
    let fired = irq.wait(1_000_000).step("wait fired")?;
    let cause = region.read(ICR, Width::W32).step("read ICR")?;
    let cleared = region.read(ICR, Width::W32).step("read ICR again")?;
    irq.acknowledge().step("acknowledge")?;
    irq.mask().step("mask")?;
    region
        .write(ICS, Width::W32, 0x4)
        .step("write ICS masked")?;
    let while_masked = irq.wait(1_000).step("wait masked")?;
    irq.unmask().step("unmask")?;
    let after_unmask = irq.wait(1_000).step("wait unmasked")?;
    irq.acknowledge().step("acknowledge again")?;
    Ok(format!(
        "irq count={initial} idle={idle} fired={fired} icr={cause:x},{cleared:x} masked={while_masked} unmasked={after_unmask} count={}",
        irq.count()
    ))
}

fn bus_mastering(device: &Device) -> Result<String, String> {
    let before = device.config_read(0x04, Width::W16).step("read command")?;
    device.set_bus_mastering(true).step("bus mastering on")?;
    let on = device.config_read(0x04, Width::W16).step("read command")?;
    device.set_bus_mastering(false).step("bus mastering off")?;
    let off = device.config_read(0x04, Width::W16).step("read command")?;
    Ok(format!("command {before:04x} {on:04x} {off:04x}"))
}

fn time() -> String {
    let start = now_ns();
    sleep_ns(10_000);
    let slept = now_ns().saturating_sub(start);
    log(LogLevel::Info, "conformance: every interface answered");
    format!("time slept-at-least-10us={}", slept >= 10_000)
}
