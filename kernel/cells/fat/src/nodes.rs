//! Inode numbers for a file system that has none.
//!
//! FAT names files by path; the VFS by inode. Every entry the VFS has been shown (by lookup,
//! create or read_dir) gets a number, kept with its parent's number and its name as stored on
//! disk. A path is found by walking parents to the root, so a renamed directory takes its
//! whole subtree along by changing one record. Numbers are never reused while the file system
//! is mounted; a record goes when its entry is removed and nothing holds it open.

use alloc::collections::BTreeMap;
use alloc::string::String;
use keel_vfs::{Errno, FileStat, FileType, Inode, Result};

pub const ROOT: Inode = 1;

/// Where an inode's data is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum State {
    /// Its entry is `name` in `parent`.
    Linked,
    /// A file removed while open: moved to the hidden directory of open unlinked files under
    /// `name`, deleted on its last release.
    Unlinked,
    /// Removed while open, with nothing left on disk (a directory, or a file that could not be
    /// kept): its last attributes are remembered.
    Gone(FileStat),
}

#[derive(Clone, Debug)]
pub struct Node {
    pub parent: Inode,
    /// The long name as stored (empty for the root).
    pub name: String,
    pub kind: FileType,
    pub retained: u32,
    pub state: State,
    /// A directory whose raw entries have been checked (see `FatFs::check_dir`).
    pub checked: bool,
}

/// FAT compares names ignoring case; fatfs (with its `unicode` feature) by upper-casing every
/// character, and so does the index.
pub fn fold(name: &str) -> String {
    name.chars().flat_map(char::to_uppercase).collect()
}

pub struct Nodes {
    nodes: BTreeMap<Inode, Node>,
    /// (parent, folded name) -> inode, for linked and unlinked entries.
    index: BTreeMap<(Inode, String), Inode>,
    next: Inode,
}

impl Nodes {
    pub fn new() -> Nodes {
        let mut nodes = BTreeMap::new();
        nodes.insert(
            ROOT,
            Node {
                parent: ROOT,
                name: String::new(),
                kind: FileType::Directory,
                retained: 1,
                state: State::Linked,
                checked: false,
            },
        );
        Nodes {
            nodes,
            index: BTreeMap::new(),
            next: ROOT + 1,
        }
    }

    pub fn get(&self, ino: Inode) -> Result<&Node> {
        self.nodes.get(&ino).ok_or(Errno::Noent)
    }

    pub fn get_mut(&mut self, ino: Inode) -> Result<&mut Node> {
        self.nodes.get_mut(&ino).ok_or(Errno::Noent)
    }

    /// The inode of entry `name` of `parent`, if it has one.
    pub fn find(&self, parent: Inode, name: &str) -> Option<Inode> {
        self.index.get(&(parent, fold(name))).copied()
    }

    /// The inode of the entry `name` (as stored) of `parent`, numbering it if it is new.
    pub fn intern(&mut self, parent: Inode, name: &str, kind: FileType) -> Inode {
        if let Some(ino) = self.find(parent, name)
            && let Some(node) = self.nodes.get_mut(&ino)
            && node.kind == kind
        {
            if node.name != name {
                node.name = name.into();
            }
            return ino;
        }
        let ino = self.next;
        self.next += 1;
        self.index.insert((parent, fold(name)), ino);
        self.nodes.insert(
            ino,
            Node {
                parent,
                name: name.into(),
                kind,
                retained: 0,
                state: State::Linked,
                checked: false,
            },
        );
        ino
    }

    /// Gives `ino` a new place (its record and the index).
    pub fn relink(&mut self, ino: Inode, parent: Inode, name: &str) {
        if let Some(node) = self.nodes.get_mut(&ino) {
            let old = (node.parent, fold(&node.name));
            node.parent = parent;
            node.name = name.into();
            if self.index.get(&old) == Some(&ino) {
                self.index.remove(&old);
            }
            self.index.insert((parent, fold(name)), ino);
        }
    }

    /// Takes `ino` out of the index: its name is free (the record stays while it is open).
    pub fn unindex(&mut self, ino: Inode) {
        if let Some(node) = self.nodes.get(&ino) {
            let key = (node.parent, fold(&node.name));
            if self.index.get(&key) == Some(&ino) {
                self.index.remove(&key);
            }
        }
    }

    /// Forgets `ino` entirely.
    pub fn forget(&mut self, ino: Inode) {
        self.unindex(ino);
        self.nodes.remove(&ino);
    }

    /// Whether `ancestor` is `dir` or above it.
    pub fn is_ancestor(&self, ancestor: Inode, mut dir: Inode) -> bool {
        for _ in 0..4096 {
            if dir == ancestor {
                return true;
            }
            if dir == ROOT {
                return false;
            }
            match self.nodes.get(&dir) {
                Some(node) => dir = node.parent,
                None => return false,
            }
        }
        false
    }
}
