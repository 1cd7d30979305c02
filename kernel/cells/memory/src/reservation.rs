//! [`Reservation`]: a range of kernel virtual address space whose pages are backed by frames
//! only while they are accessible. Used for WebAssembly linear memories and code, where large
//! ranges are reserved and committed piece by piece.

use crate::paging::{map_page, unmap_page, update_page};
use crate::{
    AllocatedFrames, AllocatedPages, CacheMode, MapFlags, MemoryError, PAGE_SIZE, allocate_frames,
    allocate_pages, phys_to_virt,
};
use alloc::collections::BTreeMap;
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
#[derive(Debug)]
pub struct Reservation {
    pages: AllocatedPages,
    committed: BTreeMap<u64, AllocatedFrames>,
}

impl Reservation {
    /// Reserves `size` bytes (rounded up to pages) with nothing committed.
    pub fn new(size: u64) -> Result<Self, MemoryError> {
        let count = size.div_ceil(PAGE_SIZE).max(1);
        Ok(Self {
            pages: allocate_pages(count)?,
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
    /// frees); anything else commits zeroed frames where none are and changes the flags of the
    /// pages already committed.
    pub fn protect(&mut self, offset: u64, len: u64, prot: Protection) -> Result<(), MemoryError> {
        let range = self.page_range(offset, len)?;
        match prot.flags() {
            None => {
                for index in range {
                    if let Some(frames) = self.committed.remove(&index) {
                        unmap_page(self.page_address(index));
                        drop(frames);
                    }
                }
            }
            Some(flags) => {
                for index in range {
                    let page = self.page_address(index);
                    if self.committed.contains_key(&index) {
                        update_page(page, flags)?;
                        continue;
                    }
                    let frames = allocate_frames(1)?;
                    // SAFETY-relevant: the frame is ours and reachable through the direct map;
                    // it is zeroed before any mapping makes it visible.
                    zero_frame(&frames);
                    map_page(page, &frames, flags)?;
                    self.committed.insert(index, frames);
                }
            }
        }
        Ok(())
    }

    /// Replaces `[offset, offset + len)` with fresh zeroed memory of access `prot`.
    pub fn reset(&mut self, offset: u64, len: u64, prot: Protection) -> Result<(), MemoryError> {
        self.protect(offset, len, Protection::None)?;
        self.protect(offset, len, prot)
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
        // The frames (in `committed`) and then the pages drop after the TLB is clean.
    }
}
