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
        run_op(space, platform, op, &mut results).map_err(|code| BatchError {
            index: u32::try_from(index).unwrap_or(u32::MAX),
            code,
        })?;
    }
    Ok(results)
}

/// Runs one operation; a read or poll appends its value to `results`.
fn run_op<R: Registers, P: Platform>(
    space: &R,
    platform: &P,
    op: &RegOp,
    results: &mut Vec<u64>,
) -> Result<(), ErrorCode> {
    match *op {
        RegOp::Read(r) => results.push(space.read(r.offset, access(r.width))?),
        RegOp::Write(w) => space.write(w.offset, access(w.width), w.value)?,
        RegOp::Modify(m) => {
            let width = access(m.width);
            space.check(m.offset, width)?;
            check_value(m.clear, width)?;
            check_value(m.set, width)?;
            let value = (space.load(m.offset, width) & !m.clear) | m.set;
            space.store(m.offset, width, value);
        }
        RegOp::Poll(p) => {
            let width = access(p.width);
            space.check(p.offset, width)?;
            check_value(p.mask, width)?;
            check_value(p.expect, width)?;
            let value = poll(
                space,
                platform,
                p.offset,
                width,
                p.mask,
                p.expect,
                p.timeout_ns,
            )?;
            results.push(value);
        }
        RegOp::Delay(ns) => platform.sleep_ns(ns),
    }
    Ok(())
}

/// Decodes the packed operation at the start of `words` (the encoding is described in
/// `wit/dd/types.wit`): the operation and how many words it took, or `None` if it is malformed
/// (unknown kind or width, words missing).
fn decode_one(words: &[u64]) -> Option<(RegOp, usize)> {
    use crate::bindings::host::wasi_dd::dd::types::{RegModify, RegPoll, RegRead, RegWrite};
    let header = *words.first()?;
    let kind = header & 0xff;
    let offset = header >> 16;
    let width = match (header >> 8) & 0xff {
        0 => Width::W8,
        1 => Width::W16,
        2 => Width::W32,
        3 => Width::W64,
        // A delay has no width.
        _ if kind == 4 => Width::W8,
        _ => return None,
    };
    let operands = match kind {
        0 => 0,
        1 | 4 => 1,
        2 => 2,
        3 => 3,
        _ => return None,
    };
    let args = words.get(1..=operands)?;
    let op = match kind {
        0 => RegOp::Read(RegRead { offset, width }),
        1 => RegOp::Write(RegWrite {
            offset,
            width,
            value: args[0],
        }),
        2 => RegOp::Modify(RegModify {
            offset,
            width,
            clear: args[0],
            set: args[1],
        }),
        3 => RegOp::Poll(RegPoll {
            offset,
            width,
            mask: args[0],
            expect: args[1],
            timeout_ns: args[2],
        }),
        _ => RegOp::Delay(args[0]),
    };
    Some((op, 1 + operands))
}

/// Runs a packed batch one operation at a time (no list of `RegOp` is built): the well-formed
/// operations before a malformed one take effect, then the batch ends at the malformed one
/// with `unsupported`.
pub(crate) fn run_packed_batch<R: Registers, P: Platform>(
    space: &R,
    platform: &P,
    words: &[u64],
) -> Result<Vec<u64>, BatchError> {
    let mut results = Vec::with_capacity(words.len());
    let mut rest = words;
    let mut index = 0u32;
    while !rest.is_empty() {
        let Some((op, used)) = decode_one(rest) else {
            return Err(BatchError {
                index,
                code: ErrorCode::Unsupported,
            });
        };
        run_op(space, platform, &op, &mut results).map_err(|code| BatchError { index, code })?;
        rest = &rest[used..];
        index = index.saturating_add(1);
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

    /// Decodes a packed batch as `run_packed_batch` walks it: the operations, and the index of
    /// the malformed one that stops it, if any.
    fn decode_all(words: &[u64]) -> (Vec<RegOp>, Option<u32>) {
        let mut ops = Vec::new();
        let mut rest = words;
        while !rest.is_empty() {
            let Some((op, used)) = decode_one(rest) else {
                return (ops.clone(), Some(ops.len() as u32));
            };
            ops.push(op);
            rest = &rest[used..];
        }
        (ops, None)
    }

    #[test]
    fn packed_batches_decode_to_the_same_operations() {
        use crate::bindings::host::wasi_dd::dd::types::{RegModify, RegPoll, RegRead, RegWrite};
        use alloc::vec;
        let header = |kind: u64, width: u64, offset: u64| kind | width << 8 | offset << 16;
        let words = [
            header(0, 2, 0x10),
            header(1, 3, 0x18),
            7,
            header(2, 1, 0x20),
            0xf0,
            0x01,
            header(3, 2, 0x24),
            0x1,
            0x0,
            1000,
            header(4, 0, 0),
            500,
        ];
        let (ops, stopped_at) = decode_all(&words);
        assert_eq!(stopped_at, None);
        assert_eq!(
            ops,
            vec![
                RegOp::Read(RegRead {
                    offset: 0x10,
                    width: Width::W32
                }),
                RegOp::Write(RegWrite {
                    offset: 0x18,
                    width: Width::W64,
                    value: 7
                }),
                RegOp::Modify(RegModify {
                    offset: 0x20,
                    width: Width::W16,
                    clear: 0xf0,
                    set: 0x01
                }),
                RegOp::Poll(RegPoll {
                    offset: 0x24,
                    width: Width::W32,
                    mask: 1,
                    expect: 0,
                    timeout_ns: 1000
                }),
                RegOp::Delay(500),
            ]
        );
        // A write without its value, an unknown kind, an unknown width: each ends the batch at
        // its own index, after the operations before it.
        for (words, index) in [
            (vec![header(0, 2, 0), header(1, 2, 4)], 1),
            (vec![header(9, 2, 0)], 0),
            (vec![header(0, 2, 0), header(0, 2, 4), header(0, 7, 8)], 2),
        ] {
            let (ops, stopped_at) = decode_all(&words);
            assert_eq!(ops.len(), index as usize);
            assert_eq!(stopped_at, Some(index));
        }
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
