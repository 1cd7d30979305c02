//! A program's file descriptor table.

use crate::{Errno, OpenFile, Result};
use alloc::vec::Vec;

/// The first descriptor the table hands out: 0, 1 and 2 are stdio, which the WASI host serves
/// itself (the table answers [`Errno::Badf`] for them).
pub const FIRST_FD: u32 = 3;
/// Descriptors a program may have open at once ([`Errno::Mfile`] beyond).
pub const MAX_FDS: u32 = 1024;

/// File descriptors of one program, each owning an [`OpenFile`]. Dropping the table closes
/// them all. Preopens are inserted first, so they get 3, 4, … in order, as wasi-libc expects.
#[derive(Debug, Default)]
pub struct FdTable {
    /// Index `i` is descriptor `FIRST_FD + i`.
    slots: Vec<Option<OpenFile>>,
}

impl FdTable {
    pub fn new() -> FdTable {
        FdTable::default()
    }

    fn index(fd: u32) -> Result<usize> {
        fd.checked_sub(FIRST_FD)
            .map(|i| i as usize)
            .ok_or(Errno::Badf)
    }

    /// Stores `file` under the lowest free descriptor and returns it.
    pub fn insert(&mut self, file: OpenFile) -> Result<u32> {
        let index = match self.slots.iter().position(Option::is_none) {
            Some(index) => index,
            None if self.slots.len() < (MAX_FDS - FIRST_FD) as usize => {
                self.slots.push(None);
                self.slots.len() - 1
            }
            None => return Err(Errno::Mfile),
        };
        self.slots[index] = Some(file);
        Ok(FIRST_FD + index as u32)
    }

    pub fn get(&self, fd: u32) -> Result<&OpenFile> {
        self.slots
            .get(Self::index(fd)?)
            .and_then(Option::as_ref)
            .ok_or(Errno::Badf)
    }

    pub fn get_mut(&mut self, fd: u32) -> Result<&mut OpenFile> {
        self.slots
            .get_mut(Self::index(fd)?)
            .and_then(Option::as_mut)
            .ok_or(Errno::Badf)
    }

    /// Takes the file out of descriptor `fd`, which becomes free.
    pub fn remove(&mut self, fd: u32) -> Result<OpenFile> {
        let index = Self::index(fd)?;
        let file = self
            .slots
            .get_mut(index)
            .and_then(Option::take)
            .ok_or(Errno::Badf)?;
        while self.slots.last().is_some_and(Option::is_none) {
            self.slots.pop();
        }
        Ok(file)
    }

    /// `fd_close`.
    pub fn close(&mut self, fd: u32) -> Result<()> {
        self.remove(fd).map(drop)
    }

    /// `fd_renumber`: moves `from` to `to`, closing what `to` held. Both must be open.
    pub fn renumber(&mut self, from: u32, to: u32) -> Result<()> {
        self.get(from)?;
        self.get(to)?;
        if from != to {
            let file = self.remove(from)?;
            let index = Self::index(to)?;
            if index >= self.slots.len() {
                self.slots.resize_with(index + 1, || None);
            }
            self.slots[index] = Some(file);
        }
        Ok(())
    }

    /// Open descriptors.
    pub fn len(&self) -> usize {
        self.slots.iter().filter(|slot| slot.is_some()).count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The open descriptors in order.
    pub fn iter(&self) -> impl Iterator<Item = (u32, &OpenFile)> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(index, slot)| slot.as_ref().map(|file| (FIRST_FD + index as u32, file)))
    }
}
