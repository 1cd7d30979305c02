//! Disk images for Keel's AHCI disk: an MBR with one FAT32 partition from 1 MiB to the end,
//! formatted and filled with mtools, so that Keel, Linux and the host tools all read the same
//! files. The tests prepare and inspect images with these functions.

use std::fs::OpenOptions;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::process::run_captured;

/// Where the partition starts, in 512-byte sectors (1 MiB, as partitioning tools align).
pub const PARTITION_START_LBA: u64 = 2048;
/// The MBR partition type of FAT32 with LBA addressing.
const FAT32_LBA_TYPE: u8 = 0x0c;
const SECTOR: u64 = 512;
/// The smallest partition FAT32 fits in with one-sector clusters (65525 clusters and the FATs).
pub const MIN_PARTITION_BYTES: u64 = 40 * 1024 * 1024;

/// The mtools name of the partition of the image at `path` (`path@@1M`).
pub fn mtools_target(path: &Path) -> String {
    format!("{}@@{}", path.display(), PARTITION_START_LBA * SECTOR)
}

/// The 16-byte MBR entry of a partition of `count` sectors from `start`. The CHS fields hold
/// the "use LBA" values (1023/254/63), as for any partition past 8 GiB.
fn partition_entry(kind: u8, start: u64, count: u64) -> Result<[u8; 16]> {
    let (Ok(start), Ok(count)) = (u32::try_from(start), u32::try_from(count)) else {
        bail!("an MBR partition must lie below 2 TiB");
    };
    let mut entry = [0u8; 16];
    entry[1..4].copy_from_slice(&[0xfe, 0xff, 0xff]);
    entry[4] = kind;
    entry[5..8].copy_from_slice(&[0xfe, 0xff, 0xff]);
    entry[8..12].copy_from_slice(&start.to_le_bytes());
    entry[12..16].copy_from_slice(&count.to_le_bytes());
    Ok(entry)
}

/// Creates a `bytes`-long image at `path` (which must not exist) holding an MBR with one FAT32
/// partition labelled `label`, and copies `files` (path in the volume, contents) into it.
pub fn create_fat32_image(
    path: &Path,
    bytes: u64,
    label: &str,
    files: &[(&str, &[u8])],
) -> Result<()> {
    let partition = bytes.saturating_sub(PARTITION_START_LBA * SECTOR);
    create_fat32_image_with_partition(path, bytes, partition, label, files)
}

/// Like [`create_fat32_image`] with a partition of `partition_bytes`, leaving the sectors
/// behind it unused (raw-device benchmarks write there).
pub fn create_fat32_image_with_partition(
    path: &Path,
    bytes: u64,
    partition_bytes: u64,
    label: &str,
    files: &[(&str, &[u8])],
) -> Result<()> {
    if partition_bytes < MIN_PARTITION_BYTES || !partition_bytes.is_multiple_of(SECTOR) {
        bail!("a FAT32 partition needs at least {MIN_PARTITION_BYTES} bytes in whole sectors");
    }
    if !bytes.is_multiple_of(SECTOR) || partition_bytes + PARTITION_START_LBA * SECTOR > bytes {
        bail!("the partition does not fit in the image");
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    if path.exists() {
        bail!("{} already exists", path.display());
    }
    // Made under another name and renamed when complete, so a failure leaves no half-made
    // image that would later pass for a good one.
    let partial = scratch(path, "partial");
    let made = fill_image(&partial, bytes, partition_bytes, label, files)
        .and_then(|()| Ok(std::fs::rename(&partial, path)?));
    if made.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    made
}

fn fill_image(
    path: &Path,
    bytes: u64,
    partition_bytes: u64,
    label: &str,
    files: &[(&str, &[u8])],
) -> Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.set_len(bytes)?;
    let sectors = partition_bytes / SECTOR;
    file.seek(SeekFrom::Start(446))?;
    file.write_all(&partition_entry(
        FAT32_LBA_TYPE,
        PARTITION_START_LBA,
        sectors,
    )?)?;
    file.seek(SeekFrom::Start(510))?;
    file.write_all(&[0x55, 0xaa])?;
    drop(file);
    run_captured(Command::new("mformat").args([
        "-i",
        &mtools_target(path),
        "-F",
        "-v",
        label,
        "-T",
        &sectors.to_string(),
        "-h",
        "64",
        "-s",
        "32",
        "-H",
        &PARTITION_START_LBA.to_string(),
        "::",
    ]))
    .context("formatting with mformat (Debian package mtools)")?;
    for (name, contents) in files {
        put_file(path, name, contents)?;
    }
    Ok(())
}

/// Creates the image `keel run` attaches unless one is there: FAT32 with a README. A blank
/// image (an all-zero first sector, as earlier versions made) is replaced.
pub fn ensure_run_image(path: &Path, bytes: u64, readme: &str) -> Result<()> {
    if let Ok(mut file) = std::fs::File::open(path) {
        let mut first = [0u8; 512];
        let read = std::io::Read::read(&mut file, &mut first)?;
        if first[..read].iter().any(|&b| b != 0) {
            return Ok(());
        }
        std::fs::remove_file(path)?;
    }
    create_fat32_image(path, bytes, "KEEL", &[("README.TXT", readme.as_bytes())])
}

/// A scratch file next to `image` for passing contents to and from mtools.
fn scratch(image: &Path, what: &str) -> PathBuf {
    let mut name = image.as_os_str().to_owned();
    name.push(format!(".{what}.{}", std::process::id()));
    PathBuf::from(name)
}

/// Copies `contents` to `name` (a path in the volume; its directories are made) in the image.
pub fn put_file(image: &Path, name: &str, contents: &[u8]) -> Result<()> {
    let target = mtools_target(image);
    let parts: Vec<&str> = name.split('/').filter(|p| !p.is_empty()).collect();
    for depth in 1..parts.len() {
        let dir = format!("::/{}", parts[..depth].join("/"));
        let exists = Command::new("mdir")
            .args(["-i", &target, &dir])
            .output()
            .is_ok_and(|o| o.status.success());
        if !exists {
            run_captured(Command::new("mmd").args(["-i", &target, &dir]))?;
        }
    }
    let source = scratch(image, "in");
    std::fs::write(&source, contents)?;
    let result = run_captured(Command::new("mcopy").args([
        "-o".as_ref(),
        "-i".as_ref(),
        target.as_ref(),
        source.as_os_str(),
        format!("::/{}", parts.join("/")).as_ref(),
    ]));
    let _ = std::fs::remove_file(&source);
    result.map(drop)
}

/// The contents of `name` in the image.
pub fn get_file(image: &Path, name: &str) -> Result<Vec<u8>> {
    let out = scratch(image, "out");
    let result = run_captured(Command::new("mcopy").args([
        "-o".as_ref(),
        "-n".as_ref(),
        "-i".as_ref(),
        mtools_target(image).as_ref(),
        format!("::/{}", name.trim_start_matches('/')).as_ref(),
        out.as_os_str(),
    ]));
    let contents = result.and_then(|_| Ok(std::fs::read(&out)?));
    let _ = std::fs::remove_file(&out);
    contents.with_context(|| format!("reading {name} from {}", image.display()))
}

/// The names in directory `dir` of the image, as `mdir -b` lists them.
pub fn list(image: &Path, dir: &str) -> Result<Vec<String>> {
    let output = run_captured(Command::new("mdir").args([
        "-b",
        "-i",
        &mtools_target(image),
        &format!("::/{}", dir.trim_start_matches('/')),
    ]))?;
    Ok(String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| line.rsplit('/').next())
        .filter(|name| !name.is_empty())
        .map(str::to_string)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn have_mtools() -> bool {
        Command::new("mformat").arg("--version").output().is_ok()
    }

    #[test]
    fn partition_entry_is_lba_only() {
        let entry = partition_entry(0x0c, 2048, 129024).unwrap();
        assert_eq!(entry[4], 0x0c);
        assert_eq!(u32::from_le_bytes(entry[8..12].try_into().unwrap()), 2048);
        assert_eq!(
            u32::from_le_bytes(entry[12..16].try_into().unwrap()),
            129024
        );
        assert!(partition_entry(0x0c, 1 << 32, 1).is_err());
    }

    #[test]
    fn image_round_trips_files_through_mtools() {
        if !have_mtools() {
            eprintln!("mtools is not installed (make test installs it): skipped");
            return;
        }
        let path = std::env::temp_dir().join(format!("keel-fat-{}.img", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
        create_fat32_image(
            &path,
            48 << 20,
            "TEST",
            &[("README.TXT", b"hello\n"), ("docs/A long name.bin", &data)],
        )
        .unwrap();
        assert_eq!(get_file(&path, "README.TXT").unwrap(), b"hello\n");
        assert_eq!(get_file(&path, "docs/A long name.bin").unwrap(), data);
        assert!(
            list(&path, "docs")
                .unwrap()
                .contains(&"A long name.bin".to_string())
        );
        let mbr = std::fs::read(&path).unwrap();
        assert_eq!(&mbr[510..512], &[0x55, 0xaa]);
        assert!(create_fat32_image(&path, 48 << 20, "TEST", &[]).is_err());
        let other = path.with_extension("small");
        assert!(create_fat32_image(&other, MIN_PARTITION_BYTES, "TEST", &[]).is_err());
        std::fs::remove_file(&path).unwrap();
    }
}
