use crate::*;
use alloc::collections::BTreeMap;
use alloc::string::{String, ToString};
use alloc::sync::Arc;
use alloc::vec::Vec;
use std::sync::atomic::{AtomicU64, Ordering};

static CLOCK: AtomicU64 = AtomicU64::new(1000);

/// Strictly increasing, so every operation gets a later timestamp than the one before.
fn clock() -> u64 {
    CLOCK.fetch_add(1, Ordering::SeqCst)
}

const RW: Rights = Rights::READ_WRITE;
const NO: FdFlags = FdFlags::NONE;

fn setup(limit: u64) -> (Arc<MemFs>, Vfs, OpenFile) {
    let fs = Arc::new(MemFs::new(limit));
    let vfs = Vfs::new(fs.clone(), clock);
    let root = vfs.preopen("/").unwrap();
    (fs, vfs, root)
}

fn put(vfs: &Vfs, dir: &OpenFile, path: &str, data: &[u8]) {
    let mut f = vfs
        .open(dir, path, OFlags::CREAT | OFlags::TRUNC, NO, RW)
        .unwrap();
    assert_eq!(vfs.write(&mut f, data), Ok(data.len()));
}

fn get(vfs: &Vfs, dir: &OpenFile, path: &str) -> Result<Vec<u8>> {
    let mut f = vfs.open(dir, path, OFlags::NONE, NO, Rights::READ)?;
    let mut out = Vec::new();
    let mut buf = [0u8; 7];
    loop {
        let n = vfs.read(&mut f, &mut buf)?;
        if n == 0 {
            return Ok(out);
        }
        out.extend_from_slice(&buf[..n]);
    }
}

fn open_dir(vfs: &Vfs, dir: &OpenFile, path: &str) -> OpenFile {
    vfs.open(dir, path, OFlags::DIRECTORY, NO, Rights::READ)
        .unwrap()
}

/// Every entry of `dir`, `max` at a time, following cookies.
fn list(vfs: &Vfs, dir: &OpenFile, max: usize) -> Vec<DirEntry> {
    let mut out = Vec::new();
    let mut cookie = 0;
    loop {
        let batch = vfs.read_dir(dir, cookie, max).unwrap();
        assert!(batch.len() <= max);
        let Some(last) = batch.last() else { return out };
        cookie = last.next;
        out.extend(batch);
    }
}

fn names(vfs: &Vfs, dir: &OpenFile) -> Vec<String> {
    let mut names: Vec<String> = list(vfs, dir, 3).into_iter().map(|e| e.name).collect();
    names.sort();
    names
}

#[test]
fn errno_values_match_witx() {
    let expected = [
        (Errno::Success, 0),
        (Errno::TooBig, 1),
        (Errno::Acces, 2),
        (Errno::Badf, 8),
        (Errno::Busy, 10),
        (Errno::Exist, 20),
        (Errno::Fault, 21),
        (Errno::Fbig, 22),
        (Errno::Inval, 28),
        (Errno::Io, 29),
        (Errno::Isdir, 31),
        (Errno::Loop, 32),
        (Errno::Mfile, 33),
        (Errno::Nametoolong, 37),
        (Errno::Noent, 44),
        (Errno::Nospc, 51),
        (Errno::Nosys, 52),
        (Errno::Notdir, 54),
        (Errno::Notempty, 55),
        (Errno::Notsup, 58),
        (Errno::Overflow, 61),
        (Errno::Perm, 63),
        (Errno::Spipe, 70),
        (Errno::Xdev, 75),
        (Errno::Notcapable, 76),
    ];
    for (errno, value) in expected {
        assert_eq!(errno.raw(), value, "{errno:?}");
        assert_eq!(Errno::from_raw(value), Some(errno));
    }
    for (index, errno) in Errno::ALL.iter().enumerate() {
        assert_eq!(usize::from(errno.raw()), index);
    }
    assert_eq!(Errno::from_raw(77), None);
    assert_eq!(Errno::Noent.to_string(), "ENOENT");
    assert_eq!(Errno::TooBig.name(), "2big");
}

#[test]
fn flag_values_match_witx() {
    assert_eq!(
        OFlags::from_wasi(0b1111).unwrap(),
        OFlags::CREAT | OFlags::DIRECTORY | OFlags::EXCL | OFlags::TRUNC
    );
    assert_eq!(OFlags::from_wasi(16), Err(Errno::Inval));
    assert_eq!(FdFlags::from_wasi(1), Ok(FdFlags::APPEND));
    assert_eq!(FdFlags::from_wasi(32), Err(Errno::Inval));
    assert_eq!(Rights::from_wasi(2), Rights::READ);
    assert_eq!(Rights::from_wasi(64), Rights::WRITE);
    assert_eq!(Whence::from_wasi(2), Ok(Whence::End));
    assert_eq!(Whence::from_wasi(3), Err(Errno::Inval));
    assert_eq!(FileType::Directory.wasi(), 3);
    assert_eq!(FileType::RegularFile.wasi(), 4);
}

#[test]
fn open_flags() {
    let (_fs, vfs, root) = setup(1 << 20);
    assert_eq!(
        vfs.open(&root, "f", OFlags::NONE, NO, RW).unwrap_err(),
        Errno::Noent
    );
    let f = vfs.open(&root, "f", OFlags::CREAT, NO, RW).unwrap();
    assert_eq!(f.file_type(), FileType::RegularFile);
    assert_eq!(f.preopen_name(), None);
    drop(f);
    assert_eq!(
        vfs.open(&root, "f", OFlags::CREAT | OFlags::EXCL, NO, RW)
            .unwrap_err(),
        Errno::Exist
    );
    // O_CREAT without O_EXCL opens the existing file without truncating it.
    put(&vfs, &root, "f", b"hello");
    vfs.open(&root, "f", OFlags::CREAT, NO, RW).unwrap();
    assert_eq!(get(&vfs, &root, "f").unwrap(), b"hello");
    // O_TRUNC empties it.
    vfs.open(&root, "f", OFlags::TRUNC, NO, RW).unwrap();
    assert_eq!(get(&vfs, &root, "f").unwrap(), b"");
    // Directories.
    vfs.create_dir(&root, "d").unwrap();
    assert_eq!(
        vfs.open(&root, "f", OFlags::DIRECTORY, NO, Rights::READ)
            .unwrap_err(),
        Errno::Notdir
    );
    assert_eq!(
        vfs.open(&root, "f/", OFlags::NONE, NO, Rights::READ)
            .unwrap_err(),
        Errno::Notdir
    );
    assert_eq!(
        vfs.open(&root, "f/", OFlags::CREAT, NO, RW).unwrap_err(),
        Errno::Notdir
    );
    assert_eq!(
        vfs.open(&root, "d", OFlags::NONE, NO, RW).unwrap_err(),
        Errno::Isdir
    );
    assert_eq!(
        vfs.open(&root, "d", OFlags::TRUNC, NO, Rights::READ)
            .unwrap_err(),
        Errno::Isdir
    );
    assert_eq!(
        vfs.open(&root, "d", OFlags::CREAT, NO, Rights::READ)
            .unwrap()
            .file_type(),
        FileType::Directory
    );
    assert_eq!(
        vfs.open(
            &root,
            "d",
            OFlags::CREAT | OFlags::DIRECTORY,
            NO,
            Rights::READ
        )
        .unwrap_err(),
        Errno::Inval
    );
    assert_eq!(
        vfs.open(&root, "d/", OFlags::DIRECTORY, NO, Rights::READ)
            .unwrap()
            .file_type(),
        FileType::Directory
    );
    assert_eq!(
        vfs.open(&root, ".", OFlags::CREAT, NO, Rights::READ)
            .unwrap_err(),
        Errno::Isdir
    );
    assert_eq!(
        vfs.open(
            &root,
            "d/..",
            OFlags::CREAT | OFlags::EXCL,
            NO,
            Rights::READ
        )
        .unwrap_err(),
        Errno::Exist
    );
    assert_eq!(
        vfs.open(&root, "new/", OFlags::CREAT, NO, RW).unwrap_err(),
        Errno::Isdir
    );
    assert_eq!(
        vfs.open(&root, "missing/x", OFlags::CREAT, NO, RW)
            .unwrap_err(),
        Errno::Noent
    );
    assert_eq!(
        vfs.open(&root, "f/x", OFlags::CREAT, NO, RW).unwrap_err(),
        Errno::Notdir
    );
    assert_eq!(
        vfs.open(&root, "f/x", OFlags::NONE, NO, RW).unwrap_err(),
        Errno::Notdir
    );
    // "." opens the directory itself.
    let again = vfs
        .open(&root, ".", OFlags::DIRECTORY, NO, Rights::READ)
        .unwrap();
    assert_eq!(again.inode(), root.inode());
    // Paths only resolve against directories.
    let f = vfs.open(&root, "f", OFlags::NONE, NO, RW).unwrap();
    assert_eq!(
        vfs.open(&f, "x", OFlags::CREAT, NO, RW).unwrap_err(),
        Errno::Notdir
    );
    assert_eq!(vfs.create_dir(&f, "x"), Err(Errno::Notdir));
    assert_eq!(vfs.read_dir(&f, 0, 10), Err(Errno::Notdir));
}

#[test]
fn read_write_seek_tell() {
    let (_fs, vfs, root) = setup(1 << 20);
    let mut f = vfs.open(&root, "f", OFlags::CREAT, NO, RW).unwrap();
    assert_eq!(vfs.write(&mut f, b"hello world"), Ok(11));
    assert_eq!(f.offset(), 11);
    let mut buf = [0u8; 5];
    assert_eq!(vfs.read(&mut f, &mut buf), Ok(0));
    assert_eq!(vfs.seek(&mut f, 0, Whence::Set), Ok(0));
    assert_eq!(vfs.read(&mut f, &mut buf), Ok(5));
    assert_eq!(&buf, b"hello");
    assert_eq!(vfs.seek(&mut f, 1, Whence::Cur), Ok(6));
    assert_eq!(vfs.read(&mut f, &mut buf), Ok(5));
    assert_eq!(&buf, b"world");
    assert_eq!(vfs.seek(&mut f, -5, Whence::End), Ok(6));
    assert_eq!(vfs.seek(&mut f, -7, Whence::Cur), Err(Errno::Inval));
    assert_eq!(vfs.seek(&mut f, -1, Whence::Set), Err(Errno::Inval));
    assert_eq!(f.offset(), 6);
    assert_eq!(vfs.seek(&mut f, i64::MAX, Whence::Set), Ok(i64::MAX as u64));
    assert_eq!(vfs.seek(&mut f, i64::MAX, Whence::Cur), Ok(u64::MAX - 1));
    assert_eq!(vfs.seek(&mut f, 2, Whence::Cur), Err(Errno::Overflow));
    assert_eq!(vfs.write(&mut f, b"xy"), Err(Errno::Fbig));
    assert_eq!(vfs.write(&mut f, b"x"), Err(Errno::Nospc));
    // A write past the end fills the gap with zeros.
    assert_eq!(vfs.seek(&mut f, 3, Whence::End), Ok(14));
    assert_eq!(vfs.write(&mut f, b"!"), Ok(1));
    assert_eq!(get(&vfs, &root, "f").unwrap(), b"hello world\0\0\0!");
    // Rights.
    let mut ro = vfs
        .open(&root, "f", OFlags::NONE, NO, Rights::READ)
        .unwrap();
    assert_eq!(vfs.write(&mut ro, b"x"), Err(Errno::Badf));
    assert_eq!(vfs.pwrite(&ro, b"x", 0), Err(Errno::Badf));
    assert_eq!(vfs.set_size(&ro, 0), Err(Errno::Badf));
    let mut wo = vfs
        .open(&root, "f", OFlags::NONE, NO, Rights::WRITE)
        .unwrap();
    assert_eq!(vfs.read(&mut wo, &mut buf), Err(Errno::Badf));
    assert_eq!(vfs.pread(&wo, &mut buf, 0), Err(Errno::Badf));
    // Directories have no data.
    let mut d = vfs
        .open(&root, ".", OFlags::NONE, NO, Rights::READ)
        .unwrap();
    assert_eq!(vfs.read(&mut d, &mut buf), Err(Errno::Isdir));
    assert_eq!(vfs.write(&mut d, b"x"), Err(Errno::Badf));
    assert_eq!(vfs.seek(&mut d, 0, Whence::Set), Err(Errno::Isdir));
    assert_eq!(vfs.set_size(&d, 0), Err(Errno::Isdir));
    // Empty writes and reads.
    assert_eq!(vfs.write(&mut wo, b""), Ok(0));
    assert_eq!(vfs.read(&mut ro, &mut []), Ok(0));
}

#[test]
fn pread_pwrite_keep_the_offset() {
    let (_fs, vfs, root) = setup(1 << 20);
    let mut f = vfs.open(&root, "f", OFlags::CREAT, NO, RW).unwrap();
    assert_eq!(vfs.write(&mut f, b"abcdef"), Ok(6));
    assert_eq!(vfs.pwrite(&f, b"XY", 2), Ok(2));
    assert_eq!(vfs.pwrite(&f, b"Z", 8), Ok(1));
    assert_eq!(f.offset(), 6);
    let mut buf = [0u8; 4];
    assert_eq!(vfs.pread(&f, &mut buf, 1), Ok(4));
    assert_eq!(&buf, b"bXYe");
    assert_eq!(vfs.pread(&f, &mut buf, 7), Ok(2));
    assert_eq!(&buf[..2], b"\0Z");
    assert_eq!(vfs.pread(&f, &mut buf, 100), Ok(0));
    assert_eq!(vfs.pread(&f, &mut buf, u64::MAX), Ok(0));
    assert_eq!(f.offset(), 6);
    assert_eq!(vfs.write(&mut f, b"!"), Ok(1));
    assert_eq!(get(&vfs, &root, "f").unwrap(), b"abXYef!\0Z");
}

#[test]
fn append_writes_at_the_end() {
    let (_fs, vfs, root) = setup(1 << 20);
    put(&vfs, &root, "log", b"start;");
    let mut a = vfs
        .open(&root, "log", OFlags::NONE, FdFlags::APPEND, RW)
        .unwrap();
    let mut b = vfs
        .open(&root, "log", OFlags::NONE, FdFlags::APPEND, Rights::WRITE)
        .unwrap();
    assert_eq!(a.fdflags(), FdFlags::APPEND);
    assert_eq!(vfs.write(&mut a, b"a1;"), Ok(3));
    assert_eq!(a.offset(), 9);
    assert_eq!(vfs.write(&mut b, b"b1;"), Ok(3));
    assert_eq!(vfs.seek(&mut a, 0, Whence::Set), Ok(0));
    assert_eq!(vfs.write(&mut a, b"a2;"), Ok(3));
    assert_eq!(a.offset(), 15);
    // pwrite writes where it is told even in append mode.
    assert_eq!(vfs.pwrite(&a, b"S", 0), Ok(1));
    assert_eq!(get(&vfs, &root, "log").unwrap(), b"Start;a1;b1;a2;");
    // The flag can be changed (fd_fdstat_set_flags).
    a.set_fdflags(FdFlags::NONE);
    assert_eq!(vfs.seek(&mut a, 0, Whence::Set), Ok(0));
    assert_eq!(vfs.write(&mut a, b"s"), Ok(1));
    assert_eq!(get(&vfs, &root, "log").unwrap(), b"start;a1;b1;a2;");
}

#[test]
fn stat_and_times() {
    let (_fs, vfs, root) = setup(1 << 20);
    let t0 = clock();
    vfs.create_dir(&root, "d").unwrap();
    vfs.create_dir(&root, "d/e").unwrap();
    put(&vfs, &root, "d/f", b"12345");
    let d = vfs.path_stat(&root, "d").unwrap();
    assert_eq!(d.filetype, FileType::Directory);
    assert_eq!(d.nlink, 3);
    assert_eq!(d.size, 2);
    assert_eq!(d.dev, 0);
    assert!(d.atim > t0 && d.mtim > d.atim && d.ctim == d.mtim);
    let f = vfs.path_stat(&root, "d/f").unwrap();
    assert_eq!((f.filetype, f.nlink, f.size), (FileType::RegularFile, 1, 5));
    assert!(f.mtim > d.atim);
    assert_eq!(vfs.path_stat(&root, "d/f/"), Err(Errno::Notdir));
    assert_eq!(vfs.path_stat(&root, "d/x"), Err(Errno::Noent));
    assert_eq!(vfs.path_stat(&root, ".").unwrap().nlink, 3);
    // The inode is the same through every route and in the listing.
    let dir = open_dir(&vfs, &root, "d");
    let mut file = vfs.open(&dir, "f", OFlags::NONE, NO, RW).unwrap();
    let by_fd = vfs.stat(&file).unwrap();
    assert_eq!(by_fd, vfs.path_stat(&root, "d/./e/../f").unwrap());
    let listed = list(&vfs, &dir, 10)
        .into_iter()
        .find(|e| e.name == "f")
        .unwrap();
    assert_eq!(
        (listed.ino, listed.filetype),
        (by_fd.ino, FileType::RegularFile)
    );
    assert_eq!(vfs.stat(&dir).unwrap().ino, d.ino);
    // Reading sets atim, writing sets mtim and ctim.
    let mut buf = [0u8; 2];
    vfs.read(&mut file, &mut buf).unwrap();
    let after_read = vfs.stat(&file).unwrap();
    assert!(after_read.atim > by_fd.atim);
    assert_eq!(after_read.mtim, by_fd.mtim);
    vfs.write(&mut file, b"x").unwrap();
    let after_write = vfs.stat(&file).unwrap();
    assert!(after_write.mtim > after_read.atim && after_write.ctim == after_write.mtim);
    // set_times, and rename changes ctim only.
    vfs.set_times(&file, Some(7), None).unwrap();
    let s = vfs.stat(&file).unwrap();
    assert_eq!((s.atim, s.mtim), (7, after_write.mtim));
    vfs.path_set_times(&root, "d/f", None, Some(9)).unwrap();
    assert_eq!(vfs.stat(&file).unwrap().mtim, 9);
    vfs.rename(&root, "d/f", &root, "g").unwrap();
    let s2 = vfs.stat(&file).unwrap();
    assert!(s2.ctim > s.ctim);
    assert_eq!(s2.mtim, 9);
    // The directories changed: their mtim moved.
    assert!(vfs.stat(&dir).unwrap().mtim > after_write.mtim);
    // FileStat in WASI layout.
    let raw = s2.to_wasi();
    assert_eq!(u64::from_le_bytes(raw[8..16].try_into().unwrap()), s2.ino);
    assert_eq!(raw[16], 4);
    assert_eq!(u64::from_le_bytes(raw[24..32].try_into().unwrap()), 1);
    assert_eq!(u64::from_le_bytes(raw[32..40].try_into().unwrap()), 5);
    assert_eq!(u64::from_le_bytes(raw[48..56].try_into().unwrap()), 9);
}

#[test]
fn set_size() {
    let (fs, vfs, root) = setup(1 << 20);
    let mut f = vfs.open(&root, "f", OFlags::CREAT, NO, RW).unwrap();
    vfs.write(&mut f, b"abcdef").unwrap();
    vfs.set_size(&f, 3).unwrap();
    assert_eq!(get(&vfs, &root, "f").unwrap(), b"abc");
    vfs.set_size(&f, 5).unwrap();
    assert_eq!(get(&vfs, &root, "f").unwrap(), b"abc\0\0");
    assert_eq!(vfs.stat(&f).unwrap().size, 5);
    assert_eq!(fs.used(), MemFs::ENTRY_COST + 5);
    // The offset is left where it was.
    assert_eq!(f.offset(), 6);
    vfs.write(&mut f, b"!").unwrap();
    assert_eq!(get(&vfs, &root, "f").unwrap(), b"abc\0\0\0!");
}

#[test]
fn directories() {
    let (fs, vfs, root) = setup(1 << 20);
    vfs.create_dir(&root, "a").unwrap();
    vfs.create_dir(&root, "a/b/").unwrap();
    vfs.create_dir(&root, "a//c").unwrap();
    put(&vfs, &root, "a/f", b"");
    assert_eq!(vfs.create_dir(&root, "a"), Err(Errno::Exist));
    assert_eq!(vfs.create_dir(&root, "a/f"), Err(Errno::Exist));
    assert_eq!(vfs.create_dir(&root, "a/."), Err(Errno::Exist));
    assert_eq!(vfs.create_dir(&root, ".."), Err(Errno::Notcapable));
    assert_eq!(vfs.create_dir(&root, "x/y"), Err(Errno::Noent));
    assert_eq!(vfs.create_dir(&root, "a/f/y"), Err(Errno::Notdir));
    assert_eq!(
        names(&vfs, &open_dir(&vfs, &root, "a")),
        [".", "..", "b", "c", "f"]
    );

    assert_eq!(vfs.remove_dir(&root, "a"), Err(Errno::Notempty));
    assert_eq!(vfs.remove_dir(&root, "a/f"), Err(Errno::Notdir));
    assert_eq!(vfs.remove_dir(&root, "a/x"), Err(Errno::Noent));
    assert_eq!(vfs.remove_dir(&root, "a/b/."), Err(Errno::Inval));
    assert_eq!(vfs.remove_dir(&root, "a/b/.."), Err(Errno::Inval));
    assert_eq!(vfs.remove_dir(&root, "."), Err(Errno::Inval));
    vfs.remove_dir(&root, "a/b/").unwrap();
    vfs.remove_dir(&root, "a/./c").unwrap();

    assert_eq!(vfs.unlink_file(&root, "a"), Err(Errno::Isdir));
    assert_eq!(vfs.unlink_file(&root, "a/f/"), Err(Errno::Notdir));
    assert_eq!(vfs.unlink_file(&root, "a/x"), Err(Errno::Noent));
    assert_eq!(vfs.unlink_file(&root, "a/."), Err(Errno::Isdir));
    assert_eq!(vfs.unlink_file(&root, "a/f/x"), Err(Errno::Notdir));
    vfs.unlink_file(&root, "a/f").unwrap();
    assert_eq!(vfs.unlink_file(&root, "a/f"), Err(Errno::Noent));
    vfs.remove_dir(&root, "a").unwrap();
    assert_eq!(names(&vfs, &root), [".", ".."]);
    assert_eq!(fs.used(), 0);
    assert_eq!(fs.inode_count(), 1);
}

#[test]
fn readdir_dots_and_cookies() {
    let (_fs, vfs, root) = setup(1 << 20);
    vfs.create_dir(&root, "d").unwrap();
    let d = open_dir(&vfs, &root, "d");
    let all = vfs.read_dir(&d, 0, 100).unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(
        (all[0].name.as_str(), all[0].ino, all[0].next),
        (".", d.inode(), 1)
    );
    assert_eq!(
        (all[1].name.as_str(), all[1].ino, all[1].next),
        ("..", root.inode(), 2)
    );
    assert_eq!(all[1].filetype, FileType::Directory);
    // The root's parent is itself.
    assert_eq!(vfs.read_dir(&root, 1, 1).unwrap()[0].ino, root.inode());
    for i in 0..20 {
        put(&vfs, &d, &format!("f{i:02}"), b"");
    }
    // Any batch size sees every entry once.
    for max in 1..6 {
        let listed = list(&vfs, &d, max);
        assert_eq!(listed.len(), 22);
        let mut names: Vec<&str> = listed.iter().map(|e| e.name.as_str()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), 22);
    }
    // Cookies survive removals and additions between calls (rm -r style).
    let first = vfs.read_dir(&d, 0, 7).unwrap();
    let mut cookie = first.last().unwrap().next;
    let mut seen: Vec<String> = first.iter().map(|e| e.name.clone()).collect();
    for e in &first[2..] {
        vfs.unlink_file(&d, &e.name).unwrap();
    }
    put(&vfs, &d, "late", b"");
    loop {
        let batch = vfs.read_dir(&d, cookie, 4).unwrap();
        let Some(last) = batch.last() else { break };
        cookie = last.next;
        for e in &batch {
            vfs.unlink_file(&d, &e.name).unwrap();
            seen.push(e.name.clone());
        }
    }
    assert_eq!(seen.len(), 23);
    assert!(seen.contains(&"late".to_string()));
    assert_eq!(names(&vfs, &d), [".", ".."]);
    // Re-reading from an old cookie is harmless; past the end is empty.
    assert_eq!(vfs.read_dir(&d, 5, 10).unwrap(), []);
    assert_eq!(vfs.read_dir(&d, u64::MAX, 10).unwrap(), []);
    assert_eq!(vfs.read_dir(&d, 0, 0).unwrap(), []);
    assert_eq!(vfs.read_dir(&d, 1, 10).unwrap().len(), 1);
}

#[test]
fn dirent_encoding() {
    let entries = [
        DirEntry {
            next: 1,
            ino: 5,
            filetype: FileType::Directory,
            name: ".".into(),
        },
        DirEntry {
            next: 2,
            ino: 9,
            filetype: FileType::RegularFile,
            name: "file".into(),
        },
    ];
    let full = encode_dirents(&entries, 1000);
    assert_eq!(full.len(), 24 + 1 + 24 + 4);
    assert_eq!(u64::from_le_bytes(full[0..8].try_into().unwrap()), 1);
    assert_eq!(u64::from_le_bytes(full[8..16].try_into().unwrap()), 5);
    assert_eq!(u32::from_le_bytes(full[16..20].try_into().unwrap()), 1);
    assert_eq!(full[20], 3);
    assert_eq!(full[24], b'.');
    assert_eq!(full[25 + 20], 4);
    assert_eq!(&full[25 + 24..], b"file");
    // A short buffer is filled completely, the last entry cut off.
    assert_eq!(encode_dirents(&entries, 30), full[..30]);
    assert_eq!(encode_dirents(&entries, 0), []);
    assert_eq!(dirent_capacity(0), 1);
    assert_eq!(dirent_capacity(48), 3);
}

#[test]
fn rename_files() {
    let (fs, vfs, root) = setup(1 << 20);
    vfs.create_dir(&root, "d").unwrap();
    put(&vfs, &root, "a", b"A");
    put(&vfs, &root, "b", b"B");
    let a_ino = vfs.path_stat(&root, "a").unwrap().ino;
    // Onto itself: nothing happens.
    vfs.rename(&root, "a", &root, "./a").unwrap();
    assert_eq!(get(&vfs, &root, "a").unwrap(), b"A");
    // To a new name, in another directory, through another handle.
    let d = open_dir(&vfs, &root, "d");
    vfs.rename(&root, "a", &d, "a2").unwrap();
    assert_eq!(vfs.path_stat(&root, "a"), Err(Errno::Noent));
    assert_eq!(vfs.path_stat(&root, "d/a2").unwrap().ino, a_ino);
    // Replacing a file frees the old one.
    let before = fs.inode_count();
    vfs.rename(&d, "a2", &root, "b").unwrap();
    assert_eq!(get(&vfs, &root, "b").unwrap(), b"A");
    assert_eq!(fs.inode_count(), before - 1);
    assert_eq!(fs.used(), 2 * MemFs::ENTRY_COST + 1);
    // Errors.
    assert_eq!(vfs.rename(&root, "nope", &root, "x"), Err(Errno::Noent));
    assert_eq!(vfs.rename(&root, "b", &root, "nope/x"), Err(Errno::Noent));
    assert_eq!(vfs.rename(&root, "b", &root, "d"), Err(Errno::Isdir));
    assert_eq!(vfs.rename(&root, "b", &root, "c/"), Err(Errno::Notdir));
    assert_eq!(vfs.rename(&root, "b/", &root, "c"), Err(Errno::Notdir));
    assert_eq!(vfs.rename(&root, "b", &root, "b/x"), Err(Errno::Notdir));
    assert_eq!(vfs.rename(&root, "b", &root, "."), Err(Errno::Inval));
    assert_eq!(vfs.rename(&root, "d/..", &root, "x"), Err(Errno::Inval));
    assert_eq!(
        vfs.rename(&root, "b", &root, "../b"),
        Err(Errno::Notcapable)
    );
    assert_eq!(get(&vfs, &root, "b").unwrap(), b"A");
    // An open file follows its renames.
    let mut f = vfs.open(&root, "b", OFlags::NONE, NO, RW).unwrap();
    vfs.rename(&root, "b", &root, "d/moved").unwrap();
    vfs.write(&mut f, b"Z").unwrap();
    assert_eq!(get(&vfs, &root, "d/moved").unwrap(), b"Z");
}

#[test]
fn rename_directories() {
    let (_fs, vfs, root) = setup(1 << 20);
    for d in ["a", "a/b", "a/b/c", "e", "full", "full/x"] {
        vfs.create_dir(&root, d).unwrap();
    }
    put(&vfs, &root, "file", b"");
    let a_ino = vfs.path_stat(&root, "a").unwrap().ino;
    // Into itself or below.
    assert_eq!(vfs.rename(&root, "a", &root, "a/x"), Err(Errno::Inval));
    assert_eq!(vfs.rename(&root, "a", &root, "a/b/c/x"), Err(Errno::Inval));
    let deep = open_dir(&vfs, &root, "a/b/c");
    assert_eq!(vfs.rename(&root, "a", &deep, "x"), Err(Errno::Inval));
    assert_eq!(
        vfs.rename(&root, "a/b", &root, "a/b/c/x"),
        Err(Errno::Inval)
    );
    // Onto itself is fine.
    vfs.rename(&root, "a", &root, "a/").unwrap();
    // Type and emptiness rules.
    assert_eq!(vfs.rename(&root, "a", &root, "file"), Err(Errno::Notdir));
    assert_eq!(vfs.rename(&root, "a", &root, "full"), Err(Errno::Notempty));
    // An ancestor of the source is never empty.
    assert_eq!(vfs.rename(&root, "a/b", &root, "a"), Err(Errno::Notempty));
    // Replacing an empty directory.
    vfs.rename(&root, "a", &root, "e/").unwrap();
    assert_eq!(vfs.path_stat(&root, "e").unwrap().ino, a_ino);
    assert!(vfs.path_stat(&root, "e/b/c").is_ok());
    // Move down a level: ".." follows, and nlink counts.
    vfs.rename(&root, "e", &root, "full/x2").unwrap();
    let moved = open_dir(&vfs, &root, "full/x2");
    let full_ino = vfs.path_stat(&root, "full").unwrap().ino;
    assert_eq!(vfs.read_dir(&moved, 1, 1).unwrap()[0].ino, full_ino);
    assert_eq!(vfs.path_stat(&root, "full").unwrap().nlink, 4);
    assert_eq!(vfs.path_stat(&root, ".").unwrap().nlink, 3);
    // A handle inside keeps working.
    assert!(vfs.path_stat(&deep, ".").is_ok());
    assert_eq!(
        vfs.path_stat(&root, "full/x2/b/c").unwrap().ino,
        deep.inode()
    );
}

#[test]
fn readlink_has_no_links() {
    let (_fs, vfs, root) = setup(1 << 20);
    put(&vfs, &root, "f", b"");
    assert_eq!(vfs.readlink(&root, "f"), Err(Errno::Inval));
    assert_eq!(vfs.readlink(&root, "."), Err(Errno::Inval));
    assert_eq!(vfs.readlink(&root, "g"), Err(Errno::Noent));
    assert_eq!(vfs.readlink(&root, "../f"), Err(Errno::Notcapable));
}

#[test]
fn paths_never_escape_a_handle() {
    let (_fs, vfs, root) = setup(1 << 20);
    vfs.create_dir(&root, "jail").unwrap();
    vfs.create_dir(&root, "jail/sub").unwrap();
    put(&vfs, &root, "secret", b"s");
    put(&vfs, &root, "jail/f", b"f");
    let jail = open_dir(&vfs, &root, "jail");
    for path in [
        "..",
        "../secret",
        "sub/../../secret",
        "sub/../..",
        "./../jail/f",
        "/secret",
        "/",
        "//jail/f",
    ] {
        assert_eq!(
            vfs.open(&jail, path, OFlags::NONE, NO, Rights::READ)
                .unwrap_err(),
            Errno::Notcapable,
            "{path}"
        );
        assert_eq!(
            vfs.path_stat(&jail, path).unwrap_err(),
            Errno::Notcapable,
            "{path}"
        );
    }
    assert_eq!(
        vfs.open(&jail, "../x", OFlags::CREAT, NO, RW).unwrap_err(),
        Errno::Notcapable
    );
    assert_eq!(vfs.create_dir(&jail, "../x"), Err(Errno::Notcapable));
    assert_eq!(vfs.remove_dir(&jail, "sub/../.."), Err(Errno::Notcapable));
    assert_eq!(vfs.unlink_file(&jail, "../secret"), Err(Errno::Notcapable));
    assert_eq!(
        vfs.rename(&jail, "f", &jail, "../f"),
        Err(Errno::Notcapable)
    );
    assert_eq!(
        vfs.rename(&jail, "../secret", &jail, "f"),
        Err(Errno::Notcapable)
    );
    // The root preopen cannot be left either.
    assert_eq!(vfs.path_stat(&root, "..").unwrap_err(), Errno::Notcapable);
    assert_eq!(
        vfs.path_stat(&root, "jail/../..").unwrap_err(),
        Errno::Notcapable
    );
    // Inside the handle, . and .. and repeated slashes work.
    assert_eq!(get(&vfs, &jail, "sub/..//./f").unwrap(), b"f");
    assert_eq!(vfs.path_stat(&jail, "sub/..").unwrap().ino, jail.inode());
    assert_eq!(vfs.path_stat(&jail, "f/..").unwrap_err(), Errno::Notdir);
    assert_eq!(vfs.path_stat(&jail, "f/.").unwrap_err(), Errno::Notdir);
    // Nothing outside changed.
    assert_eq!(get(&vfs, &root, "secret").unwrap(), b"s");
}

#[test]
fn name_and_path_limits() {
    let (_fs, vfs, root) = setup(1 << 20);
    let long = "n".repeat(MAX_NAME);
    put(&vfs, &root, &long, b"ok");
    assert_eq!(get(&vfs, &root, &long).unwrap(), b"ok");
    let too_long = "n".repeat(MAX_NAME + 1);
    assert_eq!(
        vfs.open(&root, &too_long, OFlags::CREAT, NO, RW)
            .unwrap_err(),
        Errno::Nametoolong
    );
    assert_eq!(vfs.create_dir(&root, &too_long), Err(Errno::Nametoolong));
    let deep = "./".repeat(MAX_PATH / 2);
    assert!(vfs.path_stat(&root, &deep).is_ok());
    let deeper = format!("{deep}.");
    assert_eq!(vfs.path_stat(&root, &deeper), Err(Errno::Nametoolong));
    assert_eq!(vfs.path_stat(&root, ""), Err(Errno::Noent));
    assert_eq!(vfs.path_stat(&root, "a\0b"), Err(Errno::Inval));
    assert_eq!(
        vfs.preopen(&format!("/{too_long}")).unwrap_err(),
        Errno::Nametoolong
    );
}

#[test]
fn size_limit() {
    let limit = 3 * MemFs::ENTRY_COST + 100;
    let (fs, vfs, root) = setup(limit);
    assert_eq!(fs.limit(), limit);
    vfs.create_dir(&root, "d").unwrap();
    put(&vfs, &root, "g", b"");
    let mut f = vfs.open(&root, "f", OFlags::CREAT, NO, RW).unwrap();
    // 100 bytes left for data.
    assert_eq!(vfs.write(&mut f, &[1; 60]), Ok(60));
    // A write that does not fit is cut short, then there is no space.
    assert_eq!(vfs.write(&mut f, &[2; 60]), Ok(40));
    assert_eq!(vfs.write(&mut f, &[3; 1]), Err(Errno::Nospc));
    assert_eq!(fs.used(), limit);
    // Overwriting in place needs no space.
    assert_eq!(vfs.pwrite(&f, &[4; 10], 0), Ok(10));
    assert_eq!(vfs.set_size(&f, 101), Err(Errno::Nospc));
    vfs.set_size(&f, 50).unwrap();
    // A gap counts too.
    assert_eq!(vfs.pwrite(&f, b"x", 200), Err(Errno::Nospc));
    assert_eq!(vfs.pwrite(&f, b"xyz", 98), Ok(2));
    assert_eq!(vfs.stat(&f).unwrap().size, 100);
    let mut a = vfs
        .open(&root, "f", OFlags::NONE, FdFlags::APPEND, RW)
        .unwrap();
    assert_eq!(vfs.write(&mut a, b"x"), Err(Errno::Nospc));
    // Entries cost space.
    assert_eq!(vfs.create_dir(&root, "e"), Err(Errno::Nospc));
    assert_eq!(
        vfs.open(&root, "h", OFlags::CREAT, NO, RW).unwrap_err(),
        Errno::Nospc
    );
    assert_eq!(fs.used(), limit);
    // Freeing space makes room again.
    vfs.unlink_file(&root, "g").unwrap();
    vfs.create_dir(&root, "e").unwrap();
    vfs.set_size(&f, 0).unwrap();
    assert_eq!(vfs.write(&mut a, &[5; 200]), Ok(100));
    assert_eq!(a.offset(), 100);
    assert_eq!(fs.used(), limit);
    assert_eq!(get(&vfs, &root, "f").unwrap(), [5; 100]);
}

#[test]
fn removed_files_live_while_open() {
    let (fs, vfs, root) = setup(1 << 20);
    put(&vfs, &root, "f", b"data");
    let mut f = vfs.open(&root, "f", OFlags::NONE, NO, RW).unwrap();
    vfs.unlink_file(&root, "f").unwrap();
    assert_eq!(vfs.path_stat(&root, "f"), Err(Errno::Noent));
    let mut buf = [0u8; 4];
    assert_eq!(vfs.read(&mut f, &mut buf), Ok(4));
    assert_eq!(&buf, b"data");
    assert_eq!(vfs.stat(&f).unwrap().nlink, 0);
    assert_eq!(fs.inode_count(), 2);
    assert_eq!(fs.used(), MemFs::ENTRY_COST + 4);
    drop(f);
    assert_eq!(fs.inode_count(), 1);
    assert_eq!(fs.used(), 0);
    // A removed directory cannot gain entries.
    vfs.create_dir(&root, "d").unwrap();
    let d = open_dir(&vfs, &root, "d");
    vfs.remove_dir(&root, "d").unwrap();
    assert_eq!(
        vfs.open(&d, "x", OFlags::CREAT, NO, RW).unwrap_err(),
        Errno::Noent
    );
    assert_eq!(vfs.create_dir(&d, "x"), Err(Errno::Noent));
    assert_eq!(vfs.path_stat(&d, ".").unwrap().nlink, 0);
    assert_eq!(vfs.read_dir(&d, 2, 10).unwrap(), []);
    put(&vfs, &root, "g", b"");
    assert_eq!(vfs.rename(&root, "g", &d, "g"), Err(Errno::Noent));
    drop(d);
    assert_eq!(fs.inode_count(), 2);
}

#[test]
fn mounts() {
    let (root_fs, vfs, root) = setup(1 << 20);
    let disk = Arc::new(MemFs::new(1 << 20));
    assert_eq!(vfs.mount("/disk", disk.clone()), Err(Errno::Noent));
    put(&vfs, &root, "file", b"");
    assert_eq!(vfs.mount("/file", disk.clone()), Err(Errno::Notdir));
    assert_eq!(vfs.mount("/", disk.clone()), Err(Errno::Busy));
    assert_eq!(vfs.mount("disk", disk.clone()), Err(Errno::Inval));
    vfs.create_dir(&root, "disk").unwrap();
    put(&vfs, &root, "disk/hidden", b"");
    let id = vfs.mount("/disk", disk.clone()).unwrap();
    assert_eq!(id.index(), 1);
    assert_eq!(vfs.mount("/disk/", disk.clone()), Err(Errno::Busy));
    // Files under /disk live on the disk.
    assert_eq!(vfs.path_stat(&root, "disk/hidden"), Err(Errno::Noent));
    put(&vfs, &root, "disk/on-disk", b"12345");
    assert_eq!(disk.used(), MemFs::ENTRY_COST + 5);
    let s = vfs.path_stat(&root, "disk/on-disk").unwrap();
    assert_eq!(s.dev, id.index());
    let mount_root = vfs.path_stat(&root, "disk").unwrap();
    assert_eq!((mount_root.dev, mount_root.ino), (1, disk.root()));
    assert_eq!(
        names(&vfs, &open_dir(&vfs, &root, "disk")),
        [".", "..", "on-disk"]
    );
    // .. leads back out of the mount, within the handle.
    assert_eq!(vfs.path_stat(&root, "disk/../file").unwrap().dev, 0);
    let d = open_dir(&vfs, &root, "disk");
    assert_eq!(vfs.read_dir(&d, 1, 1).unwrap()[0].ino, root.inode());
    // Across mounts there is no rename.
    assert_eq!(
        vfs.rename(&root, "file", &root, "disk/file"),
        Err(Errno::Xdev)
    );
    assert_eq!(vfs.rename(&d, "on-disk", &root, "x"), Err(Errno::Xdev));
    // The mount point cannot be removed, renamed or replaced.
    assert_eq!(vfs.remove_dir(&root, "disk"), Err(Errno::Busy));
    assert_eq!(vfs.rename(&root, "disk", &root, "disk2"), Err(Errno::Busy));
    vfs.create_dir(&root, "empty").unwrap();
    assert_eq!(vfs.rename(&root, "empty", &root, "disk"), Err(Errno::Busy));
    // A mount inside a mount, and the directories leading to it are pinned too.
    vfs.create_dir(&d, "usb").unwrap();
    vfs.create_dir(&d, "usb/port").unwrap();
    let usb = Arc::new(MemFs::new(1 << 20));
    let usb_id = vfs.mount("/disk/./usb/../usb/port", usb.clone()).unwrap();
    assert_eq!(vfs.rename(&d, "usb", &d, "usb2"), Err(Errno::Busy));
    put(&vfs, &root, "disk/usb/port/x", b"x");
    assert_eq!(usb.used(), MemFs::ENTRY_COST + 1);
    assert_eq!(
        vfs.mounts(),
        [
            ("/".to_string(), MountId::ROOT),
            ("/disk".to_string(), id),
            ("/disk/usb/port".to_string(), usb_id)
        ]
    );
    // Preopens find the longest mount prefix, and agree with relative resolution.
    let p = vfs.preopen("/disk/usb/port").unwrap();
    assert_eq!((p.mount(), p.inode()), (usb_id, usb.root()));
    assert_eq!(p.preopen_name(), Some("/disk/usb/port"));
    assert_eq!(vfs.path_stat(&p, "..").unwrap_err(), Errno::Notcapable);
    assert_eq!(get(&vfs, &p, "x").unwrap(), b"x");
    let q = vfs.preopen("/disk/../disk/usb/").unwrap();
    assert_eq!(q.preopen_name(), Some("/disk/usb"));
    let via_root = vfs.path_stat(&root, "disk/usb").unwrap();
    assert_eq!((q.mount(), q.inode()), (id, via_root.ino));
    assert_eq!(vfs.preopen("/..").unwrap().inode(), root.inode());
    assert_eq!(vfs.preopen("/file").unwrap_err(), Errno::Notdir);
    assert_eq!(vfs.preopen("/nope").unwrap_err(), Errno::Noent);
    assert_eq!(vfs.preopen("rel").unwrap_err(), Errno::Inval);
    assert_eq!(root_fs.used(), 4 * MemFs::ENTRY_COST);
}

/// A [`MemFs`] whose `sync` is counted and can be made to fail.
struct Syncing {
    inner: MemFs,
    syncs: AtomicU64,
    fail: core::sync::atomic::AtomicBool,
}

impl Syncing {
    fn new() -> Syncing {
        Syncing {
            inner: MemFs::new(1 << 20),
            syncs: AtomicU64::new(0),
            fail: core::sync::atomic::AtomicBool::new(false),
        }
    }
}

impl FileSystem for Syncing {
    fn root(&self) -> Inode {
        self.inner.root()
    }
    fn lookup(&self, dir: Inode, name: &str) -> Result<(Inode, FileType)> {
        self.inner.lookup(dir, name)
    }
    fn parent(&self, dir: Inode) -> Result<Inode> {
        self.inner.parent(dir)
    }
    fn create(&self, dir: Inode, name: &str, kind: FileType, now: u64) -> Result<Inode> {
        self.inner.create(dir, name, kind, now)
    }
    fn remove(&self, dir: Inode, name: &str, kind: FileType, now: u64) -> Result<()> {
        self.inner.remove(dir, name, kind, now)
    }
    fn rename(&self, a: Inode, an: &str, b: Inode, bn: &str, now: u64) -> Result<()> {
        self.inner.rename(a, an, b, bn, now)
    }
    fn retain(&self, ino: Inode) -> Result<()> {
        self.inner.retain(ino)
    }
    fn release(&self, ino: Inode) {
        self.inner.release(ino)
    }
    fn read_at(&self, ino: Inode, offset: u64, buf: &mut [u8], now: u64) -> Result<usize> {
        self.inner.read_at(ino, offset, buf, now)
    }
    fn write_at(&self, ino: Inode, offset: u64, data: &[u8], now: u64) -> Result<usize> {
        self.inner.write_at(ino, offset, data, now)
    }
    fn set_size(&self, ino: Inode, size: u64, now: u64) -> Result<()> {
        self.inner.set_size(ino, size, now)
    }
    fn set_times(&self, ino: Inode, atim: Option<u64>, mtim: Option<u64>, now: u64) -> Result<()> {
        self.inner.set_times(ino, atim, mtim, now)
    }
    fn stat(&self, ino: Inode) -> Result<FileStat> {
        self.inner.stat(ino)
    }
    fn read_dir(&self, dir: Inode, cookie: u64, max: usize) -> Result<Vec<DirEntry>> {
        self.inner.read_dir(dir, cookie, max)
    }
    fn sync(&self) -> Result<()> {
        self.syncs.fetch_add(1, Ordering::SeqCst);
        if self.fail.load(Ordering::SeqCst) {
            Err(Errno::Io)
        } else {
            Ok(())
        }
    }
}

#[test]
fn unmount() {
    let (_, vfs, root) = setup(1 << 20);
    vfs.create_dir(&root, "mnt").unwrap();
    put(&vfs, &root, "mnt/under", b"covered");
    let disk = Arc::new(Syncing::new());
    let id = vfs.mount("/mnt", disk.clone()).unwrap();
    put(&vfs, &root, "mnt/on-disk", b"x");
    assert!(matches!(vfs.unmount("/"), Err(Errno::Busy)));
    assert!(matches!(vfs.unmount("/mnt/on-disk"), Err(Errno::Inval)));
    assert!(matches!(vfs.unmount("/nowhere"), Err(Errno::Inval)));
    assert!(matches!(vfs.unmount("mnt"), Err(Errno::Inval)));
    // An open file or directory keeps it busy.
    let file = vfs
        .open(&root, "mnt/on-disk", OFlags::NONE, NO, Rights::READ)
        .unwrap();
    assert!(matches!(vfs.unmount("/mnt"), Err(Errno::Busy)));
    drop(file);
    let dir = open_dir(&vfs, &root, "mnt");
    assert!(matches!(vfs.unmount("/mnt/"), Err(Errno::Busy)));
    drop(dir);
    // So does a mount inside it.
    vfs.create_dir(&root, "mnt/inner").unwrap();
    let inner = Arc::new(MemFs::new(1 << 20));
    vfs.mount("/mnt/inner", inner).unwrap();
    assert!(matches!(vfs.unmount("/mnt"), Err(Errno::Busy)));
    vfs.unmount("/mnt/./inner").unwrap();
    // A failing sync keeps it mounted.
    disk.fail.store(true, Ordering::SeqCst);
    assert!(matches!(vfs.unmount("/mnt"), Err(Errno::Io)));
    assert_eq!(get(&vfs, &root, "mnt/on-disk").unwrap(), b"x");
    disk.fail.store(false, Ordering::SeqCst);
    let syncs = disk.syncs.load(Ordering::SeqCst);
    let gone = vfs.unmount("/mnt").unwrap();
    assert_eq!(disk.syncs.load(Ordering::SeqCst), syncs + 1);
    assert_eq!(gone.root(), disk.root());
    // The covered directory is back, and the mount is gone from the list.
    assert_eq!(get(&vfs, &root, "mnt/under").unwrap(), b"covered");
    assert_eq!(vfs.mounts(), [("/".to_string(), MountId::ROOT)]);
    assert_eq!(vfs.usage(id), None);
    assert!(matches!(vfs.unmount("/mnt"), Err(Errno::Inval)));
    // The directory is no longer pinned, and a new mount takes the free slot.
    vfs.rename(&root, "mnt", &root, "mnt2").unwrap();
    let again = vfs.mount("/mnt2", Arc::new(MemFs::new(100))).unwrap();
    assert_eq!(again, id);
    assert_eq!(vfs.path_stat(&root, "mnt2/on-disk"), Err(Errno::Noent));
}

#[test]
fn sync_all_and_usage() {
    let (fs, vfs, root) = setup(10_000);
    let a = Arc::new(Syncing::new());
    let b = Arc::new(Syncing::new());
    vfs.create_dir(&root, "a").unwrap();
    vfs.create_dir(&root, "b").unwrap();
    vfs.mount("/a", a.clone()).unwrap();
    let b_id = vfs.mount("/b", b.clone()).unwrap();
    vfs.sync_all().unwrap();
    assert_eq!(a.syncs.load(Ordering::SeqCst), 1);
    assert_eq!(b.syncs.load(Ordering::SeqCst), 1);
    a.fail.store(true, Ordering::SeqCst);
    assert_eq!(vfs.sync_all(), Err(Errno::Io));
    // The others are synced all the same.
    assert_eq!(b.syncs.load(Ordering::SeqCst), 2);
    // MemFs counts its limit; the default is "unknown".
    put(&vfs, &root, "f", &[0u8; 100]);
    let used = fs.used();
    assert_eq!(
        vfs.usage(MountId::ROOT),
        Some(Usage {
            total_bytes: 10_000,
            free_bytes: 10_000 - used,
            block_size: 1,
        })
    );
    assert_eq!(vfs.usage(b_id), None);
}

#[test]
fn fd_table() {
    let (fs, vfs, root) = setup(1 << 20);
    let mut table = FdTable::new();
    assert!(table.is_empty());
    assert_eq!(table.insert(vfs.preopen("/").unwrap()), Ok(3));
    assert_eq!(table.get(3).unwrap().preopen_name(), Some("/"));
    for fd in [0, 1, 2, 4, u32::MAX] {
        assert_eq!(table.get(fd).unwrap_err(), Errno::Badf);
        assert_eq!(table.close(fd), Err(Errno::Badf));
    }
    let dir = table.get(3).unwrap();
    let file = vfs.open(dir, "f", OFlags::CREAT, NO, RW).unwrap();
    let file2 = vfs.open(dir, "g", OFlags::CREAT, NO, RW).unwrap();
    assert_eq!(table.insert(file), Ok(4));
    assert_eq!(table.insert(file2), Ok(5));
    vfs.write(table.get_mut(4).unwrap(), b"four").unwrap();
    assert_eq!(table.close(4), Ok(()));
    assert_eq!(table.close(4), Err(Errno::Badf));
    // The lowest free number is reused.
    let again = vfs.open(&root, "f", OFlags::NONE, NO, RW).unwrap();
    assert_eq!(table.insert(again), Ok(4));
    // Renumbering moves a file over another, closing that one.
    let g_ino = table.get(5).unwrap().inode();
    assert_eq!(table.renumber(5, 4), Ok(()));
    assert_eq!(table.get(4).unwrap().inode(), g_ino);
    assert_eq!(table.get(5).unwrap_err(), Errno::Badf);
    assert_eq!(table.renumber(5, 4), Err(Errno::Badf));
    assert_eq!(table.renumber(4, 9), Err(Errno::Badf));
    assert_eq!(table.renumber(4, 1), Err(Errno::Badf));
    assert_eq!(table.renumber(4, 4), Ok(()));
    assert_eq!(table.renumber(4, 3), Ok(()));
    assert_eq!(table.iter().map(|(fd, _)| fd).collect::<Vec<_>>(), [3]);
    assert_eq!(table.len(), 1);
    // At most MAX_FDS descriptors.
    for fd in 4..MAX_FDS {
        assert_eq!(table.insert(vfs.preopen("/").unwrap()), Ok(fd));
    }
    assert_eq!(table.insert(vfs.preopen("/").unwrap()), Err(Errno::Mfile));
    // Dropping the table closes everything: an unlinked open file is then freed.
    table.close(7).unwrap();
    let h = vfs.open(&root, "f", OFlags::NONE, NO, RW).unwrap();
    assert_eq!(table.insert(h), Ok(7));
    vfs.unlink_file(&root, "f").unwrap();
    vfs.unlink_file(&root, "g").unwrap();
    assert_eq!(fs.inode_count(), 3);
    drop(table);
    assert_eq!(fs.inode_count(), 1);
}

// ---- randomized model test ----

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, one_in: u64) -> bool {
        self.below(one_in) == 0
    }
}

#[derive(Clone, Debug)]
enum M {
    File(Vec<u8>),
    Dir(BTreeMap<String, M>),
}

/// The specification: a plain tree, with the same space accounting.
struct Model {
    root: M,
    limit: u64,
}

fn used_by(node: &M) -> u64 {
    match node {
        M::File(bytes) => bytes.len() as u64,
        M::Dir(entries) => entries
            .values()
            .map(|child| MemFs::ENTRY_COST + used_by(child))
            .sum(),
    }
}

impl Model {
    fn available(&self) -> u64 {
        self.limit - used_by(&self.root)
    }

    fn get(&self, path: &[String]) -> Result<&M> {
        let mut node = &self.root;
        for name in path {
            match node {
                M::File(_) => return Err(Errno::Notdir),
                M::Dir(entries) => node = entries.get(name).ok_or(Errno::Noent)?,
            }
        }
        Ok(node)
    }

    fn get_mut(&mut self, path: &[String]) -> Result<&mut M> {
        let mut node = &mut self.root;
        for name in path {
            match node {
                M::File(_) => return Err(Errno::Notdir),
                M::Dir(entries) => node = entries.get_mut(name).ok_or(Errno::Noent)?,
            }
        }
        Ok(node)
    }

    /// The parent directory's entries and the last name.
    fn parent(&mut self, path: &[String]) -> Result<(&mut BTreeMap<String, M>, String)> {
        let (name, parents) = path.split_last().unwrap();
        match self.get_mut(parents)? {
            M::Dir(entries) => Ok((entries, name.clone())),
            M::File(_) => Err(Errno::Notdir),
        }
    }

    fn file(&mut self, path: &[String]) -> Result<&mut Vec<u8>> {
        match self.get_mut(path)? {
            M::File(bytes) => Ok(bytes),
            M::Dir(_) => Err(Errno::Isdir),
        }
    }

    fn write_at(&mut self, path: &[String], offset: u64, data: &[u8]) -> Result<usize> {
        let available = self.available();
        let file = self.file(path)?;
        if data.is_empty() {
            return Ok(0);
        }
        let size = file.len() as u64;
        let end = offset + data.len() as u64;
        let count = if end.saturating_sub(size) <= available {
            data.len()
        } else if size + available <= offset {
            return Err(Errno::Nospc);
        } else {
            (size + available - offset) as usize
        };
        let new_end = (offset as usize) + count;
        if new_end > file.len() {
            file.resize(new_end, 0);
        }
        file[offset as usize..new_end].copy_from_slice(&data[..count]);
        Ok(count)
    }

    fn create_file(&mut self, path: &[String], data: &[u8]) -> (Result<()>, Option<Result<usize>>) {
        let available = self.available();
        let opened = match self.parent(path) {
            Err(e) => Err(e),
            Ok((entries, name)) => match entries.get_mut(&name) {
                Some(M::Dir(_)) => Err(Errno::Isdir),
                Some(M::File(bytes)) => {
                    bytes.clear();
                    Ok(())
                }
                None if available < MemFs::ENTRY_COST => Err(Errno::Nospc),
                None => {
                    entries.insert(name, M::File(Vec::new()));
                    Ok(())
                }
            },
        };
        match opened {
            Ok(()) => (Ok(()), Some(self.write_at(path, 0, data))),
            Err(e) => (Err(e), None),
        }
    }

    fn append(&mut self, path: &[String], data: &[u8]) -> Result<usize> {
        let available = self.available();
        let file = self.file(path)?;
        let count = (data.len() as u64).min(available) as usize;
        if count == 0 && !data.is_empty() {
            return Err(Errno::Nospc);
        }
        file.extend_from_slice(&data[..count]);
        Ok(count)
    }

    fn set_size(&mut self, path: &[String], size: u64) -> Result<()> {
        let available = self.available();
        let file = self.file(path)?;
        if size > file.len() as u64 && size - file.len() as u64 > available {
            return Err(Errno::Nospc);
        }
        file.resize(size as usize, 0);
        Ok(())
    }

    fn mkdir(&mut self, path: &[String]) -> Result<()> {
        let available = self.available();
        let (entries, name) = self.parent(path)?;
        if entries.contains_key(&name) {
            return Err(Errno::Exist);
        }
        if available < MemFs::ENTRY_COST {
            return Err(Errno::Nospc);
        }
        entries.insert(name, M::Dir(BTreeMap::new()));
        Ok(())
    }

    fn rmdir(&mut self, path: &[String]) -> Result<()> {
        let (entries, name) = self.parent(path)?;
        match entries.get(&name) {
            None => Err(Errno::Noent),
            Some(M::File(_)) => Err(Errno::Notdir),
            Some(M::Dir(children)) if !children.is_empty() => Err(Errno::Notempty),
            Some(M::Dir(_)) => {
                entries.remove(&name);
                Ok(())
            }
        }
    }

    fn unlink(&mut self, path: &[String]) -> Result<()> {
        let (entries, name) = self.parent(path)?;
        match entries.get(&name) {
            None => Err(Errno::Noent),
            Some(M::Dir(_)) => Err(Errno::Isdir),
            Some(M::File(_)) => {
                entries.remove(&name);
                Ok(())
            }
        }
    }

    fn rename(&mut self, from: &[String], to: &[String]) -> Result<()> {
        self.parent(from)?;
        self.parent(to)?;
        let source = self.get(from)?.clone();
        if from == to {
            return Ok(());
        }
        let is_dir = matches!(source, M::Dir(_));
        if is_dir && to.len() > from.len() && to[..from.len()] == *from {
            return Err(Errno::Inval);
        }
        match (is_dir, self.get(to)) {
            (false, Ok(M::Dir(_))) => return Err(Errno::Isdir),
            (true, Ok(M::File(_))) => return Err(Errno::Notdir),
            (true, Ok(M::Dir(children))) if !children.is_empty() => return Err(Errno::Notempty),
            _ => {}
        }
        let (entries, name) = self.parent(from).unwrap();
        entries.remove(&name);
        let (entries, name) = self.parent(to).unwrap();
        entries.insert(name, source);
        Ok(())
    }
}

const NAMES: [&str; 4] = ["a", "b", "c", "d"];

fn all_paths(node: &M, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    if let M::Dir(entries) = node {
        for (name, child) in entries {
            prefix.push(name.clone());
            out.push(prefix.clone());
            all_paths(child, prefix, out);
            prefix.pop();
        }
    }
}

/// Half the time something that exists (or a new name in an existing directory), else any
/// path of depth 1 to 3.
fn random_path(rng: &mut XorShift, model: &Model) -> Vec<String> {
    let mut existing = Vec::new();
    all_paths(&model.root, &mut Vec::new(), &mut existing);
    if !existing.is_empty() && rng.chance(2) {
        let mut path = existing[rng.below(existing.len() as u64) as usize].clone();
        if rng.chance(3) {
            path.push(NAMES[rng.below(4) as usize].to_string());
        }
        return path;
    }
    let depth = 1 + rng.below(3) as usize;
    (0..depth)
        .map(|_| NAMES[rng.below(4) as usize].to_string())
        .collect()
}

/// The path as a program might spell it: sometimes with `./` and doubled slashes.
fn spell(rng: &mut XorShift, path: &[String], trailing_slash: bool) -> String {
    let mut out = String::new();
    for (i, name) in path.iter().enumerate() {
        if i > 0 {
            out.push('/');
        }
        if rng.chance(8) {
            out.push_str("./");
        }
        if i > 0 && rng.chance(8) {
            out.push('/');
        }
        out.push_str(name);
    }
    if trailing_slash {
        out.push('/');
    }
    out
}

fn random_data(rng: &mut XorShift) -> Vec<u8> {
    let len = rng.below(700) as usize;
    let byte = rng.next() as u8;
    (0..len).map(|i| byte.wrapping_add(i as u8)).collect()
}

#[test]
fn randomized_against_a_model() {
    let limit = 6000;
    let (fs, vfs, root) = setup(limit);
    let mut model = Model {
        root: M::Dir(BTreeMap::new()),
        limit,
    };
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    let mut counts = [0usize; 11];
    let mut failures = 0;
    for step in 0..20_000 {
        let op = rng.below(11) as usize;
        let path = random_path(&mut rng, &model);
        let p = spell(&mut rng, &path, false);
        let ok = match op {
            0 => {
                let data = random_data(&mut rng);
                let expected = model.create_file(&path, &data);
                let got = match vfs.open(&root, &p, OFlags::CREAT | OFlags::TRUNC, NO, RW) {
                    Ok(mut f) => (Ok(()), Some(vfs.write(&mut f, &data))),
                    Err(e) => (Err(e), None),
                };
                assert_eq!(got, expected, "step {step}: create {p}");
                got.0.is_ok()
            }
            1 => {
                let data = random_data(&mut rng);
                let offset = rng.below(1200);
                let expected = model.write_at(&path, offset, &data);
                let got = vfs
                    .open(&root, &p, OFlags::NONE, NO, RW)
                    .and_then(|f| vfs.pwrite(&f, &data, offset));
                assert_eq!(got, expected, "step {step}: pwrite {p} at {offset}");
                got.is_ok()
            }
            2 => {
                let data = random_data(&mut rng);
                let expected = model.append(&path, &data);
                let got = vfs
                    .open(&root, &p, OFlags::NONE, FdFlags::APPEND, Rights::WRITE)
                    .and_then(|mut f| vfs.write(&mut f, &data));
                assert_eq!(got, expected, "step {step}: append {p}");
                got.is_ok()
            }
            3 => {
                let size = rng.below(1500);
                let expected = model.set_size(&path, size);
                let got = vfs
                    .open(&root, &p, OFlags::NONE, NO, RW)
                    .and_then(|f| vfs.set_size(&f, size));
                assert_eq!(got, expected, "step {step}: set_size {p} {size}");
                got.is_ok()
            }
            4 => {
                let expected = model.file(&path).cloned();
                let got = get(&vfs, &root, &p);
                assert_eq!(got, expected, "step {step}: read {p}");
                got.is_ok()
            }
            5 => {
                let slash = rng.chance(4);
                let p = spell(&mut rng, &path, slash);
                let expected = model.mkdir(&path);
                assert_eq!(
                    vfs.create_dir(&root, &p),
                    expected,
                    "step {step}: mkdir {p}"
                );
                expected.is_ok()
            }
            6 => {
                let slash = rng.chance(4);
                let p = spell(&mut rng, &path, slash);
                let expected = model.rmdir(&path);
                assert_eq!(
                    vfs.remove_dir(&root, &p),
                    expected,
                    "step {step}: rmdir {p}"
                );
                expected.is_ok()
            }
            7 => {
                let expected = model.unlink(&path);
                assert_eq!(
                    vfs.unlink_file(&root, &p),
                    expected,
                    "step {step}: unlink {p}"
                );
                expected.is_ok()
            }
            8 => {
                let to = random_path(&mut rng, &model);
                let q = spell(&mut rng, &to, false);
                let expected = model.rename(&path, &to);
                assert_eq!(
                    vfs.rename(&root, &p, &root, &q),
                    expected,
                    "step {step}: rename {p} {q}"
                );
                expected.is_ok()
            }
            9 => {
                let slash = rng.chance(4);
                let p = spell(&mut rng, &path, slash);
                let expected = model.get(&path).and_then(|node| match node {
                    M::File(_) if slash => Err(Errno::Notdir),
                    M::File(bytes) => Ok((FileType::RegularFile, bytes.len() as u64, 1)),
                    M::Dir(entries) => {
                        let subdirs = entries.values().filter(|c| matches!(c, M::Dir(_))).count();
                        Ok((
                            FileType::Directory,
                            entries.len() as u64,
                            2 + subdirs as u64,
                        ))
                    }
                });
                let got = vfs
                    .path_stat(&root, &p)
                    .map(|s| (s.filetype, s.size, s.nlink));
                assert_eq!(got, expected, "step {step}: stat {p}");
                got.is_ok()
            }
            _ => {
                let path = &path[..path.len() - 1];
                let p = if path.is_empty() {
                    ".".to_string()
                } else {
                    spell(&mut rng, path, false)
                };
                let expected = model.get(path).and_then(|node| match node {
                    M::File(_) => Err(Errno::Notdir),
                    M::Dir(entries) => Ok(entries.keys().cloned().collect::<Vec<_>>()),
                });
                let got = vfs
                    .open(&root, &p, OFlags::DIRECTORY, NO, Rights::READ)
                    .map(|dir| {
                        let max = 1 + rng.below(4) as usize;
                        let listed = list(&vfs, &dir, max);
                        assert_eq!(listed[0].name, ".");
                        assert_eq!(listed[1].name, "..");
                        let mut names: Vec<String> =
                            listed[2..].iter().map(|e| e.name.clone()).collect();
                        names.sort();
                        names
                    });
                assert_eq!(got, expected, "step {step}: readdir {p}");
                got.is_ok()
            }
        };
        if ok {
            counts[op] += 1;
        } else {
            failures += 1;
        }
        assert_eq!(fs.used(), used_by(&model.root), "step {step}: space");
    }
    // Every operation succeeded often, and errors were exercised too.
    assert!(counts.iter().all(|&n| n > 100), "{counts:?}");
    assert!(failures > 1000, "{failures}");
    assert!(fs.used() > limit / 2);
}
