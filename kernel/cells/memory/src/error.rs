use core::fmt;
use keel_ranges::RangeError;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemoryError {
    OutOfFrames,
    OutOfPages,
    /// A requested physical or virtual range is (partly) in use already.
    InUse,
    DoubleFree,
    TooFragmented,
    InvalidRequest,
    /// Pages and frames passed to `map` differ in length.
    SizeMismatch,
    /// A page was already mapped (internal inconsistency, reported instead of panicking).
    AlreadyMapped,
    NotMapped,
    /// A view reached past the end of the mapping.
    OutOfBounds,
    Misaligned,
    NotWritable,
    NotInitialized,
}

impl MemoryError {
    pub(crate) fn from_frames(e: RangeError) -> Self {
        match e {
            RangeError::Exhausted => MemoryError::OutOfFrames,
            other => Self::from_range(other),
        }
    }
    pub(crate) fn from_pages(e: RangeError) -> Self {
        match e {
            RangeError::Exhausted => MemoryError::OutOfPages,
            other => Self::from_range(other),
        }
    }
    fn from_range(e: RangeError) -> Self {
        match e {
            RangeError::Exhausted => MemoryError::OutOfFrames,
            RangeError::NotFree => MemoryError::InUse,
            RangeError::DoubleFree => MemoryError::DoubleFree,
            RangeError::TooFragmented => MemoryError::TooFragmented,
            RangeError::InvalidRequest => MemoryError::InvalidRequest,
        }
    }
}

impl fmt::Display for MemoryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MemoryError::OutOfFrames => "out of physical memory",
            MemoryError::OutOfPages => "out of kernel virtual address space",
            MemoryError::InUse => "range already in use",
            MemoryError::DoubleFree => "range freed twice",
            MemoryError::TooFragmented => "allocator free list full",
            MemoryError::InvalidRequest => "invalid memory request",
            MemoryError::SizeMismatch => "pages and frames differ in size",
            MemoryError::AlreadyMapped => "page already mapped",
            MemoryError::NotMapped => "page not mapped",
            MemoryError::OutOfBounds => "access past the end of the mapping",
            MemoryError::Misaligned => "misaligned access",
            MemoryError::NotWritable => "mapping is not writable",
            MemoryError::NotInitialized => "memory management not initialised",
        })
    }
}
