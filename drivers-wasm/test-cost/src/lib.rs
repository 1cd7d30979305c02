//! A WASI-dd driver that measures nothing itself: it repeats one kind of register access so the
//! host can time it (`keel bench-dd`). Scenarios: `read N`, `write N` (single calls on BAR 0),
//! `batch-read N K`, `batch-write N K` (N accesses in batches of K), `packed-read N K`,
//! `packed-write N K` (the same with `batch-packed`). Returns the last value read
//! (or the number of accesses) so the work cannot be optimized away.

#![deny(unsafe_code)]

#[allow(unsafe_code)]
mod bindings {
    wit_bindgen::generate!({ path: "../../wit/dd", world: "test-driver" });
}

use bindings::wasi_dd::dd::mmio::MmioRegion;
use bindings::wasi_dd::dd::pci::Device;
use bindings::wasi_dd::dd::types::{ErrorCode, RegOp, RegRead, RegWrite, Width};

const REGISTER: u64 = 0x100;

struct Driver;

impl bindings::Guest for Driver {
    fn run(device: Device, scenario: String) -> Result<String, String> {
        let words: Vec<&str> = scenario.split_whitespace().collect();
        let number = |i: usize| -> Result<u64, String> {
            words
                .get(i)
                .and_then(|w| w.parse().ok())
                .filter(|&n| n > 0)
                .ok_or_else(|| format!("scenario {scenario:?}: word {i} must be a positive count"))
        };
        let region = device
            .map_bar(0)
            .map_err(|c| format!("map-bar 0: {}", c.name()))?;
        let outcome = match words.first().copied() {
            Some("read") => single_reads(&region, number(1)?),
            Some("write") => single_writes(&region, number(1)?),
            Some("batch-read") => batches(&region, number(1)?, number(2)?, false),
            Some("batch-write") => batches(&region, number(1)?, number(2)?, true),
            Some("packed-read") => packed_batches(&region, number(1)?, number(2)?, false),
            Some("packed-write") => packed_batches(&region, number(1)?, number(2)?, true),
            _ => return Err(format!("unknown scenario {scenario:?}")),
        };
        outcome
            .map(|value| value.to_string())
            .map_err(|code| code.name().to_string())
    }
}

#[allow(unsafe_code)]
mod export {
    use super::Driver;
    crate::bindings::export!(Driver with_types_in crate::bindings);
}

fn single_reads(region: &MmioRegion, count: u64) -> Result<u64, ErrorCode> {
    let mut last = 0;
    for _ in 0..count {
        last = region.read(REGISTER, Width::W32)?;
    }
    Ok(last)
}

fn single_writes(region: &MmioRegion, count: u64) -> Result<u64, ErrorCode> {
    for i in 0..count {
        region.write(REGISTER, Width::W32, i & 0xffff_ffff)?;
    }
    Ok(count)
}

fn batches(region: &MmioRegion, count: u64, per_batch: u64, write: bool) -> Result<u64, ErrorCode> {
    let ops: Vec<RegOp> = (0..per_batch)
        .map(|i| {
            let offset = REGISTER + 4 * (i % 32);
            if write {
                RegOp::Write(RegWrite {
                    offset,
                    width: Width::W32,
                    value: i,
                })
            } else {
                RegOp::Read(RegRead {
                    offset,
                    width: Width::W32,
                })
            }
        })
        .collect();
    let mut last = 0;
    for _ in 0..count / per_batch {
        let values = region.batch(&ops).map_err(|e| e.code)?;
        last = values.last().copied().unwrap_or(per_batch);
    }
    Ok(last)
}

/// The packed encoding of `wit/dd/types.wit`: kind, width 2 (`w32`), offset.
fn packed_header(kind: u64, offset: u64) -> u64 {
    kind | 2 << 8 | offset << 16
}

fn packed_batches(
    region: &MmioRegion,
    count: u64,
    per_batch: u64,
    write: bool,
) -> Result<u64, ErrorCode> {
    let mut words = Vec::new();
    for i in 0..per_batch {
        let offset = REGISTER + 4 * (i % 32);
        if write {
            words.extend([packed_header(1, offset), i]);
        } else {
            words.push(packed_header(0, offset));
        }
    }
    let mut last = 0;
    for _ in 0..count / per_batch {
        let values = region.batch_packed(&words).map_err(|e| e.code)?;
        last = values.last().copied().unwrap_or(per_batch);
    }
    Ok(last)
}
