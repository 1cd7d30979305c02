//! [`FatFs`]: a FAT volume as a [`keel_vfs::FileSystem`].

use alloc::collections::BTreeMap;
use alloc::string::{String, ToString};
use alloc::sync::Arc;
use alloc::vec;
use alloc::vec::Vec;
use fatfs::{FatType, LossyOemCpConverter, Read, Seek, SeekFrom, Write};
use keel_block::{BlockDevice, BlockError};
use keel_vfs::{DirEntry, Errno, FileStat, FileSystem, FileType, Inode, Result, Usage};
use spin::Mutex;

use crate::cache::{CacheStats, DiskStream, IoFault, SectorCache};
use crate::layout::Layout;
use crate::nodes::{Node, Nodes, ROOT, State, fold};
use crate::time::{self, Clock};

type Fs = fatfs::FileSystem<DiskStream, Clock, LossyOemCpConverter>;
type Dir<'a> = fatfs::Dir<'a, DiskStream, Clock, LossyOemCpConverter>;
type File<'a> = fatfs::File<'a, DiskStream, Clock, LossyOemCpConverter>;
type Entry<'a> = fatfs::DirEntry<'a, DiskStream, Clock, LossyOemCpConverter>;
type FatError = fatfs::Error<IoFault>;

/// The hidden root directory where files removed while open are kept until closed.
pub const UNLINKED_DIR: &str = ".keel-unlinked";
/// Largest file FAT can hold.
pub const MAX_FILE_SIZE: u64 = u32::MAX as u64;
/// Entries of a directory at most (FAT's limit: 65536 32-byte slots).
const MAX_DIR_SLOTS: usize = 65536;
/// Files whose cluster runs are remembered (so that sequential reads do not walk the FAT
/// chain from its start each time).
const EXTENT_CACHE_FILES: usize = 16;

/// Mount options.
#[derive(Clone, Copy, Debug)]
pub struct FatOptions {
    /// Bytes of sectors the write-back cache holds at most.
    pub cache_bytes: usize,
}

impl Default for FatOptions {
    fn default() -> FatOptions {
        FatOptions {
            cache_bytes: 1 << 20,
        }
    }
}

/// How to format a volume ([`FatFs::format`]).
#[derive(Clone, Debug, Default)]
pub struct FormatOptions {
    /// Up to 11 characters, stored in upper case (default: none).
    pub label: Option<String>,
    /// FAT12, FAT16 or FAT32 (default: chosen from the size, as fatfs does).
    pub fat_type: Option<FatType>,
    /// A power of two from the sector size up (default: chosen from the size).
    pub bytes_per_cluster: Option<u32>,
}

/// A run of a file's data that is contiguous on disk.
#[derive(Clone, Copy, Debug)]
struct Run {
    file_offset: u64,
    disk_offset: u64,
    len: u64,
}

struct Inner {
    /// `None` once unmounted (every call then fails with [`Errno::Nodev`]).
    fs: Option<Fs>,
    nodes: Nodes,
    /// Cluster runs of recently read files, dropped whenever a file's chain may change.
    extents: BTreeMap<Inode, Arc<Vec<Run>>>,
}

/// A FAT12/16/32 volume on a block device, as a [`FileSystem`] for the VFS.
///
/// - **Names** are long file names (UTF-16 on disk, up to 255 units), compared ignoring case
///   as FAT does (Unicode upper-casing): creating `README` next to `readme` is
///   [`Errno::Exist`], and a lookup of either finds the one entry; so does the 8.3 alias. Characters FAT forbids (`"*/:<>?\|`, control characters, and
///   anything beyond U+FFFF) are [`Errno::Inval`]. `.keel-unlinked` in the root is reserved
///   ([`Errno::Acces`]).
/// - **Inodes** are numbers this mount hands out (see `nodes.rs`): stable while the entry
///   exists and across renames, fresh after a remount. There are no hard links (FAT has
///   none) and no permissions (FAT's read-only, hidden and system attributes are ignored;
///   everything is readable and writable).
/// - **A file removed while open** stays readable and writable through its handles, as the
///   VFS promises: its entry moves into the hidden root directory `.keel-unlinked` (its name
///   is free at once) and is deleted with the last handle; a mount deletes whatever an earlier
///   one left there. If that move fails (the disk is full), the file is deleted at once and
///   its handles get [`Errno::Noent`]. A directory removed while open is empty and stays so.
/// - **Times**: FAT keeps modification time (2 s resolution), access date and creation
///   time, as UTC. `mtim` and `ctim` both report the modification time (FAT has no change
///   time); `atim` is the access date, changed only by `set_times` (reads do not write it).
///   The root directory has no times (0).
/// - **Sizes**: a file holds at most 4 GiB - 1 ([`Errno::Fbig`]); [`Errno::Nospc`] when the
///   clusters run out (writes then write what fits), and also when a FAT12/16 root directory
///   is full.
/// - **Durability**: writes go to a write-back cache. [`FileSystem::sync`] writes it back,
///   updates the FSInfo sector, clears the volume's dirty flag and flushes the device; the
///   volume is then clean as after an unmount (the next write marks it dirty again).
///   [`FatFs::unmount`] does the same and retires the file system.
/// - **Cost**: every call finds its directory by walking from the root and scanning each
///   directory on the way (fatfs keeps no directory index), so lookups, `stat` of a directory
///   and each `read_dir` batch take time linear in the directories' sizes. File data moves in
///   large requests: contiguous clusters are read and written in one device request each.
/// - **A corrupt volume** gives errors, not panics: the boot sector is checked at mount
///   ([`Errno::Inval`]); FAT entries naming no cluster end the chain; a directory with an
///   impossible entry (a cluster outside the volume, or no end within FAT's size limit)
///   makes every operation in it [`Errno::Io`]. Device errors are [`Errno::Io`]
///   ([`Errno::Rofs`] for a read-only device).
pub struct FatFs {
    inner: Mutex<Inner>,
    cache: Arc<Mutex<SectorCache>>,
    clock: Clock,
    layout: Layout,
    mounted_dirty: bool,
}

fn device_errno(error: BlockError) -> Errno {
    match error {
        BlockError::ReadOnly => Errno::Rofs,
        BlockError::NoMemory => Errno::Nomem,
        _ => Errno::Io,
    }
}

fn errno(error: FatError) -> Errno {
    match error {
        fatfs::Error::Io(IoFault::Device(e)) => device_errno(e),
        fatfs::Error::NotFound => Errno::Noent,
        fatfs::Error::AlreadyExists => Errno::Exist,
        fatfs::Error::DirectoryIsNotEmpty => Errno::Notempty,
        fatfs::Error::NotEnoughSpace | fatfs::Error::WriteZero => Errno::Nospc,
        fatfs::Error::InvalidFileNameLength => Errno::Nametoolong,
        fatfs::Error::UnsupportedFileNameCharacter | fatfs::Error::InvalidInput => Errno::Inval,
        _ => Errno::Io,
    }
}

fn mount_fs(cache: &Arc<Mutex<SectorCache>>, clock: &Clock) -> Result<Fs> {
    let options = fatfs::FsOptions::new()
        .time_provider(clock.clone())
        .update_accessed_date(false);
    Fs::new(DiskStream::new(cache.clone()), options).map_err(|e| match e {
        fatfs::Error::CorruptedFileSystem | fatfs::Error::InvalidInput => Errno::Inval,
        other => errno(other),
    })
}

fn is_dot(entry: &Entry) -> bool {
    matches!(entry.short_file_name_as_bytes(), b"." | b"..")
}

fn kind_of(entry: &Entry) -> FileType {
    if entry.is_dir() {
        FileType::Directory
    } else {
        FileType::RegularFile
    }
}

fn is_unlinked_dir(dir: Inode, name: &str) -> bool {
    dir == ROOT && fold(name) == fold(UNLINKED_DIR)
}

impl FatFs {
    /// Mounts the FAT volume on `device` with the default options (a 1 MiB cache).
    pub fn new(device: Arc<dyn BlockDevice>) -> Result<FatFs> {
        FatFs::with_options(device, FatOptions::default())
    }

    /// Mounts the FAT volume on `device`: [`Errno::Inval`] if it holds none (or a corrupt
    /// one), [`Errno::Io`] if it cannot be read.
    pub fn with_options(device: Arc<dyn BlockDevice>, options: FatOptions) -> Result<FatFs> {
        let mut cache = SectorCache::new(device, options.cache_bytes);
        if cache.size_bytes() < 512 {
            return Err(Errno::Inval);
        }
        let mut boot = [0u8; 512];
        cache.read(0, &mut boot).map_err(device_errno)?;
        let layout = Layout::parse(&boot, cache.size_bytes()).map_err(|_| Errno::Inval)?;
        cache.set_guard(layout.guard());
        let cache = Arc::new(Mutex::new(cache));
        let clock = Clock::default();
        let fs = mount_fs(&cache, &clock)?;
        let mounted_dirty = fs.read_status_flags().map_err(errno)?.dirty();
        let this = FatFs {
            inner: Mutex::new(Inner {
                fs: Some(fs),
                nodes: Nodes::new(),
                extents: BTreeMap::new(),
            }),
            cache,
            clock,
            layout,
            mounted_dirty,
        };
        this.with(None, |ctx| {
            ctx.open_dir(ROOT)?;
            // What an earlier mount left of files removed while open. A read-only device
            // keeps them; that is no reason not to mount.
            let _ = ctx.clear_unlinked();
            Ok(())
        })?;
        Ok(this)
    }

    /// Writes an empty FAT file system on `device`.
    pub fn format(device: Arc<dyn BlockDevice>, options: &FormatOptions) -> Result<()> {
        let sector_size = device.sector_size();
        if !(512..=4096).contains(&sector_size) || !sector_size.is_power_of_two() {
            return Err(Errno::Inval);
        }
        let sectors = u32::try_from(device.sector_count()).map_err(|_| Errno::Fbig)?;
        let mut format = fatfs::FormatVolumeOptions::new()
            .bytes_per_sector(sector_size as u16)
            .total_sectors(sectors);
        if let Some(fat_type) = options.fat_type {
            format = format.fat_type(fat_type);
        }
        if let Some(bytes) = options.bytes_per_cluster {
            if !bytes.is_power_of_two() || bytes < sector_size || bytes > 64 * 1024 {
                return Err(Errno::Inval);
            }
            format = format.bytes_per_cluster(bytes);
        }
        if let Some(label) = &options.label {
            if label.len() > 11 || !label.bytes().all(|b| b.is_ascii_graphic() || b == b' ') {
                return Err(Errno::Inval);
            }
            let mut raw = [b' '; 11];
            for (dst, src) in raw.iter_mut().zip(label.bytes()) {
                *dst = src.to_ascii_uppercase();
            }
            format = format.volume_label(raw);
        }
        let cache = Arc::new(Mutex::new(SectorCache::new(device, 1 << 20)));
        let mut stream = DiskStream::new(cache.clone());
        fatfs::format_volume(&mut stream, format).map_err(errno)?;
        cache.lock().flush().map_err(device_errno)
    }

    /// FAT12, FAT16 or FAT32.
    pub fn fat_type(&self) -> FatType {
        self.layout.fat_type
    }

    /// Bytes per cluster.
    pub fn cluster_size(&self) -> u32 {
        self.layout.cluster_size
    }

    /// Whether the volume was marked dirty (not cleanly unmounted) when it was mounted: it may
    /// hold lost clusters; `fsck.fat` repairs them.
    pub fn was_dirty(&self) -> bool {
        self.mounted_dirty
    }

    /// The volume label from the boot sector (may be empty).
    pub fn label(&self) -> String {
        match &self.inner.lock().fs {
            Some(fs) => String::from(fs.volume_label().trim_end()),
            None => String::new(),
        }
    }

    /// What the cache has sent to the device so far.
    pub fn cache_stats(&self) -> CacheStats {
        self.cache.lock().stats()
    }

    /// Forgets every clean cached sector (dirty ones stay): later reads go to the device.
    pub fn drop_cache(&self) {
        self.cache.lock().drop_clean();
    }

    /// Syncs and retires the file system: the volume is left clean, and every later call
    /// fails with [`Errno::Nodev`]. A second unmount does nothing.
    pub fn unmount(&self) -> Result<()> {
        self.sync_inner(false)
    }

    /// Unmounts fatfs (FSInfo and dirty flag), writes the cache back and flushes the device;
    /// then mounts again if `remount` (if that fails, the device has failed, and later calls
    /// fail with [`Errno::Nodev`]).
    fn sync_inner(&self, remount: bool) -> Result<()> {
        let mut inner = self.inner.lock();
        let Some(fs) = inner.fs.take() else {
            return if remount { Err(Errno::Nodev) } else { Ok(()) };
        };
        let unmounted = fs.unmount().map_err(errno);
        let flushed = self.cache.lock().flush().map_err(device_errno);
        if remount {
            inner.fs = Some(mount_fs(&self.cache, &self.clock)?);
        }
        unmounted.and(flushed)
    }

    /// Runs `f` under the lock, with the clock at `now` (for the times fatfs stamps).
    fn with<R>(&self, now: Option<u64>, f: impl FnOnce(&mut Ctx) -> Result<R>) -> Result<R> {
        let mut inner = self.inner.lock();
        let Inner { fs, nodes, extents } = &mut *inner;
        let fs = fs.as_ref().ok_or(Errno::Nodev)?;
        if let Some(now) = now {
            self.clock.set(now);
        }
        let mut ctx = Ctx {
            fs,
            nodes,
            extents,
            layout: &self.layout,
            cache: &self.cache,
            clock: &self.clock,
        };
        f(&mut ctx)
    }
}

/// One operation's view: fatfs, the inode table, and the cache, all under the lock.
struct Ctx<'a> {
    fs: &'a Fs,
    nodes: &'a mut Nodes,
    extents: &'a mut BTreeMap<Inode, Arc<Vec<Run>>>,
    layout: &'a Layout,
    cache: &'a Arc<Mutex<SectorCache>>,
    clock: &'a Clock,
}

impl<'a> Ctx<'a> {
    fn node(&self, ino: Inode) -> Result<&Node> {
        self.nodes.get(ino)
    }

    /// `ino` if it is a directory that can hold entries.
    fn live_dir(&self, ino: Inode) -> Result<&Node> {
        let node = self.node(ino)?;
        if node.kind != FileType::Directory {
            return Err(Errno::Notdir);
        }
        if node.state != State::Linked {
            return Err(Errno::Noent);
        }
        Ok(node)
    }

    /// Opens directory `ino` by walking from the root, checking each directory on the way
    /// the first time it is seen.
    fn open_dir(&mut self, ino: Inode) -> Result<Dir<'a>> {
        self.live_dir(ino)?;
        let mut chain = Vec::new();
        let mut at = ino;
        while at != ROOT {
            let node = self.node(at)?;
            chain.push((at, node.name.clone()));
            at = node.parent;
            if chain.len() > 4096 {
                return Err(Errno::Io);
            }
        }
        let mut dir = self.fs.root_dir();
        self.check_dir(ROOT, &dir)?;
        for (at, name) in chain.iter().rev() {
            dir = dir.open_dir(name).map_err(|e| match e {
                fatfs::Error::InvalidInput => Errno::Notdir,
                other => errno(other),
            })?;
            self.check_dir(*at, &dir)?;
        }
        Ok(dir)
    }

    /// Checks the raw entries of directory `ino` once: every entry's first cluster must be on
    /// the volume (fatfs would compute an offset from it), and the directory must end within
    /// FAT's size limit (a looping chain never would).
    fn check_dir(&mut self, ino: Inode, dir: &Dir<'a>) -> Result<()> {
        if self.node(ino)?.checked {
            return Ok(());
        }
        let mut raw = vec![0u8; self.layout.cluster_size.max(512) as usize];
        let mut seen = 0usize;
        let mut file = dir.as_file().cloned();
        let mut region = self.layout.root_region.filter(|_| file.is_none());
        loop {
            let got = match (&mut file, &mut region) {
                (Some(file), _) => {
                    let mut got = 0;
                    while got < raw.len() {
                        match file.read(&mut raw[got..]).map_err(errno)? {
                            0 => break,
                            n => got += n,
                        }
                    }
                    got
                }
                (None, Some((start, left))) => {
                    let n = (*left).min(raw.len() as u64) as usize;
                    self.cache
                        .lock()
                        .read(*start, &mut raw[..n])
                        .map_err(device_errno)?;
                    *start += n as u64;
                    *left -= n as u64;
                    n
                }
                (None, None) => return Err(Errno::Io),
            };
            for record in raw[..got - got % 32].chunks_exact(32) {
                match self.check_record(record) {
                    Some(true) => {}
                    Some(false) => return Err(Errno::Io),
                    None => {
                        self.nodes.get_mut(ino)?.checked = true;
                        return Ok(());
                    }
                }
            }
            seen += got / 32;
            if got < raw.len() {
                // The chain (or the FAT12/16 root) ended without an end marker: allowed.
                self.nodes.get_mut(ino)?.checked = true;
                return Ok(());
            }
            if seen >= MAX_DIR_SLOTS {
                return Err(Errno::Io);
            }
        }
    }

    /// `None` at the end marker, else whether the record is sound.
    fn check_record(&self, r: &[u8]) -> Option<bool> {
        let attributes = r[11];
        if r[0] == 0 {
            return None;
        }
        if r[0] == 0xE5 || attributes & 0x3F == 0x0F || attributes & 0x08 != 0 {
            return Some(true);
        }
        if &r[..11] == b".          " || &r[..11] == b"..         " {
            return Some(true);
        }
        let high = if self.layout.fat_type == FatType::Fat32 {
            u32::from(u16::from_le_bytes([r[20], r[21]])) << 16
        } else {
            0
        };
        let cluster = high | u32::from(u16::from_le_bytes([r[26], r[27]]));
        Some(if attributes & 0x10 != 0 {
            self.layout.valid_cluster(cluster)
        } else {
            cluster == 0 || self.layout.valid_cluster(cluster)
        })
    }

    /// The entries of `dir` (number `ino`) but `.` and `..` (and the hidden directory in the
    /// root, unless `all`).
    fn entries(&self, ino: Inode, dir: &Dir<'a>, all: bool) -> Result<Vec<Entry<'a>>> {
        let mut out = Vec::new();
        for (count, entry) in dir.iter().enumerate() {
            if count >= MAX_DIR_SLOTS {
                return Err(Errno::Io);
            }
            let entry = entry.map_err(errno)?;
            if is_dot(&entry) || (!all && is_unlinked_dir(ino, &entry.file_name())) {
                continue;
            }
            out.push(entry);
        }
        Ok(out)
    }

    /// The entry of `dir` (number `ino`) called `name` (ignoring case), as the VFS sees it.
    fn find(&self, ino: Inode, dir: &Dir<'a>, name: &str) -> Result<Option<Entry<'a>>> {
        if is_unlinked_dir(ino, name) {
            return Ok(None);
        }
        self.find_any(dir, name)
    }

    fn find_any(&self, dir: &Dir<'a>, name: &str) -> Result<Option<Entry<'a>>> {
        for (count, entry) in dir.iter().enumerate() {
            if count >= MAX_DIR_SLOTS {
                return Err(Errno::Io);
            }
            let entry = entry.map_err(errno)?;
            if !is_dot(&entry) && entry.eq_name(name) {
                return Ok(Some(entry));
            }
        }
        Ok(None)
    }

    /// The directory entry of `ino` (not the root).
    fn entry_of(&mut self, ino: Inode) -> Result<Entry<'a>> {
        let node = self.node(ino)?;
        let (parent, name) = (node.parent, node.name.clone());
        let dir = self.open_dir(parent)?;
        self.find_any(&dir, &name)?.ok_or(Errno::Noent)
    }

    /// Opens file `ino`.
    fn open_file(&mut self, ino: Inode) -> Result<File<'a>> {
        let node = self.node(ino)?;
        if node.kind != FileType::RegularFile {
            return Err(Errno::Isdir);
        }
        if matches!(node.state, State::Gone(_)) {
            return Err(Errno::Noent);
        }
        let entry = self.entry_of(ino)?;
        if entry.is_dir() {
            return Err(Errno::Isdir);
        }
        Ok(entry.to_file())
    }

    /// The hidden directory of open unlinked files, made if `create`.
    fn unlinked_dir(&mut self, create: bool) -> Result<Option<(Inode, Dir<'a>)>> {
        let root = self.open_dir(ROOT)?;
        let dir = match self.find_any(&root, UNLINKED_DIR)? {
            Some(entry) if entry.is_dir() => entry.to_dir(),
            Some(_) => return Err(Errno::Io),
            None if create => root.create_dir(UNLINKED_DIR).map_err(errno)?,
            None => return Ok(None),
        };
        let ino = self.nodes.intern(ROOT, UNLINKED_DIR, FileType::Directory);
        self.check_dir(ino, &dir)?;
        Ok(Some((ino, dir)))
    }

    /// Deletes the files in the hidden directory that no handle holds, and the directory
    /// itself once empty.
    fn clear_unlinked(&mut self) -> Result<()> {
        let Some((dir_ino, dir)) = self.unlinked_dir(false)? else {
            return Ok(());
        };
        let mut busy = false;
        for entry in self.entries(dir_ino, &dir, true)? {
            let name = entry.file_name();
            match self.nodes.find(dir_ino, &name) {
                Some(ino) if self.node(ino)?.retained > 0 => busy = true,
                // Only files are ever put there; anything else is left alone.
                _ if entry.is_dir() => busy = true,
                held => {
                    dir.remove(&name).map_err(errno)?;
                    if let Some(ino) = held {
                        self.nodes.forget(ino);
                    }
                }
            }
        }
        if !busy {
            self.open_dir(ROOT)?.remove(UNLINKED_DIR).map_err(errno)?;
            self.nodes.forget(dir_ino);
        }
        Ok(())
    }

    /// Removes `entry` of `dir`, whose inode is `ino` if it has one (a directory must be
    /// empty). An open file moves to the hidden directory instead.
    fn unlink(&mut self, dir: &Dir<'a>, entry: &Entry<'a>, ino: Option<Inode>) -> Result<()> {
        let name = entry.file_name();
        let held = match ino {
            Some(ino) => self.node(ino)?.retained > 0,
            None => false,
        };
        if let Some(ino) = ino {
            self.extents.remove(&ino);
        }
        if held && entry.is_file() {
            let ino = ino.ok_or(Errno::Io)?;
            let hidden_name = ino.to_string();
            let kept = self.unlinked_dir(true).and_then(|hidden| {
                let (hidden_ino, hidden) = hidden.ok_or(Errno::Io)?;
                dir.rename(&name, &hidden, &hidden_name).map_err(errno)?;
                Ok(hidden_ino)
            });
            if let Ok(hidden_ino) = kept {
                self.nodes.unindex(ino);
                self.nodes.relink(ino, hidden_ino, &hidden_name);
                self.nodes.get_mut(ino)?.state = State::Unlinked;
                return Ok(());
            }
        }
        let last = if held {
            ino.map(|ino| self.stat_entry(ino, entry)).transpose()?
        } else {
            None
        };
        dir.remove(&name).map_err(errno)?;
        if let Some(ino) = ino {
            match last {
                Some(mut stat) => {
                    stat.nlink = 0;
                    stat.size = 0;
                    self.nodes.unindex(ino);
                    self.nodes.get_mut(ino)?.state = State::Gone(stat);
                }
                None => self.nodes.forget(ino),
            }
        }
        Ok(())
    }

    /// The attributes of `ino` from its directory entry.
    fn stat_entry(&mut self, ino: Inode, entry: &Entry<'a>) -> Result<FileStat> {
        let node = self.node(ino)?;
        let unlinked = node.state == State::Unlinked;
        let mtim = time::to_unix(entry.modified());
        let atim = time::date_to_unix(entry.accessed());
        let (filetype, nlink, size) = if entry.is_dir() {
            let (count, subdirs) = self.count(ino, &entry.to_dir())?;
            (FileType::Directory, 2 + subdirs, count)
        } else {
            (FileType::RegularFile, u64::from(!unlinked), entry.len())
        };
        Ok(FileStat {
            dev: 0,
            ino,
            filetype,
            nlink,
            size,
            atim,
            mtim,
            ctim: mtim,
        })
    }

    /// Entries and subdirectories of directory `ino`.
    fn count(&mut self, ino: Inode, dir: &Dir<'a>) -> Result<(u64, u64)> {
        self.check_dir(ino, dir)?;
        let entries = self.entries(ino, dir, false)?;
        let subdirs = entries.iter().filter(|e| e.is_dir()).count();
        Ok((entries.len() as u64, subdirs as u64))
    }

    /// The runs of `file` (inode `ino`), remembered until its chain changes.
    fn runs(&mut self, ino: Inode, file: &mut File<'a>) -> Result<Arc<Vec<Run>>> {
        if let Some(runs) = self.extents.get(&ino) {
            return Ok(runs.clone());
        }
        let size = u64::from(file.size().unwrap_or(0));
        let mut runs: Vec<Run> = Vec::new();
        let mut covered = 0u64;
        for extent in file.extents() {
            if covered >= size {
                break;
            }
            let extent = extent.map_err(errno)?;
            let len = u64::from(extent.size).min(size - covered);
            match runs.last_mut() {
                Some(last) if last.disk_offset + last.len == extent.offset => last.len += len,
                _ => runs.push(Run {
                    file_offset: covered,
                    disk_offset: extent.offset,
                    len,
                }),
            }
            covered += len;
        }
        if self.extents.len() >= EXTENT_CACHE_FILES
            && let Some(&oldest) = self.extents.keys().next()
        {
            self.extents.remove(&oldest);
        }
        let runs = Arc::new(runs);
        self.extents.insert(ino, runs.clone());
        Ok(runs)
    }

    /// Reads or writes file bytes `offset .. offset + buf.len()` (within its size) directly
    /// through the cache, run by run. Returns how many bytes were transferred (fewer if the
    /// chain is shorter than the size says).
    fn transfer(&mut self, runs: &[Run], offset: u64, mut buf: Buf) -> Result<usize> {
        let end = offset + buf.len() as u64;
        let mut done = 0usize;
        let mut cache = self.cache.lock();
        for run in runs {
            let run_end = run.file_offset + run.len;
            if run_end <= offset + done as u64 {
                continue;
            }
            let at = offset + done as u64;
            if run.file_offset > at || at >= end {
                break;
            }
            let n = (run_end.min(end) - at) as usize;
            let disk = run.disk_offset + (at - run.file_offset);
            match &mut buf {
                Buf::Read(b) => cache.read(disk, &mut b[done..done + n]),
                Buf::Write(b) => cache.write(disk, &b[done..done + n]),
            }
            .map_err(device_errno)?;
            done += n;
        }
        Ok(done)
    }

    fn write_at(&mut self, ino: Inode, offset: u64, data: &[u8]) -> Result<usize> {
        let mut file = self.open_file(ino)?;
        if data.is_empty() {
            return Ok(0);
        }
        if offset >= MAX_FILE_SIZE {
            return Err(Errno::Fbig);
        }
        let data = &data[..data.len().min((MAX_FILE_SIZE - offset) as usize)];
        let size = u64::from(file.size().unwrap_or(0));
        let end = offset + data.len() as u64;
        // Overwrite what exists in place.
        let mut done = 0;
        if offset < size {
            let runs = self.runs(ino, &mut file)?;
            let n = (end.min(size) - offset) as usize;
            done = self.transfer(&runs, offset, Buf::Write(&data[..n]))?;
            if done < n {
                return if done > 0 { Ok(done) } else { Err(Errno::Io) };
            }
            #[allow(deprecated)]
            file.set_modified(self.fs_now());
        }
        if end <= size {
            return Ok(done);
        }
        // Extend through fatfs, which allocates clusters: zeros up to `offset`, then data.
        self.extents.remove(&ino);
        file.seek(SeekFrom::End(0)).map_err(errno)?;
        if offset > size
            && let Err(e) = write_zeros(&mut file, offset - size)
        {
            let _ = shrink(&mut file, size);
            return Err(e);
        }
        let tail = &data[done..];
        let mut written = 0;
        while written < tail.len() {
            match file.write(&tail[written..]) {
                Ok(0) => break,
                Ok(n) => written += n,
                Err(e) if written == 0 && done == 0 => {
                    let _ = shrink(&mut file, size);
                    return Err(errno(e));
                }
                Err(_) => break,
            }
        }
        if done + written == 0 {
            return Err(Errno::Nospc);
        }
        Ok(done + written)
    }

    fn fs_now(&self) -> fatfs::DateTime {
        fatfs::TimeProvider::get_current_date_time(self.clock)
    }
}

/// What [`Ctx::transfer`] moves.
enum Buf<'b> {
    Read(&'b mut [u8]),
    Write(&'b [u8]),
}

impl Buf<'_> {
    fn len(&self) -> usize {
        match self {
            Buf::Read(b) => b.len(),
            Buf::Write(b) => b.len(),
        }
    }
}

/// Appends `count` zeros at the file's position.
fn write_zeros(file: &mut File, mut count: u64) -> Result<()> {
    let zeros = [0u8; 4096];
    while count > 0 {
        let n = count.min(zeros.len() as u64) as usize;
        let written = file.write(&zeros[..n]).map_err(errno)?;
        if written == 0 {
            return Err(Errno::Nospc);
        }
        count -= written as u64;
    }
    Ok(())
}

/// Truncates the file to `size` bytes.
fn shrink(file: &mut File, size: u64) -> Result<()> {
    file.seek(SeekFrom::Start(size)).map_err(errno)?;
    file.truncate().map_err(errno)
}

impl<'a> Ctx<'a> {
    /// Creates file or directory `name` in `dir`.
    fn create_entry(&self, dir: &Dir<'a>, name: &str, kind: FileType) -> Result<()> {
        let (written, first_unit) = self.safe_name(dir, name)?;
        match kind {
            FileType::RegularFile => drop(dir.create_file(&written).map_err(errno)?),
            FileType::Directory => drop(dir.create_dir(&written).map_err(errno)?),
        }
        match first_unit {
            Some(unit) => self.patch_first_unit(dir, &written, unit),
            None => Ok(()),
        }
    }

    /// Moves entry `from` of `src` to `to` in `dst`.
    fn rename_entry(&self, src: &Dir<'a>, from: &str, dst: &Dir<'a>, to: &str) -> Result<()> {
        let (written, first_unit) = self.safe_name(dst, to)?;
        src.rename(from, dst, &written).map_err(errno)?;
        match first_unit {
            Some(unit) => self.patch_first_unit(dst, &written, unit),
            None => Ok(()),
        }
    }

    /// The name to hand fatfs for `name`, and the UTF-16 unit to put back first afterwards.
    ///
    /// fatfs (0.4.1-preview.2) slices a new name at byte 1 to make its 8.3 alias, which
    /// panics when the first character is not ASCII. Such a name is written as a placeholder
    /// whose first character is ASCII (the same length in UTF-16, unused in `dir`), and
    /// [`Ctx::patch_first_unit`] then puts the real first character into the long name.
    fn safe_name(&self, dir: &Dir<'a>, name: &str) -> Result<(String, Option<u16>)> {
        let Some(first) = name.chars().next().filter(|c| !c.is_ascii()) else {
            return Ok((name.to_string(), None));
        };
        let mut units = [0u16; 2];
        let &[unit] = &*first.encode_utf16(&mut units) else {
            return Err(Errno::Inval); // beyond U+FFFF: fatfs does not store it
        };
        let rest = &name[first.len_utf8()..];
        // A space first makes fatfs's 8.3 alias "lossy", so it gets a `~1` tail (as the real
        // name would) instead of shadowing a plausible name like `_rest`.
        for stand_in in [' ', '_', '~', '$', '!', '#', '%', '&', '-', '@', '^'] {
            let placeholder = alloc::format!("{stand_in}{rest}");
            if self.find_any_in(dir, &placeholder)?.is_none() {
                return Ok((placeholder, Some(unit)));
            }
        }
        Err(Errno::Io)
    }

    /// Replaces the first UTF-16 unit of the long name of entry `placeholder` in `dir`.
    fn patch_first_unit(&self, dir: &Dir<'a>, placeholder: &str, unit: u16) -> Result<()> {
        let wanted: Vec<u16> = placeholder.encode_utf16().collect();
        let mut raw = RawDir::new(dir, self.layout, self.cache)?;
        // The long-name records seen since the last short-name record, in disk order.
        let mut run: Vec<(u64, [u8; 32])> = Vec::new();
        for index in 0..MAX_DIR_SLOTS as u64 {
            let Some(record) = raw.read(index * 32)? else {
                break;
            };
            if record[0] == 0 {
                break;
            }
            if record[0] == 0xE5 {
                run.clear();
                continue;
            }
            if record[11] & 0x3F == 0x0F {
                run.push((index, record));
                continue;
            }
            // A short-name record: does the long name before it spell the placeholder?
            let mut name: Vec<u16> = Vec::new();
            for (_, lfn) in run.iter().rev() {
                for at in [1, 3, 5, 7, 9, 14, 16, 18, 20, 22, 24, 28, 30] {
                    name.push(u16::from_le_bytes([lfn[at], lfn[at + 1]]));
                }
            }
            if let Some(end) = name.iter().position(|&u| u == 0) {
                name.truncate(end);
            }
            if name == wanted {
                // The last long-name record (sequence number 1) holds the first characters.
                let (first_record, _) = run[run.len() - 1];
                return raw.write(first_record * 32 + 1, &unit.to_le_bytes());
            }
            run.clear();
        }
        Err(Errno::Io)
    }

    /// Points the `..` entry of directory `name` (just moved into `to_dir`) at its new parent,
    /// which fatfs's rename leaves alone.
    fn fix_dotdot(&mut self, to_dir: Inode, dst: &Dir, name: &str) -> Result<()> {
        let parent_cluster = if to_dir == ROOT {
            0 // how FAT names the root in `..`
        } else {
            let mut stream = dst.as_file().ok_or(Errno::Io)?.clone();
            let mut dot = [0u8; 32];
            stream.read_exact(&mut dot).map_err(errno)?;
            if &dot[..11] != b".          " {
                return Err(Errno::Io);
            }
            cluster_of(&dot, self.layout.fat_type)
        };
        let moved = dst.open_dir(name).map_err(errno)?;
        let mut stream = moved.as_file().ok_or(Errno::Io)?.clone();
        let mut dotdot = [0u8; 32];
        stream.seek(SeekFrom::Start(32)).map_err(errno)?;
        stream.read_exact(&mut dotdot).map_err(errno)?;
        if &dotdot[..11] != b"..         " {
            return Err(Errno::Io);
        }
        dotdot[20..22].copy_from_slice(&((parent_cluster >> 16) as u16).to_le_bytes());
        dotdot[26..28].copy_from_slice(&(parent_cluster as u16).to_le_bytes());
        stream.seek(SeekFrom::Start(32)).map_err(errno)?;
        stream.write_all(&dotdot).map_err(errno)?;
        stream.flush().map_err(errno)
    }

    /// A name not used in `dir`, for a rename that only changes case.
    fn spare_name(&self, dir: &Dir<'_>, ino: Inode) -> Result<String> {
        for attempt in 0..1000u32 {
            let name = alloc::format!(".keel-rename-{ino}-{attempt}");
            if self.find_any_in(dir, &name)?.is_none() {
                return Ok(name);
            }
        }
        Err(Errno::Io)
    }

    fn find_any_in(&self, dir: &Dir<'_>, name: &str) -> Result<Option<()>> {
        for (count, entry) in dir.iter().enumerate() {
            if count >= MAX_DIR_SLOTS {
                return Err(Errno::Io);
            }
            if entry.map_err(errno)?.eq_name(name) {
                return Ok(Some(()));
            }
        }
        Ok(None)
    }
}

/// A directory's raw 32-byte records: its cluster chain, or a FAT12/16 root's fixed region.
enum RawDir<'a, 'c> {
    Chain(File<'a>),
    Region {
        cache: &'c Mutex<SectorCache>,
        start: u64,
        len: u64,
    },
}

impl<'a, 'c> RawDir<'a, 'c> {
    fn new(dir: &Dir<'a>, layout: &Layout, cache: &'c Mutex<SectorCache>) -> Result<Self> {
        match (dir.as_file(), layout.root_region) {
            (Some(file), _) => Ok(RawDir::Chain(file.clone())),
            (None, Some((start, len))) => Ok(RawDir::Region { cache, start, len }),
            (None, None) => Err(Errno::Io),
        }
    }

    /// The record at byte `at`, or `None` past the end.
    fn read(&mut self, at: u64) -> Result<Option<[u8; 32]>> {
        let mut record = [0u8; 32];
        match self {
            RawDir::Chain(file) => {
                file.seek(SeekFrom::Start(at)).map_err(errno)?;
                match file.read_exact(&mut record) {
                    Ok(()) => Ok(Some(record)),
                    Err(fatfs::Error::UnexpectedEof) => Ok(None),
                    Err(e) => Err(errno(e)),
                }
            }
            RawDir::Region { cache, start, len } => {
                if at + 32 > *len {
                    return Ok(None);
                }
                cache
                    .lock()
                    .read(*start + at, &mut record)
                    .map_err(device_errno)?;
                Ok(Some(record))
            }
        }
    }

    fn write(&mut self, at: u64, bytes: &[u8]) -> Result<()> {
        match self {
            RawDir::Chain(file) => {
                file.seek(SeekFrom::Start(at)).map_err(errno)?;
                file.write_all(bytes).map_err(errno)?;
                file.flush().map_err(errno)
            }
            RawDir::Region { cache, start, .. } => {
                cache.lock().write(*start + at, bytes).map_err(device_errno)
            }
        }
    }
}

/// The first cluster in a raw directory record.
fn cluster_of(record: &[u8], fat_type: FatType) -> u32 {
    let high = if fat_type == FatType::Fat32 {
        u32::from(u16::from_le_bytes([record[20], record[21]])) << 16
    } else {
        0
    };
    high | u32::from(u16::from_le_bytes([record[26], record[27]]))
}

/// Sets the times of a file or directory stream's entry and writes it.
#[allow(deprecated)] // The setters are deprecated for being overwritten by writes; not here.
fn set_entry_times(file: &mut File, atim: Option<u64>, mtim: Option<u64>) -> Result<()> {
    if let Some(atim) = atim {
        file.set_accessed(time::to_fat(atim).date);
    }
    if let Some(mtim) = mtim {
        file.set_modified(time::to_fat(mtim));
    }
    file.flush().map_err(errno)
}

impl FileSystem for FatFs {
    fn root(&self) -> Inode {
        ROOT
    }

    fn lookup(&self, dir: Inode, name: &str) -> Result<(Inode, FileType)> {
        self.with(None, |ctx| {
            let d = ctx.open_dir(dir)?;
            let entry = ctx.find(dir, &d, name)?.ok_or(Errno::Noent)?;
            let kind = kind_of(&entry);
            Ok((ctx.nodes.intern(dir, &entry.file_name(), kind), kind))
        })
    }

    fn parent(&self, dir: Inode) -> Result<Inode> {
        self.with(None, |ctx| {
            let node = ctx.node(dir)?;
            if node.kind != FileType::Directory {
                return Err(Errno::Notdir);
            }
            Ok(node.parent)
        })
    }

    fn create(&self, dir: Inode, name: &str, kind: FileType, now: u64) -> Result<Inode> {
        self.with(Some(now), |ctx| {
            let d = ctx.open_dir(dir)?;
            if is_unlinked_dir(dir, name) {
                return Err(Errno::Acces);
            }
            if ctx.find(dir, &d, name)?.is_some() {
                return Err(Errno::Exist);
            }
            ctx.create_entry(&d, name, kind)?;
            Ok(ctx.nodes.intern(dir, name, kind))
        })
    }

    fn remove(&self, dir: Inode, name: &str, kind: FileType, now: u64) -> Result<()> {
        self.with(Some(now), |ctx| {
            let d = ctx.open_dir(dir)?;
            let entry = ctx.find(dir, &d, name)?.ok_or(Errno::Noent)?;
            match (kind, entry.is_dir()) {
                (FileType::Directory, false) => return Err(Errno::Notdir),
                (FileType::RegularFile, true) => return Err(Errno::Isdir),
                _ => {}
            }
            let ino = ctx.nodes.intern(dir, &entry.file_name(), kind_of(&entry));
            if entry.is_dir() && ctx.count(ino, &entry.to_dir())?.0 > 0 {
                return Err(Errno::Notempty);
            }
            ctx.unlink(&d, &entry, Some(ino))
        })
    }

    fn rename(
        &self,
        from_dir: Inode,
        from_name: &str,
        to_dir: Inode,
        to_name: &str,
        now: u64,
    ) -> Result<()> {
        self.with(Some(now), |ctx| {
            let src_dir = ctx.open_dir(from_dir)?;
            let src = ctx
                .find(from_dir, &src_dir, from_name)?
                .ok_or(Errno::Noent)?;
            let src_kind = kind_of(&src);
            let src_name = src.file_name();
            let src_ino = ctx.nodes.intern(from_dir, &src_name, src_kind);
            let dst_dir = ctx.open_dir(to_dir)?;
            if is_unlinked_dir(to_dir, to_name) {
                return Err(Errno::Acces);
            }
            let target = ctx.find(to_dir, &dst_dir, to_name)?;
            let target_ino = target
                .as_ref()
                .map(|t| ctx.nodes.intern(to_dir, &t.file_name(), kind_of(t)));
            if target_ino == Some(src_ino) {
                // The same entry: nothing to do, unless only the case changes.
                if src_name != to_name {
                    let spare = ctx.spare_name(&src_dir, src_ino)?;
                    src_dir.rename(&src_name, &src_dir, &spare).map_err(errno)?;
                    ctx.rename_entry(&src_dir, &spare, &src_dir, to_name)?;
                    ctx.nodes.relink(src_ino, to_dir, to_name);
                }
                return Ok(());
            }
            if src_kind == FileType::Directory && ctx.nodes.is_ancestor(src_ino, to_dir) {
                return Err(Errno::Inval);
            }
            if let (Some(target), Some(target_ino)) = (&target, target_ino) {
                match (src_kind, target.is_dir()) {
                    (FileType::RegularFile, true) => return Err(Errno::Isdir),
                    (FileType::Directory, false) => return Err(Errno::Notdir),
                    (FileType::Directory, true) => {
                        if ctx.count(target_ino, &target.to_dir())?.0 > 0 {
                            return Err(Errno::Notempty);
                        }
                    }
                    (FileType::RegularFile, false) => {}
                }
                ctx.unlink(&dst_dir, target, Some(target_ino))?;
            }
            ctx.rename_entry(&src_dir, &src_name, &dst_dir, to_name)?;
            if src_kind == FileType::Directory && from_dir != to_dir {
                ctx.fix_dotdot(to_dir, &dst_dir, to_name)?;
            }
            ctx.nodes.relink(src_ino, to_dir, to_name);
            Ok(())
        })
    }

    fn retain(&self, ino: Inode) -> Result<()> {
        self.with(None, |ctx| {
            let node = ctx.nodes.get_mut(ino)?;
            node.retained = node.retained.checked_add(1).ok_or(Errno::Nfile)?;
            Ok(())
        })
    }

    fn release(&self, ino: Inode) {
        // Nothing can report an error here: a file that cannot be deleted now stays in the
        // hidden directory until the next mount clears it.
        let _ = self.with(None, |ctx| {
            let node = ctx.nodes.get_mut(ino)?;
            node.retained = node.retained.saturating_sub(1);
            if node.retained > 0 {
                return Ok(());
            }
            match node.state {
                State::Linked => Ok(()),
                State::Gone(_) => {
                    ctx.nodes.forget(ino);
                    Ok(())
                }
                State::Unlinked => {
                    ctx.extents.remove(&ino);
                    ctx.clear_unlinked()
                }
            }
        });
    }

    fn read_at(&self, ino: Inode, offset: u64, buf: &mut [u8], _now: u64) -> Result<usize> {
        self.with(None, |ctx| {
            let mut file = ctx.open_file(ino)?;
            let size = u64::from(file.size().unwrap_or(0));
            if offset >= size || buf.is_empty() {
                return Ok(0);
            }
            let n = (buf.len() as u64).min(size - offset) as usize;
            let runs = ctx.runs(ino, &mut file)?;
            match ctx.transfer(&runs, offset, Buf::Read(&mut buf[..n]))? {
                0 => Err(Errno::Io), // the chain is shorter than the size says
                done => Ok(done),
            }
        })
    }

    fn write_at(&self, ino: Inode, offset: u64, data: &[u8], now: u64) -> Result<usize> {
        self.with(Some(now), |ctx| ctx.write_at(ino, offset, data))
    }

    fn append(&self, ino: Inode, data: &[u8], now: u64) -> Result<(usize, u64)> {
        self.with(Some(now), |ctx| {
            let end = u64::from(ctx.open_file(ino)?.size().unwrap_or(0));
            if data.is_empty() {
                return Ok((0, end));
            }
            let written = ctx.write_at(ino, end, data)?;
            Ok((written, end + written as u64))
        })
    }

    fn set_size(&self, ino: Inode, size: u64, now: u64) -> Result<()> {
        self.with(Some(now), |ctx| {
            let mut file = ctx.open_file(ino)?;
            if size > MAX_FILE_SIZE {
                return Err(Errno::Fbig);
            }
            let current = u64::from(file.size().unwrap_or(0));
            ctx.extents.remove(&ino);
            if size < current {
                shrink(&mut file, size)?;
            } else if size > current {
                file.seek(SeekFrom::End(0)).map_err(errno)?;
                if let Err(e) = write_zeros(&mut file, size - current) {
                    let _ = shrink(&mut file, current);
                    return Err(e);
                }
            }
            #[allow(deprecated)]
            file.set_modified(ctx.fs_now());
            file.flush().map_err(errno)
        })
    }

    fn set_times(&self, ino: Inode, atim: Option<u64>, mtim: Option<u64>, now: u64) -> Result<()> {
        self.with(Some(now), |ctx| {
            let node = ctx.nodes.get_mut(ino)?;
            if let State::Gone(stat) = &mut node.state {
                stat.atim = atim.unwrap_or(stat.atim);
                stat.mtim = mtim.unwrap_or(stat.mtim);
                stat.ctim = now;
                return Ok(());
            }
            match node.kind {
                // The root has no entry, so no times.
                _ if ino == ROOT => Ok(()),
                FileType::RegularFile => set_entry_times(&mut ctx.open_file(ino)?, atim, mtim),
                FileType::Directory => {
                    let entry = ctx.entry_of(ino)?;
                    if !entry.is_dir() {
                        return Err(Errno::Io);
                    }
                    let dir = entry.to_dir();
                    let mut stream = dir.as_file().ok_or(Errno::Io)?.clone();
                    set_entry_times(&mut stream, atim, mtim)
                }
            }
        })
    }

    fn stat(&self, ino: Inode) -> Result<FileStat> {
        self.with(None, |ctx| {
            if let State::Gone(stat) = &ctx.node(ino)?.state {
                return Ok(*stat);
            }
            if ino == ROOT {
                let root = ctx.open_dir(ROOT)?;
                let (count, subdirs) = ctx.count(ROOT, &root)?;
                return Ok(FileStat {
                    dev: 0,
                    ino,
                    filetype: FileType::Directory,
                    nlink: 2 + subdirs,
                    size: count,
                    atim: 0,
                    mtim: 0,
                    ctim: 0,
                });
            }
            let entry = ctx.entry_of(ino)?;
            ctx.stat_entry(ino, &entry)
        })
    }

    fn read_dir(&self, dir: Inode, cookie: u64, max: usize) -> Result<Vec<DirEntry>> {
        self.with(None, |ctx| {
            let node = ctx.node(dir)?;
            if node.kind != FileType::Directory {
                return Err(Errno::Notdir);
            }
            if node.state != State::Linked {
                return Ok(Vec::new());
            }
            // Cookies are inode numbers: an entry keeps its number while it exists, so a
            // listing in number order returns each entry present throughout exactly once.
            let d = ctx.open_dir(dir)?;
            let mut listed: Vec<DirEntry> = Vec::new();
            for entry in ctx.entries(dir, &d, false)? {
                let name = entry.file_name();
                let filetype = kind_of(&entry);
                let ino = ctx.nodes.intern(dir, &name, filetype);
                if ino >= cookie {
                    listed.push(DirEntry {
                        next: ino + 1,
                        ino,
                        filetype,
                        name,
                    });
                }
            }
            listed.sort_by_key(|e| e.ino);
            listed.dedup_by_key(|e| e.ino);
            listed.truncate(max);
            Ok(listed)
        })
    }

    fn sync(&self) -> Result<()> {
        self.sync_inner(true)
    }

    fn usage(&self) -> Option<Usage> {
        let inner = self.inner.lock();
        let stats = inner.fs.as_ref()?.stats().ok()?;
        let cluster = u64::from(stats.cluster_size());
        Some(Usage {
            total_bytes: u64::from(stats.total_clusters()) * cluster,
            free_bytes: u64::from(stats.free_clusters()) * cluster,
            block_size: cluster,
        })
    }
}
