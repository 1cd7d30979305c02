//! [`Reservation`]: a range of kernel virtual address space whose pages are backed by frames
//! only while they are accessible. Used for WebAssembly linear memories and code, where large
//! ranges are reserved and committed piece by piece.

use crate::paging::{map_page, release_tables, unmap_page, update_page};
use crate::{
    AllocatedFrames, AllocatedPages, CacheMode, MapFlags, MemoryError, PAGE_SIZE, allocate_frames,
    allocate_pages, phys_to_virt,
};
use alloc::collections::BTreeMap;
use keel_ranges::IntervalMap;
use x86_64::VirtAddr;

/// Access to reserved pages. Writable and executable at once is not representable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protection {
    /// Reserved only: no frame behind the page; any access faults.
    None,
    Read,
    ReadWrite,
    ReadExecute,
}

impl Protection {
    fn flags(self) -> Option<MapFlags> {
        match self {
            Protection::None => None,
            Protection::Read => Some(MapFlags::ReadOnly(CacheMode::WriteBack)),
            Protection::ReadWrite => Some(MapFlags::ReadWrite(CacheMode::WriteBack)),
            Protection::ReadExecute => Some(MapFlags::ReadExecute),
        }
    }
}

/// Owns its virtual pages and the frames committed to them; dropping it unmaps and frees all.
///
/// Access rights and backing are kept apart: [`Reservation::protect`] only records what a page
/// may be used for, and a frame is committed when the page is first touched (the page-fault
/// handler calls [`Reservation::commit_on_fault`]). Untouched parts of a large linear memory
/// cost no RAM.
#[derive(Debug)]
pub struct Reservation {
    pages: AllocatedPages,
    /// Page index → access, for pages that may be used (absent: inaccessible).
    access: IntervalMap<Protection>,
    committed: BTreeMap<u64, AllocatedFrames>,
}

/// What [`Reservation::commit_on_fault`] did with a fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultCommit {
    /// A zeroed frame now backs the page: retry the access.
    Committed,
    /// The page is inaccessible, or already backed (the fault was a protection violation).
    NotCommittable,
}

impl Reservation {
    /// Reserves `size` bytes (rounded up to pages), all inaccessible and nothing committed.
    pub fn new(size: u64) -> Result<Self, MemoryError> {
        let count = size.div_ceil(PAGE_SIZE).max(1);
        Ok(Self {
            pages: allocate_pages(count)?,
            access: IntervalMap::new(),
            committed: BTreeMap::new(),
        })
    }

    pub fn start_address(&self) -> VirtAddr {
        self.pages.start_address()
    }

    pub fn size_in_bytes(&self) -> u64 {
        self.pages.size_in_bytes()
    }

    pub fn committed_bytes(&self) -> u64 {
        self.committed.len() as u64 * PAGE_SIZE
    }

    /// The access of the page containing `offset` (`Protection::None` outside the reservation).
    pub fn access_at(&self, offset: u64) -> Protection {
        self.access
            .get(offset / PAGE_SIZE)
            .unwrap_or(Protection::None)
    }

    fn page_range(&self, offset: u64, len: u64) -> Result<core::ops::Range<u64>, MemoryError> {
        if !offset.is_multiple_of(PAGE_SIZE) {
            return Err(MemoryError::Misaligned);
        }
        let end = offset.checked_add(len).ok_or(MemoryError::OutOfBounds)?;
        if end > self.size_in_bytes() {
            return Err(MemoryError::OutOfBounds);
        }
        Ok(offset / PAGE_SIZE..end.div_ceil(PAGE_SIZE))
    }

    fn page_address(&self, index: u64) -> VirtAddr {
        self.pages.start_address() + index * PAGE_SIZE
    }

    /// Sets the access of `[offset, offset + len)`. `Protection::None` decommits (unmaps and
    /// frees, the contents are lost); anything else changes the flags of committed pages and
    /// lets the others be committed, zeroed, when first touched.
    pub fn protect(&mut self, offset: u64, len: u64, prot: Protection) -> Result<(), MemoryError> {
        let range = self.page_range(offset, len)?;
        let touched: alloc::vec::Vec<u64> = self
            .committed
            .range(range.clone())
            .map(|(&i, _)| i)
            .collect();
        match prot.flags() {
            None => {
                for index in touched {
                    if let Some(frames) = self.committed.remove(&index) {
                        unmap_page(self.page_address(index));
                        drop(frames);
                    }
                }
                self.access.set(range, None);
            }
            Some(flags) => {
                for index in touched {
                    update_page(self.page_address(index), flags)?;
                }
                self.access.set(range, Some(prot));
            }
        }
        Ok(())
    }

    /// Replaces `[offset, offset + len)` with fresh zeroed memory of access `prot`.
    pub fn reset(&mut self, offset: u64, len: u64, prot: Protection) -> Result<(), MemoryError> {
        self.protect(offset, len, Protection::None)?;
        self.protect(offset, len, prot)
    }

    /// Backs the accessible, not yet committed page containing `offset` with a zeroed frame.
    /// Called from the page-fault handler (interrupts off): it allocates one frame and maps it.
    pub fn commit_on_fault(&mut self, offset: u64) -> Result<FaultCommit, MemoryError> {
        if offset >= self.size_in_bytes() {
            return Ok(FaultCommit::NotCommittable);
        }
        let index = offset / PAGE_SIZE;
        let Some(flags) = self.access.get(index).and_then(Protection::flags) else {
            return Ok(FaultCommit::NotCommittable);
        };
        if self.committed.contains_key(&index) {
            return Ok(FaultCommit::NotCommittable);
        }
        let frames = allocate_frames(1)?;
        zero_frame(&frames);
        map_page(self.page_address(index), &frames, flags)?;
        self.committed.insert(index, frames);
        Ok(FaultCommit::Committed)
    }
}

#[allow(unsafe_code)]
fn zero_frame(frames: &AllocatedFrames) {
    let ptr = phys_to_virt(frames.start_address()).as_mut_ptr::<u8>();
    // SAFETY: the frame is RAM owned by `frames`, not mapped anywhere else yet, and the direct
    // map covers it read-write.
    unsafe { core::ptr::write_bytes(ptr, 0, PAGE_SIZE as usize) };
}

impl Drop for Reservation {
    fn drop(&mut self) {
        for &index in self.committed.keys() {
            unmap_page(self.page_address(index));
        }
        release_tables(self.start_address(), self.size_in_bytes());
        // The frames (in `committed`) and then the pages drop after the TLB is clean.
    }
}
