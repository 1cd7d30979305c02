//! Bad volumes and bad devices: errors, never panics or hangs.

mod common;

use common::*;
use keel_block::{BlockDevice, MemDisk};
use keel_fat::{FatFs, FatType, FormatOptions};
use keel_vfs::{Errno, FileSystem, FileType, Inode};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

const FILE: FileType = FileType::RegularFile;
const DIR: FileType = FileType::Directory;

fn format(bytes: u64, fat_type: FatType, cluster: u32) -> Arc<MemDisk> {
    fresh(
        bytes,
        &FormatOptions {
            fat_type: Some(fat_type),
            bytes_per_cluster: Some(cluster),
            ..FormatOptions::default()
        },
    )
}

fn patch(disk: &MemDisk, at: usize, bytes: &[u8]) -> Arc<MemDisk> {
    let mut image = disk.to_bytes();
    image[at..at + bytes.len()].copy_from_slice(bytes);
    Arc::new(MemDisk::from_bytes(512, image))
}

#[test]
fn corrupt_boot_sectors_are_refused() {
    let fat16 = format(8 << 20, FatType::Fat16, 1024);
    let fat32 = format(40 << 20, FatType::Fat32, 512);
    assert!(FatFs::new(fat16.clone()).is_ok());
    assert!(FatFs::new(fat32.clone()).is_ok());
    let cases: [(&Arc<MemDisk>, usize, &[u8]); 12] = [
        (&fat16, 11, &[0, 0]), // bytes per sector
        (&fat16, 11, &[0, 3]), // 768 bytes per sector
        (&fat16, 13, &[0]),    // sectors per cluster
        (&fat16, 13, &[6]),
        (&fat16, 16, &[0]),                      // number of FATs
        (&fat16, 19, &[0xFF, 0xFF]),             // more sectors than the disk
        (&fat16, 22, &[0, 0]),                   // sectors per FAT: makes it look like FAT32
        (&fat16, 510, &[0x55, 0x00]),            // signature
        (&fat32, 44, &[1, 0, 0, 0]),             // root cluster 1
        (&fat32, 44, &[0xFF, 0xFF, 0xFF, 0x0F]), // root cluster past the end
        (&fat32, 42, &[1, 0]),                   // FAT32 version
        (&fat32, 36, &[1, 0, 0, 0]),             // a FAT too small for the clusters
    ];
    for (disk, at, bytes) in cases {
        let bad = patch(disk, at, bytes);
        assert_eq!(
            FatFs::new(bad).err(),
            Some(Errno::Inval),
            "byte {at} = {bytes:?}"
        );
    }
    // Not FAT at all, too small, or empty.
    assert_eq!(
        FatFs::new(Arc::new(MemDisk::new(512, 2048))).err(),
        Some(Errno::Inval)
    );
    assert_eq!(
        FatFs::new(Arc::new(MemDisk::new(512, 0))).err(),
        Some(Errno::Inval)
    );
    let truncated = Arc::new(MemDisk::from_bytes(
        512,
        fat16.to_bytes()[..1 << 20].to_vec(),
    ));
    assert_eq!(FatFs::new(truncated).err(), Some(Errno::Inval));
    // A corrupt FSInfo sector is fatfs's to refuse.
    let bad = patch(&fat32, 512, b"XXXX");
    assert_eq!(FatFs::new(bad).err(), Some(Errno::Inval));
}

/// Fills a volume with a little of everything.
fn populate(fs: &FatFs) {
    let root = fs.root();
    for d in 0..3 {
        let dir = fs.create(root, &format!("directory {d}"), DIR, 1).unwrap();
        let inner = fs.create(dir, "inner", DIR, 1).unwrap();
        for f in 0..6u64 {
            let ino = fs
                .create(dir, &format!("file with a long name {f}.bin"), FILE, 1)
                .unwrap();
            fs.write_at(ino, 0, &pattern(d * 10 + f, (f as usize) * 3000), 1)
                .unwrap();
        }
        let deep = fs.create(inner, "DEEP.TXT", FILE, 1).unwrap();
        fs.write_at(deep, 0, b"deep", 1).unwrap();
    }
    let top = fs.create(root, "top.bin", FILE, 1).unwrap();
    fs.write_at(top, 0, &pattern(99, 70_000), 1).unwrap();
    fs.sync().unwrap();
}

/// Everything a program might do on a volume; every error is fine.
fn exercise(disk: Arc<MemDisk>) {
    let Ok(fs) = FatFs::new(disk) else { return };
    let mut stack: Vec<(Inode, usize)> = vec![(fs.root(), 0)];
    let mut files = Vec::new();
    let mut dirs = Vec::new();
    let mut visited = 0;
    while let Some((dir, depth)) = stack.pop() {
        visited += 1;
        if visited > 200 {
            break;
        }
        let _ = fs.stat(dir);
        let Ok(entries) = fs.read_dir(dir, 0, 100) else {
            continue;
        };
        for e in entries {
            let _ = fs.lookup(dir, &e.name);
            match e.filetype {
                FileType::Directory if depth < 8 => {
                    dirs.push((dir, e.name.clone()));
                    stack.push((e.ino, depth + 1));
                }
                FileType::Directory => {}
                FileType::RegularFile => files.push((dir, e.name.clone(), e.ino)),
            }
        }
    }
    let mut buf = vec![0u8; 40_000];
    for (_, _, ino) in &files {
        let mut offset = 0;
        while let Ok(n) = fs.read_at(*ino, offset, &mut buf, 1) {
            if n == 0 || offset > 1 << 20 {
                break;
            }
            offset += n as u64;
        }
        let _ = fs.stat(*ino);
    }
    let root = fs.root();
    if let Ok(new) = fs.create(root, "new file.txt", FILE, 2) {
        let _ = fs.write_at(new, 0, &[5u8; 20_000], 2);
        let _ = fs.set_size(new, 7000, 2);
        let _ = fs.append(new, b"appended", 2);
    }
    let _ = fs.create(root, "new dir", DIR, 2);
    for (i, (dir, name, ino)) in files.iter().enumerate().take(6) {
        let _ = fs.write_at(*ino, 100, b"overwrite", 3);
        let _ = fs.set_times(*ino, Some(1), Some(2), 3);
        match i % 3 {
            0 => drop(fs.remove(*dir, name, FILE, 3)),
            1 => drop(fs.rename(*dir, name, root, &format!("moved {i}"), 3)),
            _ => drop(fs.set_size(*ino, 1, 3)),
        }
    }
    for (i, (parent, name)) in dirs.iter().enumerate().take(3) {
        let _ = fs.rename(*parent, name, root, &format!("moved dir {i}"), 4);
        let _ = fs.remove(root, &format!("moved dir {i}"), DIR, 4);
    }
    let _ = fs.usage();
    let _ = fs.sync();
    let _ = fs.unmount();
}

/// Offsets of what look like short-name directory records in `image[..span]`.
fn directory_records(image: &[u8], span: usize) -> Vec<usize> {
    (0..span.min(image.len()) / 32)
        .map(|i| i * 32)
        .filter(|&at| {
            let r = &image[at..at + 32];
            r[11] & !0x30 == 0
                && (r[0].is_ascii_uppercase() || r[0].is_ascii_digit() || r[0] == b'.')
                && r[1..11].iter().all(|&b| b.is_ascii_graphic() || b == b' ')
        })
        .collect()
}

/// Random bytes of the metadata (boot sector, FATs, root directory, first clusters)
/// overwritten, then everything tried: errors are fine; panics and hangs are not.
#[test]
fn random_corruption_never_panics_or_hangs() {
    let volumes: Vec<(Arc<MemDisk>, usize, usize)> = [
        (FatType::Fat12, 1u64 << 20, 512u32, 300usize),
        (FatType::Fat16, 8 << 20, 512, 300),
        (FatType::Fat32, 40 << 20, 512, 30),
    ]
    .into_iter()
    .map(|(fat_type, bytes, cluster, rounds)| {
        let disk = format(bytes, fat_type, cluster);
        populate(&FatFs::new(disk.clone()).unwrap());
        // The metadata lies before the first files' data.
        let span = match fat_type {
            FatType::Fat32 => 900 * 1024,
            _ => 256 * 1024,
        };
        (disk, span, rounds)
    })
    .collect();
    let progress = Arc::new(AtomicU64::new(0));
    let worker_progress = progress.clone();
    let worker = std::thread::spawn(move || {
        let mut panics = Vec::new();
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        for (v, (disk, span, rounds)) in volumes.iter().enumerate() {
            let clean = disk.to_bytes();
            let records = directory_records(&clean, *span);
            assert!(records.len() > 20, "volume {v}: {} records", records.len());
            for round in 0..*rounds {
                let mut image = clean.clone();
                let hits = 1 + next() % 24;
                for _ in 0..hits {
                    let at = (next() % *span as u64) as usize;
                    image[at] = next() as u8;
                }
                // Sometimes a whole FAT entry at once.
                if next() % 3 == 0 {
                    let at = (next() % *span as u64) as usize & !3;
                    image[at..at + 4].copy_from_slice(&(next() as u32).to_le_bytes());
                }
                // Often a field of a directory entry: its cluster, size, type or name.
                if next() % 2 == 0 && !records.is_empty() {
                    let at = records[(next() % records.len() as u64) as usize];
                    let small = [0u16, 1, 2, 3, 0xFFF7, 0xFFFF][(next() % 6) as usize];
                    let value = if next() % 2 == 0 {
                        small
                    } else {
                        next() as u16
                    };
                    match next() % 5 {
                        0 => image[at + 26..at + 28].copy_from_slice(&value.to_le_bytes()),
                        1 => image[at + 20..at + 22].copy_from_slice(&value.to_le_bytes()),
                        2 => {
                            image[at + 28..at + 32].copy_from_slice(&(next() as u32).to_le_bytes())
                        }
                        3 => image[at + 11] ^= 0x10,
                        _ => image[at] = [0, 0xE5, b'.', b' '][(next() % 4) as usize],
                    }
                }
                let disk = Arc::new(MemDisk::from_bytes(512, image));
                if catch_unwind(AssertUnwindSafe(|| exercise(disk))).is_err() {
                    panics.push((v, round));
                }
                worker_progress.fetch_add(1, Ordering::SeqCst);
            }
        }
        panics
    });
    let mut last = (0, Instant::now());
    while !worker.is_finished() {
        std::thread::sleep(Duration::from_millis(200));
        let now = progress.load(Ordering::SeqCst);
        if now != last.0 {
            last = (now, Instant::now());
        }
        assert!(
            last.1.elapsed() < Duration::from_secs(60),
            "no progress for a minute after {now} volumes: a hang"
        );
    }
    let panics = worker.join().unwrap();
    assert!(panics.is_empty(), "panics on (volume, round): {panics:?}");
}

#[test]
fn a_corrupt_directory_is_io_and_the_rest_works() {
    let disk = format(8 << 20, FatType::Fat16, 1024);
    let fs = FatFs::new(disk.clone()).unwrap();
    let sub = fs.create(fs.root(), "sub", DIR, 1).unwrap();
    let victim = fs.create(sub, "VICTIM.BIN", FILE, 1).unwrap();
    fs.write_at(victim, 0, &[1u8; 5000], 1).unwrap();
    let ok = fs.create(fs.root(), "fine.txt", FILE, 1).unwrap();
    fs.write_at(ok, 0, b"fine", 1).unwrap();
    fs.sync().unwrap();
    drop(fs);
    // Point the victim's entry at cluster 1 (which would underflow fatfs's arithmetic), or
    // past the end of the volume.
    for cluster in [1u16, 0xFFF0] {
        let mut image = disk.to_bytes();
        let at = image.windows(11).position(|w| w == b"VICTIM  BIN").unwrap();
        image[at + 26..at + 28].copy_from_slice(&cluster.to_le_bytes());
        let fs = FatFs::new(Arc::new(MemDisk::from_bytes(512, image))).unwrap();
        let (sub, _) = fs.lookup(fs.root(), "sub").unwrap();
        assert_eq!(fs.lookup(sub, "VICTIM.BIN"), Err(Errno::Io));
        assert_eq!(fs.read_dir(sub, 0, 10), Err(Errno::Io));
        assert_eq!(fs.create(sub, "x", FILE, 1), Err(Errno::Io));
        assert_eq!(fs.stat(sub), Err(Errno::Io));
        let (ok, _) = fs.lookup(fs.root(), "fine.txt").unwrap();
        let mut buf = [0u8; 4];
        assert_eq!(fs.read_at(ok, 0, &mut buf, 1), Ok(4));
        assert_eq!(&buf, b"fine");
    }
}

#[test]
fn a_looping_fat_chain_ends_reads() {
    let disk = format(8 << 20, FatType::Fat16, 512);
    let fs = FatFs::new(disk.clone()).unwrap();
    let f = fs.create(fs.root(), "LOOP.BIN", FILE, 1).unwrap();
    fs.write_at(f, 0, &pattern(4, 4096), 1).unwrap();
    fs.sync().unwrap();
    drop(fs);
    let mut image = disk.to_bytes();
    let at = image.windows(11).position(|w| w == b"LOOP    BIN").unwrap();
    let first = u16::from_le_bytes([image[at + 26], image[at + 27]]);
    // Claim 1 MiB, and make the 8th cluster point back at the first.
    image[at + 28..at + 32].copy_from_slice(&(1u32 << 20).to_le_bytes());
    let fat = 512 * u16::from_le_bytes([image[14], image[15]]) as usize;
    let last = fat + 2 * (first as usize + 7);
    image[last..last + 2].copy_from_slice(&first.to_le_bytes());
    let fs = FatFs::new(Arc::new(MemDisk::from_bytes(512, image))).unwrap();
    let (f, _) = fs.lookup(fs.root(), "loop.bin").unwrap();
    let mut buf = vec![0u8; 1 << 20];
    let n = fs.read_at(f, 0, &mut buf, 1).unwrap();
    assert!(n >= 4096);
    assert_eq!(&buf[..4096], &pattern(4, 4096)[..]);
}

#[test]
fn a_full_disk_is_nospc() {
    let disk = format(1 << 20, FatType::Fat12, 1024);
    let fs = FatFs::new(disk.clone()).unwrap();
    let root = fs.root();
    let free = fs.usage().unwrap().free_bytes;
    let big = fs.create(root, "big", FILE, 1).unwrap();
    // A write larger than the disk writes what fits.
    let written = fs.write_at(big, 0, &vec![7u8; 2 << 20], 1).unwrap();
    assert_eq!(written as u64, free);
    assert_eq!(fs.usage().unwrap().free_bytes, 0);
    assert_eq!(fs.write_at(big, written as u64, b"x", 1), Err(Errno::Nospc));
    assert_eq!(fs.append(big, b"x", 1), Err(Errno::Nospc));
    assert_eq!(
        fs.set_size(big, written as u64 + 5000, 1),
        Err(Errno::Nospc)
    );
    assert_eq!(fs.stat(big).unwrap().size, written as u64);
    // A new directory needs a cluster; an empty file does not.
    assert_eq!(fs.create(root, "dir", DIR, 1), Err(Errno::Nospc));
    let empty = fs.create(root, "empty", FILE, 1).unwrap();
    assert_eq!(fs.write_at(empty, 0, b"x", 1), Err(Errno::Nospc));
    // Overwriting in place needs no space.
    assert_eq!(fs.write_at(big, 0, b"still fine", 1), Ok(10));
    // Freeing space makes room again.
    fs.set_size(big, 0, 1).unwrap();
    assert_eq!(fs.usage().unwrap().free_bytes, free);
    fs.create(root, "dir", DIR, 1).unwrap();
    // The fixed FAT12 root directory fills up too.
    let mut created = 0;
    let result = loop {
        match fs.create(root, &format!("f{created}"), FILE, 1) {
            Ok(_) => created += 1,
            Err(e) => break e,
        }
    };
    assert_eq!(result, Errno::Nospc);
    assert!(created > 50, "{created}");
    fs.sync().unwrap();
    drop(fs);
    if tool("fsck.fat").is_some() {
        let image = TempFile::new("full");
        save(&disk, image.path());
        assert_clean(image.path());
    }
}

#[test]
fn device_errors_are_io() {
    let memdisk = format(8 << 20, FatType::Fat16, 1024);
    let device = Flaky::new(memdisk.clone());
    device.fail_reads.store(true, Ordering::SeqCst);
    assert_eq!(FatFs::new(device.clone()).err(), Some(Errno::Io));
    device.fail_reads.store(false, Ordering::SeqCst);
    let fs = FatFs::new(device.clone()).unwrap();
    let root = fs.root();
    let f = fs.create(root, "f", FILE, 1).unwrap();
    fs.write_at(f, 0, &pattern(1, 100_000), 1).unwrap();
    fs.sync().unwrap();
    // Reads that miss the cache fail.
    fs.drop_cache();
    device.fail_reads.store(true, Ordering::SeqCst);
    let mut buf = vec![0u8; 100_000];
    assert_eq!(fs.read_at(f, 0, &mut buf, 1), Err(Errno::Io));
    assert_eq!(fs.lookup(root, "nothing"), Err(Errno::Io));
    device.fail_reads.store(false, Ordering::SeqCst);
    assert_eq!(fs.read_at(f, 0, &mut buf, 1), Ok(100_000));
    // Writes fail when they reach the device: at a sync, or straight away if large.
    device.fail_writes.store(true, Ordering::SeqCst);
    assert_eq!(fs.write_at(f, 0, b"small", 1), Ok(5));
    assert_eq!(fs.sync(), Err(Errno::Io));
    assert_eq!(fs.write_at(f, 0, &[0u8; 100_000], 1), Err(Errno::Io));
    // Nothing is lost: once the device recovers, the next sync writes it all.
    device.fail_writes.store(false, Ordering::SeqCst);
    fs.sync().unwrap();
    let again = FatFs::new(Arc::new(MemDisk::from_bytes(512, memdisk.to_bytes()))).unwrap();
    let (f2, _) = again.lookup(again.root(), "f").unwrap();
    assert_eq!(again.read_at(f2, 0, &mut buf[..5], 1), Ok(5));
    assert_eq!(&buf[..5], b"small");
    // A read-only device mounts and reads; writing is Rofs.
    device.read_only.store(true, Ordering::SeqCst);
    let ro = FatFs::new(device.clone()).unwrap();
    let (f3, _) = ro.lookup(ro.root(), "f").unwrap();
    assert_eq!(ro.read_at(f3, 0, &mut buf, 1), Ok(100_000));
    assert_eq!(ro.write_at(f3, 0, &[1u8; 200_000], 1), Err(Errno::Rofs));
    let _ = ro.create(ro.root(), "g", FILE, 1);
    assert_eq!(ro.sync(), Err(Errno::Rofs));
    let _: &dyn BlockDevice = &*device;
}
