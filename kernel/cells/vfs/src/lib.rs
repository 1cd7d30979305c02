//! The virtual file system: the back end of the WASI preview1 file calls.
//!
//! - [`FileSystem`] is what a mounted file system implements: operations on inode numbers
//!   (lookup, create, remove, rename, read/write at an offset, resize, stat, list). [`MemFs`] is
//!   the in-memory one (files are `Vec<u8>`, directories name maps) with a size limit.
//! - [`Vfs`] is the mount table (`/` is the root file system; more can be mounted on existing
//!   directories, e.g. a FAT32 disk at `/disk`, and unmounted again once nothing on them is
//!   open; [`Vfs::sync_all`] makes every file system durable) and resolves paths. Programs only ever name files
//!   relative to a directory handle they hold (a WASI capability): `.`, `..` and repeated slashes
//!   are understood, but a path can never leave that directory (`..` above it, or an absolute
//!   path, is [`Errno::Notcapable`]). Only the kernel resolves absolute paths ([`Vfs::preopen`]).
//! - [`OpenFile`] is an open file or directory (mount, inode, offset, flags, read/write rights).
//!   It keeps its inode alive while it exists: a file removed while open stays readable until
//!   the handle is dropped, as in POSIX.
//! - [`FdTable`] is a program's file descriptor table: 0-2 are stdio (handled by the WASI host),
//!   preopens and opened files from 3.
//!
//! Errors are WASI's own numbers ([`Errno`]); flags and layouts follow `typenames.witx`, so the
//! WASI host mostly copies values through. Timestamps are nanoseconds from the clock function
//! given to [`Vfs::new`]. There are no symbolic links (and no hard links): every inode has exactly
//! one name, `path_readlink` answers [`Errno::Inval`].
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

extern crate alloc;

mod errno;
mod fd_table;
mod mem_fs;
mod vfs;

#[cfg(test)]
mod tests;

pub use errno::Errno;
pub use fd_table::{FIRST_FD, FdTable, MAX_FDS};
pub use mem_fs::MemFs;
pub use vfs::{MountId, OpenFile, Vfs};

use alloc::string::String;
use alloc::vec::Vec;
use core::ops::BitOr;

/// The result of every file-system operation.
pub type Result<T> = core::result::Result<T, Errno>;

/// A file's serial number, unique within its file system.
pub type Inode = u64;

/// Longest path accepted, in bytes.
pub const MAX_PATH: usize = 4096;
/// Longest file name (path component) accepted, in bytes.
pub const MAX_NAME: usize = 255;

/// The interface of a mountable file system.
///
/// Every method works on inode numbers and takes `&self`: the file system does its own locking
/// and each call is atomic. `now` is the current time in nanoseconds, for timestamps. Names are
/// single path components (never empty, `.`, `..` or containing `/`); the [`Vfs`] checks that.
///
/// Errors: an inode that does not exist (any more) is [`Errno::Noent`]; a directory operation on
/// a file is [`Errno::Notdir`]; a data operation on a directory is [`Errno::Isdir`]; running out
/// of space is [`Errno::Nospc`].
pub trait FileSystem: Send + Sync {
    /// The root directory.
    fn root(&self) -> Inode;

    /// The entry `name` in directory `dir`: its inode and type.
    fn lookup(&self, dir: Inode, name: &str) -> Result<(Inode, FileType)>;

    /// The parent of directory `dir` (the root is its own parent).
    fn parent(&self, dir: Inode) -> Result<Inode>;

    /// Creates an empty file or directory `name` in `dir`; [`Errno::Exist`] if the name is taken,
    /// [`Errno::Noent`] if `dir` has been removed.
    fn create(&self, dir: Inode, name: &str, kind: FileType, now: u64) -> Result<Inode>;

    /// Removes entry `name` from `dir`. With `kind` [`FileType::Directory`] this is `rmdir`
    /// ([`Errno::Notdir`] for a file, [`Errno::Notempty`]); with [`FileType::RegularFile`] it is
    /// `unlink` ([`Errno::Isdir`] for a directory). The inode lives on while it is retained.
    fn remove(&self, dir: Inode, name: &str, kind: FileType, now: u64) -> Result<()>;

    /// Moves entry `from_name` of `from_dir` to `to_name` in `to_dir`, with the POSIX rules: an
    /// existing target is replaced if it is a file and the source is a file ([`Errno::Isdir`]
    /// otherwise), or if it is an empty directory and the source is a directory
    /// ([`Errno::Notdir`] for a file source, [`Errno::Notempty`]); renaming an entry onto itself
    /// does nothing; moving a directory into itself or below is [`Errno::Inval`].
    fn rename(
        &self,
        from_dir: Inode,
        from_name: &str,
        to_dir: Inode,
        to_name: &str,
        now: u64,
    ) -> Result<()>;

    /// Keeps `ino` alive (even once it is removed) until the matching [`FileSystem::release`].
    fn retain(&self, ino: Inode) -> Result<()>;

    /// Undoes one [`FileSystem::retain`]; a removed inode is freed with its last release.
    fn release(&self, ino: Inode);

    /// Reads from `offset` into `buf`; returns how many bytes were read (0 at or past the end).
    fn read_at(&self, ino: Inode, offset: u64, buf: &mut [u8], now: u64) -> Result<usize>;

    /// Writes `data` at `offset`, extending the file (with zeros across any gap) as needed.
    /// Returns how many bytes were written: fewer than `data.len()` when space runs out,
    /// [`Errno::Nospc`] if not even one byte fits.
    fn write_at(&self, ino: Inode, offset: u64, data: &[u8], now: u64) -> Result<usize>;

    /// Writes `data` at the end of the file; returns the count written and the new end. The
    /// default is not atomic against concurrent appends; implementations should override it.
    fn append(&self, ino: Inode, data: &[u8], now: u64) -> Result<(usize, u64)> {
        let end = self.stat(ino)?.size;
        let written = self.write_at(ino, end, data, now)?;
        Ok((written, end + written as u64))
    }

    /// Truncates or extends (with zeros) the file to `size` bytes.
    fn set_size(&self, ino: Inode, size: u64, now: u64) -> Result<()>;

    /// Sets the access and/or modification time (the change time becomes `now`).
    fn set_times(&self, ino: Inode, atim: Option<u64>, mtim: Option<u64>, now: u64) -> Result<()>;

    /// The inode's attributes (`dev` is left 0: the [`Vfs`] fills it in).
    fn stat(&self, ino: Inode) -> Result<FileStat>;

    /// Up to `max` entries of directory `dir` (without `.` and `..`), starting at `cookie` (0 is
    /// the start; an entry's [`DirEntry::next`] continues after it). Cookies stay valid while
    /// the directory changes: an entry present throughout a listing is returned exactly once.
    fn read_dir(&self, dir: Inode, cookie: u64, max: usize) -> Result<Vec<DirEntry>>;

    /// Writes everything changed so far to the storage underneath and makes it durable (a file
    /// system on a disk flushes its caches and the disk's). Nothing to do in memory.
    fn sync(&self) -> Result<()> {
        Ok(())
    }

    /// How much space there is, if the file system knows.
    fn usage(&self) -> Option<Usage> {
        None
    }
}

/// A file system's space (for `df`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Usage {
    /// Room for file contents and metadata, in bytes.
    pub total_bytes: u64,
    /// What is still free of it.
    pub free_bytes: u64,
    /// The allocation unit (a FAT cluster); 1 where space is counted by the byte.
    pub block_size: u64,
}

/// The kinds of file there are (WASI `filetype`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FileType {
    RegularFile,
    Directory,
}

impl FileType {
    /// The WASI `filetype` value (3 directory, 4 regular file).
    pub const fn wasi(self) -> u8 {
        match self {
            FileType::Directory => 3,
            FileType::RegularFile => 4,
        }
    }
}

/// A file's attributes (WASI `filestat`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileStat {
    /// The mount holding the file ([`MountId::index`]).
    pub dev: u64,
    pub ino: Inode,
    pub filetype: FileType,
    /// 1 for a linked file; 2 + subdirectories for a directory; 0 once removed.
    pub nlink: u64,
    /// Bytes for a file; the number of entries for a directory.
    pub size: u64,
    pub atim: u64,
    pub mtim: u64,
    pub ctim: u64,
}

impl FileStat {
    /// The WASI `filestat` layout: 64 bytes, little-endian.
    pub fn to_wasi(&self) -> [u8; 64] {
        let mut out = [0u8; 64];
        out[0..8].copy_from_slice(&self.dev.to_le_bytes());
        out[8..16].copy_from_slice(&self.ino.to_le_bytes());
        out[16] = self.filetype.wasi();
        out[24..32].copy_from_slice(&self.nlink.to_le_bytes());
        out[32..40].copy_from_slice(&self.size.to_le_bytes());
        out[40..48].copy_from_slice(&self.atim.to_le_bytes());
        out[48..56].copy_from_slice(&self.mtim.to_le_bytes());
        out[56..64].copy_from_slice(&self.ctim.to_le_bytes());
        out
    }
}

/// A directory entry (WASI `dirent` plus the name).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirEntry {
    /// The cookie that continues the listing after this entry (`d_next`).
    pub next: u64,
    pub ino: Inode,
    pub filetype: FileType,
    pub name: String,
}

impl DirEntry {
    /// Size of the WASI `dirent` header that precedes the name.
    pub const WASI_HEADER_SIZE: usize = 24;

    /// The WASI `dirent` header: `d_next`, `d_ino`, `d_namlen`, `d_type`.
    pub fn wasi_header(&self) -> [u8; 24] {
        let mut out = [0u8; 24];
        out[0..8].copy_from_slice(&self.next.to_le_bytes());
        out[8..16].copy_from_slice(&self.ino.to_le_bytes());
        out[16..20].copy_from_slice(&(self.name.len() as u32).to_le_bytes());
        out[20] = self.filetype.wasi();
        out
    }
}

/// What `fd_readdir` puts in a buffer of `buf_len` bytes: each entry's header then its name,
/// the last one cut off at `buf_len` (a full buffer tells wasi-libc to ask again from the last
/// whole entry's cookie). Ask [`Vfs::read_dir`] for [`dirent_capacity`]`(buf_len)` entries.
pub fn encode_dirents(entries: &[DirEntry], buf_len: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for entry in entries {
        if out.len() >= buf_len {
            break;
        }
        out.extend_from_slice(&entry.wasi_header());
        out.extend_from_slice(entry.name.as_bytes());
    }
    out.truncate(buf_len);
    out
}

/// The most entries that can (partly) fit in a `fd_readdir` buffer of `buf_len` bytes.
pub const fn dirent_capacity(buf_len: usize) -> usize {
    buf_len / DirEntry::WASI_HEADER_SIZE + 1
}

/// `path_open` flags (WASI `oflags`, same bits).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct OFlags(u16);

impl OFlags {
    pub const NONE: OFlags = OFlags(0);
    /// Create the file if it does not exist.
    pub const CREAT: OFlags = OFlags(1);
    /// Fail unless it is a directory.
    pub const DIRECTORY: OFlags = OFlags(2);
    /// With `CREAT`: fail if it exists.
    pub const EXCL: OFlags = OFlags(4);
    /// Truncate to size 0.
    pub const TRUNC: OFlags = OFlags(8);

    /// The flags from their WASI value; [`Errno::Inval`] for unknown bits.
    pub const fn from_wasi(bits: u16) -> Result<OFlags> {
        if bits & !0xf != 0 {
            Err(Errno::Inval)
        } else {
            Ok(OFlags(bits))
        }
    }
    pub const fn bits(self) -> u16 {
        self.0
    }
    pub const fn contains(self, other: OFlags) -> bool {
        self.0 & other.0 == other.0
    }
}

impl BitOr for OFlags {
    type Output = OFlags;
    fn bitor(self, rhs: OFlags) -> OFlags {
        OFlags(self.0 | rhs.0)
    }
}

/// File descriptor flags (WASI `fdflags`, same bits). Only `APPEND` changes behaviour; the
/// others are kept (and reported by `fd_fdstat_get`) but mean nothing for memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct FdFlags(u16);

impl FdFlags {
    pub const NONE: FdFlags = FdFlags(0);
    /// Every write goes to the end of the file.
    pub const APPEND: FdFlags = FdFlags(1);
    pub const DSYNC: FdFlags = FdFlags(2);
    pub const NONBLOCK: FdFlags = FdFlags(4);
    pub const RSYNC: FdFlags = FdFlags(8);
    pub const SYNC: FdFlags = FdFlags(16);

    /// The flags from their WASI value; [`Errno::Inval`] for unknown bits.
    pub const fn from_wasi(bits: u16) -> Result<FdFlags> {
        if bits & !0x1f != 0 {
            Err(Errno::Inval)
        } else {
            Ok(FdFlags(bits))
        }
    }
    pub const fn bits(self) -> u16 {
        self.0
    }
    pub const fn contains(self, other: FdFlags) -> bool {
        self.0 & other.0 == other.0
    }
}

impl BitOr for FdFlags {
    type Output = FdFlags;
    fn bitor(self, rhs: FdFlags) -> FdFlags {
        FdFlags(self.0 | rhs.0)
    }
}

/// What an open file may be used for. Directory handles are never writable; every handle
/// may seek, stat and (directories) resolve paths.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Rights {
    pub read: bool,
    pub write: bool,
}

impl Rights {
    pub const READ: Rights = Rights {
        read: true,
        write: false,
    };
    pub const WRITE: Rights = Rights {
        read: false,
        write: true,
    };
    pub const READ_WRITE: Rights = Rights {
        read: true,
        write: true,
    };
    /// WASI `rights::fd_read`.
    pub const WASI_FD_READ: u64 = 1 << 1;
    /// WASI `rights::fd_write`.
    pub const WASI_FD_WRITE: u64 = 1 << 6;

    /// Read and write rights from a WASI `rights` value (`fs_rights_base` of `path_open`).
    pub const fn from_wasi(base: u64) -> Rights {
        Rights {
            read: base & Self::WASI_FD_READ != 0,
            write: base & Self::WASI_FD_WRITE != 0,
        }
    }
}

/// Where `fd_seek` counts from (WASI `whence`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Whence {
    Set,
    Cur,
    End,
}

impl Whence {
    /// 0 set, 1 cur, 2 end; [`Errno::Inval`] otherwise.
    pub const fn from_wasi(raw: u8) -> Result<Whence> {
        match raw {
            0 => Ok(Whence::Set),
            1 => Ok(Whence::Cur),
            2 => Ok(Whence::End),
            _ => Err(Errno::Inval),
        }
    }
}
