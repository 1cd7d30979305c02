//! The WASI preview1 file calls, on Keel's VFS. A program reaches files only through directory
//! handles it was given (preopens) and what it opens from them; the VFS refuses paths that
//! would leave a handle's directory.

use crate::wasi::{Ctx, HostFunctions, errno, read_bytes, write_bytes, write_u32, write_u64};
use alloc::string::String;
use alloc::vec::Vec;
use keel_vfs::{Errno, FdFlags, OFlags, Rights, Whence, dirent_capacity, encode_dirents};
use wasmtime::Caller;

fn code(e: Errno) -> i32 {
    e.raw() as i32
}

fn is_stdio(fd: i32) -> bool {
    (0..=2).contains(&fd)
}

/// The path argument as UTF-8 (WASI paths are), or EINVAL/EFAULT.
fn path_arg(c: &mut Caller<'_, Ctx>, ptr: i32, len: i32) -> Result<String, i32> {
    if len as u32 > keel_vfs::MAX_PATH as u32 {
        return Err(code(Errno::Nametoolong));
    }
    let bytes = read_bytes(c, ptr as u32, len as u32).ok_or(errno::FAULT)?;
    String::from_utf8(bytes).map_err(|_| code(Errno::Ilseq))
}

/// Stores a byte count at `out` and answers the call.
pub(crate) fn reply_count(c: &mut Caller<'_, Ctx>, out: i32, result: Result<u32, i32>) -> i32 {
    match result {
        Ok(n) if write_u32(c, out as u32, n) => errno::SUCCESS,
        Ok(_) => errno::FAULT,
        Err(e) => e,
    }
}

fn status(result: Result<(), i32>) -> i32 {
    match result {
        Ok(()) => errno::SUCCESS,
        Err(e) => e,
    }
}

/// The iovec list at `iovs` as (address, length) pairs.
pub(crate) fn iovecs(
    c: &mut Caller<'_, Ctx>,
    iovs: i32,
    count: i32,
) -> Result<Vec<(u32, u32)>, i32> {
    let table = read_bytes(c, iovs as u32, (count as u32).saturating_mul(8)).ok_or(errno::FAULT)?;
    Ok(table
        .chunks_exact(8)
        .map(|v| {
            (
                u32::from_le_bytes([v[0], v[1], v[2], v[3]]),
                u32::from_le_bytes([v[4], v[5], v[6], v[7]]),
            )
        })
        .collect())
}

pub(crate) fn file_read(
    c: &mut Caller<'_, Ctx>,
    fd: i32,
    iovs: i32,
    count: i32,
    offset: Option<u64>,
) -> Result<u32, i32> {
    let vecs = iovecs(c, iovs, count)?;
    let mut total = 0u32;
    for (buf, len) in vecs {
        let mut bytes = alloc::vec![0u8; len.min(1 << 20) as usize];
        let ctx = c.data_mut();
        let vfs = ctx.vfs.clone();
        let file = ctx.fds.get_mut(fd as u32).map_err(code)?;
        let n = match offset {
            Some(at) => vfs.pread(file, &mut bytes, at + total as u64),
            None => vfs.read(file, &mut bytes),
        }
        .map_err(code)?;
        if !write_bytes(c, buf, &bytes[..n]) {
            return Err(errno::FAULT);
        }
        total += n as u32;
        if n < bytes.len() {
            break;
        }
    }
    Ok(total)
}

pub(crate) fn file_write(
    c: &mut Caller<'_, Ctx>,
    fd: i32,
    iovs: i32,
    count: i32,
    offset: Option<u64>,
) -> Result<u32, i32> {
    let vecs = iovecs(c, iovs, count)?;
    let mut total = 0u32;
    for (buf, len) in vecs {
        let bytes = read_bytes(c, buf, len).ok_or(errno::FAULT)?;
        let ctx = c.data_mut();
        let vfs = ctx.vfs.clone();
        let file = ctx.fds.get_mut(fd as u32).map_err(code)?;
        let n = match offset {
            Some(at) => vfs.pwrite(file, &bytes, at + total as u64),
            None => vfs.write(file, &bytes),
        }
        .map_err(code)?;
        total += n as u32;
        if n < bytes.len() {
            break;
        }
    }
    Ok(total)
}

fn fdstat(c: &mut Caller<'_, Ctx>, fd: i32, out: i32) -> Result<(), i32> {
    let mut stat = [0u8; 24];
    if is_stdio(fd) {
        stat[0] = 2; // character device
        stat[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
    } else {
        let file = c.data().fds.get(fd as u32).map_err(code)?;
        stat[0] = file.file_type().wasi();
        stat[2..4].copy_from_slice(&file.fdflags().bits().to_le_bytes());
        let rights = file.rights();
        // Directories may do everything below them; files what they were opened for.
        let base: u64 = if file.file_type() == keel_vfs::FileType::Directory {
            u64::MAX
        } else {
            let mut r = 0u64;
            if rights.read {
                r |= 1 << 1 | 1 << 2 | 1 << 5 | 1 << 21; // read, seek, tell, filestat_get
            }
            if rights.write {
                r |= 1 << 0 | 1 << 4 | 1 << 6 | 1 << 22; // datasync, write, sync, set_size
            }
            r | 1 << 3 | 1 << 2 // fdstat_set_flags, seek
        };
        stat[8..16].copy_from_slice(&base.to_le_bytes());
        stat[16..24].copy_from_slice(&u64::MAX.to_le_bytes());
    }
    if write_bytes(c, out as u32, &stat) {
        Ok(())
    } else {
        Err(errno::FAULT)
    }
}

pub(crate) fn add(host: &mut HostFunctions) -> wasmtime::Result<()> {
    host.wrap(
        "fd_fdstat_get",
        |mut c: Caller<'_, Ctx>, fd: i32, out: i32| {
            if c.data().sockets.is_socket(fd) {
                return crate::wasi_sock::fdstat(&mut c, fd, out);
            }
            status(fdstat(&mut c, fd, out))
        },
    )?;
    host.wrap(
        "fd_fdstat_set_flags",
        |mut c: Caller<'_, Ctx>, fd: i32, flags: i32| {
            if is_stdio(fd) {
                return errno::SUCCESS;
            }
            if c.data().sockets.is_socket(fd) {
                return crate::wasi_sock::set_flags(&mut c, fd, flags);
            }
            let result = (|| {
                let flags = FdFlags::from_wasi(flags as u16).map_err(code)?;
                let file = c.data_mut().fds.get_mut(fd as u32).map_err(code)?;
                file.set_fdflags(flags);
                Ok(())
            })();
            status(result)
        },
    )?;
    host.wrap(
        "fd_prestat_get",
        |mut c: Caller<'_, Ctx>, fd: i32, out: i32| {
            let result = (|| {
                let file = c.data().fds.get(fd as u32).map_err(|_| errno::BADF)?;
                let len = file.preopen_name().ok_or(errno::BADF)?.len() as u32;
                let mut prestat = [0u8; 8];
                prestat[4..8].copy_from_slice(&len.to_le_bytes());
                if write_bytes(&mut c, out as u32, &prestat) {
                    Ok(())
                } else {
                    Err(errno::FAULT)
                }
            })();
            status(result)
        },
    )?;
    host.wrap(
        "fd_prestat_dir_name",
        |mut c: Caller<'_, Ctx>, fd: i32, buf: i32, len: i32| {
            let result = (|| {
                let file = c.data().fds.get(fd as u32).map_err(|_| errno::BADF)?;
                let name = String::from(file.preopen_name().ok_or(errno::BADF)?);
                if name.len() > len as usize {
                    return Err(code(Errno::Nametoolong));
                }
                if write_bytes(&mut c, buf as u32, name.as_bytes()) {
                    Ok(())
                } else {
                    Err(errno::FAULT)
                }
            })();
            status(result)
        },
    )?;
    host.wrap("fd_close", |mut c: Caller<'_, Ctx>, fd: i32| {
        if is_stdio(fd) {
            return errno::SUCCESS;
        }
        if c.data().sockets.is_socket(fd) {
            return crate::wasi_sock::close(&mut c, fd);
        }
        status(c.data_mut().fds.close(fd as u32).map_err(code))
    })?;
    host.wrap(
        "fd_renumber",
        |mut c: Caller<'_, Ctx>, from: i32, to: i32| {
            if is_stdio(from) || is_stdio(to) {
                return code(Errno::Notsup);
            }
            status(
                c.data_mut()
                    .fds
                    .renumber(from as u32, to as u32)
                    .map_err(code),
            )
        },
    )?;
    host.wrap("fd_sync", |c: Caller<'_, Ctx>, fd: i32| {
        if is_stdio(fd) || c.data().fds.get(fd as u32).is_ok() {
            errno::SUCCESS
        } else {
            errno::BADF
        }
    })?;
    host.wrap("fd_datasync", |c: Caller<'_, Ctx>, fd: i32| {
        if is_stdio(fd) || c.data().fds.get(fd as u32).is_ok() {
            errno::SUCCESS
        } else {
            errno::BADF
        }
    })?;
    host.wrap(
        "fd_seek",
        |mut c: Caller<'_, Ctx>, fd: i32, offset: i64, whence: i32, out: i32| {
            if is_stdio(fd) {
                return errno::SPIPE;
            }
            let result = (|| {
                let whence = Whence::from_wasi(whence as u8).map_err(code)?;
                let ctx = c.data_mut();
                let vfs = ctx.vfs.clone();
                let file = ctx.fds.get_mut(fd as u32).map_err(code)?;
                let position = vfs.seek(file, offset, whence).map_err(code)?;
                if write_u64(&mut c, out as u32, position) {
                    Ok(())
                } else {
                    Err(errno::FAULT)
                }
            })();
            status(result)
        },
    )?;
    host.wrap("fd_tell", |mut c: Caller<'_, Ctx>, fd: i32, out: i32| {
        if is_stdio(fd) {
            return errno::SPIPE;
        }
        let result = (|| {
            let position = c.data().fds.get(fd as u32).map_err(code)?.offset();
            if write_u64(&mut c, out as u32, position) {
                Ok(())
            } else {
                Err(errno::FAULT)
            }
        })();
        status(result)
    })?;
    host.wrap(
        "fd_pread",
        |mut c: Caller<'_, Ctx>, fd: i32, iovs: i32, count: i32, offset: i64, out: i32| {
            let result = file_read(&mut c, fd, iovs, count, Some(offset as u64));
            reply_count(&mut c, out, result)
        },
    )?;
    host.wrap(
        "fd_pwrite",
        |mut c: Caller<'_, Ctx>, fd: i32, iovs: i32, count: i32, offset: i64, out: i32| {
            let result = file_write(&mut c, fd, iovs, count, Some(offset as u64));
            reply_count(&mut c, out, result)
        },
    )?;
    host.wrap(
        "fd_filestat_get",
        |mut c: Caller<'_, Ctx>, fd: i32, out: i32| {
            let result = (|| {
                let stat = if is_stdio(fd) {
                    let mut raw = [0u8; 64];
                    raw[16] = 2; // character device
                    raw
                } else {
                    let ctx = c.data();
                    let file = ctx.fds.get(fd as u32).map_err(code)?;
                    ctx.vfs.stat(file).map_err(code)?.to_wasi()
                };
                if write_bytes(&mut c, out as u32, &stat) {
                    Ok(())
                } else {
                    Err(errno::FAULT)
                }
            })();
            status(result)
        },
    )?;
    host.wrap(
        "fd_filestat_set_size",
        |mut c: Caller<'_, Ctx>, fd: i32, size: i64| {
            let ctx = c.data_mut();
            let vfs = ctx.vfs.clone();
            let result = ctx
                .fds
                .get(fd as u32)
                .and_then(|f| vfs.set_size(f, size as u64));
            status(result.map_err(code))
        },
    )?;
    host.wrap(
        "fd_readdir",
        |mut c: Caller<'_, Ctx>, fd: i32, buf: i32, len: i32, cookie: i64, used: i32| {
            let result = (|| {
                let ctx = c.data();
                let dir = ctx.fds.get(fd as u32).map_err(code)?;
                let entries = ctx
                    .vfs
                    .read_dir(dir, cookie as u64, dirent_capacity(len as usize))
                    .map_err(code)?;
                let bytes = encode_dirents(&entries, len as usize);
                if write_bytes(&mut c, buf as u32, &bytes)
                    && write_u32(&mut c, used as u32, bytes.len() as u32)
                {
                    Ok(())
                } else {
                    Err(errno::FAULT)
                }
            })();
            status(result)
        },
    )?;
    host.wrap(
        "path_open",
        |mut c: Caller<'_, Ctx>,
         dirfd: i32,
         _lookup: i32,
         path: i32,
         path_len: i32,
         oflags: i32,
         rights: i64,
         _inheriting: i64,
         fdflags: i32,
         out: i32| {
            let result = (|| {
                let path = path_arg(&mut c, path, path_len)?;
                let oflags = OFlags::from_wasi(oflags as u16).map_err(code)?;
                let fdflags = FdFlags::from_wasi(fdflags as u16).map_err(code)?;
                let rights = Rights::from_wasi(rights as u64);
                let ctx = c.data_mut();
                let dir = ctx.fds.get(dirfd as u32).map_err(code)?;
                let file = ctx
                    .vfs
                    .open(dir, &path, oflags, fdflags, rights)
                    .map_err(code)?;
                let fd = ctx.fds.insert(file).map_err(code)?;
                if write_u32(&mut c, out as u32, fd) {
                    Ok(())
                } else {
                    Err(errno::FAULT)
                }
            })();
            status(result)
        },
    )?;
    host.wrap(
        "path_filestat_get",
        |mut c: Caller<'_, Ctx>, dirfd: i32, _flags: i32, path: i32, len: i32, out: i32| {
            let result = (|| {
                let path = path_arg(&mut c, path, len)?;
                let ctx = c.data();
                let dir = ctx.fds.get(dirfd as u32).map_err(code)?;
                let stat = ctx.vfs.path_stat(dir, &path).map_err(code)?.to_wasi();
                if write_bytes(&mut c, out as u32, &stat) {
                    Ok(())
                } else {
                    Err(errno::FAULT)
                }
            })();
            status(result)
        },
    )?;
    type PathOp = fn(&keel_vfs::Vfs, &keel_vfs::OpenFile, &str) -> keel_vfs::Result<()>;
    let path_ops: [(&str, PathOp); 3] = [
        ("path_create_directory", |v, d, p| v.create_dir(d, p)),
        ("path_remove_directory", |v, d, p| v.remove_dir(d, p)),
        ("path_unlink_file", |v, d, p| v.unlink_file(d, p)),
    ];
    for (name, op) in path_ops {
        host.wrap(
            name,
            move |mut c: Caller<'_, Ctx>, dirfd: i32, path: i32, len: i32| {
                let result = (|| {
                    let path = path_arg(&mut c, path, len)?;
                    let ctx = c.data();
                    let dir = ctx.fds.get(dirfd as u32).map_err(code)?;
                    op(&ctx.vfs, dir, &path).map_err(code)
                })();
                status(result)
            },
        )?;
    }
    host.wrap(
        "path_rename",
        |mut c: Caller<'_, Ctx>,
         from_fd: i32,
         from: i32,
         from_len: i32,
         to_fd: i32,
         to: i32,
         to_len: i32| {
            let result = (|| {
                let from = path_arg(&mut c, from, from_len)?;
                let to = path_arg(&mut c, to, to_len)?;
                let ctx = c.data();
                let from_dir = ctx.fds.get(from_fd as u32).map_err(code)?;
                let to_dir = ctx.fds.get(to_fd as u32).map_err(code)?;
                ctx.vfs.rename(from_dir, &from, to_dir, &to).map_err(code)
            })();
            status(result)
        },
    )?;
    host.wrap(
        "path_readlink",
        |mut c: Caller<'_, Ctx>,
         dirfd: i32,
         path: i32,
         len: i32,
         _buf: i32,
         _buf_len: i32,
         _used: i32| {
            let result = (|| {
                let path = path_arg(&mut c, path, len)?;
                let ctx = c.data();
                let dir = ctx.fds.get(dirfd as u32).map_err(code)?;
                ctx.vfs.readlink(dir, &path).map(|_| ()).map_err(code)
            })();
            status(result)
        },
    )?;
    Ok(())
}
