//! The byte stream fatfs reads and writes, over a block device, with a write-back sector cache.
//!
//! fatfs does many small transfers (a 4-byte FAT entry, a 32-byte directory entry, a cluster of
//! file data) at byte offsets; the device wants whole sectors. [`SectorCache`] keeps up to a
//! bounded number of sectors, evicting the least recently used clean ones and writing dirty
//! ones back in runs of adjacent sectors, one device request per run. Transfers of at least
//! [`DIRECT_MIN`] whole sectors bypass it and go to the device in large requests (a 1 MiB file
//! read is a few device reads), and small misses read ahead a little (FAT and directory
//! scans are sequential).
//!
//! The cache also keeps fatfs from following impossible FAT chains: see [`FatGuard`].

use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::sync::Arc;
use alloc::vec;
use alloc::vec::Vec;
use keel_block::{BlockDevice, BlockError};
use spin::Mutex;

use crate::layout::FatGuard;

/// Transfers of at least this many bytes of whole sectors skip the cache.
pub const DIRECT_MIN: usize = 64 * 1024;
/// The largest single device request.
pub const MAX_REQUEST: usize = 256 * 1024;
/// A small miss reads this many bytes, aligned, around it.
const READ_AHEAD: usize = 8 * 1024;

/// Counters of what reached the device (for tests and diagnostics).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    pub device_reads: u64,
    pub device_writes: u64,
    pub device_flushes: u64,
    pub hits: u64,
    pub misses: u64,
}

struct Slot {
    data: Box<[u8]>,
    dirty: bool,
    /// When it was last used (a tick of the cache), for eviction.
    used: u64,
}

/// A write-back cache of whole sectors of one device.
pub struct SectorCache {
    device: Arc<dyn BlockDevice>,
    sector_size: usize,
    sector_count: u64,
    /// Most sectors held.
    capacity: usize,
    slots: BTreeMap<u64, Slot>,
    tick: u64,
    guard: Option<FatGuard>,
    stats: CacheStats,
}

impl SectorCache {
    /// A cache of at most `capacity_bytes` (at least 16 sectors) of `device`.
    pub fn new(device: Arc<dyn BlockDevice>, capacity_bytes: usize) -> SectorCache {
        let sector_size = device.sector_size() as usize;
        SectorCache {
            sector_count: device.sector_count(),
            capacity: (capacity_bytes / sector_size.max(1)).max(16),
            device,
            sector_size,
            slots: BTreeMap::new(),
            tick: 0,
            guard: None,
            stats: CacheStats::default(),
        }
    }

    /// From now on, FAT entries read through the cache are checked by `guard`.
    pub fn set_guard(&mut self, guard: FatGuard) {
        self.guard = Some(guard);
    }

    pub fn size_bytes(&self) -> u64 {
        self.sector_count * self.sector_size as u64
    }

    pub fn stats(&self) -> CacheStats {
        self.stats
    }

    fn check_range(&self, pos: u64, len: usize) -> Result<(), BlockError> {
        match pos.checked_add(len as u64) {
            Some(end) if end <= self.size_bytes() => Ok(()),
            _ => Err(BlockError::OutOfRange),
        }
    }

    fn device_read(&mut self, lba: u64, buf: &mut [u8]) -> Result<(), BlockError> {
        self.stats.device_reads += 1;
        self.device.read(lba, buf)
    }

    fn device_write(&mut self, lba: u64, data: &[u8]) -> Result<(), BlockError> {
        self.stats.device_writes += 1;
        self.device.write(lba, data)
    }

    fn touch(&mut self) -> u64 {
        self.tick += 1;
        self.tick
    }

    /// Reads `buf.len()` bytes at byte offset `pos`.
    pub fn read(&mut self, pos: u64, buf: &mut [u8]) -> Result<(), BlockError> {
        self.check_range(pos, buf.len())?;
        if buf.is_empty() {
            return Ok(());
        }
        let ss = self.sector_size as u64;
        let end = pos + buf.len() as u64;
        let mut lba = pos / ss;
        let last = end.div_ceil(ss);
        while lba < last {
            let sector_start = lba * ss;
            if self.slots.contains_key(&lba) {
                let tick = self.touch();
                let slot = self.slots.get_mut(&lba).ok_or(BlockError::Device)?;
                slot.used = tick;
                copy_out(&slot.data, sector_start, pos, buf);
                self.stats.hits += 1;
                lba += 1;
                continue;
            }
            self.stats.misses += 1;
            // The run of sectors not in the cache from `lba`: whole sectors of the request, or
            // a lone partly requested one.
            let max_run = (MAX_REQUEST / self.sector_size) as u64;
            let mut run_end = lba + 1;
            if sector_start >= pos {
                while (run_end + 1) * ss <= end
                    && run_end - lba < max_run
                    && !self.slots.contains_key(&run_end)
                {
                    run_end += 1;
                }
            }
            let whole = sector_start >= pos && run_end * ss <= end;
            let run_bytes = ((run_end - lba) * ss) as usize;
            if whole && run_bytes >= DIRECT_MIN {
                let at = (sector_start - pos) as usize;
                self.device_read(lba, &mut buf[at..at + run_bytes])?;
            } else {
                self.fill(lba, run_end)?;
                for sector in lba..run_end {
                    let slot = self.slots.get(&sector).ok_or(BlockError::Device)?;
                    copy_out(&slot.data, sector * ss, pos, buf);
                }
            }
            lba = run_end;
        }
        if let Some(guard) = &self.guard {
            guard.sanitize(pos, buf);
        }
        Ok(())
    }

    /// Loads sectors `first..end` (none of them cached) into the cache in one device read,
    /// with read-ahead around a short run; cached neighbours (maybe dirty) are left alone.
    fn fill(&mut self, first: u64, end: u64) -> Result<(), BlockError> {
        let ahead = (READ_AHEAD / self.sector_size).max(1) as u64;
        let (start, stop) = if end - first < ahead {
            let start = first - first % ahead;
            (start, (start + ahead).max(end).min(self.sector_count))
        } else {
            (first, end)
        };
        let count = (stop - start) as usize;
        self.make_room(count)?;
        let mut data = vec![0u8; count * self.sector_size];
        self.device_read(start, &mut data)?;
        let tick = self.touch();
        for (i, chunk) in data.chunks_exact(self.sector_size).enumerate() {
            self.slots.entry(start + i as u64).or_insert_with(|| Slot {
                data: chunk.into(),
                dirty: false,
                used: tick,
            });
        }
        Ok(())
    }

    /// Writes `data` at byte offset `pos`.
    pub fn write(&mut self, pos: u64, data: &[u8]) -> Result<(), BlockError> {
        self.check_range(pos, data.len())?;
        let ss = self.sector_size as u64;
        let end = pos + data.len() as u64;
        let mut lba = pos / ss;
        let last = end.div_ceil(ss);
        while lba < last {
            let sector_start = lba * ss;
            // A long run of whole sectors goes straight to the device.
            let whole_end = (end / ss).min(lba + (MAX_REQUEST / self.sector_size) as u64);
            if sector_start >= pos && whole_end > lba {
                let run_bytes = ((whole_end - lba) * ss) as usize;
                if run_bytes >= DIRECT_MIN {
                    let at = (sector_start - pos) as usize;
                    self.device_write(lba, &data[at..at + run_bytes])?;
                    // The device has the newest data now; cached copies are stale.
                    let stale: Vec<u64> =
                        self.slots.range(lba..whole_end).map(|(&k, _)| k).collect();
                    for key in stale {
                        self.slots.remove(&key);
                    }
                    lba = whole_end;
                    continue;
                }
            }
            let covers_sector = sector_start >= pos && sector_start + ss <= end;
            if !self.slots.contains_key(&lba) {
                if covers_sector {
                    self.make_room(1)?;
                    let tick = self.touch();
                    self.slots.insert(
                        lba,
                        Slot {
                            data: vec![0u8; self.sector_size].into(),
                            dirty: false,
                            used: tick,
                        },
                    );
                } else {
                    self.fill(lba, lba + 1)?;
                }
            }
            let tick = self.touch();
            let slot = self.slots.get_mut(&lba).ok_or(BlockError::Device)?;
            copy_in(&mut slot.data, sector_start, pos, data);
            slot.dirty = true;
            slot.used = tick;
            lba += 1;
        }
        Ok(())
    }

    /// Makes room for `count` more sectors: writes every dirty sector back if there are too
    /// many to evict, then drops the least recently used clean ones (an eighth of the cache at
    /// a time, so this is rare).
    fn make_room(&mut self, count: usize) -> Result<(), BlockError> {
        if self.slots.len() + count <= self.capacity {
            return Ok(());
        }
        let clean = self.slots.values().filter(|s| !s.dirty).count();
        let target = self
            .capacity
            .saturating_sub(count)
            .saturating_sub(self.capacity / 8);
        let excess = self.slots.len().saturating_sub(target);
        if clean < excess {
            self.write_back()?;
        }
        let mut by_age: Vec<(u64, u64)> = self
            .slots
            .iter()
            .filter(|(_, s)| !s.dirty)
            .map(|(&lba, s)| (s.used, lba))
            .collect();
        by_age.sort_unstable();
        for &(_, lba) in by_age.iter().take(excess) {
            self.slots.remove(&lba);
        }
        Ok(())
    }

    /// Writes every dirty sector to the device, adjacent ones in one request.
    pub fn write_back(&mut self) -> Result<(), BlockError> {
        let dirty: Vec<u64> = self
            .slots
            .iter()
            .filter(|(_, s)| s.dirty)
            .map(|(&lba, _)| lba)
            .collect();
        let max_run = MAX_REQUEST / self.sector_size;
        let mut i = 0;
        while i < dirty.len() {
            let mut j = i + 1;
            while j < dirty.len() && dirty[j] == dirty[j - 1] + 1 && j - i < max_run {
                j += 1;
            }
            let mut run = Vec::with_capacity((j - i) * self.sector_size);
            for lba in &dirty[i..j] {
                run.extend_from_slice(&self.slots[lba].data);
            }
            self.device_write(dirty[i], &run)?;
            for lba in &dirty[i..j] {
                if let Some(slot) = self.slots.get_mut(lba) {
                    slot.dirty = false;
                }
            }
            i = j;
        }
        Ok(())
    }

    /// Writes everything back and flushes the device's own cache.
    pub fn flush(&mut self) -> Result<(), BlockError> {
        self.write_back()?;
        self.stats.device_flushes += 1;
        self.device.flush()
    }

    /// Forgets every clean sector (the next reads go to the device).
    pub fn drop_clean(&mut self) {
        self.slots.retain(|_, slot| slot.dirty);
    }

    /// Sectors held, and how many of them are dirty.
    pub fn occupancy(&self) -> (usize, usize) {
        let dirty = self.slots.values().filter(|s| s.dirty).count();
        (self.slots.len(), dirty)
    }
}

impl Drop for SectorCache {
    /// Nothing written is lost when the file system goes away without a sync (errors cannot be
    /// reported here; [`crate::FatFs::sync`] reports them).
    fn drop(&mut self) {
        if self.occupancy().1 > 0 {
            let _ = self.flush();
        }
    }
}

/// Copies the part of a sector starting at byte `sector_start` that overlaps `buf` (which
/// starts at byte `pos`).
fn copy_out(sector: &[u8], sector_start: u64, pos: u64, buf: &mut [u8]) {
    let from = pos.max(sector_start);
    let to = (pos + buf.len() as u64).min(sector_start + sector.len() as u64);
    if from < to {
        let n = (to - from) as usize;
        let s = (from - sector_start) as usize;
        let b = (from - pos) as usize;
        buf[b..b + n].copy_from_slice(&sector[s..s + n]);
    }
}

/// Copies the part of `data` (which starts at byte `pos`) that overlaps a sector.
fn copy_in(sector: &mut [u8], sector_start: u64, pos: u64, data: &[u8]) {
    let from = pos.max(sector_start);
    let to = (pos + data.len() as u64).min(sector_start + sector.len() as u64);
    if from < to {
        let n = (to - from) as usize;
        let s = (from - sector_start) as usize;
        let d = (from - pos) as usize;
        sector[s..s + n].copy_from_slice(&data[d..d + n]);
    }
}

/// What the byte stream reports to fatfs when it fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IoFault {
    Device(BlockError),
    UnexpectedEof,
    WriteZero,
}

impl fatfs::IoError for IoFault {
    fn is_interrupted(&self) -> bool {
        false
    }
    fn new_unexpected_eof_error() -> Self {
        IoFault::UnexpectedEof
    }
    fn new_write_zero_error() -> Self {
        IoFault::WriteZero
    }
}

impl From<BlockError> for IoFault {
    fn from(error: BlockError) -> IoFault {
        IoFault::Device(error)
    }
}

/// The volume as the seekable byte stream fatfs wants: a position over a shared cache.
pub struct DiskStream {
    cache: Arc<Mutex<SectorCache>>,
    pos: u64,
}

impl DiskStream {
    pub fn new(cache: Arc<Mutex<SectorCache>>) -> DiskStream {
        DiskStream { cache, pos: 0 }
    }
}

impl fatfs::IoBase for DiskStream {
    type Error = IoFault;
}

impl fatfs::Read for DiskStream {
    /// Reads up to the end of the volume (0 at or past it).
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, IoFault> {
        let mut cache = self.cache.lock();
        let left = cache.size_bytes().saturating_sub(self.pos);
        let n = (buf.len() as u64).min(left) as usize;
        cache.read(self.pos, &mut buf[..n])?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl fatfs::Write for DiskStream {
    /// Writes all of `buf`, or fails if any of it lies past the end of the volume.
    fn write(&mut self, buf: &[u8]) -> Result<usize, IoFault> {
        self.cache.lock().write(self.pos, buf)?;
        self.pos += buf.len() as u64;
        Ok(buf.len())
    }

    /// Nothing: fatfs flushes after every file operation, and durability is
    /// [`crate::FatFs::sync`]'s job.
    fn flush(&mut self) -> Result<(), IoFault> {
        Ok(())
    }
}

impl fatfs::Seek for DiskStream {
    fn seek(&mut self, pos: fatfs::SeekFrom) -> Result<u64, IoFault> {
        let size = self.cache.lock().size_bytes();
        let target = match pos {
            fatfs::SeekFrom::Start(n) => Some(n),
            fatfs::SeekFrom::Current(d) => self.pos.checked_add_signed(d),
            fatfs::SeekFrom::End(d) => size.checked_add_signed(d),
        };
        self.pos = target.ok_or(IoFault::Device(BlockError::OutOfRange))?;
        Ok(self.pos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keel_block::MemDisk;

    fn cache(sectors: u64, capacity: usize) -> (Arc<MemDisk>, SectorCache) {
        let disk = Arc::new(MemDisk::new(512, sectors));
        let mut bytes = vec![0u8; (sectors * 512) as usize];
        for (i, b) in bytes.iter_mut().enumerate() {
            *b = (i % 251) as u8;
        }
        disk.write(0, &bytes).unwrap();
        let c = SectorCache::new(disk.clone(), capacity);
        (disk, c)
    }

    fn expected(pos: usize, len: usize) -> Vec<u8> {
        (pos..pos + len).map(|i| (i % 251) as u8).collect()
    }

    #[test]
    fn unaligned_reads_and_writes() {
        let (disk, mut c) = cache(64, 8192);
        let mut buf = vec![0u8; 1000];
        c.read(300, &mut buf).unwrap();
        assert_eq!(buf, expected(300, 1000));
        c.write(510, b"hello").unwrap();
        c.read(508, &mut buf[..9]).unwrap();
        assert_eq!(&buf[2..7], b"hello");
        // Written back only on flush.
        assert_eq!(disk.to_bytes()[510], (510 % 251) as u8);
        c.flush().unwrap();
        assert_eq!(&disk.to_bytes()[510..515], b"hello");
        assert_eq!(disk.flushes(), 1);
        assert_eq!(
            c.read(64 * 512 - 1, &mut [0u8; 2]),
            Err(BlockError::OutOfRange)
        );
        assert_eq!(c.write(u64::MAX, &[1]), Err(BlockError::OutOfRange));
    }

    #[test]
    fn large_transfers_bypass_the_cache() {
        let (disk, mut c) = cache(4096, 64 * 1024);
        let mut buf = vec![0u8; 1 << 20];
        c.read(0, &mut buf).unwrap();
        assert_eq!(buf, expected(0, 1 << 20));
        assert_eq!(c.stats().device_reads, 4);
        assert_eq!(c.occupancy().0, 0);
        // A dirty cached sector inside a large read is served from the cache.
        c.write(4096, &[7u8; 10]).unwrap();
        c.read(0, &mut buf).unwrap();
        assert_eq!(&buf[4096..4106], &[7u8; 10]);
        assert_eq!(buf[4106], (4106 % 251) as u8);
        // A large write goes straight to the device and replaces cached copies.
        let data = vec![9u8; 512 * 1024];
        let before = c.stats().device_writes;
        c.write(0, &data).unwrap();
        assert_eq!(c.stats().device_writes - before, 2);
        assert_eq!(&disk.to_bytes()[..512 * 1024], &data[..]);
        c.read(4096, &mut buf[..10]).unwrap();
        assert_eq!(&buf[..10], &[9u8; 10]);
    }

    #[test]
    fn write_back_coalesces_and_eviction_keeps_data() {
        let (disk, mut c) = cache(4096, 64 * 512);
        // Dirty 100 adjacent sectors through small writes: more than the cache holds.
        for i in 0..100u64 {
            c.write(i * 512 + 1, &[i as u8; 511]).unwrap();
        }
        assert!(c.occupancy().0 <= 64);
        c.flush().unwrap();
        let bytes = disk.to_bytes();
        for i in 0..100usize {
            assert_eq!(bytes[i * 512], (i * 512 % 251) as u8);
            assert_eq!(&bytes[i * 512 + 1..(i + 1) * 512], &[i as u8; 511][..]);
        }
        // Far fewer device writes than sectors.
        assert!(c.stats().device_writes < 20, "{:?}", c.stats());
    }

    #[test]
    fn reads_ahead_on_small_misses() {
        let (_, mut c) = cache(4096, 1 << 20);
        let mut entry = [0u8; 4];
        for i in 0..2048u64 {
            c.read(i * 4, &mut entry).unwrap();
        }
        // 8 KiB covered by one read-ahead block.
        assert_eq!(c.stats().device_reads, 1);
    }

    #[test]
    fn stream_reads_stop_at_the_end() {
        let (_, c) = cache(4, 8192);
        let mut s = DiskStream::new(Arc::new(Mutex::new(c)));
        use fatfs::{Read, Seek, Write};
        assert_eq!(s.seek(fatfs::SeekFrom::End(-10)).unwrap(), 2038);
        let mut buf = [0u8; 64];
        assert_eq!(s.read(&mut buf).unwrap(), 10);
        assert_eq!(s.read(&mut buf).unwrap(), 0);
        assert!(s.write(&buf).is_err());
        assert!(s.seek(fatfs::SeekFrom::Current(-4096)).is_err());
    }
}
