//! Memory management in Theseus's intralingual style.
//!
//! * [`AllocatedFrames`] and [`AllocatedPages`] are unique, non-`Clone` ranges; dropping one gives
//!   its range back to the allocator.
//! * [`map`] consumes both and returns a [`MappedPages`]; dropping that unmaps the pages, flushes
//!   the TLB and frees pages and frames. A frame can therefore only be mapped once, except
//!   through the kernel's direct map of RAM, an explicitly shared read-write alias used for page
//!   tables and early boot.
//! * Views into a mapping are bounds-checked and typed; mutable views exist only for writable
//!   mappings.
#![no_std]
#![deny(unsafe_op_in_unsafe_fn)]

extern crate alloc;

mod error;
mod frames;
mod mapped;
mod pages;
mod paging;
mod reservation;

pub use error::MemoryError;
pub use frames::{
    AllocatedFrames, FrameStats, allocate_frames, allocate_frames_below, claim_device_frames,
    frame_stats, init_frames,
};
pub use mapped::{CacheMode, MapFlags, MappedPages, VolatileValue};
pub use pages::{AllocatedPages, allocate_pages, allocate_pages_aligned, page_stats};
pub use paging::{
    FirmwareView, KernelSection, init_kernel_address_space, map, map_device, map_new, translate,
    view_firmware,
};
pub use reservation::{FaultCommit, Protection, Reservation};
pub use x86_64::{PhysAddr, VirtAddr};

pub const PAGE_SIZE: u64 = 4096;

/// All physical RAM is mapped read-write, non-executable at this offset.
pub const PHYS_MAP_BASE: u64 = 0xFFFF_8000_0000_0000;

/// Kernel virtual pages handed out by [`allocate_pages`] come from this range.
pub const KERNEL_DYNAMIC_BASE: u64 = 0xFFFF_9000_0000_0000;
pub const KERNEL_DYNAMIC_SIZE: u64 = 1 << 40;

/// The direct-map address of a physical address (valid for RAM only).
pub fn phys_to_virt(addr: PhysAddr) -> VirtAddr {
    VirtAddr::new(PHYS_MAP_BASE + addr.as_u64())
}
