//! Physical frames. Two pools: RAM (what the memory map calls usable) and device space (the rest
//! of the physical address space: MMIO, firmware tables). Both hand out unique ranges.

use crate::{MemoryError, PAGE_SIZE};
use core::sync::atomic::{AtomicU64, Ordering};
use keel_ranges::{RangeAllocator, UnitRange};
use keel_sync::IrqSafeMutex;
use x86_64::PhysAddr;

/// Highest physical frame number the device pool covers (52-bit physical addresses).
const MAX_FRAME: u64 = 1 << (52 - 12);

struct Pools {
    ram: RangeAllocator<4096>,
    device: RangeAllocator<1024>,
    total_ram: u64,
}

static POOLS: IrqSafeMutex<Pools> = IrqSafeMutex::new(Pools {
    ram: RangeAllocator::new(),
    device: RangeAllocator::new(),
    total_ram: 0,
});

/// Frames whose return failed (allocator list full): counted, never silently lost.
static LEAKED: AtomicU64 = AtomicU64::new(0);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pool {
    Ram,
    Device,
}

/// A unique range of physical frames. Not `Clone`: whoever holds it owns those frames.
#[derive(Debug)]
pub struct AllocatedFrames {
    range: UnitRange,
    pool: Pool,
}

impl AllocatedFrames {
    pub fn start_address(&self) -> PhysAddr {
        PhysAddr::new(self.range.start * PAGE_SIZE)
    }
    pub fn count(&self) -> u64 {
        self.range.count
    }
    pub fn size_in_bytes(&self) -> u64 {
        self.range.count * PAGE_SIZE
    }
    pub fn is_ram(&self) -> bool {
        self.pool == Pool::Ram
    }
}

impl Drop for AllocatedFrames {
    fn drop(&mut self) {
        let mut pools = POOLS.lock();
        let result = match self.pool {
            Pool::Ram => pools.ram.free(self.range),
            Pool::Device => pools.device.free(self.range),
        };
        if result.is_err() {
            LEAKED.fetch_add(self.range.count, Ordering::Relaxed);
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameStats {
    pub total: u64,
    pub free: u64,
    pub leaked: u64,
}

impl FrameStats {
    pub fn used(&self) -> u64 {
        self.total - self.free
    }
}

/// Feeds the allocator: `usable` are the memory map's RAM regions, `reserved` the parts of them
/// already in use (kernel image, boot information, modules). Addresses in bytes.
pub fn init_frames(
    usable: impl Iterator<Item = (u64, u64)>,
    reserved: impl Iterator<Item = (u64, u64)>,
) -> Result<(), MemoryError> {
    let mut pools = POOLS.lock();
    pools
        .device
        .free(UnitRange::new(0, MAX_FRAME))
        .map_err(MemoryError::from_frames)?;
    for (start, len) in usable {
        let first = start.div_ceil(PAGE_SIZE);
        let end = (start + len) / PAGE_SIZE;
        if end <= first {
            continue;
        }
        let range = UnitRange::new(first, end - first);
        pools
            .device
            .reserve(range)
            .map_err(MemoryError::from_frames)?;
        pools.ram.free(range).map_err(MemoryError::from_frames)?;
    }
    for (start, len) in reserved {
        let first = start / PAGE_SIZE;
        let end = (start + len).div_ceil(PAGE_SIZE);
        pools
            .ram
            .reserve(UnitRange::new(first, end - first))
            .map_err(MemoryError::from_frames)?;
    }
    pools.total_ram = pools.ram.free_units();
    Ok(())
}

/// Allocates `count` contiguous RAM frames.
pub fn allocate_frames(count: u64) -> Result<AllocatedFrames, MemoryError> {
    allocate_frames_below(count, u64::MAX)
}

/// Allocates `count` contiguous RAM frames that all lie below the physical address `limit`.
pub fn allocate_frames_below(count: u64, limit: u64) -> Result<AllocatedFrames, MemoryError> {
    let range = POOLS
        .lock()
        .ram
        .allocate_within(count, 1, 0, limit / PAGE_SIZE)
        .map_err(MemoryError::from_frames)?;
    Ok(AllocatedFrames {
        range,
        pool: Pool::Ram,
    })
}

/// Gives back one RAM frame that a page table used (the page-table code forgot its
/// `AllocatedFrames` when the table was created).
pub(crate) fn free_table_frame(address: PhysAddr) {
    drop(AllocatedFrames {
        range: UnitRange::new(address.as_u64() / PAGE_SIZE, 1),
        pool: Pool::Ram,
    });
}

/// Claims a range of device (non-RAM) physical space, such as an MMIO region, for exclusive use.
pub fn claim_device_frames(start: PhysAddr, size: u64) -> Result<AllocatedFrames, MemoryError> {
    if size == 0 {
        return Err(MemoryError::InvalidRequest);
    }
    let first = start.as_u64() / PAGE_SIZE;
    let end = (start.as_u64() + size).div_ceil(PAGE_SIZE);
    let range = UnitRange::new(first, end - first);
    POOLS
        .lock()
        .device
        .allocate_at(range)
        .map_err(MemoryError::from_frames)?;
    Ok(AllocatedFrames {
        range,
        pool: Pool::Device,
    })
}

pub fn frame_stats() -> FrameStats {
    let pools = POOLS.lock();
    FrameStats {
        total: pools.total_ram,
        free: pools.ram.free_units(),
        leaked: LEAKED.load(Ordering::Relaxed),
    }
}
