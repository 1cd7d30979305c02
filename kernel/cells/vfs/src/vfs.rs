//! The mount table, path resolution and open files.

use crate::{
    DirEntry, Errno, FdFlags, FileStat, FileSystem, FileType, Inode, MAX_NAME, MAX_PATH, OFlags,
    Result, Rights, Usage, Whence,
};
use alloc::string::{String, ToString};
use alloc::sync::Arc;
use alloc::vec;
use alloc::vec::Vec;
use core::fmt;
use spin::RwLock;

/// A mounted file system's number; the root file system is [`MountId::ROOT`]. It is also the
/// `dev` of the files on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MountId(u32);

impl MountId {
    pub const ROOT: MountId = MountId(0);

    pub const fn index(self) -> u64 {
        self.0 as u64
    }
}

/// An inode of a mounted file system.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Node {
    mount: MountId,
    ino: Inode,
}

/// A resolved path: its node and type.
#[derive(Clone, Copy, Debug)]
struct Loc {
    node: Node,
    kind: FileType,
}

struct Mount {
    /// Where it is mounted, as normalized components (empty for the root).
    path: Vec<String>,
    fs: Arc<dyn FileSystem>,
    /// The directory it is mounted on (`None` for the root and for a free slot).
    covers: Option<Node>,
    /// Every directory from the root to the mount point (on both sides of each mount): they
    /// cannot be removed or renamed while mounted on, so `path` stays true.
    pinned: Vec<Node>,
    /// One clone per [`OpenFile`] on this mount, so that unmounting can see them.
    handles: Arc<()>,
    /// False for the slot of an unmounted file system (kept so that [`MountId`]s stay indices;
    /// a later mount reuses it).
    live: bool,
}

impl Mount {
    /// What an unmounted file system's slot holds: nothing reaches it (no open files, not
    /// mounted anywhere), and its file system answers [`Errno::Nodev`] to everything.
    fn free_slot() -> Mount {
        Mount {
            path: Vec::new(),
            fs: Arc::new(Unmounted),
            covers: None,
            pinned: Vec::new(),
            handles: Arc::new(()),
            live: false,
        }
    }
}

/// The file system of a free mount slot.
struct Unmounted;

impl FileSystem for Unmounted {
    fn root(&self) -> Inode {
        1
    }
    fn lookup(&self, _: Inode, _: &str) -> Result<(Inode, FileType)> {
        Err(Errno::Nodev)
    }
    fn parent(&self, _: Inode) -> Result<Inode> {
        Err(Errno::Nodev)
    }
    fn create(&self, _: Inode, _: &str, _: FileType, _: u64) -> Result<Inode> {
        Err(Errno::Nodev)
    }
    fn remove(&self, _: Inode, _: &str, _: FileType, _: u64) -> Result<()> {
        Err(Errno::Nodev)
    }
    fn rename(&self, _: Inode, _: &str, _: Inode, _: &str, _: u64) -> Result<()> {
        Err(Errno::Nodev)
    }
    fn retain(&self, _: Inode) -> Result<()> {
        Err(Errno::Nodev)
    }
    fn release(&self, _: Inode) {}
    fn read_at(&self, _: Inode, _: u64, _: &mut [u8], _: u64) -> Result<usize> {
        Err(Errno::Nodev)
    }
    fn write_at(&self, _: Inode, _: u64, _: &[u8], _: u64) -> Result<usize> {
        Err(Errno::Nodev)
    }
    fn set_size(&self, _: Inode, _: u64, _: u64) -> Result<()> {
        Err(Errno::Nodev)
    }
    fn set_times(&self, _: Inode, _: Option<u64>, _: Option<u64>, _: u64) -> Result<()> {
        Err(Errno::Nodev)
    }
    fn stat(&self, _: Inode) -> Result<FileStat> {
        Err(Errno::Nodev)
    }
    fn read_dir(&self, _: Inode, _: u64, _: usize) -> Result<Vec<DirEntry>> {
        Err(Errno::Nodev)
    }
}

struct MountTable {
    mounts: Vec<Mount>,
}

impl MountTable {
    fn fs(&self, mount: MountId) -> &Arc<dyn FileSystem> {
        &self.mounts[mount.0 as usize].fs
    }

    fn root_of(&self, mount: MountId) -> Loc {
        Loc {
            node: Node {
                mount,
                ino: self.fs(mount).root(),
            },
            kind: FileType::Directory,
        }
    }

    fn is_pinned(&self, node: Node) -> bool {
        self.mounts.iter().any(|m| m.pinned.contains(&node))
    }

    /// The root of the file system mounted on `loc`, or `loc` itself.
    fn cross(&self, loc: Loc) -> Loc {
        match self.mounts.iter().position(|m| m.covers == Some(loc.node)) {
            Some(index) => self.root_of(MountId(index as u32)),
            None => loc,
        }
    }

    /// Entry `name` of directory `dir`, not crossing into a mount.
    fn lookup(&self, dir: Loc, name: &str) -> Result<Loc> {
        if dir.kind != FileType::Directory {
            return Err(Errno::Notdir);
        }
        let (ino, kind) = self.fs(dir.node.mount).lookup(dir.node.ino, name)?;
        Ok(Loc {
            node: Node {
                mount: dir.node.mount,
                ino,
            },
            kind,
        })
    }

    /// Follows `components` from `base`, which is as far up as `..` may go.
    fn walk(&self, base: Loc, components: &[&str]) -> Result<Loc> {
        let mut stack = vec![base];
        for &component in components {
            let top = stack[stack.len() - 1];
            match component {
                "." | ".." if top.kind != FileType::Directory => return Err(Errno::Notdir),
                "." => {}
                ".." if stack.len() == 1 => return Err(Errno::Notcapable),
                ".." => {
                    stack.pop();
                }
                name => {
                    let found = self.lookup(top, name)?;
                    stack.push(self.cross(found));
                }
            }
        }
        Ok(stack[stack.len() - 1])
    }
}

/// A path relative to a directory handle, split into components.
struct RelPath<'p> {
    components: Vec<&'p str>,
    /// It ended with `/`: it must name a directory.
    dir_only: bool,
}

fn check_length(path: &str) -> Result<()> {
    if path.len() > MAX_PATH {
        return Err(Errno::Nametoolong);
    }
    if path.contains('\0') {
        return Err(Errno::Inval);
    }
    Ok(())
}

fn split(path: &str) -> Result<Vec<&str>> {
    let components: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    if components.iter().any(|c| c.len() > MAX_NAME) {
        return Err(Errno::Nametoolong);
    }
    Ok(components)
}

fn parse(path: &str) -> Result<RelPath<'_>> {
    check_length(path)?;
    if path.is_empty() {
        return Err(Errno::Noent);
    }
    if path.starts_with('/') {
        return Err(Errno::Notcapable);
    }
    Ok(RelPath {
        components: split(path)?,
        dir_only: path.ends_with('/'),
    })
}

/// An absolute path's components with `.` and `..` applied (`/..` is `/`).
fn normalize_absolute(path: &str) -> Result<Vec<String>> {
    check_length(path)?;
    if !path.starts_with('/') {
        return Err(Errno::Inval);
    }
    let mut out: Vec<String> = Vec::new();
    for component in split(path)? {
        match component {
            "." => {}
            ".." => {
                out.pop();
            }
            name => out.push(name.to_string()),
        }
    }
    Ok(out)
}

/// What a path's last component names, for the calls that change a directory entry.
enum Entry<'p> {
    /// `name` in `parent`; `dir_only` if the path ended with `/`.
    Named {
        parent: Loc,
        name: &'p str,
        dir_only: bool,
    },
    /// The path ends with `.` or `..`; this is what it resolves to.
    Dots,
}

/// An open file or directory: the inode is kept alive until this is dropped.
pub struct OpenFile {
    fs: Arc<dyn FileSystem>,
    /// Its mount's [`Mount::handles`]: the mount cannot go while this exists.
    _mount_handle: Arc<()>,
    mount: MountId,
    ino: Inode,
    kind: FileType,
    offset: u64,
    fdflags: FdFlags,
    rights: Rights,
    preopen: Option<String>,
}

impl OpenFile {
    fn new(table: &MountTable, loc: Loc, fdflags: FdFlags, rights: Rights) -> Result<OpenFile> {
        let fs = table.fs(loc.node.mount).clone();
        fs.retain(loc.node.ino)?;
        Ok(OpenFile {
            fs,
            _mount_handle: table.mounts[loc.node.mount.0 as usize].handles.clone(),
            mount: loc.node.mount,
            ino: loc.node.ino,
            kind: loc.kind,
            offset: 0,
            fdflags,
            rights,
            preopen: None,
        })
    }

    pub fn file_type(&self) -> FileType {
        self.kind
    }
    pub fn mount(&self) -> MountId {
        self.mount
    }
    pub fn inode(&self) -> Inode {
        self.ino
    }
    /// The current offset (`fd_tell`).
    pub fn offset(&self) -> u64 {
        self.offset
    }
    pub fn rights(&self) -> Rights {
        self.rights
    }
    pub fn fdflags(&self) -> FdFlags {
        self.fdflags
    }
    /// `fd_fdstat_set_flags`.
    pub fn set_fdflags(&mut self, flags: FdFlags) {
        self.fdflags = flags;
    }
    /// The name under which this directory was preopened (`fd_prestat_dir_name`), if it was.
    pub fn preopen_name(&self) -> Option<&str> {
        self.preopen.as_deref()
    }

    fn loc(&self) -> Loc {
        Loc {
            node: Node {
                mount: self.mount,
                ino: self.ino,
            },
            kind: self.kind,
        }
    }

    /// This handle as a base for paths.
    fn dir(&self) -> Result<Loc> {
        if self.kind == FileType::Directory {
            Ok(self.loc())
        } else {
            Err(Errno::Notdir)
        }
    }
}

impl Drop for OpenFile {
    fn drop(&mut self) {
        self.fs.release(self.ino);
    }
}

impl fmt::Debug for OpenFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenFile")
            .field("mount", &self.mount)
            .field("ino", &self.ino)
            .field("kind", &self.kind)
            .field("offset", &self.offset)
            .field("fdflags", &self.fdflags)
            .field("rights", &self.rights)
            .field("preopen", &self.preopen)
            .finish()
    }
}

/// The virtual file system: a mount table and the file operations, all on handles.
pub struct Vfs {
    table: RwLock<MountTable>,
    clock: fn() -> u64,
}

impl Vfs {
    /// A VFS with `root` mounted at `/`; `clock` gives the time in nanoseconds for timestamps.
    pub fn new(root: Arc<dyn FileSystem>, clock: fn() -> u64) -> Vfs {
        let root_node = Node {
            mount: MountId::ROOT,
            ino: root.root(),
        };
        let mount = Mount {
            path: Vec::new(),
            fs: root,
            covers: None,
            pinned: vec![root_node],
            handles: Arc::new(()),
            live: true,
        };
        Vfs {
            table: RwLock::new(MountTable {
                mounts: vec![mount],
            }),
            clock,
        }
    }

    /// The clock's current time (for WASI's `*_now` time flags).
    pub fn now(&self) -> u64 {
        (self.clock)()
    }

    /// Mounts `fs` on the existing directory at absolute `path`, hiding what it holds.
    /// [`Errno::Busy`] for `/` or a directory already mounted on.
    pub fn mount(&self, path: &str, fs: Arc<dyn FileSystem>) -> Result<MountId> {
        let components = normalize_absolute(path)?;
        if components.is_empty() {
            return Err(Errno::Busy);
        }
        let mut table = self.table.write();
        let mut at = table.root_of(MountId::ROOT);
        let mut pinned = vec![at.node];
        let mut raw = at;
        for name in &components {
            raw = table.lookup(at, name)?;
            at = table.cross(raw);
            pinned.push(raw.node);
            pinned.push(at.node);
        }
        if raw.kind != FileType::Directory {
            return Err(Errno::Notdir);
        }
        if at.node != raw.node {
            return Err(Errno::Busy);
        }
        let mount = Mount {
            path: components,
            fs,
            covers: Some(raw.node),
            pinned,
            handles: Arc::new(()),
            live: true,
        };
        let id = match table.mounts.iter().position(|m| !m.live) {
            Some(free) => {
                table.mounts[free] = mount;
                MountId(free as u32)
            }
            None => {
                let id = MountId(u32::try_from(table.mounts.len()).map_err(|_| Errno::Nospc)?);
                table.mounts.push(mount);
                id
            }
        };
        Ok(id)
    }

    /// Unmounts the file system mounted at absolute `path`, after a [`FileSystem::sync`] (if
    /// that fails, it stays mounted and the error is returned). The directory it covered shows
    /// again. [`Errno::Busy`] for `/`, while a file or directory on it is open, or while
    /// another file system is mounted inside it; [`Errno::Inval`] if nothing is mounted there.
    /// Returns the file system (its last reference, unless the caller kept one).
    pub fn unmount(&self, path: &str) -> Result<Arc<dyn FileSystem>> {
        let components = normalize_absolute(path)?;
        if components.is_empty() {
            return Err(Errno::Busy);
        }
        // Written out before the mount table is locked: a sync waits for the disk, and every
        // path lookup in the system would spin on the lock meanwhile. What is written between
        // this sync and the detach below is the returned file system's to write (FatFs does
        // when it is unmounted or dropped).
        let fs = {
            let table = self.table.read();
            table
                .mounts
                .iter()
                .find(|m| m.live && m.path == components)
                .map(|m| m.fs.clone())
                .ok_or(Errno::Inval)?
        };
        fs.sync()?;
        let mut table = self.table.write();
        let index = table
            .mounts
            .iter()
            .position(|m| m.live && m.path == components)
            .ok_or(Errno::Inval)?;
        let id = MountId(index as u32);
        let mounted_inside = table
            .mounts
            .iter()
            .any(|m| m.live && m.covers.is_some_and(|node| node.mount == id));
        if mounted_inside || Arc::strong_count(&table.mounts[index].handles) > 1 {
            return Err(Errno::Busy);
        }
        let gone = core::mem::replace(&mut table.mounts[index], Mount::free_slot());
        Ok(gone.fs)
    }

    /// [`FileSystem::sync`] on every mounted file system. All are synced; the first error is
    /// returned.
    pub fn sync_all(&self) -> Result<()> {
        let file_systems: Vec<Arc<dyn FileSystem>> = self
            .table
            .read()
            .mounts
            .iter()
            .filter(|m| m.live)
            .map(|m| m.fs.clone())
            .collect();
        let mut result = Ok(());
        for fs in file_systems {
            if let Err(e) = fs.sync() {
                result = result.and(Err(e));
            }
        }
        result
    }

    /// The space of the file system of mount `mount`, if it knows ([`FileSystem::usage`]).
    pub fn usage(&self, mount: MountId) -> Option<Usage> {
        let fs = {
            let table = self.table.read();
            let m = table.mounts.get(mount.0 as usize).filter(|m| m.live)?;
            m.fs.clone()
        };
        fs.usage()
    }

    /// The mounts: absolute path and id, root first.
    pub fn mounts(&self) -> Vec<(String, MountId)> {
        let table = self.table.read();
        table
            .mounts
            .iter()
            .enumerate()
            .filter(|(_, m)| m.live)
            .map(|(index, m)| {
                let mut path = String::new();
                for name in &m.path {
                    path.push('/');
                    path.push_str(name);
                }
                if path.is_empty() {
                    path.push('/');
                }
                (path, MountId(index as u32))
            })
            .collect()
    }

    /// Opens the directory at absolute `path` (`..` stops at `/`) as a preopened capability,
    /// named by its normalized path. Resolution starts at the mount with the longest matching
    /// path prefix.
    pub fn preopen(&self, path: &str) -> Result<OpenFile> {
        let components = normalize_absolute(path)?;
        let table = self.table.read();
        let (index, depth) = table
            .mounts
            .iter()
            .enumerate()
            .filter(|(_, m)| {
                m.live
                    && m.path.len() <= components.len()
                    && m.path.iter().zip(&components).all(|(a, b)| a == b)
            })
            .map(|(index, m)| (index, m.path.len()))
            .max_by_key(|&(_, depth)| depth)
            .unwrap_or((0, 0));
        let rest: Vec<&str> = components[depth..].iter().map(String::as_str).collect();
        let loc = table.walk(table.root_of(MountId(index as u32)), &rest)?;
        if loc.kind != FileType::Directory {
            return Err(Errno::Notdir);
        }
        let mut file = OpenFile::new(&table, loc, FdFlags::NONE, Rights::READ)?;
        let mut name = String::new();
        for component in &components {
            name.push('/');
            name.push_str(component);
        }
        file.preopen = Some(if name.is_empty() {
            "/".to_string()
        } else {
            name
        });
        Ok(file)
    }

    fn resolve(&self, table: &MountTable, dir: &OpenFile, path: &str) -> Result<Loc> {
        let base = dir.dir()?;
        let path = parse(path)?;
        let loc = table.walk(base, &path.components)?;
        if path.dir_only && loc.kind != FileType::Directory {
            return Err(Errno::Notdir);
        }
        Ok(loc)
    }

    fn resolve_entry<'p>(
        &self,
        table: &MountTable,
        dir: &OpenFile,
        path: &'p str,
    ) -> Result<Entry<'p>> {
        let base = dir.dir()?;
        let parsed = parse(path)?;
        let (last, parents) = parsed.components.split_last().ok_or(Errno::Notcapable)?;
        match *last {
            "." | ".." => {
                table.walk(base, &parsed.components)?;
                Ok(Entry::Dots)
            }
            name => {
                let parent = table.walk(base, parents)?;
                if parent.kind != FileType::Directory {
                    return Err(Errno::Notdir);
                }
                Ok(Entry::Named {
                    parent,
                    name,
                    dir_only: parsed.dir_only,
                })
            }
        }
    }

    /// `path_open`: opens `path` relative to directory `dir`. With `CREAT` a missing file is
    /// created (`EXCL`: [`Errno::Exist`] if it exists); `DIRECTORY` demands a directory
    /// ([`Errno::Notdir`]); `TRUNC` empties a file. Directories cannot be opened for writing or
    /// truncated ([`Errno::Isdir`]). `CREAT` with `DIRECTORY` is [`Errno::Inval`].
    pub fn open(
        &self,
        dir: &OpenFile,
        path: &str,
        oflags: OFlags,
        fdflags: FdFlags,
        rights: Rights,
    ) -> Result<OpenFile> {
        let table = self.table.read();
        let now = self.now();
        let loc = if oflags.contains(OFlags::CREAT) {
            if oflags.contains(OFlags::DIRECTORY) {
                return Err(Errno::Inval);
            }
            match self.resolve_entry(&table, dir, path)? {
                Entry::Dots if oflags.contains(OFlags::EXCL) => return Err(Errno::Exist),
                Entry::Dots => return Err(Errno::Isdir),
                Entry::Named {
                    parent,
                    name,
                    dir_only,
                } => match table.lookup(parent, name) {
                    Ok(_) if oflags.contains(OFlags::EXCL) => return Err(Errno::Exist),
                    Ok(found) => {
                        if dir_only && found.kind != FileType::Directory {
                            return Err(Errno::Notdir);
                        }
                        table.cross(found)
                    }
                    Err(Errno::Noent) if dir_only => return Err(Errno::Isdir),
                    Err(Errno::Noent) => {
                        let fs = table.fs(parent.node.mount);
                        let ino = fs.create(parent.node.ino, name, FileType::RegularFile, now)?;
                        Loc {
                            node: Node {
                                mount: parent.node.mount,
                                ino,
                            },
                            kind: FileType::RegularFile,
                        }
                    }
                    Err(e) => return Err(e),
                },
            }
        } else {
            self.resolve(&table, dir, path)?
        };
        let is_dir = loc.kind == FileType::Directory;
        if oflags.contains(OFlags::DIRECTORY) && !is_dir {
            return Err(Errno::Notdir);
        }
        if is_dir && (rights.write || oflags.contains(OFlags::TRUNC)) {
            return Err(Errno::Isdir);
        }
        let file = OpenFile::new(&table, loc, fdflags, rights)?;
        if oflags.contains(OFlags::TRUNC) {
            file.fs.set_size(file.ino, 0, now)?;
        }
        Ok(file)
    }

    /// `fd_read`: reads at the offset and advances it. [`Errno::Isdir`] for a directory,
    /// [`Errno::Badf`] without the read right.
    pub fn read(&self, file: &mut OpenFile, buf: &mut [u8]) -> Result<usize> {
        let count = self.pread(file, buf, file.offset)?;
        file.offset += count as u64;
        Ok(count)
    }

    /// `fd_pread`: reads at `offset`; the file's offset does not move.
    pub fn pread(&self, file: &OpenFile, buf: &mut [u8], offset: u64) -> Result<usize> {
        if file.kind == FileType::Directory {
            return Err(Errno::Isdir);
        }
        if !file.rights.read {
            return Err(Errno::Badf);
        }
        file.fs.read_at(file.ino, offset, buf, self.now())
    }

    /// `fd_write`: writes at the offset (at the end with `APPEND`) and advances it. Returns the
    /// count written: short when space runs out, [`Errno::Nospc`] when nothing fits.
    /// [`Errno::Badf`] without the write right.
    pub fn write(&self, file: &mut OpenFile, data: &[u8]) -> Result<usize> {
        if !file.rights.write {
            return Err(Errno::Badf);
        }
        if file.fdflags.contains(FdFlags::APPEND) {
            let (count, end) = file.fs.append(file.ino, data, self.now())?;
            file.offset = end;
            Ok(count)
        } else {
            let count = file.fs.write_at(file.ino, file.offset, data, self.now())?;
            file.offset += count as u64;
            Ok(count)
        }
    }

    /// `fd_pwrite`: writes at `offset` (even with `APPEND`); the file's offset does not move.
    pub fn pwrite(&self, file: &OpenFile, data: &[u8], offset: u64) -> Result<usize> {
        if !file.rights.write {
            return Err(Errno::Badf);
        }
        file.fs.write_at(file.ino, offset, data, self.now())
    }

    /// `fd_seek`: moves the offset (past the end is allowed) and returns it. A negative result
    /// is [`Errno::Inval`]; seeking a directory is [`Errno::Isdir`].
    pub fn seek(&self, file: &mut OpenFile, delta: i64, whence: Whence) -> Result<u64> {
        if file.kind == FileType::Directory {
            return Err(Errno::Isdir);
        }
        let from = match whence {
            Whence::Set => 0,
            Whence::Cur => file.offset,
            Whence::End => file.fs.stat(file.ino)?.size,
        };
        let target = i128::from(from) + i128::from(delta);
        if target < 0 {
            return Err(Errno::Inval);
        }
        file.offset = u64::try_from(target).map_err(|_| Errno::Overflow)?;
        Ok(file.offset)
    }

    /// `fd_readdir`: up to `max` entries of directory `dir` from `cookie` (0 is the start):
    /// `.` (cookie 0), `..` (cookie 1), then the file system's entries. Continue with the last
    /// entry's [`DirEntry::next`]; an empty result is the end.
    pub fn read_dir(&self, dir: &OpenFile, cookie: u64, max: usize) -> Result<Vec<DirEntry>> {
        let base = dir.dir()?;
        let mut out = Vec::new();
        if cookie == 0 && out.len() < max {
            out.push(DirEntry {
                next: 1,
                ino: dir.ino,
                filetype: FileType::Directory,
                name: ".".to_string(),
            });
        }
        if cookie <= 1 && out.len() < max {
            let table = self.table.read();
            let parent = if dir.ino == dir.fs.root() {
                match table.mounts[dir.mount.0 as usize].covers {
                    Some(covered) => table.fs(covered.mount).parent(covered.ino)?,
                    None => dir.ino,
                }
            } else {
                dir.fs.parent(base.node.ino)?
            };
            out.push(DirEntry {
                next: 2,
                ino: parent,
                filetype: FileType::Directory,
                name: "..".to_string(),
            });
        }
        if out.len() < max {
            let entries = dir
                .fs
                .read_dir(dir.ino, cookie.saturating_sub(2), max - out.len())?;
            for mut entry in entries {
                entry.next = entry.next.checked_add(2).ok_or(Errno::Overflow)?;
                out.push(entry);
            }
        }
        Ok(out)
    }

    /// `fd_filestat_get`.
    pub fn stat(&self, file: &OpenFile) -> Result<FileStat> {
        let mut stat = file.fs.stat(file.ino)?;
        stat.dev = file.mount.index();
        Ok(stat)
    }

    /// `path_filestat_get`: the attributes of what `path` (relative to `dir`) names.
    pub fn path_stat(&self, dir: &OpenFile, path: &str) -> Result<FileStat> {
        let table = self.table.read();
        let loc = self.resolve(&table, dir, path)?;
        let mut stat = table.fs(loc.node.mount).stat(loc.node.ino)?;
        stat.dev = loc.node.mount.index();
        Ok(stat)
    }

    /// `fd_filestat_set_size`: truncates or zero-extends. [`Errno::Badf`] without the write
    /// right, [`Errno::Isdir`] for a directory, [`Errno::Nospc`].
    pub fn set_size(&self, file: &OpenFile, size: u64) -> Result<()> {
        if file.kind == FileType::Directory {
            return Err(Errno::Isdir);
        }
        if !file.rights.write {
            return Err(Errno::Badf);
        }
        file.fs.set_size(file.ino, size, self.now())
    }

    /// `fd_filestat_set_times`: `None` leaves a time alone (use [`Vfs::now`] for `*_now`).
    pub fn set_times(&self, file: &OpenFile, atim: Option<u64>, mtim: Option<u64>) -> Result<()> {
        file.fs.set_times(file.ino, atim, mtim, self.now())
    }

    /// `path_filestat_set_times`.
    pub fn path_set_times(
        &self,
        dir: &OpenFile,
        path: &str,
        atim: Option<u64>,
        mtim: Option<u64>,
    ) -> Result<()> {
        let table = self.table.read();
        let loc = self.resolve(&table, dir, path)?;
        table
            .fs(loc.node.mount)
            .set_times(loc.node.ino, atim, mtim, self.now())
    }

    /// `path_create_directory`: [`Errno::Exist`] if the name is taken.
    pub fn create_dir(&self, dir: &OpenFile, path: &str) -> Result<()> {
        let table = self.table.read();
        match self.resolve_entry(&table, dir, path)? {
            Entry::Dots => Err(Errno::Exist),
            Entry::Named { parent, name, .. } => {
                let fs = table.fs(parent.node.mount);
                fs.create(parent.node.ino, name, FileType::Directory, self.now())
                    .map(|_| ())
            }
        }
    }

    /// `path_remove_directory`: [`Errno::Notempty`], [`Errno::Notdir`] for a file,
    /// [`Errno::Inval`] for a path ending in `.` or `..`, [`Errno::Busy`] for a mount point.
    pub fn remove_dir(&self, dir: &OpenFile, path: &str) -> Result<()> {
        let table = self.table.read();
        match self.resolve_entry(&table, dir, path)? {
            Entry::Dots => Err(Errno::Inval),
            Entry::Named { parent, name, .. } => {
                let found = table.lookup(parent, name)?;
                if table.is_pinned(found.node) {
                    return Err(Errno::Busy);
                }
                let fs = table.fs(parent.node.mount);
                fs.remove(parent.node.ino, name, FileType::Directory, self.now())
            }
        }
    }

    /// `path_unlink_file`: [`Errno::Isdir`] for a directory, [`Errno::Notdir`] for a file named
    /// with a trailing `/`.
    pub fn unlink_file(&self, dir: &OpenFile, path: &str) -> Result<()> {
        let table = self.table.read();
        match self.resolve_entry(&table, dir, path)? {
            Entry::Dots => Err(Errno::Isdir),
            Entry::Named {
                parent,
                name,
                dir_only,
            } => {
                let found = table.lookup(parent, name)?;
                match found.kind {
                    FileType::Directory => Err(Errno::Isdir),
                    FileType::RegularFile if dir_only => Err(Errno::Notdir),
                    FileType::RegularFile => {
                        let fs = table.fs(parent.node.mount);
                        fs.remove(parent.node.ino, name, FileType::RegularFile, self.now())
                    }
                }
            }
        }
    }

    /// `path_rename`: moves a file or directory, replacing the target per POSIX (see
    /// [`FileSystem::rename`]). [`Errno::Xdev`] across mounts, [`Errno::Inval`] for a path
    /// ending in `.` or `..` or a directory moved into itself, [`Errno::Busy`] for mount points.
    pub fn rename(
        &self,
        from_dir: &OpenFile,
        from: &str,
        to_dir: &OpenFile,
        to: &str,
    ) -> Result<()> {
        let table = self.table.read();
        let source = self.resolve_entry(&table, from_dir, from)?;
        let target = self.resolve_entry(&table, to_dir, to)?;
        let (
            Entry::Named {
                parent: from_parent,
                name: from_name,
                dir_only: from_slash,
            },
            Entry::Named {
                parent: to_parent,
                name: to_name,
                dir_only: to_slash,
            },
        ) = (source, target)
        else {
            return Err(Errno::Inval);
        };
        let moving = table.lookup(from_parent, from_name)?;
        if (from_slash || to_slash) && moving.kind != FileType::Directory {
            return Err(Errno::Notdir);
        }
        if table.is_pinned(moving.node) {
            return Err(Errno::Busy);
        }
        if from_parent.node.mount != to_parent.node.mount {
            return Err(Errno::Xdev);
        }
        match table.lookup(to_parent, to_name) {
            Ok(replaced) if replaced.node != moving.node && table.is_pinned(replaced.node) => {
                return Err(Errno::Busy);
            }
            Ok(_) | Err(Errno::Noent) => {}
            Err(e) => return Err(e),
        }
        table.fs(from_parent.node.mount).rename(
            from_parent.node.ino,
            from_name,
            to_parent.node.ino,
            to_name,
            self.now(),
        )
    }

    /// `path_readlink`: there are no symbolic links, so anything that exists is
    /// [`Errno::Inval`] (and anything else the resolution error).
    pub fn readlink(&self, dir: &OpenFile, path: &str) -> Result<String> {
        let table = self.table.read();
        self.resolve(&table, dir, path)?;
        Err(Errno::Inval)
    }
}
