//! The kernel's page tables (one address space, as in Theseus).

use crate::{
    AllocatedFrames, AllocatedPages, CacheMode, MapFlags, MappedPages, MemoryError, PAGE_SIZE,
    PHYS_MAP_BASE, allocate_frames, allocate_frames_below, allocate_pages, phys_to_virt,
};
use core::sync::atomic::{AtomicU64, Ordering};
use keel_sync::IrqSafeMutex;
use x86_64::registers::control::{Cr3, Cr3Flags};
use x86_64::structures::paging::mapper::{CleanUp, MapToError, Translate};
use x86_64::structures::paging::{
    FrameAllocator, FrameDeallocator, Mapper, OffsetPageTable, Page, PageSize, PageTable,
    PageTableFlags, PhysFrame, Size2MiB, Size4KiB,
};
use x86_64::{PhysAddr, VirtAddr};

static TABLE: IrqSafeMutex<Option<OffsetPageTable<'static>>> = IrqSafeMutex::new(None);

/// Page-table frames must be reachable through the direct map: until our own tables are live
/// only the boot mirror of the first 4 GiB is.
static TABLE_FRAME_LIMIT: AtomicU64 = AtomicU64::new(4 << 30);

/// Frames for page tables. They belong to the page tables until [`release_tables`] finds a
/// table empty and gives its frame back.
struct TableFrames;

// SAFETY: every frame returned is a freshly allocated, unused RAM frame, zeroed, and never
// handed out again (its `AllocatedFrames` is forgotten).
unsafe impl FrameAllocator<Size4KiB> for TableFrames {
    fn allocate_frame(&mut self) -> Option<PhysFrame<Size4KiB>> {
        let frames = allocate_frames_below(1, TABLE_FRAME_LIMIT.load(Ordering::Relaxed)).ok()?;
        let addr = frames.start_address();
        // SAFETY: the frame is RAM we now own, reachable through the direct map.
        unsafe { core::ptr::write_bytes(phys_to_virt(addr).as_mut_ptr::<u8>(), 0, 4096) };
        core::mem::forget(frames);
        Some(PhysFrame::containing_address(addr))
    }
}

impl FrameDeallocator<Size4KiB> for TableFrames {
    unsafe fn deallocate_frame(&mut self, frame: PhysFrame<Size4KiB>) {
        crate::frames::free_table_frame(frame.start_address());
    }
}

/// Frees the page tables (levels 1 to 3) that map nothing any more in `[start, start + size)`,
/// for ranges whose pages were all unmapped. Large sparse reservations would otherwise keep a
/// table for every 2 MiB they ever touched.
pub(crate) fn release_tables(start: VirtAddr, size: u64) {
    if size == 0 {
        return;
    }
    let first = Page::<Size4KiB>::containing_address(start);
    let last = Page::<Size4KiB>::containing_address(start + (size - 1));
    let _ = with_table(|table| {
        // SAFETY: every table below the top level was created by `map_to_with_table_flags`
        // for exactly one place in this one (single, kernel-wide) hierarchy; none is shared
        // or referenced elsewhere, and a table is freed only when all its entries are unused.
        unsafe { table.clean_up_addr_range(Page::range_inclusive(first, last), &mut TableFrames) };
        // The freed tables may sit in paging-structure caches; reloading CR3 drops those.
        x86_64::instructions::tlb::flush_all();
    });
}

fn pte_flags(flags: MapFlags) -> PageTableFlags {
    let base = PageTableFlags::PRESENT | PageTableFlags::GLOBAL;
    let cache = |c: CacheMode| match c {
        CacheMode::WriteBack => PageTableFlags::empty(),
        CacheMode::Uncached => PageTableFlags::NO_CACHE | PageTableFlags::WRITE_THROUGH,
    };
    match flags {
        MapFlags::ReadOnly(c) => base | PageTableFlags::NO_EXECUTE | cache(c),
        MapFlags::ReadWrite(c) => {
            base | PageTableFlags::WRITABLE | PageTableFlags::NO_EXECUTE | cache(c)
        }
        MapFlags::ReadExecute => base,
    }
}

const TABLE_FLAGS: PageTableFlags = PageTableFlags::PRESENT.union(PageTableFlags::WRITABLE);

fn map_error<S: x86_64::structures::paging::PageSize>(e: MapToError<S>) -> MemoryError {
    match e {
        MapToError::FrameAllocationFailed => MemoryError::OutOfFrames,
        MapToError::PageAlreadyMapped(_) | MapToError::ParentEntryHugePage => {
            MemoryError::AlreadyMapped
        }
    }
}

/// Maps the page of size `S` at `virt` to the frame at `phys` for the kernel's whole life (no
/// owning value; the kernel image and the direct map).
///
/// # Safety
/// The alias must be sound: the kernel image with its own permissions, or RAM in the direct map.
unsafe fn map_permanent<S: PageSize>(
    table: &mut OffsetPageTable<'static>,
    virt: u64,
    phys: u64,
    flags: PageTableFlags,
) -> Result<(), MemoryError>
where
    for<'a> OffsetPageTable<'a>: Mapper<S>,
{
    let page = Page::<S>::containing_address(VirtAddr::new(virt));
    let frame = PhysFrame::<S>::containing_address(PhysAddr::new(phys));
    // SAFETY: the caller vouches for the alias; intermediate tables come from `TableFrames`.
    unsafe { table.map_to_with_table_flags(page, frame, flags, TABLE_FLAGS, &mut TableFrames) }
        .map_err(map_error)?
        .ignore();
    Ok(())
}

/// A part of the kernel image with its permissions, from the linker script's symbols.
#[derive(Clone, Copy, Debug)]
pub struct KernelSection {
    pub start: u64,
    pub end: u64,
    pub flags: MapFlags,
}

/// Builds the kernel's own page tables and switches to them: the image's sections identity-mapped
/// with 4 KiB pages and their own permissions (text read-execute, rodata read-only, data
/// read-write, both no-execute), all of `ram` at [`PHYS_MAP_BASE`] read-write and no-execute
/// (except the kernel image, which has no writable alias). Nothing else stays mapped: page 0
/// faults.
///
/// # Safety
/// `sections` must describe the running kernel image exactly, and the code and stack in use
/// must lie inside them.
pub unsafe fn init_kernel_address_space(
    sections: &[KernelSection],
    ram: impl Iterator<Item = (u64, u64)> + Clone,
) -> Result<(), MemoryError> {
    let pml4_frame = TableFrames
        .allocate_frame()
        .ok_or(MemoryError::OutOfFrames)?;
    let pml4_ptr = phys_to_virt(pml4_frame.start_address()).as_mut_ptr::<PageTable>();
    // SAFETY: a fresh zeroed frame that nothing else references.
    let pml4 = unsafe { &mut *pml4_ptr };
    // SAFETY: all RAM (and, until the switch, the first 4 GiB) is mapped at PHYS_MAP_BASE.
    let mut table = unsafe { OffsetPageTable::new(pml4, VirtAddr::new(PHYS_MAP_BASE)) };

    for section in sections {
        let flags = pte_flags(section.flags);
        let mut addr = section.start & !(PAGE_SIZE - 1);
        while addr < section.end {
            // SAFETY: identity mapping of the kernel image with its intended permissions.
            unsafe { map_permanent::<Size4KiB>(&mut table, addr, addr, flags)? };
            addr += PAGE_SIZE;
        }
    }

    let image_start = sections.iter().map(|s| s.start).min().unwrap_or(0);
    let image_end = sections.iter().map(|s| s.end).max().unwrap_or(0);
    let direct = pte_flags(MapFlags::DATA);
    for (start, len) in ram {
        let mut addr = start.next_multiple_of(PAGE_SIZE);
        let end = (start + len) & !(PAGE_SIZE - 1);
        while addr < end {
            if addr >= image_start && addr < image_end {
                addr = image_end.next_multiple_of(PAGE_SIZE);
                continue;
            }
            let huge = 2 << 20;
            let huge_fits = addr % huge == 0
                && addr + huge <= end
                && !(addr < image_end && addr + huge > image_start);
            let virt = PHYS_MAP_BASE + addr;
            // SAFETY: the direct map: RAM aliased read-write, no-execute, in its own range.
            unsafe {
                if huge_fits {
                    map_permanent::<Size2MiB>(&mut table, virt, addr, direct)?;
                } else {
                    map_permanent::<Size4KiB>(&mut table, virt, addr, direct)?;
                }
            }
            addr += if huge_fits { huge } else { PAGE_SIZE };
        }
    }

    // SAFETY: the new tables map the running code, stack and data exactly as before.
    unsafe { Cr3::write(pml4_frame, Cr3Flags::empty()) };
    TABLE_FRAME_LIMIT.store(u64::MAX, Ordering::Relaxed);
    *TABLE.lock() = Some(table);
    Ok(())
}

fn with_table<R>(f: impl FnOnce(&mut OffsetPageTable<'static>) -> R) -> Result<R, MemoryError> {
    let mut guard = TABLE.lock();
    let table = guard.as_mut().ok_or(MemoryError::NotInitialized)?;
    Ok(f(table))
}

/// Maps `pages` to `frames` (equal length). On error both are dropped, and so freed.
pub fn map(
    pages: AllocatedPages,
    frames: AllocatedFrames,
    flags: MapFlags,
) -> Result<MappedPages, MemoryError> {
    if pages.count() != frames.count() {
        return Err(MemoryError::SizeMismatch);
    }
    let pte = pte_flags(flags);
    with_table(|table| {
        for i in 0..pages.count() {
            let page = Page::<Size4KiB>::containing_address(pages.start_address() + i * PAGE_SIZE);
            let frame = PhysFrame::containing_address(frames.start_address() + i * PAGE_SIZE);
            // SAFETY: `pages` and `frames` are uniquely owned and become owned by the returned
            // `MappedPages`, which unmaps them before either is freed.
            let result = unsafe {
                table.map_to_with_table_flags(page, frame, pte, TABLE_FLAGS, &mut TableFrames)
            };
            match result {
                Ok(flush) => flush.flush(),
                Err(e) => {
                    for j in 0..i {
                        let done = Page::<Size4KiB>::containing_address(
                            pages.start_address() + j * PAGE_SIZE,
                        );
                        if let Ok((_, flush)) = table.unmap(done) {
                            flush.flush();
                        }
                    }
                    return Err(map_error(e));
                }
            }
        }
        Ok(())
    })??;
    Ok(MappedPages::new(pages, frames, flags))
}

/// Claims the device (non-RAM) frames covering `[start, start + size)` and maps them
/// read-write and uncached, for device registers. The mapping begins at the page holding
/// `start`: the registers are at `start % PAGE_SIZE` in it.
pub fn map_device(start: PhysAddr, size: u64) -> Result<MappedPages, MemoryError> {
    let frames = crate::claim_device_frames(start, size)?;
    let pages = allocate_pages(frames.count())?;
    map(pages, frames, MapFlags::MMIO)
}

/// Allocates `count` pages and as many contiguous RAM frames and maps them.
pub fn map_new(count: u64, flags: MapFlags) -> Result<MappedPages, MemoryError> {
    let pages = allocate_pages(count)?;
    let frames = allocate_frames(count)?;
    map(pages, frames, flags)
}

pub(crate) fn unmap(pages: &AllocatedPages) {
    let _ = with_table(|table| {
        for i in 0..pages.count() {
            let page = Page::<Size4KiB>::containing_address(pages.start_address() + i * PAGE_SIZE);
            if let Ok((_, flush)) = table.unmap(page) {
                flush.flush();
            }
        }
    });
}

pub(crate) fn update_flags(pages: &AllocatedPages, flags: MapFlags) -> Result<(), MemoryError> {
    let pte = pte_flags(flags);
    with_table(|table| {
        for i in 0..pages.count() {
            let page = Page::<Size4KiB>::containing_address(pages.start_address() + i * PAGE_SIZE);
            // SAFETY: the caller owns the mapping through `MappedPages`, which tracks the flags.
            match unsafe { table.update_flags(page, pte) } {
                Ok(flush) => flush.flush(),
                Err(_) => return Err(MemoryError::NotMapped),
            }
        }
        Ok(())
    })?
}

/// The physical address a kernel virtual address is mapped to, if any.
pub fn translate(addr: VirtAddr) -> Option<PhysAddr> {
    with_table(|table| table.translate_addr(addr))
        .ok()
        .flatten()
}

/// A read-only view of firmware memory (ACPI tables, ...) outside RAM. Firmware tables are never
/// written and may be viewed more than once, so the view shares the frames instead of owning
/// them; dropping it unmaps the pages.
#[derive(Debug)]
pub struct FirmwareView {
    pages: AllocatedPages,
    offset: u64,
}

impl FirmwareView {
    /// The virtual address of the physical address the view was made for.
    pub fn address(&self) -> VirtAddr {
        self.pages.start_address() + self.offset
    }
}

impl Drop for FirmwareView {
    fn drop(&mut self) {
        unmap(&self.pages);
    }
}

/// Maps `size` bytes of firmware memory at `start` read-only.
pub fn view_firmware(start: PhysAddr, size: u64) -> Result<FirmwareView, MemoryError> {
    let first = start.align_down(PAGE_SIZE);
    let end = (start + size.max(1)).align_up(PAGE_SIZE);
    let count = (end - first) / PAGE_SIZE;
    let pages = allocate_pages(count)?;
    let pte = pte_flags(MapFlags::RODATA);
    with_table(|table| {
        for i in 0..count {
            let page = Page::<Size4KiB>::containing_address(pages.start_address() + i * PAGE_SIZE);
            let frame = PhysFrame::containing_address(first + i * PAGE_SIZE);
            // SAFETY: a read-only, non-executable alias of firmware memory, which no Rust
            // object owns; the view unmaps it before its pages are reused.
            let result = unsafe {
                table.map_to_with_table_flags(page, frame, pte, TABLE_FLAGS, &mut TableFrames)
            };
            match result {
                Ok(flush) => flush.flush(),
                Err(e) => return Err(map_error(e)),
            }
        }
        Ok(())
    })??;
    Ok(FirmwareView {
        pages,
        offset: start - first,
    })
}

/// Maps one page to the first frame of `frames` (the caller keeps owning the frames and must
/// unmap the page before dropping them).
pub(crate) fn map_page(
    page: VirtAddr,
    frames: &AllocatedFrames,
    flags: MapFlags,
) -> Result<(), MemoryError> {
    let pte = pte_flags(flags);
    with_table(|table| {
        let page = Page::<Size4KiB>::containing_address(page);
        let frame = PhysFrame::containing_address(frames.start_address());
        // SAFETY: the page belongs to a reservation of the caller and the frame is owned by the
        // caller until it unmaps the page.
        unsafe { table.map_to_with_table_flags(page, frame, pte, TABLE_FLAGS, &mut TableFrames) }
            .map(|flush| flush.flush())
            .map_err(map_error)
    })?
}

pub(crate) fn unmap_page(page: VirtAddr) {
    let _ = with_table(|table| {
        if let Ok((_, flush)) = table.unmap(Page::<Size4KiB>::containing_address(page)) {
            flush.flush();
        }
    });
}

pub(crate) fn update_page(page: VirtAddr, flags: MapFlags) -> Result<(), MemoryError> {
    let pte = pte_flags(flags);
    with_table(|table| {
        // SAFETY: the caller owns the mapping (see `map_page`).
        match unsafe { table.update_flags(Page::<Size4KiB>::containing_address(page), pte) } {
            Ok(flush) => {
                flush.flush();
                Ok(())
            }
            Err(_) => Err(MemoryError::NotMapped),
        }
    })?
}
