//! Block devices as the file systems see them.
//!
//! - [`BlockDevice`] is a disk, or a part of one: whole sectors read and written at a logical
//!   block address, and a flush of the device's write cache. It takes `&self` (a device does its
//!   own locking) so that a file system and the shell's `lsblk` can share it.
//! - [`MemDisk`] is a disk in memory, for tests and RAM disks.
//! - [`partitions`] finds the volumes of a disk (GPT, MBR, or a whole-disk FAT volume), and
//!   [`Partition`] is a window onto a disk that is itself a [`BlockDevice`].
//!
//! Every failure is a [`BlockError`] value: a request past the end of the device never reaches
//! the hardware.
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

extern crate alloc;

mod mem_disk;
pub mod partitions;

pub use mem_disk::MemDisk;
pub use partitions::{Partition, PartitionInfo, PartitionTable, read_partitions};

use core::fmt;

/// Why a block request failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockError {
    /// The request reaches past the last sector, or its buffer is not a whole number of sectors.
    OutOfRange,
    /// The device reported an error for this request (the driver has recovered the device).
    Device,
    /// The device is gone (its driver failed or was stopped).
    Gone,
    /// The device does not allow writes.
    ReadOnly,
    /// The host had no memory for the transfer.
    NoMemory,
}

impl fmt::Display for BlockError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BlockError::OutOfRange => "request out of range",
            BlockError::Device => "device error",
            BlockError::Gone => "device gone",
            BlockError::ReadOnly => "read-only device",
            BlockError::NoMemory => "out of memory",
        })
    }
}

/// A disk or a part of one.
pub trait BlockDevice: Send + Sync {
    /// Bytes per sector (512 or 4096).
    fn sector_size(&self) -> u32;

    /// How many sectors there are.
    fn sector_count(&self) -> u64;

    /// Reads `buf.len() / sector_size` sectors starting at `lba`. `buf.len()` must be a multiple
    /// of the sector size, and the sectors must lie on the device.
    fn read(&self, lba: u64, buf: &mut [u8]) -> Result<(), BlockError>;

    /// Writes whole sectors, as [`BlockDevice::read`] reads them.
    fn write(&self, lba: u64, data: &[u8]) -> Result<(), BlockError>;

    /// Makes every completed write durable (the disk's volatile cache written to the medium).
    fn flush(&self) -> Result<(), BlockError>;

    /// The size in bytes.
    fn size_bytes(&self) -> u64 {
        self.sector_count() * u64::from(self.sector_size())
    }
}

/// Checks a request against a device of `sector_count` sectors of `sector_size` bytes: the
/// buffer holds whole sectors and they all lie on the device. Returns the number of sectors.
pub fn check_request(
    sector_size: u32,
    sector_count: u64,
    lba: u64,
    len: usize,
) -> Result<u64, BlockError> {
    let size = sector_size as usize;
    if size == 0 || !len.is_multiple_of(size) {
        return Err(BlockError::OutOfRange);
    }
    let sectors = (len / size) as u64;
    match lba.checked_add(sectors) {
        Some(end) if end <= sector_count => Ok(sectors),
        _ => Err(BlockError::OutOfRange),
    }
}
