//! Checked register access: offsets, widths, alignment and values, and `reg-op` batches, over
//! any register space (an MMIO window, an I/O port range, a DMA buffer).

use alloc::vec::Vec;

use crate::bindings::host::wasi_dd::dd::types::{BatchError, ErrorCode, RegOp, Width};
use crate::platform::Platform;
use crate::types::Access;

pub(crate) fn access(width: Width) -> Access {
    match width {
        Width::W8 => Access::W8,
        Width::W16 => Access::W16,
        Width::W32 => Access::W32,
        Width::W64 => Access::W64,
    }
}

/// `offset .. offset + width` lies inside `0 .. size` (`out-of-range`) and `offset` is a
/// multiple of the width (`misaligned`), checked in that order.
pub(crate) fn check_access(offset: u64, width: Access, size: u64) -> Result<(), ErrorCode> {
    let end = offset
        .checked_add(width.bytes())
        .ok_or(ErrorCode::OutOfRange)?;
    if end > size {
        return Err(ErrorCode::OutOfRange);
    }
    if !offset.is_multiple_of(width.bytes()) {
        return Err(ErrorCode::Misaligned);
    }
    Ok(())
}

/// `offset .. offset + len` lies inside `0 .. size`.
pub(crate) fn check_span(offset: u64, len: u64, size: u64) -> Result<(), ErrorCode> {
    match offset.checked_add(len) {
        Some(end) if end <= size => Ok(()),
        _ => Err(ErrorCode::OutOfRange),
    }
}

/// A value to write has no bits above its width (`out-of-range` otherwise).
pub(crate) fn check_value(value: u64, width: Access) -> Result<(), ErrorCode> {
    if width == Access::W64 || value >> (width.bytes() * 8) == 0 {
        Ok(())
    } else {
        Err(ErrorCode::OutOfRange)
    }
}

/// Registers addressed from 0 up to `size`. `load` and `store` are only called with accesses
/// that passed [`Registers::check`].
pub(crate) trait Registers {
    fn size(&self) -> u64;
    /// Widths the space cannot do at all (I/O ports have no 64-bit access).
    fn supports(&self, _width: Access) -> Result<(), ErrorCode> {
        Ok(())
    }
    fn load(&self, offset: u64, width: Access) -> u64;
    fn store(&self, offset: u64, width: Access, value: u64);

    fn check(&self, offset: u64, width: Access) -> Result<(), ErrorCode> {
        self.supports(width)?;
        check_access(offset, width, self.size())
    }

    fn read(&self, offset: u64, width: Access) -> Result<u64, ErrorCode> {
        self.check(offset, width)?;
        Ok(self.load(offset, width))
    }

    fn write(&self, offset: u64, width: Access, value: u64) -> Result<(), ErrorCode> {
        self.check(offset, width)?;
        check_value(value, width)?;
        self.store(offset, width, value);
        Ok(())
    }
}

/// Runs `ops` in order on `space`; the first failing op ends the batch with its index.
pub(crate) fn run_batch<R: Registers, P: Platform>(
    space: &R,
    platform: &P,
    ops: &[RegOp],
) -> Result<Vec<u64>, BatchError> {
    let mut results = Vec::with_capacity(ops.len());
    for (index, op) in ops.iter().enumerate() {
        let failed = |code| BatchError {
            index: u32::try_from(index).unwrap_or(u32::MAX),
            code,
        };
        match *op {
            RegOp::Read(r) => results.push(space.read(r.offset, access(r.width)).map_err(failed)?),
            RegOp::Write(w) => space
                .write(w.offset, access(w.width), w.value)
                .map_err(failed)?,
            RegOp::Modify(m) => {
                let width = access(m.width);
                space.check(m.offset, width).map_err(failed)?;
                check_value(m.clear, width).map_err(failed)?;
                check_value(m.set, width).map_err(failed)?;
                let value = (space.load(m.offset, width) & !m.clear) | m.set;
                space.store(m.offset, width, value);
            }
            RegOp::Poll(p) => {
                let width = access(p.width);
                space.check(p.offset, width).map_err(failed)?;
                check_value(p.mask, width).map_err(failed)?;
                check_value(p.expect, width).map_err(failed)?;
                let value = poll(
                    space,
                    platform,
                    p.offset,
                    width,
                    p.mask,
                    p.expect,
                    p.timeout_ns,
                )
                .map_err(failed)?;
                results.push(value);
            }
            RegOp::Delay(ns) => platform.sleep_ns(ns),
        }
    }
    Ok(results)
}

/// Reads until `(value & mask) == expect`, at least once, for at most `timeout_ns` of the
/// platform's clock.
fn poll<R: Registers, P: Platform>(
    space: &R,
    platform: &P,
    offset: u64,
    width: Access,
    mask: u64,
    expect: u64,
    timeout_ns: u64,
) -> Result<u64, ErrorCode> {
    let start = platform.now_ns();
    loop {
        let value = space.load(offset, width);
        if value & mask == expect {
            return Ok(value);
        }
        if platform.now_ns().saturating_sub(start) >= timeout_ns {
            return Err(ErrorCode::TimedOut);
        }
        core::hint::spin_loop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accesses_must_lie_inside_and_be_aligned() {
        assert_eq!(check_access(0, Access::W32, 4), Ok(()));
        assert_eq!(check_access(4, Access::W8, 4), Err(ErrorCode::OutOfRange));
        assert_eq!(check_access(2, Access::W32, 8), Err(ErrorCode::Misaligned));
        assert_eq!(check_access(6, Access::W32, 8), Err(ErrorCode::OutOfRange));
        assert_eq!(
            check_access(u64::MAX - 1, Access::W64, u64::MAX),
            Err(ErrorCode::OutOfRange)
        );
        assert_eq!(check_access(8, Access::W64, 16), Ok(()));
    }

    #[test]
    fn spans_do_not_wrap() {
        assert_eq!(check_span(4096, 0, 4096), Ok(()));
        assert_eq!(check_span(4097, 0, 4096), Err(ErrorCode::OutOfRange));
        assert_eq!(check_span(u64::MAX, 2, 4096), Err(ErrorCode::OutOfRange));
        assert_eq!(check_span(0, u64::MAX, 4096), Err(ErrorCode::OutOfRange));
    }

    #[test]
    fn values_fit_their_width() {
        assert_eq!(check_value(0xff, Access::W8), Ok(()));
        assert_eq!(check_value(0x100, Access::W8), Err(ErrorCode::OutOfRange));
        assert_eq!(check_value(0xffff_ffff, Access::W32), Ok(()));
        assert_eq!(
            check_value(0x1_0000_0000, Access::W32),
            Err(ErrorCode::OutOfRange)
        );
        assert_eq!(check_value(u64::MAX, Access::W64), Ok(()));
    }
}
