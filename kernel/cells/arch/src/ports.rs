//! I/O ports as a capability: [`claim`] hands out a [`PortRange`] once; only its holder can read
//! and write those ports, and dropping it gives the range back.

use keel_sync::IrqSafeMutex;
use x86_64::instructions::port::Port;

/// Ranges currently claimed: (first port, count). Few exist (one per I/O BAR in use).
static CLAIMED: IrqSafeMutex<[Option<(u16, u16)>; 32]> = IrqSafeMutex::new([None; 32]);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PortError {
    /// The range overlaps one already claimed.
    InUse,
    /// Empty, or past port 0xFFFF.
    InvalidRange,
    /// Too many ranges claimed at once.
    TooMany,
    /// Offset or width outside the range.
    OutOfRange,
}

/// Exclusive use of ports `[base, base + count)`.
#[derive(Debug)]
pub struct PortRange {
    base: u16,
    count: u16,
    slot: usize,
}

/// Claims `[base, base + count)` for exclusive use.
pub fn claim(base: u16, count: u16) -> Result<PortRange, PortError> {
    if count == 0 || base.checked_add(count - 1).is_none() {
        return Err(PortError::InvalidRange);
    }
    let end = u32::from(base) + u32::from(count);
    let mut claimed = CLAIMED.lock();
    let overlaps = claimed.iter().flatten().any(|&(b, c)| {
        let other_end = u32::from(b) + u32::from(c);
        u32::from(base) < other_end && u32::from(b) < end
    });
    if overlaps {
        return Err(PortError::InUse);
    }
    let slot = claimed
        .iter()
        .position(Option::is_none)
        .ok_or(PortError::TooMany)?;
    claimed[slot] = Some((base, count));
    Ok(PortRange { base, count, slot })
}

impl PortRange {
    pub fn base(&self) -> u16 {
        self.base
    }

    pub fn count(&self) -> u16 {
        self.count
    }

    fn port(&self, offset: u16, bytes: u16) -> Result<u16, PortError> {
        match offset.checked_add(bytes) {
            Some(end) if end <= self.count => Ok(self.base + offset),
            _ => Err(PortError::OutOfRange),
        }
    }

    pub fn read_u8(&self, offset: u16) -> Result<u8, PortError> {
        let port = self.port(offset, 1)?;
        // SAFETY: the port lies in the range this value owns exclusively.
        Ok(unsafe { Port::<u8>::new(port).read() })
    }

    pub fn read_u16(&self, offset: u16) -> Result<u16, PortError> {
        let port = self.port(offset, 2)?;
        // SAFETY: as in `read_u8`.
        Ok(unsafe { Port::<u16>::new(port).read() })
    }

    pub fn read_u32(&self, offset: u16) -> Result<u32, PortError> {
        let port = self.port(offset, 4)?;
        // SAFETY: as in `read_u8`.
        Ok(unsafe { Port::<u32>::new(port).read() })
    }

    pub fn write_u8(&self, offset: u16, value: u8) -> Result<(), PortError> {
        let port = self.port(offset, 1)?;
        // SAFETY: as in `read_u8`.
        unsafe { Port::<u8>::new(port).write(value) };
        Ok(())
    }

    pub fn write_u16(&self, offset: u16, value: u16) -> Result<(), PortError> {
        let port = self.port(offset, 2)?;
        // SAFETY: as in `read_u8`.
        unsafe { Port::<u16>::new(port).write(value) };
        Ok(())
    }

    pub fn write_u32(&self, offset: u16, value: u32) -> Result<(), PortError> {
        let port = self.port(offset, 4)?;
        // SAFETY: as in `read_u8`.
        unsafe { Port::<u32>::new(port).write(value) };
        Ok(())
    }
}

impl Drop for PortRange {
    fn drop(&mut self) {
        CLAIMED.lock()[self.slot] = None;
    }
}
