//! [`MappedPages`]: an owned mapping of pages to frames, and typed, bounds-checked views into it.

use crate::{AllocatedFrames, AllocatedPages, MemoryError, paging};
use core::mem::{align_of, size_of};
use x86_64::{PhysAddr, VirtAddr};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheMode {
    WriteBack,
    /// For device registers (MMIO).
    Uncached,
}

/// Permissions of a mapping. Writable and executable at once is not representable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapFlags {
    ReadOnly(CacheMode),
    ReadWrite(CacheMode),
    ReadExecute,
}

impl MapFlags {
    pub const DATA: MapFlags = MapFlags::ReadWrite(CacheMode::WriteBack);
    pub const RODATA: MapFlags = MapFlags::ReadOnly(CacheMode::WriteBack);
    pub const MMIO: MapFlags = MapFlags::ReadWrite(CacheMode::Uncached);

    pub fn is_writable(&self) -> bool {
        matches!(self, MapFlags::ReadWrite(_))
    }
}

/// Pages mapped to frames. Dropping it unmaps the pages and frees both ranges.
#[derive(Debug)]
pub struct MappedPages {
    pages: AllocatedPages,
    // `Option` only so that `Drop` can hand the frames back after unmapping.
    frames: Option<AllocatedFrames>,
    flags: MapFlags,
}

impl MappedPages {
    pub(crate) fn new(pages: AllocatedPages, frames: AllocatedFrames, flags: MapFlags) -> Self {
        Self {
            pages,
            frames: Some(frames),
            flags,
        }
    }

    pub fn start_address(&self) -> VirtAddr {
        self.pages.start_address()
    }
    pub fn size_in_bytes(&self) -> u64 {
        self.pages.size_in_bytes()
    }
    pub fn flags(&self) -> MapFlags {
        self.flags
    }
    /// The physical address backing `offset` (frames are contiguous).
    pub fn physical_address(&self, offset: u64) -> Result<PhysAddr, MemoryError> {
        if offset >= self.size_in_bytes() {
            return Err(MemoryError::OutOfBounds);
        }
        let frames = self.frames.as_ref().ok_or(MemoryError::NotMapped)?;
        Ok(frames.start_address() + offset)
    }

    /// Changes the permissions of the whole mapping.
    pub fn remap(&mut self, flags: MapFlags) -> Result<(), MemoryError> {
        paging::update_flags(&self.pages, flags)?;
        self.flags = flags;
        Ok(())
    }

    fn check(&self, offset: usize, size: usize, align: usize) -> Result<usize, MemoryError> {
        let end = offset.checked_add(size).ok_or(MemoryError::OutOfBounds)?;
        if end as u64 > self.size_in_bytes() {
            return Err(MemoryError::OutOfBounds);
        }
        let addr = self.start_address().as_u64() as usize + offset;
        if !addr.is_multiple_of(align) {
            return Err(MemoryError::Misaligned);
        }
        Ok(addr)
    }

    fn bytes(&self) -> &[u8] {
        // SAFETY: the pages are mapped (at least readable) for as long as `self` lives, the
        // frames are owned by `self`, and the slice's lifetime is tied to `&self`.
        unsafe {
            core::slice::from_raw_parts(
                self.start_address().as_ptr::<u8>(),
                self.size_in_bytes() as usize,
            )
        }
    }

    fn bytes_mut(&mut self) -> Result<&mut [u8], MemoryError> {
        if !self.flags.is_writable() {
            return Err(MemoryError::NotWritable);
        }
        // SAFETY: as in `bytes`, and the mapping is writable; `&mut self` makes the view unique.
        Ok(unsafe {
            core::slice::from_raw_parts_mut(
                self.start_address().as_mut_ptr::<u8>(),
                self.size_in_bytes() as usize,
            )
        })
    }

    /// A shared view of a `T` at `offset`.
    pub fn as_type<T: FromBytes + KnownLayout + Immutable>(
        &self,
        offset: usize,
    ) -> Result<&T, MemoryError> {
        self.check(offset, size_of::<T>(), align_of::<T>())?;
        T::ref_from_bytes(&self.bytes()[offset..offset + size_of::<T>()])
            .map_err(|_| MemoryError::Misaligned)
    }

    /// A mutable view of a `T` at `offset`; only for writable mappings.
    pub fn as_type_mut<T: FromBytes + IntoBytes + KnownLayout>(
        &mut self,
        offset: usize,
    ) -> Result<&mut T, MemoryError> {
        self.check(offset, size_of::<T>(), align_of::<T>())?;
        T::mut_from_bytes(&mut self.bytes_mut()?[offset..offset + size_of::<T>()])
            .map_err(|_| MemoryError::Misaligned)
    }

    /// A shared view of `len` consecutive `T`s at `offset`.
    pub fn as_slice<T: FromBytes + Immutable>(
        &self,
        offset: usize,
        len: usize,
    ) -> Result<&[T], MemoryError> {
        let size = len
            .checked_mul(size_of::<T>())
            .ok_or(MemoryError::OutOfBounds)?;
        self.check(offset, size, align_of::<T>())?;
        <[T]>::ref_from_bytes_with_elems(&self.bytes()[offset..offset + size], len)
            .map_err(|_| MemoryError::Misaligned)
    }

    /// A mutable view of `len` consecutive `T`s at `offset`; only for writable mappings.
    pub fn as_slice_mut<T: FromBytes + IntoBytes + Immutable>(
        &mut self,
        offset: usize,
        len: usize,
    ) -> Result<&mut [T], MemoryError> {
        let size = len
            .checked_mul(size_of::<T>())
            .ok_or(MemoryError::OutOfBounds)?;
        self.check(offset, size, align_of::<T>())?;
        <[T]>::mut_from_bytes_with_elems(&mut self.bytes_mut()?[offset..offset + size], len)
            .map_err(|_| MemoryError::Misaligned)
    }

    /// A volatile 32-bit read, for device registers.
    pub fn read_volatile_u32(&self, offset: usize) -> Result<u32, MemoryError> {
        self.read_volatile::<u32>(offset)
    }

    /// A volatile 32-bit write, for device registers; only for writable mappings.
    pub fn write_volatile_u32(&mut self, offset: usize, value: u32) -> Result<(), MemoryError> {
        self.write_volatile(offset, value)
    }

    /// A volatile read of a naturally aligned `T` (device registers, DMA descriptors).
    pub fn read_volatile<T: VolatileValue>(&self, offset: usize) -> Result<T, MemoryError> {
        let addr = self.check(offset, size_of::<T>(), align_of::<T>())?;
        // SAFETY: in bounds, aligned and mapped for the lifetime of `self`; `T` is a plain
        // integer, valid for every bit pattern.
        Ok(unsafe { core::ptr::read_volatile(addr as *const T) })
    }

    /// A volatile write of a naturally aligned `T`; only for writable mappings. Takes `&self`:
    /// device registers and DMA memory are shared with the device anyway, and volatile
    /// accesses never create references to the memory.
    pub fn write_volatile<T: VolatileValue>(
        &self,
        offset: usize,
        value: T,
    ) -> Result<(), MemoryError> {
        if !self.flags.is_writable() {
            return Err(MemoryError::NotWritable);
        }
        let addr = self.check(offset, size_of::<T>(), align_of::<T>())?;
        // SAFETY: in bounds, aligned, writable and mapped for the lifetime of `self`.
        unsafe { core::ptr::write_volatile(addr as *mut T, value) };
        Ok(())
    }

    /// Copies `out.len()` bytes from `offset` with volatile byte reads (memory a device writes).
    pub fn read_bytes_volatile(&self, offset: usize, out: &mut [u8]) -> Result<(), MemoryError> {
        let addr = self.check(offset, out.len(), 1)?;
        for (i, byte) in out.iter_mut().enumerate() {
            // SAFETY: `addr + i` is inside the checked range, mapped while `self` lives.
            *byte = unsafe { core::ptr::read_volatile((addr + i) as *const u8) };
        }
        Ok(())
    }

    /// Copies `data` to `offset` with volatile byte writes; only for writable mappings.
    pub fn write_bytes_volatile(&self, offset: usize, data: &[u8]) -> Result<(), MemoryError> {
        if !self.flags.is_writable() {
            return Err(MemoryError::NotWritable);
        }
        let addr = self.check(offset, data.len(), 1)?;
        for (i, byte) in data.iter().enumerate() {
            // SAFETY: `addr + i` is inside the checked, writable range, mapped while `self` lives.
            unsafe { core::ptr::write_volatile((addr + i) as *mut u8, *byte) };
        }
        Ok(())
    }
}

/// Integers that device registers and DMA memory are accessed as.
pub trait VolatileValue: Copy + private::Sealed {}
impl VolatileValue for u8 {}
impl VolatileValue for u16 {}
impl VolatileValue for u32 {}
impl VolatileValue for u64 {}

mod private {
    pub trait Sealed {}
    impl Sealed for u8 {}
    impl Sealed for u16 {}
    impl Sealed for u32 {}
    impl Sealed for u64 {}
}

impl Drop for MappedPages {
    fn drop(&mut self) {
        paging::unmap(&self.pages);
        // `pages` drops after this body; the frames go back now, after the TLB flush.
        drop(self.frames.take());
    }
}
