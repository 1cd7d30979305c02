//! A WASI-dd driver that misuses every capability it is given, one scenario at a time, and
//! reports the answer to each misuse (`ok` or the error code). Run against the fake device of
//! `wasi-dd`'s tests: BAR 0 is 4 KiB of MMIO, BAR 1 64 I/O ports, BAR 2 8 KiB of MMIO.
//!
//! `forge-handle` and `forge-type` call imports with handle indices the instance was never given
//! (or given for another resource type): the canonical ABI traps the instance, so they never
//! return.

#![deny(unsafe_code)]

#[allow(unsafe_code)]
mod bindings {
    wit_bindgen::generate!({ path: "../../wit/dd", world: "test-driver" });
}

use bindings::wasi_dd::dd::mmio::MmioRegion;
use bindings::wasi_dd::dd::pci::Device;
use bindings::wasi_dd::dd::types::{
    BatchError, ErrorCode, RegOp, RegPoll, RegRead, RegWrite, Width,
};

const SCRATCH: u64 = 0x100;
const STATUS: u64 = 0x008;
const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;

struct Driver;

impl bindings::Guest for Driver {
    fn run(device: Device, scenario: String) -> Result<String, String> {
        let report = match scenario.as_str() {
            "mmio-range" => mmio_range(&device)?,
            "misaligned" => misaligned(&device)?,
            "ports" => ports(&device)?,
            "config" => config(&device),
            "double-map" => double_map(&device)?,
            "dma-limits" => dma_limits(&device),
            "dma-overrun" => dma_overrun(&device)?,
            "use-after-free" => use_after_free(&device)?,
            "poll-timeout" => poll_timeout(&device)?,
            "forge-handle" => forge_handle(),
            "forge-type" => forge_type(&device)?,
            other => return Err(format!("unknown scenario {other:?}")),
        };
        Ok(report.join(" "))
    }
}

#[allow(unsafe_code)]
mod export {
    use super::Driver;
    crate::bindings::export!(Driver with_types_in crate::bindings);
}

/// `name=ok` or `name=<error-code>`.
fn answer<T>(name: &str, result: Result<T, ErrorCode>) -> String {
    match result {
        Ok(_) => format!("{name}=ok"),
        Err(code) => format!("{name}={}", code.name()),
    }
}

/// `name=ok` or `name=<index>:<error-code>`.
fn batch_answer(name: &str, result: Result<Vec<u64>, BatchError>) -> String {
    match result {
        Ok(_) => format!("{name}=ok"),
        Err(e) => format!("{name}={}:{}", e.index, e.code.name()),
    }
}

fn fail(what: &str, code: ErrorCode) -> String {
    format!("{what}: {}", code.name())
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

fn mmio_range(device: &Device) -> Result<Vec<String>, String> {
    let r = device.map_bar(0).map_err(|c| fail("map-bar 0", c))?;
    let mut out = vec![
        answer("read-end", r.read(4096, Width::W8)),
        answer("read-straddle", r.read(4094, Width::W32)),
        answer("read-max", r.read(u64::MAX, Width::W8)),
        answer("read-wrap", r.read(u64::MAX - 3, Width::W32)),
        answer("write-end", r.write(4096, Width::W32, 1)),
        answer("write-wide-value", r.write(SCRATCH, Width::W8, 0x1ff)),
        answer("last-byte", r.read(4095, Width::W8)),
    ];
    let ops = [
        write(0x200, Width::W32, 1),
        write(0x204, Width::W32, 2),
        read(0x200, Width::W32),
        write(4096, Width::W32, 3),
        write(0x208, Width::W32, 4),
    ];
    out.push(batch_answer("batch", r.batch(&ops)));
    let first = r
        .read(0x204, Width::W32)
        .map_err(|c| fail("read 0x204", c))?;
    let after = r
        .read(0x208, Width::W32)
        .map_err(|c| fail("read 0x208", c))?;
    out.push(format!("before-failure={first} after-failure={after}"));
    Ok(out)
}

fn misaligned(device: &Device) -> Result<Vec<String>, String> {
    let r = device.map_bar(0).map_err(|c| fail("map-bar 0", c))?;
    Ok(vec![
        answer("w32-at-1", r.read(SCRATCH + 1, Width::W32)),
        answer("w16-at-1", r.read(1, Width::W16)),
        answer("w64-at-4", r.read(SCRATCH + 4, Width::W64)),
        answer("write-w32-at-2", r.write(SCRATCH + 2, Width::W32, 0)),
        batch_answer(
            "batch",
            r.batch(&[read(SCRATCH, Width::W32), read(SCRATCH + 2, Width::W32)]),
        ),
    ])
}

fn ports(device: &Device) -> Result<Vec<String>, String> {
    let mut out = vec![
        answer("io-bar-of-memory-bar", device.io_bar(0)),
        answer("map-bar-of-io-bar", device.map_bar(1)),
        answer("map-bar-absent", device.map_bar(5)),
        answer("map-bar-255", device.map_bar(255)),
        answer("io-bar-absent", device.io_bar(6)),
    ];
    let p = device.io_bar(1).map_err(|c| fail("io-bar 1", c))?;
    out.extend([
        answer("read-end", p.read(64, Width::W8)),
        answer("read-straddle", p.read(62, Width::W32)),
        answer("read-max", p.read(u32::MAX, Width::W8)),
        answer("read-w64", p.read(0, Width::W64)),
        answer("write-w64", p.write(0, Width::W64, 0)),
        answer("write-wide-value", p.write(0, Width::W8, 0x100)),
        answer("misaligned", p.read(1, Width::W16)),
        batch_answer(
            "batch",
            p.batch(&[write(0, Width::W8, 1), read(64, Width::W8)]),
        ),
        batch_answer("batch-w64", p.batch(&[read(0, Width::W64)])),
        batch_answer("batch-far", p.batch(&[read(1 << 32, Width::W8)])),
    ]);
    Ok(out)
}

fn config(device: &Device) -> Vec<String> {
    vec![
        answer(
            "write-vendor",
            device.config_write(0x00, Width::W16, 0x1234),
        ),
        answer(
            "write-command",
            device.config_write(0x04, Width::W16, 0x0007),
        ),
        answer(
            "write-bar0",
            device.config_write(0x10, Width::W32, 0xffff_ffff),
        ),
        answer("write-bar5", device.config_write(0x24, Width::W32, 0)),
        answer(
            "write-interrupt-line",
            device.config_write(0x3c, Width::W8, 9),
        ),
        answer("write-3f", device.config_write(0x3f, Width::W8, 0)),
        answer(
            "write-msi",
            device.config_write(0x50, Width::W32, 0x0081_0005),
        ),
        answer(
            "write-msi-address",
            device.config_write(0x54, Width::W32, 0xfee0_0000),
        ),
        answer(
            "write-vendor-cap",
            device.config_write(0x62, Width::W16, 0xabcd),
        ),
        answer("write-end", device.config_write(0x100, Width::W32, 0)),
        answer(
            "write-wide-value",
            device.config_write(0x80, Width::W8, 0x1ff),
        ),
        answer("write-w64", device.config_write(0x80, Width::W64, 0)),
        answer("read-end", device.config_read(0x100, Width::W8)),
        answer("read-straddle", device.config_read(0xfe, Width::W32)),
        answer("read-misaligned", device.config_read(0x41, Width::W16)),
        answer("read-w64", device.config_read(0x00, Width::W64)),
        answer("read-max", device.config_read(u32::MAX, Width::W8)),
    ]
}

fn double_map(device: &Device) -> Result<Vec<String>, String> {
    let first = device.map_bar(0).map_err(|c| fail("map-bar 0", c))?;
    let mut out = vec![answer("map-again", device.map_bar(0))];
    let ports = device.io_bar(1).map_err(|c| fail("io-bar 1", c))?;
    out.push(answer("io-again", device.io_bar(1)));
    let irq = device.interrupt().map_err(|c| fail("interrupt", c))?;
    out.push(answer("interrupt-again", device.interrupt()));
    drop((first, ports, irq));
    out.push(answer("map-after-drop", device.map_bar(0)));
    out.push(answer("map-other-bar", device.map_bar(2)));
    Ok(out)
}

fn dma_limits(device: &Device) -> Vec<String> {
    let mut out = vec![
        answer("size-0", device.allocate_dma(0, 8)),
        answer("size-over-16mib", device.allocate_dma(16 * MIB + 1, 8)),
        answer("size-max", device.allocate_dma(u64::MAX, 8)),
        answer("align-0", device.allocate_dma(64, 0)),
        answer("align-3", device.allocate_dma(64, 3)),
        answer("align-8192", device.allocate_dma(64, 8192)),
    ];
    let mut held = Vec::new();
    let stop = loop {
        match device.allocate_dma(256 * KIB, 4096) {
            Ok(buffer) => held.push(buffer),
            Err(code) => break code,
        }
        if held.len() > 64 {
            break ErrorCode::Unsupported;
        }
    };
    out.push(format!("held-256kib={} then={}", held.len(), stop.name()));
    if let Some(buffer) = held.pop() {
        out.push(answer("free-one", buffer.free()));
    }
    out.push(answer(
        "allocate-after-free",
        device.allocate_dma(256 * KIB, 4096),
    ));
    out
}

fn dma_overrun(device: &Device) -> Result<Vec<String>, String> {
    let b = device
        .allocate_dma(4096, 64)
        .map_err(|c| fail("allocate", c))?;
    let out = vec![
        answer("read-straddle", b.read(4090, 10)),
        answer("read-empty-at-end", b.read(4096, 0)),
        answer("read-past-end", b.read(4097, 0)),
        answer("read-wrap", b.read(u64::MAX, 2)),
        answer("read-huge", b.read(0, u64::MAX)),
        answer("write-straddle", b.write(4095, &[1, 2])),
        answer("write-wrap", b.write(u64::MAX, &[1])),
        batch_answer(
            "batch",
            b.batch(&[write(0, Width::W32, 7), read(4092, Width::W64)]),
        ),
        batch_answer("batch-misaligned", b.batch(&[read(3, Width::W32)])),
        format!(
            "first-op-kept={:?}",
            b.read(0, 4).map_err(|c| fail("read back", c))?
        ),
    ];
    Ok(out)
}

fn use_after_free(device: &Device) -> Result<Vec<String>, String> {
    let b = device
        .allocate_dma(128, 8)
        .map_err(|c| fail("allocate", c))?;
    Ok(vec![
        answer("free", b.free()),
        answer("read", b.read(0, 1)),
        answer("write", b.write(0, &[1])),
        batch_answer("batch", b.batch(&[read(0, Width::W8)])),
        answer("device-address", b.device_address()),
        answer("free-again", b.free()),
        format!("size={}", b.size()),
    ])
}

fn poll_timeout(device: &Device) -> Result<Vec<String>, String> {
    let r = device.map_bar(0).map_err(|c| fail("map-bar 0", c))?;
    let never = RegOp::Poll(RegPoll {
        offset: STATUS,
        width: Width::W32,
        mask: 0xffff_ffff,
        expect: 0,
        timeout_ns: 10_000,
    });
    let result = r.batch(&[never, write(SCRATCH, Width::W32, 0xbad)]);
    let after = r.read(SCRATCH, Width::W32).map_err(|c| fail("read", c))?;
    Ok(vec![
        batch_answer("batch", result),
        format!("write-after-timeout-ran={}", after != 0),
    ])
}

/// Calls `mmio-region.read` on a handle index this instance was never given.
#[allow(unsafe_code)]
fn forge_handle() -> Vec<String> {
    // SAFETY: deliberately unsound: the index names no handle of this instance, which the
    // canonical ABI must turn into a trap of this instance.
    let forged = unsafe { MmioRegion::from_handle(0x00ff_fff0) };
    vec![answer("forged-read", forged.read(0, Width::W32))]
}

/// Calls `mmio-region.read` with the handle index of this instance's `interrupt`.
#[allow(unsafe_code)]
fn forge_type(device: &Device) -> Result<Vec<String>, String> {
    let irq = device.interrupt().map_err(|c| fail("interrupt", c))?;
    let index = irq.take_handle();
    // SAFETY: deliberately unsound: the index names an `interrupt`, not an `mmio-region`; the
    // canonical ABI checks the type and traps this instance.
    let forged = unsafe { MmioRegion::from_handle(index) };
    Ok(vec![answer("forged-read", forged.read(0, Width::W32))])
}
