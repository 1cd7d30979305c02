//! The language-specific data area (`.gcc_except_table`) that LLVM emits for each function with
//! landing pads: which code ranges (call sites) have a landing pad, and whether it catches.

/// Pointer encodings (DW_EH_PE_*) used in LSDA headers and call-site tables.
const OMIT: u8 = 0xFF;
const FORMAT_MASK: u8 = 0x0F;
const APPLICATION_MASK: u8 = 0x70;
const PCREL: u8 = 0x10;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LsdaError {
    Truncated,
    UnsupportedEncoding(u8),
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
    /// Address of `bytes[0]`, for pc-relative values.
    base: u64,
}

impl<'a> Reader<'a> {
    fn u8(&mut self) -> Result<u8, LsdaError> {
        let b = *self.bytes.get(self.pos).ok_or(LsdaError::Truncated)?;
        self.pos += 1;
        Ok(b)
    }
    fn fixed<const N: usize>(&mut self) -> Result<[u8; N], LsdaError> {
        let s = self
            .bytes
            .get(self.pos..self.pos + N)
            .ok_or(LsdaError::Truncated)?;
        self.pos += N;
        let mut out = [0u8; N];
        out.copy_from_slice(s);
        Ok(out)
    }
    fn uleb128(&mut self) -> Result<u64, LsdaError> {
        let mut value = 0u64;
        let mut shift = 0;
        loop {
            let b = self.u8()?;
            if shift < 64 {
                value |= ((b & 0x7F) as u64) << shift;
            }
            shift += 7;
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
    }
    fn sleb128(&mut self) -> Result<i64, LsdaError> {
        let mut value = 0i64;
        let mut shift = 0;
        loop {
            let b = self.u8()?;
            if shift < 64 {
                value |= ((b & 0x7F) as i64) << shift;
            }
            shift += 7;
            if b & 0x80 == 0 {
                if shift < 64 && b & 0x40 != 0 {
                    value |= -1i64 << shift;
                }
                return Ok(value);
            }
        }
    }
    fn encoded(&mut self, encoding: u8) -> Result<u64, LsdaError> {
        let here = self.base + self.pos as u64;
        let value = match encoding & FORMAT_MASK {
            0x00 => u64::from_le_bytes(self.fixed::<8>()?),
            0x01 => self.uleb128()?,
            0x02 => u16::from_le_bytes(self.fixed::<2>()?) as u64,
            0x03 => u32::from_le_bytes(self.fixed::<4>()?) as u64,
            0x04 => u64::from_le_bytes(self.fixed::<8>()?),
            0x09 => self.sleb128()? as u64,
            0x0A => i16::from_le_bytes(self.fixed::<2>()?) as i64 as u64,
            0x0B => i32::from_le_bytes(self.fixed::<4>()?) as i64 as u64,
            0x0C => i64::from_le_bytes(self.fixed::<8>()?) as u64,
            _ => return Err(LsdaError::UnsupportedEncoding(encoding)),
        };
        match encoding & APPLICATION_MASK {
            0 => Ok(value),
            PCREL => Ok(here.wrapping_add(value)),
            _ => Err(LsdaError::UnsupportedEncoding(encoding)),
        }
    }
}

/// Where to land for an instruction address, if anywhere.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LandingPad {
    pub address: u64,
    /// 0 for a cleanup; otherwise the type filter of the first action (a catch).
    pub selector: i64,
}

/// Looks up `ip` (an address inside the instruction that raised or made the call) in the LSDA
/// `bytes`, found at address `lsda_address`, of the function starting at `function_start`.
/// `Ok(None)`: no landing pad in this frame, keep unwinding.
pub fn find_landing_pad(
    bytes: &[u8],
    lsda_address: u64,
    function_start: u64,
    ip: u64,
) -> Result<Option<LandingPad>, LsdaError> {
    let mut r = Reader {
        bytes,
        pos: 0,
        base: lsda_address,
    };
    let lpstart_encoding = r.u8()?;
    let landing_pad_base = if lpstart_encoding == OMIT {
        function_start
    } else {
        r.encoded(lpstart_encoding)?
    };
    let ttype_encoding = r.u8()?;
    if ttype_encoding != OMIT {
        r.uleb128()?;
    }
    let call_site_encoding = r.u8()?;
    let table_len = r.uleb128()? as usize;
    let table_end = r.pos.checked_add(table_len).ok_or(LsdaError::Truncated)?;
    let action_table = table_end;
    while r.pos < table_end {
        let start = r.encoded(call_site_encoding)?;
        let len = r.encoded(call_site_encoding)?;
        let pad = r.encoded(call_site_encoding)?;
        let action = r.uleb128()?;
        let from = function_start.wrapping_add(start);
        if ip < from {
            // The table is sorted: no entry covers `ip`.
            break;
        }
        if ip < from.wrapping_add(len) {
            if pad == 0 {
                return Ok(None);
            }
            let selector = if action == 0 {
                0
            } else {
                let mut a = Reader {
                    bytes,
                    pos: action_table + action as usize - 1,
                    base: lsda_address,
                };
                a.sleb128()?
            };
            return Ok(Some(LandingPad {
                address: landing_pad_base.wrapping_add(pad),
                selector,
            }));
        }
    }
    // Not covered: the instruction cannot unwind in the compiler's view (a fault or kill hit
    // code between calls). Nothing to clean up in this frame; continue with its caller.
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An LSDA as LLVM writes it: lpstart omitted, no type table, uleb128 call sites.
    fn sample() -> Vec<u8> {
        let mut v = vec![0xFF, 0xFF, 0x01];
        let table: Vec<u8> = vec![
            0x10, 0x08, 0x40, 0x00, // [0x10, 0x18) -> pad 0x40, cleanup
            0x20, 0x04, 0x00, 0x00, // [0x20, 0x24) -> no pad
            0x30, 0x08, 0x50, 0x01, // [0x30, 0x38) -> pad 0x50, action 1
        ];
        v.push(table.len() as u8);
        v.extend(table);
        v.extend([0x01, 0x00]); // action 1: filter 1, no next
        v
    }

    #[test]
    fn finds_cleanup_and_catch_pads() {
        let lsda = sample();
        let f = 0x1000;
        assert_eq!(
            find_landing_pad(&lsda, 0, f, f + 0x12).unwrap(),
            Some(LandingPad {
                address: f + 0x40,
                selector: 0
            })
        );
        assert_eq!(
            find_landing_pad(&lsda, 0, f, f + 0x37).unwrap(),
            Some(LandingPad {
                address: f + 0x50,
                selector: 1
            })
        );
    }

    #[test]
    fn uncovered_or_padless_means_continue() {
        let lsda = sample();
        let f = 0x1000;
        assert_eq!(find_landing_pad(&lsda, 0, f, f + 0x21).unwrap(), None);
        assert_eq!(find_landing_pad(&lsda, 0, f, f + 0x2A).unwrap(), None);
        assert_eq!(find_landing_pad(&lsda, 0, f, f + 0x08).unwrap(), None);
    }

    #[test]
    fn truncated_data_is_an_error_not_a_panic() {
        let lsda = sample();
        for cut in 0..lsda.len() - 2 {
            let _ = find_landing_pad(&lsda[..cut], 0, 0x1000, 0x1037);
        }
        assert_eq!(find_landing_pad(&[], 0, 0, 0), Err(LsdaError::Truncated));
        assert_eq!(
            find_landing_pad(&[0xFF, 0xFF, 0x0F, 0x04, 0, 0, 0, 0], 0, 0, 0),
            Err(LsdaError::UnsupportedEncoding(0x0F))
        );
    }
}
