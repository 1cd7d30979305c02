//! FAT12/16/32 file systems for Keel's VFS.
//!
//! [`FatFs`] mounts the FAT volume on any [`keel_block::BlockDevice`] (a whole disk, or a
//! [`keel_block::Partition`] that [`keel_block::read_partitions`] found) and implements
//! [`keel_vfs::FileSystem`]. The FAT work itself is rust-fatfs (the `starry-fatfs` no_std
//! build); this crate adds what the VFS needs around it: inode numbers for a path-based file
//! system (`nodes.rs`), a write-back sector cache between fatfs's byte stream and the block
//! device (`cache.rs`), checks that keep a corrupt volume from reaching fatfs's arithmetic
//! (`layout.rs`), and Unix timestamps (`time.rs`). [`FatFs`] documents what FAT cannot do.
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

extern crate alloc;

mod cache;
mod fs;
mod layout;
mod nodes;
mod time;

pub use cache::{CacheStats, DIRECT_MIN, MAX_REQUEST};
pub use fatfs::FatType;
pub use fs::{FatFs, FatOptions, FormatOptions, MAX_FILE_SIZE, UNLINKED_DIR};
