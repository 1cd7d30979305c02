//! The in-memory file system.

use crate::{DirEntry, Errno, FileStat, FileSystem, FileType, Inode, Result, Usage};
use alloc::collections::BTreeMap;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use spin::Mutex;

/// A file system in memory: files are byte vectors, directories name maps. It holds at most
/// `limit` bytes, counting file contents plus [`MemFs::ENTRY_COST`] per file or directory (the
/// root is free); beyond that, writes and creations fail with [`Errno::Nospc`].
pub struct MemFs {
    inner: Mutex<Inner>,
}

const ROOT: Inode = 1;

struct Inner {
    nodes: BTreeMap<Inode, Node>,
    next_ino: Inode,
    used: u64,
    limit: u64,
}

struct Node {
    data: Data,
    /// Whether a directory entry names it (false once removed).
    linked: bool,
    /// Open handles: a removed node is freed when this drops to 0.
    retained: u32,
    atim: u64,
    mtim: u64,
    ctim: u64,
}

enum Data {
    File(Vec<u8>),
    Dir(Dir),
}

struct Dir {
    parent: Inode,
    /// name -> (inode, sequence number)
    entries: BTreeMap<String, (Inode, u64)>,
    /// Sequence number -> name: the listing order. A sequence number is a stable cookie.
    order: BTreeMap<u64, String>,
    next_seq: u64,
}

impl Dir {
    fn new(parent: Inode) -> Dir {
        Dir {
            parent,
            entries: BTreeMap::new(),
            order: BTreeMap::new(),
            next_seq: 0,
        }
    }

    fn insert(&mut self, name: &str, ino: Inode) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.entries.insert(name.to_string(), (ino, seq));
        self.order.insert(seq, name.to_string());
    }

    fn remove(&mut self, name: &str) -> Option<Inode> {
        let (ino, seq) = self.entries.remove(name)?;
        self.order.remove(&seq);
        Some(ino)
    }
}

impl Node {
    fn new(data: Data, now: u64) -> Node {
        Node {
            data,
            linked: true,
            retained: 0,
            atim: now,
            mtim: now,
            ctim: now,
        }
    }

    fn kind(&self) -> FileType {
        match self.data {
            Data::File(_) => FileType::RegularFile,
            Data::Dir(_) => FileType::Directory,
        }
    }

    fn touch(&mut self, now: u64) {
        self.mtim = now;
        self.ctim = now;
    }
}

impl Inner {
    fn node(&self, ino: Inode) -> Result<&Node> {
        self.nodes.get(&ino).ok_or(Errno::Noent)
    }

    fn node_mut(&mut self, ino: Inode) -> Result<&mut Node> {
        self.nodes.get_mut(&ino).ok_or(Errno::Noent)
    }

    fn dir(&self, ino: Inode) -> Result<&Dir> {
        match &self.node(ino)?.data {
            Data::Dir(dir) => Ok(dir),
            Data::File(_) => Err(Errno::Notdir),
        }
    }

    fn dir_mut(&mut self, ino: Inode) -> Result<&mut Dir> {
        match &mut self.node_mut(ino)?.data {
            Data::Dir(dir) => Ok(dir),
            Data::File(_) => Err(Errno::Notdir),
        }
    }

    /// A directory that can still gain entries.
    fn live_dir(&self, ino: Inode) -> Result<&Dir> {
        let dir = self.dir(ino)?;
        if self.nodes[&ino].linked {
            Ok(dir)
        } else {
            Err(Errno::Noent)
        }
    }

    fn file(&self, ino: Inode) -> Result<&Vec<u8>> {
        match &self.node(ino)?.data {
            Data::File(bytes) => Ok(bytes),
            Data::Dir(_) => Err(Errno::Isdir),
        }
    }

    fn file_mut(&mut self, ino: Inode) -> Result<&mut Vec<u8>> {
        match &mut self.node_mut(ino)?.data {
            Data::File(bytes) => Ok(bytes),
            Data::Dir(_) => Err(Errno::Isdir),
        }
    }

    fn available(&self) -> u64 {
        self.limit.saturating_sub(self.used)
    }

    /// Marks a node as nameless; frees it unless it is open.
    fn unlink(&mut self, ino: Inode, now: u64) {
        if let Some(node) = self.nodes.get_mut(&ino) {
            node.linked = false;
            node.ctim = now;
            if node.retained == 0 {
                self.free(ino);
            }
        }
    }

    fn free(&mut self, ino: Inode) {
        if let Some(node) = self.nodes.remove(&ino) {
            let bytes = match node.data {
                Data::File(bytes) => bytes.len() as u64,
                Data::Dir(_) => 0,
            };
            self.used -= bytes + MemFs::ENTRY_COST;
        }
    }

    /// Resizes a file to `size`, charging or refunding the difference.
    fn resize(&mut self, ino: Inode, size: u64) -> Result<()> {
        let old = self.file(ino)?.len() as u64;
        if size > old && size - old > self.available() {
            return Err(Errno::Nospc);
        }
        let new_len = usize::try_from(size).map_err(|_| Errno::Fbig)?;
        self.file_mut(ino)?.resize(new_len, 0);
        self.used = self.used + size - old;
        Ok(())
    }

    /// Whether `ancestor` is `dir` or one of its ancestors.
    fn is_ancestor(&self, ancestor: Inode, mut dir: Inode) -> Result<bool> {
        loop {
            if dir == ancestor {
                return Ok(true);
            }
            if dir == ROOT {
                return Ok(false);
            }
            dir = self.dir(dir)?.parent;
        }
    }
}

impl MemFs {
    /// What each file or directory costs against the limit besides its contents.
    pub const ENTRY_COST: u64 = 64;

    /// An empty file system (only the root directory) of at most `limit` bytes.
    pub fn new(limit: u64) -> MemFs {
        let mut nodes = BTreeMap::new();
        let mut root = Node::new(Data::Dir(Dir::new(ROOT)), 0);
        root.retained = 1; // the root is never freed
        nodes.insert(ROOT, root);
        MemFs {
            inner: Mutex::new(Inner {
                nodes,
                next_ino: ROOT + 1,
                used: 0,
                limit,
            }),
        }
    }

    /// Bytes in use (file contents plus entry costs).
    pub fn used(&self) -> u64 {
        self.inner.lock().used
    }

    /// The size limit in bytes.
    pub fn limit(&self) -> u64 {
        self.inner.lock().limit
    }

    /// Inodes alive, the root included (removed but still open ones count).
    pub fn inode_count(&self) -> usize {
        self.inner.lock().nodes.len()
    }
}

impl FileSystem for MemFs {
    fn root(&self) -> Inode {
        ROOT
    }

    fn lookup(&self, dir: Inode, name: &str) -> Result<(Inode, FileType)> {
        let inner = self.inner.lock();
        let (ino, _) = *inner.dir(dir)?.entries.get(name).ok_or(Errno::Noent)?;
        Ok((ino, inner.nodes[&ino].kind()))
    }

    fn parent(&self, dir: Inode) -> Result<Inode> {
        Ok(self.inner.lock().dir(dir)?.parent)
    }

    fn create(&self, dir: Inode, name: &str, kind: FileType, now: u64) -> Result<Inode> {
        let mut inner = self.inner.lock();
        if inner.live_dir(dir)?.entries.contains_key(name) {
            return Err(Errno::Exist);
        }
        if inner.available() < MemFs::ENTRY_COST {
            return Err(Errno::Nospc);
        }
        let ino = inner.next_ino;
        inner.next_ino += 1;
        inner.used += MemFs::ENTRY_COST;
        let data = match kind {
            FileType::RegularFile => Data::File(Vec::new()),
            FileType::Directory => Data::Dir(Dir::new(dir)),
        };
        inner.nodes.insert(ino, Node::new(data, now));
        inner.dir_mut(dir)?.insert(name, ino);
        inner.node_mut(dir)?.touch(now);
        Ok(ino)
    }

    fn remove(&self, dir: Inode, name: &str, kind: FileType, now: u64) -> Result<()> {
        let mut inner = self.inner.lock();
        let (ino, _) = *inner.dir(dir)?.entries.get(name).ok_or(Errno::Noent)?;
        match (kind, &inner.nodes[&ino].data) {
            (FileType::Directory, Data::File(_)) => return Err(Errno::Notdir),
            (FileType::Directory, Data::Dir(d)) if !d.entries.is_empty() => {
                return Err(Errno::Notempty);
            }
            (FileType::RegularFile, Data::Dir(_)) => return Err(Errno::Isdir),
            _ => {}
        }
        inner.dir_mut(dir)?.remove(name);
        inner.node_mut(dir)?.touch(now);
        inner.unlink(ino, now);
        Ok(())
    }

    fn rename(
        &self,
        from_dir: Inode,
        from_name: &str,
        to_dir: Inode,
        to_name: &str,
        now: u64,
    ) -> Result<()> {
        let mut inner = self.inner.lock();
        let (src, _) = *inner
            .dir(from_dir)?
            .entries
            .get(from_name)
            .ok_or(Errno::Noent)?;
        let target = inner
            .live_dir(to_dir)?
            .entries
            .get(to_name)
            .map(|&(ino, _)| ino);
        if target == Some(src) {
            return Ok(());
        }
        let src_kind = inner.nodes[&src].kind();
        if src_kind == FileType::Directory && inner.is_ancestor(src, to_dir)? {
            return Err(Errno::Inval);
        }
        if let Some(target) = target {
            match (src_kind, &inner.nodes[&target].data) {
                (FileType::RegularFile, Data::Dir(_)) => return Err(Errno::Isdir),
                (FileType::Directory, Data::File(_)) => return Err(Errno::Notdir),
                (FileType::Directory, Data::Dir(d)) if !d.entries.is_empty() => {
                    return Err(Errno::Notempty);
                }
                _ => {}
            }
            inner.dir_mut(to_dir)?.remove(to_name);
            inner.unlink(target, now);
        }
        inner.dir_mut(from_dir)?.remove(from_name);
        inner.dir_mut(to_dir)?.insert(to_name, src);
        inner.node_mut(from_dir)?.touch(now);
        inner.node_mut(to_dir)?.touch(now);
        let node = inner.node_mut(src)?;
        node.ctim = now;
        if let Data::Dir(dir) = &mut node.data {
            dir.parent = to_dir;
        }
        Ok(())
    }

    fn retain(&self, ino: Inode) -> Result<()> {
        let mut inner = self.inner.lock();
        let node = inner.node_mut(ino)?;
        node.retained = node.retained.checked_add(1).ok_or(Errno::Nfile)?;
        Ok(())
    }

    fn release(&self, ino: Inode) {
        let mut inner = self.inner.lock();
        if let Some(node) = inner.nodes.get_mut(&ino) {
            node.retained = node.retained.saturating_sub(1);
            if node.retained == 0 && !node.linked {
                inner.free(ino);
            }
        }
    }

    fn read_at(&self, ino: Inode, offset: u64, buf: &mut [u8], now: u64) -> Result<usize> {
        let mut inner = self.inner.lock();
        let bytes = inner.file(ino)?;
        let start = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(bytes.len());
        let count = buf.len().min(bytes.len() - start);
        buf[..count].copy_from_slice(&bytes[start..start + count]);
        inner.node_mut(ino)?.atim = now;
        Ok(count)
    }

    fn write_at(&self, ino: Inode, offset: u64, data: &[u8], now: u64) -> Result<usize> {
        let mut inner = self.inner.lock();
        let size = inner.file(ino)?.len() as u64;
        if data.is_empty() {
            return Ok(0);
        }
        let end = offset.checked_add(data.len() as u64).ok_or(Errno::Fbig)?;
        let count = if end.saturating_sub(size) <= inner.available() {
            data.len()
        } else {
            let max_end = size + inner.available();
            if max_end <= offset {
                return Err(Errno::Nospc);
            }
            (max_end - offset) as usize
        };
        let new_end = offset + count as u64;
        if new_end > size {
            inner.resize(ino, new_end)?;
        }
        let start = offset as usize;
        inner.file_mut(ino)?[start..start + count].copy_from_slice(&data[..count]);
        inner.node_mut(ino)?.touch(now);
        Ok(count)
    }

    fn append(&self, ino: Inode, data: &[u8], now: u64) -> Result<(usize, u64)> {
        let mut inner = self.inner.lock();
        let end = inner.file(ino)?.len() as u64;
        let count = (data.len() as u64).min(inner.available()) as usize;
        if count == 0 {
            return if data.is_empty() {
                Ok((0, end))
            } else {
                Err(Errno::Nospc)
            };
        }
        let new_end = end + count as u64;
        inner.resize(ino, new_end)?;
        let start = end as usize;
        inner.file_mut(ino)?[start..start + count].copy_from_slice(&data[..count]);
        inner.node_mut(ino)?.touch(now);
        Ok((count, new_end))
    }

    fn set_size(&self, ino: Inode, size: u64, now: u64) -> Result<()> {
        let mut inner = self.inner.lock();
        inner.resize(ino, size)?;
        inner.node_mut(ino)?.touch(now);
        Ok(())
    }

    fn set_times(&self, ino: Inode, atim: Option<u64>, mtim: Option<u64>, now: u64) -> Result<()> {
        let mut inner = self.inner.lock();
        let node = inner.node_mut(ino)?;
        if let Some(atim) = atim {
            node.atim = atim;
        }
        if let Some(mtim) = mtim {
            node.mtim = mtim;
        }
        node.ctim = now;
        Ok(())
    }

    fn stat(&self, ino: Inode) -> Result<FileStat> {
        let inner = self.inner.lock();
        let node = inner.node(ino)?;
        let (nlink, size) = match &node.data {
            Data::File(bytes) => (u64::from(node.linked), bytes.len() as u64),
            Data::Dir(dir) => {
                let subdirs = dir
                    .entries
                    .values()
                    .filter(|(child, _)| inner.nodes[child].kind() == FileType::Directory)
                    .count() as u64;
                let nlink = if node.linked { 2 + subdirs } else { 0 };
                (nlink, dir.entries.len() as u64)
            }
        };
        Ok(FileStat {
            dev: 0,
            ino,
            filetype: node.kind(),
            nlink,
            size,
            atim: node.atim,
            mtim: node.mtim,
            ctim: node.ctim,
        })
    }

    fn usage(&self) -> Option<Usage> {
        let inner = self.inner.lock();
        Some(Usage {
            total_bytes: inner.limit,
            free_bytes: inner.available(),
            block_size: 1,
        })
    }

    fn read_dir(&self, dir: Inode, cookie: u64, max: usize) -> Result<Vec<DirEntry>> {
        let inner = self.inner.lock();
        let listing = inner.dir(dir)?;
        Ok(listing
            .order
            .range(cookie..)
            .take(max)
            .map(|(&seq, name)| {
                let (ino, _) = listing.entries[name];
                DirEntry {
                    next: seq + 1,
                    ino,
                    filetype: inner.nodes[&ino].kind(),
                    name: name.clone(),
                }
            })
            .collect())
    }
}
