//! The kernel heap. It owns a reserved range of kernel virtual pages and maps frames into it as
//! it grows; every mapping is a [`MappedPages`] that the heap keeps.
#![no_std]
#![deny(unsafe_op_in_unsafe_fn)]

use core::alloc::{GlobalAlloc, Layout};
use core::ptr::NonNull;
use keel_memory::{AllocatedPages, MapFlags, MappedPages, MemoryError, PAGE_SIZE};
use keel_sync::IrqSafeMutex;
use linked_list_allocator::Heap;

/// Virtual space reserved for the heap.
const HEAP_RESERVATION_PAGES: u64 = (1 << 30) / PAGE_SIZE;
const MIN_GROWTH_PAGES: u64 = 64;
/// At most this many separate growth mappings (each at least 256 KiB).
const MAX_SEGMENTS: usize = 256;

struct State {
    heap: Heap,
    /// Virtual pages not yet backed, immediately after the mapped part.
    unbacked: Option<AllocatedPages>,
    segments: [Option<MappedPages>; MAX_SEGMENTS],
    segment_count: usize,
}

pub struct KernelHeap {
    state: IrqSafeMutex<Option<State>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeapStats {
    pub used: usize,
    pub free: usize,
    pub size: usize,
}

impl Default for KernelHeap {
    fn default() -> Self {
        Self::new()
    }
}

impl KernelHeap {
    pub const fn new() -> Self {
        Self {
            state: IrqSafeMutex::new(None),
        }
    }

    /// Reserves the heap's address space and maps its first `initial_bytes`.
    pub fn init(&self, initial_bytes: usize) -> Result<(), MemoryError> {
        let mut reservation = keel_memory::allocate_pages(HEAP_RESERVATION_PAGES)?;
        let initial_pages = (initial_bytes as u64)
            .div_ceil(PAGE_SIZE)
            .max(MIN_GROWTH_PAGES);
        let first = reservation.split_front(initial_pages)?;
        let frames = keel_memory::allocate_frames(initial_pages)?;
        let mapping = keel_memory::map(first, frames, MapFlags::DATA)?;
        let mut heap = Heap::empty();
        // SAFETY: the mapping is writable, unused, and kept alive in `segments` forever.
        unsafe {
            heap.init(
                mapping.start_address().as_mut_ptr(),
                mapping.size_in_bytes() as usize,
            )
        };
        let mut segments = [const { None }; MAX_SEGMENTS];
        segments[0] = Some(mapping);
        *self.state.lock() = Some(State {
            heap,
            unbacked: Some(reservation),
            segments,
            segment_count: 1,
        });
        Ok(())
    }

    pub fn stats(&self) -> HeapStats {
        match self.state.lock().as_ref() {
            Some(s) => HeapStats {
                used: s.heap.used(),
                free: s.heap.free(),
                size: s.heap.size(),
            },
            None => HeapStats {
                used: 0,
                free: 0,
                size: 0,
            },
        }
    }
}

impl State {
    /// Maps at least `bytes` more directly after the heap's end and hands them to the heap.
    fn grow(&mut self, bytes: usize) -> Result<(), MemoryError> {
        if self.segment_count == MAX_SEGMENTS {
            return Err(MemoryError::OutOfPages);
        }
        let pages = (bytes as u64).div_ceil(PAGE_SIZE).max(MIN_GROWTH_PAGES);
        let unbacked = self.unbacked.as_mut().ok_or(MemoryError::OutOfPages)?;
        let next = if pages < unbacked.count() {
            unbacked.split_front(pages)?
        } else {
            self.unbacked.take().ok_or(MemoryError::OutOfPages)?
        };
        let count = next.count();
        let frames = keel_memory::allocate_frames(count)?;
        let mapping = keel_memory::map(next, frames, MapFlags::DATA)?;
        // SAFETY: the new mapping starts exactly at the heap's current top (it was split from
        // the reservation that begins there) and is kept alive in `segments`.
        unsafe { self.heap.extend(mapping.size_in_bytes() as usize) };
        self.segments[self.segment_count] = Some(mapping);
        self.segment_count += 1;
        Ok(())
    }
}

// SAFETY: allocation and deallocation go through `linked_list_allocator::Heap` under a lock that
// also keeps interrupts off, so no two calls overlap on this core.
unsafe impl GlobalAlloc for KernelHeap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let mut guard = self.state.lock();
        let Some(state) = guard.as_mut() else {
            return core::ptr::null_mut();
        };
        if let Ok(ptr) = state.heap.allocate_first_fit(layout) {
            return ptr.as_ptr();
        }
        // Room for the block plus alignment slack and the allocator's own bookkeeping.
        let wanted = layout.size() + layout.align() + 64;
        if state.grow(wanted).is_err() {
            return core::ptr::null_mut();
        }
        state
            .heap
            .allocate_first_fit(layout)
            .map_or(core::ptr::null_mut(), |p| p.as_ptr())
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if let (Some(state), Some(ptr)) = (self.state.lock().as_mut(), NonNull::new(ptr)) {
            // SAFETY: the caller promises `ptr` came from `alloc` with this layout.
            unsafe { state.heap.deallocate(ptr, layout) };
        }
    }
}
