//! A writer of cpio archives in the "newc" format, the one the Linux kernel unpacks as an
//! initramfs. Written here because `cpio` is not installed on our machines and the format is
//! small: each entry is a 110-byte ASCII header (magic `070701` and thirteen 8-digit hex fields),
//! the NUL-terminated name padded to 4 bytes, then the data padded to 4 bytes; a `TRAILER!!!`
//! entry ends the archive.
//!
//! Every entry is owned by root with modification time 0, so an image built twice from the same
//! inputs is the same byte for byte.

use std::io::Write;

use anyhow::{Result, ensure};

/// File type bits of `st_mode`.
const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;
const S_IFCHR: u32 = 0o020000;
/// The name of the entry that ends an archive.
const TRAILER: &str = "TRAILER!!!";

/// Writes entries to `out` in the order they are given. The kernel creates no missing parent
/// directories, so callers add each directory before what it holds.
pub struct CpioWriter<W: Write> {
    out: W,
    next_inode: u32,
    written: u64,
}

impl<W: Write> CpioWriter<W> {
    pub fn new(out: W) -> Self {
        Self {
            out,
            next_inode: 1,
            written: 0,
        }
    }

    /// A directory (`mode` holds the permission bits).
    pub fn dir(&mut self, path: &str, mode: u32) -> Result<()> {
        self.entry(path, S_IFDIR | (mode & 0o7777), 2, (0, 0), &[])
    }

    /// A regular file.
    pub fn file(&mut self, path: &str, mode: u32, data: &[u8]) -> Result<()> {
        self.entry(path, S_IFREG | (mode & 0o7777), 1, (0, 0), data)
    }

    /// A symbolic link to `target` (its data is the target).
    pub fn symlink(&mut self, path: &str, target: &str) -> Result<()> {
        self.entry(path, S_IFLNK | 0o777, 1, (0, 0), target.as_bytes())
    }

    /// A character device node, made without root since it is only described here.
    pub fn char_device(&mut self, path: &str, mode: u32, major: u32, minor: u32) -> Result<()> {
        self.entry(path, S_IFCHR | (mode & 0o7777), 1, (major, minor), &[])
    }

    /// Writes the trailer and returns the output.
    pub fn finish(mut self) -> Result<W> {
        self.header(TRAILER, 0, 0, 0, 1, (0, 0))?;
        self.out.flush()?;
        Ok(self.out)
    }

    fn entry(
        &mut self,
        path: &str,
        mode: u32,
        links: u32,
        rdev: (u32, u32),
        data: &[u8],
    ) -> Result<()> {
        let name = path.trim_start_matches('/');
        ensure!(
            !name.is_empty() && !name.contains('\0') && name != TRAILER,
            "invalid cpio entry name {path:?}"
        );
        let size = u32::try_from(data.len())
            .map_err(|_| anyhow::anyhow!("{path} is too large for a newc archive (4 GiB)"))?;
        let inode = self.next_inode;
        self.next_inode += 1;
        self.header(name, inode, mode, size, links, rdev)?;
        self.write_padded(data)
    }

    fn header(
        &mut self,
        name: &str,
        inode: u32,
        mode: u32,
        size: u32,
        links: u32,
        rdev: (u32, u32),
    ) -> Result<()> {
        let mtime = 0;
        let name_size = name.len() as u32 + 1;
        // ino mode uid gid nlink mtime filesize devmajor devminor rdevmajor rdevminor namesize check
        let fields = [
            inode, mode, 0, 0, links, mtime, size, 0, 0, rdev.0, rdev.1, name_size, 0,
        ];
        let mut header = String::with_capacity(110 + name.len() + 1);
        header.push_str("070701");
        for field in fields {
            header.push_str(&format!("{field:08x}"));
        }
        header.push_str(name);
        header.push('\0');
        self.write_padded(header.as_bytes())
    }

    /// Writes `bytes` and zeros up to the next multiple of 4 of the archive offset.
    fn write_padded(&mut self, bytes: &[u8]) -> Result<()> {
        self.out.write_all(bytes)?;
        self.written += bytes.len() as u64;
        let pad = (4 - self.written % 4) % 4;
        self.out.write_all(&[0u8; 3][..pad as usize])?;
        self.written += pad;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One parsed entry: name, mode, rdev, data.
    type Entry = (String, u32, (u32, u32), Vec<u8>);

    /// An independent reader of what the writer produced, checking alignment as it goes.
    fn read_all(mut bytes: &[u8]) -> Vec<Entry> {
        let total = bytes.len();
        let mut entries = Vec::new();
        loop {
            assert_eq!((total - bytes.len()) % 4, 0, "header not 4-aligned");
            assert_eq!(&bytes[..6], b"070701");
            let field = |i: usize| {
                let hex = std::str::from_utf8(&bytes[6 + 8 * i..14 + 8 * i]).unwrap();
                u32::from_str_radix(hex, 16).unwrap()
            };
            let (mode, size, name_size) = (field(1), field(6) as usize, field(11) as usize);
            let rdev = (field(9), field(10));
            let name = std::str::from_utf8(&bytes[110..110 + name_size - 1]).unwrap();
            assert_eq!(bytes[110 + name_size - 1], 0);
            let data_at = (110 + name_size).next_multiple_of(4);
            let data = bytes[data_at..data_at + size].to_vec();
            let name = name.to_string();
            bytes = &bytes[(data_at + size).next_multiple_of(4)..];
            if name == TRAILER {
                assert!(bytes.is_empty(), "bytes after the trailer");
                return entries;
            }
            entries.push((name, mode, rdev, data));
        }
    }

    #[test]
    fn entries_round_trip_with_types_and_padding() {
        let mut writer = CpioWriter::new(Vec::new());
        writer.dir("/bin", 0o755).unwrap();
        writer.file("bin/busybox", 0o755, b"\x7fELF12345").unwrap();
        writer.symlink("bin/sh", "busybox").unwrap();
        writer.char_device("dev/console", 0o600, 5, 1).unwrap();
        writer.file("empty", 0o644, b"").unwrap();
        let archive = writer.finish().unwrap();
        assert_eq!(archive.len() % 4, 0);

        let entries = read_all(&archive);
        let names: Vec<&str> = entries.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(
            names,
            ["bin", "bin/busybox", "bin/sh", "dev/console", "empty"]
        );
        assert_eq!(entries[0].1, 0o040755);
        assert_eq!(entries[1].1, 0o100755);
        assert_eq!(entries[1].3, b"\x7fELF12345");
        assert_eq!(entries[2].1, 0o120777);
        assert_eq!(entries[2].3, b"busybox");
        assert_eq!(entries[3].1, 0o020600);
        assert_eq!(entries[3].2, (5, 1));
        assert!(entries[4].3.is_empty());
    }

    #[test]
    fn header_layout_matches_the_newc_format() {
        let mut writer = CpioWriter::new(Vec::new());
        writer.file("a", 0o644, b"xy").unwrap();
        let archive = writer.finish().unwrap();
        let expected = concat!(
            "070701", "00000001", "000081a4", "00000000", "00000000", "00000001", "00000000",
            "00000002", "00000000", "00000000", "00000000", "00000000", "00000002", "00000000",
            "a\0", // 110 + 2 = 112: already aligned
            "xy\0\0",
        );
        assert_eq!(&archive[..expected.len()], expected.as_bytes());
        assert!(archive[expected.len()..].starts_with(b"070701"));
    }

    #[test]
    fn rejects_bad_names() {
        let mut writer = CpioWriter::new(Vec::new());
        assert!(writer.file("", 0o644, b"").is_err());
        assert!(writer.file("/", 0o644, b"").is_err());
        assert!(writer.file("a\0b", 0o644, b"").is_err());
        assert!(writer.file("TRAILER!!!", 0o644, b"").is_err());
    }
}
