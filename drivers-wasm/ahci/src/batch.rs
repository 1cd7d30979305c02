//! Packed batches (`wasi-dd:dd/types`): a register sequence, or the writes that fill command
//! tables, crosses the component boundary in one call instead of one call per access.

use crate::bindings::wasi_dd::dd::dma::DmaBuffer;
use crate::bindings::wasi_dd::dd::mmio::MmioRegion;
use crate::bindings::wasi_dd::dd::platform::{LogLevel, log};
use crate::bindings::wasi_dd::dd::types::{BatchError, ErrorCode};

const OP_READ: u64 = 0;
const OP_WRITE: u64 = 1;
const OP_MODIFY: u64 = 2;
const OP_POLL: u64 = 3;
const OP_DELAY: u64 = 4;
const W32: u64 = 2;
const W64: u64 = 3;

/// Operations in the packed encoding: a header word (kind, width, offset), then its operands;
/// and how many values (reads and polls) the batch returns.
#[derive(Default)]
pub struct Batch {
    words: Vec<u64>,
    results: usize,
}

impl Batch {
    fn header(kind: u64, width: u64, offset: u64) -> u64 {
        kind | (width << 8) | (offset << 16)
    }

    pub fn read32(&mut self, offset: u64) -> &mut Self {
        self.words.push(Self::header(OP_READ, W32, offset));
        self.results += 1;
        self
    }

    pub fn write32(&mut self, offset: u64, value: u64) -> &mut Self {
        self.words
            .extend([Self::header(OP_WRITE, W32, offset), value & 0xffff_ffff]);
        self
    }

    pub fn modify32(&mut self, offset: u64, clear: u64, set: u64) -> &mut Self {
        self.words
            .extend([Self::header(OP_MODIFY, W32, offset), clear, set]);
        self
    }

    /// Waits until `(value & mask) == expect`; the batch fails with `timed-out` if it never is.
    pub fn poll32(&mut self, offset: u64, mask: u64, expect: u64, timeout_ns: u64) -> &mut Self {
        self.words
            .extend([Self::header(OP_POLL, W32, offset), mask, expect, timeout_ns]);
        self.results += 1;
        self
    }

    pub fn delay(&mut self, ns: u64) -> &mut Self {
        self.words.extend([Self::header(OP_DELAY, 0, 0), ns]);
        self
    }

    pub fn write64(&mut self, offset: u64, value: u64) -> &mut Self {
        self.words
            .extend([Self::header(OP_WRITE, W64, offset), value]);
        self
    }

    /// Runs on the HBA's registers; returns the values of the reads and polls, in order.
    pub fn on_registers(&self, registers: &MmioRegion, what: &str) -> Result<Vec<u64>, ErrorCode> {
        let values = registers
            .batch_packed(&self.words)
            .map_err(|e| failed(what, e))?;
        self.counted(values, what)
    }

    /// Runs on a DMA buffer (command lists and tables).
    pub fn on_memory(&self, memory: &DmaBuffer, what: &str) -> Result<Vec<u64>, ErrorCode> {
        let values = memory
            .batch_packed(&self.words)
            .map_err(|e| failed(what, e))?;
        self.counted(values, what)
    }

    /// The values, if there is one per read and poll: callers index them without checking.
    fn counted(&self, values: Vec<u64>, what: &str) -> Result<Vec<u64>, ErrorCode> {
        if values.len() == self.results {
            return Ok(values);
        }
        log(
            LogLevel::Error,
            &format!("{what}: {} values for {} reads", values.len(), self.results),
        );
        Err(ErrorCode::Unsupported)
    }
}

fn failed(what: &str, error: BatchError) -> ErrorCode {
    log(
        LogLevel::Warn,
        &format!(
            "{what}: operation {} failed: {}",
            error.index,
            error.code.name()
        ),
    );
    error.code
}
