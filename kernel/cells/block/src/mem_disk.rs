use alloc::vec;
use alloc::vec::Vec;
use spin::Mutex;

use crate::{BlockDevice, BlockError, check_request};

/// A disk in memory: sectors of a byte vector. Flushes count, so tests can see them.
pub struct MemDisk {
    sector_size: u32,
    bytes: Mutex<Vec<u8>>,
    flushes: Mutex<u64>,
}

impl MemDisk {
    /// A zeroed disk of `sector_count` sectors.
    pub fn new(sector_size: u32, sector_count: u64) -> MemDisk {
        MemDisk::from_bytes(
            sector_size,
            vec![0; (sector_count * u64::from(sector_size)) as usize],
        )
    }

    /// A disk holding `bytes` (its length is rounded down to whole sectors).
    pub fn from_bytes(sector_size: u32, mut bytes: Vec<u8>) -> MemDisk {
        let whole = bytes.len() - bytes.len() % sector_size as usize;
        bytes.truncate(whole);
        MemDisk {
            sector_size,
            bytes: Mutex::new(bytes),
            flushes: Mutex::new(0),
        }
    }

    /// A copy of the whole disk.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.bytes.lock().clone()
    }

    /// How many times [`BlockDevice::flush`] was called.
    pub fn flushes(&self) -> u64 {
        *self.flushes.lock()
    }
}

impl BlockDevice for MemDisk {
    fn sector_size(&self) -> u32 {
        self.sector_size
    }

    fn sector_count(&self) -> u64 {
        (self.bytes.lock().len() / self.sector_size as usize) as u64
    }

    fn read(&self, lba: u64, buf: &mut [u8]) -> Result<(), BlockError> {
        let bytes = self.bytes.lock();
        let count = (bytes.len() / self.sector_size as usize) as u64;
        check_request(self.sector_size, count, lba, buf.len())?;
        let start = (lba * u64::from(self.sector_size)) as usize;
        buf.copy_from_slice(&bytes[start..start + buf.len()]);
        Ok(())
    }

    fn write(&self, lba: u64, data: &[u8]) -> Result<(), BlockError> {
        let mut bytes = self.bytes.lock();
        let count = (bytes.len() / self.sector_size as usize) as u64;
        check_request(self.sector_size, count, lba, data.len())?;
        let start = (lba * u64::from(self.sector_size)) as usize;
        bytes[start..start + data.len()].copy_from_slice(data);
        Ok(())
    }

    fn flush(&self) -> Result<(), BlockError> {
        *self.flushes.lock() += 1;
        Ok(())
    }
}
