//! Kernel virtual pages from the dynamic region.

use crate::{KERNEL_DYNAMIC_BASE, KERNEL_DYNAMIC_SIZE, MemoryError, PAGE_SIZE};
use keel_ranges::{RangeAllocator, UnitRange};
use keel_sync::{IrqSafeMutex, Once};
use x86_64::VirtAddr;

static PAGES: IrqSafeMutex<RangeAllocator<4096>> = IrqSafeMutex::new(RangeAllocator::new());
static INIT: Once<()> = Once::new();

fn with_pages<R>(f: impl FnOnce(&mut RangeAllocator<4096>) -> R) -> R {
    INIT.call_once(|| {
        let base = KERNEL_DYNAMIC_BASE / PAGE_SIZE;
        let count = KERNEL_DYNAMIC_SIZE / PAGE_SIZE;
        // Cannot fail on an empty allocator.
        let _ = PAGES.lock().free(UnitRange::new(base, count));
    });
    f(&mut PAGES.lock())
}

/// A unique range of kernel virtual pages, not yet mapped.
#[derive(Debug)]
pub struct AllocatedPages {
    range: UnitRange,
}

impl AllocatedPages {
    pub fn start_address(&self) -> VirtAddr {
        VirtAddr::new(self.range.start * PAGE_SIZE)
    }
    pub fn count(&self) -> u64 {
        self.range.count
    }
    pub fn size_in_bytes(&self) -> u64 {
        self.range.count * PAGE_SIZE
    }
    /// Splits off the first `count` pages; `self` keeps the rest.
    pub fn split_front(&mut self, count: u64) -> Result<AllocatedPages, MemoryError> {
        if count == 0 || count >= self.range.count {
            return Err(MemoryError::InvalidRequest);
        }
        let front = UnitRange::new(self.range.start, count);
        self.range = UnitRange::new(self.range.start + count, self.range.count - count);
        Ok(AllocatedPages { range: front })
    }
}

impl Drop for AllocatedPages {
    fn drop(&mut self) {
        // A failure here can only mean a full free list; the pages stay reserved.
        let _ = with_pages(|p| p.free(self.range));
    }
}

pub fn allocate_pages(count: u64) -> Result<AllocatedPages, MemoryError> {
    allocate_pages_aligned(count, 1)
}

/// Allocates `count` pages whose start is a multiple of `align` pages.
pub fn allocate_pages_aligned(count: u64, align: u64) -> Result<AllocatedPages, MemoryError> {
    let range = with_pages(|p| p.allocate(count, align)).map_err(MemoryError::from_pages)?;
    Ok(AllocatedPages { range })
}

/// Free pages in the kernel's dynamic region.
pub fn page_stats() -> u64 {
    with_pages(|p| p.free_units())
}
