//! Helpers shared by the integration tests: temporary images, the host's FAT tools
//! (dosfstools, mtools), a block device that counts and fails requests, and VFS shortcuts.
#![allow(dead_code)]

use keel_block::{BlockDevice, BlockError, MemDisk};
use keel_fat::FatFs;
use keel_vfs::{Errno, FdFlags, FileSystem, MemFs, OFlags, OpenFile, Rights, Vfs};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// 2024-01-01T00:00:00Z; the clock ticks one second per call.
static CLOCK: AtomicU64 = AtomicU64::new(1_704_067_200_000_000_000);

pub fn clock() -> u64 {
    CLOCK.fetch_add(1_000_000_000, Ordering::SeqCst)
}

/// Where `name` is installed (`PATH`, plus the sbin directories dosfstools uses).
pub fn tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    path.split(':')
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"])
        .map(|dir| Path::new(dir).join(name))
        .find(|candidate| candidate.is_file())
}

/// Returns from the test (with a note) unless every tool is installed.
#[macro_export]
macro_rules! require_tools {
    ($($name:expr),+) => {
        for name in [$($name),+] {
            if common::tool(name).is_none() {
                eprintln!("SKIPPED: `{name}` is not installed (apt-get install dosfstools mtools)");
                return;
            }
        }
    };
}

/// Runs a tool; panics with its output unless it succeeds. Returns stdout.
pub fn run(name: &str, args: &[&str]) -> String {
    let output = run_status(name, args);
    assert!(output.0, "{name} {args:?} failed:\n{}", output.1);
    output.1
}

/// Runs a tool: whether it succeeded, and stdout followed by stderr.
pub fn run_status(name: &str, args: &[&str]) -> (bool, String) {
    let program = tool(name).unwrap_or_else(|| panic!("{name} is not installed"));
    let output = Command::new(program)
        .args(args)
        .env("MTOOLS_SKIP_CHECK", "1")
        .env("MTOOLS_NO_VFAT", "0")
        .output()
        .unwrap();
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    (output.status.success(), text)
}

/// A file in the temporary directory, deleted when dropped.
pub struct TempFile(pub PathBuf);

impl TempFile {
    pub fn new(tag: &str) -> TempFile {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        TempFile(std::env::temp_dir().join(format!("keel-fat-{}-{tag}-{n}", std::process::id())))
    }

    pub fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }

    /// `path@@offset` as mtools names a partition in an image.
    pub fn at(&self, offset: u64) -> String {
        format!("{}@@{offset}", self.path())
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A zeroed image of `bytes` bytes, formatted by `mkfs.fat` with `args`.
pub fn mkfs(tag: &str, bytes: u64, args: &[&str]) -> TempFile {
    let image = TempFile::new(tag);
    std::fs::write(&image.0, vec![0u8; bytes as usize]).unwrap();
    let mut all: Vec<&str> = args.to_vec();
    all.push(image.path());
    run("mkfs.fat", &all);
    image
}

pub fn load(path: &str) -> Arc<MemDisk> {
    Arc::new(MemDisk::from_bytes(512, std::fs::read(path).unwrap()))
}

pub fn save(disk: &MemDisk, path: &str) {
    std::fs::write(path, disk.to_bytes()).unwrap();
}

/// `fsck.fat -n` on the image: whether it found nothing to fix, and what it said.
pub fn fsck(path: &str) -> (bool, String) {
    let (ok, text) = run_status("fsck.fat", &["-n", "-v", path]);
    let clean = ok
        && !text.contains("Dirty bit")
        && !text.contains("would be")
        && !text.contains("Free cluster summary wrong");
    (clean, text)
}

pub fn assert_clean(path: &str) {
    let (clean, text) = fsck(path);
    assert!(clean, "fsck.fat -n {path}:\n{text}");
}

/// A VFS whose root is in memory, with `fs` mounted at `/disk`; returns a handle on `/disk`.
pub fn mount(fs: Arc<dyn FileSystem>) -> (Vfs, OpenFile) {
    let vfs = Vfs::new(Arc::new(MemFs::new(1 << 20)), clock);
    let root = vfs.preopen("/").unwrap();
    vfs.create_dir(&root, "disk").unwrap();
    drop(root);
    vfs.mount("/disk", fs).unwrap();
    let disk = vfs.preopen("/disk").unwrap();
    (vfs, disk)
}

pub const RW: Rights = Rights::READ_WRITE;
pub const NO: FdFlags = FdFlags::NONE;

pub fn put(vfs: &Vfs, dir: &OpenFile, path: &str, data: &[u8]) {
    let mut f = vfs
        .open(dir, path, OFlags::CREAT | OFlags::TRUNC, NO, RW)
        .unwrap_or_else(|e| panic!("create {path}: {e:?}"));
    let mut done = 0;
    while done < data.len() {
        done += vfs.write(&mut f, &data[done..]).unwrap();
    }
}

pub fn get(vfs: &Vfs, dir: &OpenFile, path: &str) -> Result<Vec<u8>, Errno> {
    let mut f = vfs.open(dir, path, OFlags::NONE, NO, Rights::READ)?;
    let mut out = Vec::new();
    let mut buf = vec![0u8; 70_000];
    loop {
        let n = vfs.read(&mut f, &mut buf)?;
        if n == 0 {
            return Ok(out);
        }
        out.extend_from_slice(&buf[..n]);
    }
}

/// The names in directory `path` (without `.` and `..`), sorted.
pub fn names(vfs: &Vfs, dir: &OpenFile, path: &str) -> Vec<String> {
    let d = vfs
        .open(dir, path, OFlags::DIRECTORY, NO, Rights::READ)
        .unwrap();
    let mut out = Vec::new();
    let mut cookie = 0;
    loop {
        let batch = vfs.read_dir(&d, cookie, 3).unwrap();
        let Some(last) = batch.last() else { break };
        cookie = last.next;
        out.extend(batch.into_iter().map(|e| e.name));
    }
    out.retain(|n| n != "." && n != "..");
    out.sort();
    out
}

/// Deterministic bytes.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A block device in front of another that counts requests and fails them on demand.
pub struct Flaky {
    pub inner: Arc<dyn BlockDevice>,
    pub reads: AtomicU64,
    pub writes: AtomicU64,
    pub fail_reads: AtomicBool,
    pub fail_writes: AtomicBool,
    pub read_only: AtomicBool,
}

impl Flaky {
    pub fn new(inner: Arc<dyn BlockDevice>) -> Arc<Flaky> {
        Arc::new(Flaky {
            inner,
            reads: AtomicU64::new(0),
            writes: AtomicU64::new(0),
            fail_reads: AtomicBool::new(false),
            fail_writes: AtomicBool::new(false),
            read_only: AtomicBool::new(false),
        })
    }

    pub fn counts(&self) -> (u64, u64) {
        (
            self.reads.load(Ordering::SeqCst),
            self.writes.load(Ordering::SeqCst),
        )
    }
}

impl BlockDevice for Flaky {
    fn sector_size(&self) -> u32 {
        self.inner.sector_size()
    }
    fn sector_count(&self) -> u64 {
        self.inner.sector_count()
    }
    fn read(&self, lba: u64, buf: &mut [u8]) -> Result<(), BlockError> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        if self.fail_reads.load(Ordering::SeqCst) {
            return Err(BlockError::Device);
        }
        self.inner.read(lba, buf)
    }
    fn write(&self, lba: u64, data: &[u8]) -> Result<(), BlockError> {
        self.writes.fetch_add(1, Ordering::SeqCst);
        if self.read_only.load(Ordering::SeqCst) {
            return Err(BlockError::ReadOnly);
        }
        if self.fail_writes.load(Ordering::SeqCst) {
            return Err(BlockError::Device);
        }
        self.inner.write(lba, data)
    }
    fn flush(&self) -> Result<(), BlockError> {
        if self.fail_writes.load(Ordering::SeqCst) {
            return Err(BlockError::Device);
        }
        self.inner.flush()
    }
}

/// A fresh FAT volume of `bytes` in memory, formatted by [`FatFs::format`].
pub fn fresh(bytes: u64, options: &keel_fat::FormatOptions) -> Arc<MemDisk> {
    let disk = Arc::new(MemDisk::new(512, bytes / 512));
    FatFs::format(disk.clone(), options).unwrap();
    disk
}
