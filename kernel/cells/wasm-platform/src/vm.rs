//! `wasmtime_mmap_*`, `wasmtime_mprotect`, `wasmtime_page_size` and `wasmtime_memory_image_*`.
//!
//! How Wasmtime 48.0.8 uses them (`vm/sys/custom/{mmap,vm}.rs`):
//! * `Mmap::new` → `mmap_new(size, READ|WRITE)`; `Mmap::reserve` → `mmap_new(size, 0)`, a
//!   reservation with nothing behind it, later opened with `mprotect(.., READ|WRITE)`;
//! * code: `mprotect(.., READ|EXEC)` for text, `mprotect(.., READ)` for read-only data;
//! * `hide_existing_mapping` → `mprotect(.., 0)`, `erase_existing_mapping` → `mmap_remap(.., 0)`,
//!   `remap_as_zeros_at` → `mmap_remap(.., READ|WRITE)` (fresh zeroed pages at the same address);
//! * `Mmap::drop` → `munmap(ptr, len)` of the whole mapping, and Wasmtime *panics* if it fails.
//!
//! Pages are committed on first touch: `mprotect` and `mmap_new` only record access rights, and
//! [`commit_on_fault`] (called by the page-fault handler) backs a page with a zeroed frame when
//! Wasm code or the host first uses it. A 64 MiB linear memory of which a program touches 1 MiB
//! costs 1 MiB of RAM, and `memory.grow` costs no more than recording the new range.
//!
//! Locking: the registry and each reservation are [`IrqSafeMutex`]es, because the page-fault
//! handler takes them. They are held for bounded work: a lookup, recording a range, or changing
//! the pages actually committed. Lock order: a reservation's, then the registry's.

use crate::error::{EINVAL, ENOTSUP, from_memory};
use alloc::collections::BTreeMap;
use alloc::sync::Arc;
use core::ptr;
use core::sync::atomic::{AtomicU64, Ordering};
use keel_memory::{FaultCommit, MemoryError, PAGE_SIZE, Protection, Reservation};
use keel_sync::IrqSafeMutex;

/// `WASMTIME_PROT_READ` in `capi.rs`.
pub const WASMTIME_PROT_READ: u32 = 1 << 0;
/// `WASMTIME_PROT_WRITE` in `capi.rs`.
pub const WASMTIME_PROT_WRITE: u32 = 1 << 1;
/// `WASMTIME_PROT_EXEC` in `capi.rs`.
pub const WASMTIME_PROT_EXEC: u32 = 1 << 2;

/// One live `wasmtime_mmap_new` mapping. `None` once fully unmapped (a task that looked it up
/// just before then finds nothing to act on).
struct Mapping {
    reservation: Option<Reservation>,
}

type SharedMapping = Arc<IrqSafeMutex<Mapping>>;

/// Live mappings by start address.
static MAPPINGS: IrqSafeMutex<BTreeMap<usize, SharedMapping>> = IrqSafeMutex::new(BTreeMap::new());

/// Bytes committed (backed by frames) over all live mappings.
static COMMITTED: AtomicU64 = AtomicU64::new(0);

/// Address ranges Wasmtime made executable: compiled Wasm code and its trampolines. A CPU fault
/// there is a Wasm trap (with signals-based traps); anywhere else it is not.
static CODE_RANGES: IrqSafeMutex<alloc::vec::Vec<core::ops::Range<usize>>> =
    IrqSafeMutex::new(alloc::vec::Vec::new());

fn forget_code(range: core::ops::Range<usize>) {
    CODE_RANGES
        .lock()
        .retain(|r| r.end <= range.start || r.start >= range.end);
}

/// Whether `addr` lies in code that Wasmtime compiled (made executable through `mprotect`).
pub fn is_wasm_code(addr: usize) -> bool {
    CODE_RANGES.lock().iter().any(|r| r.contains(&addr))
}

/// Bytes of RAM currently committed to Wasmtime mappings (code and, if configured, linear
/// memories), for `ps`/`mem`.
pub fn committed_bytes() -> u64 {
    COMMITTED.load(Ordering::Relaxed)
}

/// Adds the change of one reservation's committed bytes to the total.
fn account(before: u64, after: u64) {
    if after >= before {
        COMMITTED.fetch_add(after - before, Ordering::Relaxed);
    } else {
        COMMITTED.fetch_sub(before - after, Ordering::Relaxed);
    }
}

/// Wasmtime's protection bits as a Keel [`Protection`]. x86 cannot express write-only or
/// execute-only pages, so those include read access (as `mmap` does on Linux).
fn protection(prot_flags: u32) -> Result<Protection, i32> {
    const R: u32 = WASMTIME_PROT_READ;
    const W: u32 = WASMTIME_PROT_WRITE;
    const X: u32 = WASMTIME_PROT_EXEC;
    if prot_flags & !(R | W | X) != 0 {
        return Err(EINVAL);
    }
    let write = prot_flags & W != 0;
    let exec = prot_flags & X != 0;
    Ok(match (prot_flags & R != 0, write, exec) {
        (false, false, false) => Protection::None,
        (_, true, true) => return Err(ENOTSUP),
        (_, true, false) => Protection::ReadWrite,
        (_, false, true) => Protection::ReadExecute,
        (true, false, false) => Protection::Read,
    })
}

fn to_code(result: Result<(), MemoryError>) -> i32 {
    match result {
        Ok(()) => 0,
        Err(e) => from_memory(e),
    }
}

/// The mapping containing `addr`, and its start address.
fn containing(addr: usize) -> Option<(usize, SharedMapping)> {
    let mappings = MAPPINGS.lock();
    let (&start, mapping) = mappings.range(..=addr).next_back()?;
    Some((start, mapping.clone()))
}

/// Runs `op` on the reservation containing all of `[addr, addr + len)`, with the offset of
/// `addr` in it, and keeps the committed total up to date. `len == 0` is a no-op.
fn with_range(
    addr: *mut u8,
    len: usize,
    op: impl FnOnce(&mut Reservation, u64) -> Result<(), MemoryError>,
) -> i32 {
    if len == 0 {
        return 0;
    }
    let addr = addr as usize;
    let Some(end) = addr.checked_add(len) else {
        return EINVAL;
    };
    let Some((start, mapping)) = containing(addr) else {
        return EINVAL;
    };
    let mut mapping = mapping.lock();
    let Some(reservation) = mapping.reservation.as_mut() else {
        return EINVAL;
    };
    if (end - start) as u64 > reservation.size_in_bytes() {
        return EINVAL;
    }
    let before = reservation.committed_bytes();
    let result = op(reservation, (addr - start) as u64);
    account(before, reservation.committed_bytes());
    to_code(result)
}

/// Reserves `size` bytes of kernel virtual address space and gives them `prot_flags` (`0`:
/// inaccessible, Wasmtime's `Mmap::reserve`). Pages are committed, zeroed, when first touched.
/// Stores the start in `ret`. Returns 0, or an error code.
#[unsafe(no_mangle)]
pub extern "C" fn wasmtime_mmap_new(size: usize, prot_flags: u32, ret: &mut *mut u8) -> i32 {
    let prot = match protection(prot_flags) {
        Ok(prot) => prot,
        Err(code) => return code,
    };
    if size == 0 {
        return EINVAL;
    }
    let mut reservation = match Reservation::new(size as u64) {
        Ok(r) => r,
        Err(e) => return from_memory(e),
    };
    if let Err(e) = reservation.protect(0, size as u64, prot) {
        return from_memory(e);
    }
    let start = reservation.start_address().as_u64() as usize;
    let mapping = Arc::new(IrqSafeMutex::new(Mapping {
        reservation: Some(reservation),
    }));
    MAPPINGS.lock().insert(start, mapping);
    *ret = ptr::with_exposed_provenance_mut(start);
    0
}

/// Replaces `[addr, addr + size)` (page-aligned, inside one mapping) by fresh zeroed pages with
/// `prot_flags` (`0`: decommitted, reserved only). Returns 0, or an error code.
#[unsafe(no_mangle)]
pub extern "C" fn wasmtime_mmap_remap(addr: *mut u8, size: usize, prot_flags: u32) -> i32 {
    let prot = match protection(prot_flags) {
        Ok(prot) => prot,
        Err(code) => return code,
    };
    with_range(addr, size, |r, offset| {
        if prot == Protection::None {
            r.protect(offset, size as u64, Protection::None)
        } else {
            r.reset(offset, size as u64, prot)
        }
    })
}

/// Unmaps `[ptr, ptr + size)`. The whole mapping: it is removed and all its pages and frames
/// are freed. A part of one: those pages are decommitted (faulting when touched) and stay
/// reserved until the whole mapping is unmapped. Returns 0, or an error code.
#[unsafe(no_mangle)]
pub extern "C" fn wasmtime_munmap(ptr: *mut u8, size: usize) -> i32 {
    if size == 0 {
        return 0;
    }
    let addr = ptr as usize;
    let Some((start, mapping)) = containing(addr) else {
        return EINVAL;
    };
    let mut guard = mapping.lock();
    let Some(reservation) = guard.reservation.as_ref() else {
        return EINVAL;
    };
    let whole = addr == start
        && (size as u64).div_ceil(PAGE_SIZE) * PAGE_SIZE == reservation.size_in_bytes();
    if !whole {
        drop(guard);
        return with_range(ptr, size, |r, offset| {
            r.protect(offset, size as u64, Protection::None)
        });
    }
    {
        let mut mappings = MAPPINGS.lock();
        if mappings
            .get(&start)
            .is_some_and(|m| Arc::ptr_eq(m, &mapping))
        {
            mappings.remove(&start);
        }
    }
    let reservation = guard.reservation.take();
    drop(guard);
    forget_code(start..start + size);
    if let Some(reservation) = reservation {
        COMMITTED.fetch_sub(reservation.committed_bytes(), Ordering::Relaxed);
        // Unmaps every committed page, then frees the frames and the virtual range.
        drop(reservation);
    }
    0
}

/// Sets the access of `[ptr, ptr + size)` (page-aligned, inside one mapping). `0` decommits
/// (the contents are lost); other protections keep the contents of committed pages, and the
/// others are committed, zeroed, when first touched. Returns 0, or an error code (`ENOTSUP`
/// for write+execute).
#[unsafe(no_mangle)]
pub extern "C" fn wasmtime_mprotect(ptr: *mut u8, size: usize, prot_flags: u32) -> i32 {
    let prot = match protection(prot_flags) {
        Ok(prot) => prot,
        Err(code) => return code,
    };
    let result = with_range(ptr, size, |r, offset| r.protect(offset, size as u64, prot));
    if result == 0 {
        let range = ptr as usize..ptr as usize + size;
        forget_code(range.clone());
        if prot == Protection::ReadExecute {
            CODE_RANGES.lock().push(range);
        }
    }
    result
}

/// What the page-fault handler should do after [`commit_on_fault`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DemandFault {
    /// The page is now backed: resume the faulting access.
    Committed,
    /// Not a page waiting to be committed: a guard region, a protection violation, or an
    /// address outside Wasmtime's mappings.
    NotDemand,
    /// The page may be used but no frame is left for it.
    OutOfMemory,
}

/// Commits the page containing `addr` if it lies in a Wasmtime mapping, may be accessed and is
/// not yet backed. Runs in the page-fault handler: it takes only interrupt-safe locks.
pub fn commit_on_fault(addr: usize) -> DemandFault {
    let Some((start, mapping)) = containing(addr) else {
        return DemandFault::NotDemand;
    };
    let mut mapping = mapping.lock();
    let Some(reservation) = mapping.reservation.as_mut() else {
        return DemandFault::NotDemand;
    };
    match reservation.commit_on_fault((addr - start) as u64) {
        Ok(FaultCommit::Committed) => {
            COMMITTED.fetch_add(PAGE_SIZE, Ordering::Relaxed);
            DemandFault::Committed
        }
        Ok(FaultCommit::NotCommittable) => DemandFault::NotDemand,
        Err(_) => DemandFault::OutOfMemory,
    }
}

/// Keel's page size.
#[unsafe(no_mangle)]
pub extern "C" fn wasmtime_page_size() -> usize {
    PAGE_SIZE as usize
}

/// Opaque memory-image type of `capi.rs`; Keel never creates one.
#[allow(non_camel_case_types)]
pub enum wasmtime_memory_image {}

/// Keel has no copy-on-write images: stores NULL ("no image, not an error"), so Wasmtime
/// initializes linear memories by copying their data segments. Returns 0.
#[unsafe(no_mangle)]
pub extern "C" fn wasmtime_memory_image_new(
    _ptr: *const u8,
    _len: usize,
    ret: &mut *mut wasmtime_memory_image,
) -> i32 {
    *ret = ptr::null_mut();
    0
}

/// Never called, since no image is ever created; answers `EINVAL` rather than aborting.
#[unsafe(no_mangle)]
pub extern "C" fn wasmtime_memory_image_map_at(
    _image: *mut wasmtime_memory_image,
    _addr: *mut u8,
    _len: usize,
) -> i32 {
    EINVAL
}

/// Never called with an image (none exists); nothing to free.
#[unsafe(no_mangle)]
pub extern "C" fn wasmtime_memory_image_free(_image: *mut wasmtime_memory_image) {}
