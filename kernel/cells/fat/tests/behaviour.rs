//! FatFs's VFS contract on volumes it formats itself: inode numbers, directory cookies, files
//! removed while open, names, sizes, space, large transfers, threads.

mod common;

use common::*;
use keel_block::MemDisk;
use keel_fat::{FatFs, FatType, FormatOptions, MAX_FILE_SIZE, UNLINKED_DIR};
use keel_vfs::{Errno, FileSystem, FileType, OFlags, Rights};
use std::collections::BTreeMap;
use std::sync::Arc;

const FILE: FileType = FileType::RegularFile;
const DIR: FileType = FileType::Directory;

fn fat32(bytes: u64, cluster: u32) -> Arc<MemDisk> {
    formatted(bytes, FatType::Fat32, cluster)
}

fn formatted(bytes: u64, fat_type: FatType, cluster: u32) -> Arc<MemDisk> {
    fresh(
        bytes,
        &FormatOptions {
            fat_type: Some(fat_type),
            bytes_per_cluster: Some(cluster),
            ..FormatOptions::default()
        },
    )
}

#[test]
fn format_and_mount() {
    let disk = fat32(40 << 20, 512);
    let fs = FatFs::new(disk.clone()).unwrap();
    assert_eq!(fs.fat_type(), FatType::Fat32);
    assert!(!fs.was_dirty());
    assert_eq!(fs.read_dir(fs.root(), 0, 100).unwrap(), []);
    let labelled = Arc::new(MemDisk::new(512, 8192));
    let options = FormatOptions {
        label: Some("keel disk".into()),
        ..FormatOptions::default()
    };
    FatFs::format(labelled.clone(), &options).unwrap();
    let fs = FatFs::new(labelled).unwrap();
    assert_eq!(fs.label(), "KEEL DISK");
    assert_eq!(fs.fat_type(), FatType::Fat12);
    let bad = FormatOptions {
        label: Some("far too long a label".into()),
        ..FormatOptions::default()
    };
    assert_eq!(FatFs::format(disk.clone(), &bad), Err(Errno::Inval));
    let bad = FormatOptions {
        bytes_per_cluster: Some(3000),
        ..FormatOptions::default()
    };
    assert_eq!(FatFs::format(disk, &bad), Err(Errno::Inval));
}

#[test]
fn inode_numbers_are_stable() {
    let fs = FatFs::new(fat32(40 << 20, 512)).unwrap();
    let root = fs.root();
    let a = fs.create(root, "a", DIR, 1).unwrap();
    let b = fs.create(a, "b", DIR, 1).unwrap();
    let c = fs.create(b, "c.txt", FILE, 1).unwrap();
    fs.write_at(c, 0, b"see", 1).unwrap();
    assert_eq!(fs.lookup(root, "a"), Ok((a, DIR)));
    assert_eq!(fs.lookup(a, "b"), Ok((b, DIR)));
    assert_eq!(fs.lookup(b, "C.TXT"), Ok((c, FILE)));
    assert_eq!(fs.parent(b), Ok(a));
    assert_eq!(fs.parent(root), Ok(root));
    assert_eq!(fs.parent(c), Err(Errno::Notdir));
    // A directory moves with its subtree; every number stays.
    let z = fs.create(root, "z", DIR, 1).unwrap();
    fs.rename(root, "a", z, "moved", 2).unwrap();
    assert_eq!(fs.lookup(z, "moved"), Ok((a, DIR)));
    assert_eq!(fs.parent(a), Ok(z));
    assert_eq!(fs.lookup(a, "b"), Ok((b, DIR)));
    assert_eq!(fs.stat(c).unwrap().size, 3);
    let mut buf = [0u8; 3];
    assert_eq!(fs.read_at(c, 0, &mut buf, 2), Ok(3));
    assert_eq!(&buf, b"see");
    assert_eq!(fs.lookup(root, "a"), Err(Errno::Noent));
    // Into itself or below is refused.
    assert_eq!(fs.rename(z, "moved", b, "x", 3), Err(Errno::Inval));
    assert_eq!(fs.rename(z, "moved", a, "x", 3), Err(Errno::Inval));
    // A rename over a file keeps the source's number; the target's is gone.
    let d = fs.create(b, "d.txt", FILE, 3).unwrap();
    fs.rename(b, "c.txt", b, "d.txt", 4).unwrap();
    assert_eq!(fs.lookup(b, "d.txt"), Ok((c, FILE)));
    assert_eq!(fs.stat(d), Err(Errno::Noent));
    assert_eq!(fs.stat(c).unwrap().size, 3);
    // A remount numbers afresh, but the tree is the same.
    fs.sync().unwrap();
}

#[test]
fn names_follow_fat_rules() {
    let fs = FatFs::new(fat32(40 << 20, 512)).unwrap();
    let root = fs.root();
    let foo = fs.create(root, "Foo", FILE, 1).unwrap();
    assert_eq!(fs.create(root, "foo", FILE, 1), Err(Errno::Exist));
    assert_eq!(fs.create(root, "FOO", DIR, 1), Err(Errno::Exist));
    assert_eq!(fs.create(root, "a*b", FILE, 1), Err(Errno::Inval));
    assert_eq!(fs.create(root, "a:b", FILE, 1), Err(Errno::Inval));
    assert_eq!(fs.create(root, UNLINKED_DIR, DIR, 1), Err(Errno::Acces));
    assert_eq!(
        fs.create(root, &"x".repeat(256), FILE, 1),
        Err(Errno::Nametoolong)
    );
    let long = "é".repeat(127); // 254 bytes, 127 UTF-16 units
    let ino = fs.create(root, &long, FILE, 1).unwrap();
    assert_eq!(fs.lookup(root, &long), Ok((ino, FILE)));
    assert_eq!(fs.lookup(root, &long.to_uppercase()), Ok((ino, FILE)));
    assert_eq!(fs.read_dir(root, ino, 1).unwrap()[0].name, long);
    // Names starting with a non-ASCII character (which fatfs cannot take as they are).
    let dir = fs.create(root, "Ärger", DIR, 1).unwrap();
    let inner = fs.create(dir, "Ω.txt", FILE, 1).unwrap();
    fs.rename(dir, "Ω.txt", root, "ünter.txt", 1).unwrap();
    assert_eq!(fs.lookup(root, "ÜNTER.TXT"), Ok((inner, FILE)));
    assert_eq!(fs.create(root, "_nter.txt", FILE, 1).map(|_| ()), Ok(()));
    assert_eq!(fs.create(root, "😀", FILE, 1), Err(Errno::Inval));
    assert_eq!(fs.create(root, "a😀", FILE, 1), Err(Errno::Inval));
    // A rename that only changes case changes the stored name.
    fs.rename(root, "foo", root, "FOO", 2).unwrap();
    let listed: Vec<String> = fs
        .read_dir(root, 0, 10)
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert!(listed.contains(&"FOO".to_string()), "{listed:?}");
    assert!(!listed.contains(&"Foo".to_string()));
    assert_eq!(fs.lookup(root, "foo"), Ok((foo, FILE)));
    // Renaming onto itself does nothing.
    fs.rename(root, "FOO", root, "FOO", 3).unwrap();
    assert_eq!(fs.lookup(root, "FOO"), Ok((foo, FILE)));
}

#[test]
fn readdir_cookies_survive_changes() {
    let fs = FatFs::new(fat32(40 << 20, 512)).unwrap();
    let root = fs.root();
    let dir = fs.create(root, "d", DIR, 1).unwrap();
    for i in 0..40 {
        fs.create(dir, &format!("f{i:02}"), FILE, 1).unwrap();
    }
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut removed = Vec::new();
    let mut cookie = 0;
    let mut round = 0;
    loop {
        let batch = fs.read_dir(dir, cookie, 1 + round % 3).unwrap();
        let Some(last) = batch.last() else { break };
        cookie = last.next;
        for e in &batch {
            *seen.entry(e.name.clone()).or_default() += 1;
        }
        // Between batches: new entries (a few: each is listed in turn), and some old ones
        // (listed or not) removed.
        if round < 10 {
            fs.create(dir, &format!("new{round}"), FILE, 2).unwrap();
        }
        let victim = format!("f{:02}", (round * 7) % 40);
        if fs.remove(dir, &victim, FILE, 2).is_ok() {
            removed.push(victim);
        }
        round += 1;
    }
    for i in 0..40 {
        let name = format!("f{i:02}");
        if !removed.contains(&name) {
            assert_eq!(seen.get(&name), Some(&1), "{name}");
        }
    }
    assert!(seen.values().all(|&n| n == 1), "{seen:?}");
    // Cookie 0 starts again; the last cookie ends.
    assert_eq!(fs.read_dir(dir, cookie, 10).unwrap(), []);
    assert!(!fs.read_dir(dir, 0, 1).unwrap().is_empty());
}

#[test]
fn removed_while_open() {
    let disk = fat32(40 << 20, 512);
    let fs = Arc::new(FatFs::new(disk.clone()).unwrap());
    let (vfs, d) = mount(fs.clone());
    let baseline = fs.usage().unwrap().free_bytes;
    put(&vfs, &d, "f", &pattern(1, 50_000));
    let mut f = vfs.open(&d, "f", OFlags::NONE, NO, RW).unwrap();
    vfs.unlink_file(&d, "f").unwrap();
    assert_eq!(vfs.path_stat(&d, "f"), Err(Errno::Noent));
    let stat = vfs.stat(&f).unwrap();
    assert_eq!((stat.nlink, stat.size), (0, 50_000));
    // Still readable and writable through the handle.
    let mut buf = vec![0u8; 50_000];
    assert_eq!(vfs.pread(&f, &mut buf, 0), Ok(50_000));
    assert!(buf == pattern(1, 50_000));
    assert_eq!(vfs.pwrite(&f, b"more", 50_000), Ok(4));
    assert_eq!(vfs.stat(&f).unwrap().size, 50_004);
    // The name is free, and the hidden directory is not listed.
    put(&vfs, &d, "f", b"new f");
    assert_eq!(names(&vfs, &d, "."), ["f"]);
    assert_eq!(get(&vfs, &d, "f").unwrap(), b"new f");
    assert_eq!(vfs.path_stat(&d, UNLINKED_DIR), Err(Errno::Noent));
    // A rename over an open file keeps it too.
    put(&vfs, &d, "g", b"old g");
    let g = vfs.open(&d, "g", OFlags::NONE, NO, Rights::READ).unwrap();
    vfs.rename(&d, "f", &d, "g").unwrap();
    let mut small = [0u8; 5];
    assert_eq!(vfs.pread(&g, &mut small, 0), Ok(5));
    assert_eq!(&small, b"old g");
    assert_eq!(vfs.read(&mut f, &mut small), Ok(5));
    // Closing frees the space; the hidden directory goes too.
    drop((f, g));
    vfs.unlink_file(&d, "g").unwrap();
    assert_eq!(fs.usage().unwrap().free_bytes, baseline);
    // An open directory that is removed stays empty.
    vfs.create_dir(&d, "sub").unwrap();
    let sub = vfs
        .open(&d, "sub", OFlags::DIRECTORY, NO, Rights::READ)
        .unwrap();
    vfs.remove_dir(&d, "sub").unwrap();
    assert_eq!(vfs.stat(&sub).unwrap().nlink, 0);
    assert_eq!(vfs.read_dir(&sub, 2, 10).unwrap(), []);
    assert_eq!(vfs.create_dir(&sub, "x"), Err(Errno::Noent));
    assert_eq!(
        vfs.open(&sub, "y", OFlags::CREAT, NO, RW).unwrap_err(),
        Errno::Noent
    );
    drop(sub);
    assert_eq!(fs.usage().unwrap().free_bytes, baseline);
}

#[test]
fn a_crash_with_unlinked_open_files_is_cleaned_at_mount() {
    let disk = fat32(40 << 20, 512);
    let fs = Arc::new(FatFs::new(disk.clone()).unwrap());
    let baseline = fs.usage().unwrap().free_bytes;
    let (vfs, d) = mount(fs.clone());
    put(&vfs, &d, "kept", &pattern(2, 20_000));
    let handle = vfs.open(&d, "kept", OFlags::NONE, NO, RW).unwrap();
    vfs.unlink_file(&d, "kept").unwrap();
    fs.sync().unwrap();
    // "Crash": the disk as it is, with the handle still open.
    let after_crash = Arc::new(MemDisk::from_bytes(512, disk.to_bytes()));
    let remounted = FatFs::new(after_crash).unwrap();
    assert_eq!(remounted.usage().unwrap().free_bytes, baseline);
    assert_eq!(remounted.read_dir(remounted.root(), 0, 10).unwrap(), []);
    drop(handle);
}

#[test]
fn sizes_and_limits() {
    let fs = FatFs::new(formatted(40 << 20, FatType::Fat16, 4096)).unwrap();
    let root = fs.root();
    let f = fs.create(root, "f", FILE, 1).unwrap();
    assert_eq!(fs.set_size(f, MAX_FILE_SIZE + 1, 1), Err(Errno::Fbig));
    assert_eq!(fs.write_at(f, MAX_FILE_SIZE, b"x", 1), Err(Errno::Fbig));
    assert_eq!(fs.write_at(f, 0, b"", 1), Ok(0));
    assert_eq!(fs.write_at(f, 10_000, b"tail", 1), Ok(4));
    let mut buf = vec![7u8; 10_010];
    assert_eq!(fs.read_at(f, 0, &mut buf, 1), Ok(10_004));
    assert!(buf[..10_000].iter().all(|&b| b == 0));
    assert_eq!(&buf[10_000..10_004], b"tail");
    assert_eq!(fs.read_at(f, 20_000, &mut buf, 1), Ok(0));
    fs.set_size(f, 5, 1).unwrap();
    assert_eq!(fs.stat(f).unwrap().size, 5);
    fs.set_size(f, 0, 1).unwrap();
    fs.set_size(f, 9000, 1).unwrap();
    assert_eq!(fs.read_at(f, 0, &mut buf, 1), Ok(9000));
    assert!(buf[..9000].iter().all(|&b| b == 0));
    assert_eq!(fs.append(f, b"!", 1), Ok((1, 9001)));
    // Type errors.
    let d = fs.create(root, "d", DIR, 1).unwrap();
    assert_eq!(fs.read_at(d, 0, &mut buf, 1), Err(Errno::Isdir));
    assert_eq!(fs.write_at(d, 0, b"x", 1), Err(Errno::Isdir));
    assert_eq!(fs.lookup(f, "x"), Err(Errno::Notdir));
    assert_eq!(fs.create(f, "x", FILE, 1), Err(Errno::Notdir));
    assert_eq!(fs.read_dir(f, 0, 1), Err(Errno::Notdir));
    assert_eq!(fs.remove(root, "d", FILE, 1), Err(Errno::Isdir));
    assert_eq!(fs.remove(root, "f", DIR, 1), Err(Errno::Notdir));
    fs.create(d, "inner", FILE, 1).unwrap();
    assert_eq!(fs.remove(root, "d", DIR, 1), Err(Errno::Notempty));
    assert_eq!(fs.stat(12345), Err(Errno::Noent));
    assert_eq!(fs.retain(12345), Err(Errno::Noent));
    let stat = fs.stat(d).unwrap();
    assert_eq!((stat.filetype, stat.size, stat.nlink), (DIR, 1, 2));
    assert_eq!(fs.stat(root).unwrap().nlink, 3);
}

#[test]
fn usage_counts_clusters() {
    let fs = FatFs::new(formatted(40 << 20, FatType::Fat16, 4096)).unwrap();
    let usage = fs.usage().unwrap();
    assert_eq!(usage.block_size, 4096);
    assert!(
        usage.total_bytes > 38 << 20 && usage.total_bytes < 40 << 20,
        "{usage:?}"
    );
    let f = fs.create(fs.root(), "f", FILE, 1).unwrap();
    fs.write_at(f, 0, &[1u8; 10_000], 1).unwrap();
    assert_eq!(fs.usage().unwrap().free_bytes, usage.free_bytes - 3 * 4096);
}

#[test]
fn large_transfers_are_few_device_requests() {
    let memdisk = formatted(64 << 20, FatType::Fat16, 4096);
    let device = Flaky::new(memdisk);
    let fs = FatFs::new(device.clone()).unwrap();
    let f = fs.create(fs.root(), "big", FILE, 1).unwrap();
    let data = pattern(3, 4 << 20);
    let before = device.counts();
    assert_eq!(fs.write_at(f, 0, &data, 1), Ok(data.len()));
    fs.sync().unwrap();
    let writes = device.counts().1 - before.1;
    eprintln!("4 MiB written and synced in {writes} device writes");
    assert!(writes <= 40, "{writes} device writes for 4 MiB");

    fs.drop_cache();
    let before = device.counts();
    let mut buf = vec![0u8; 1 << 20];
    assert_eq!(fs.read_at(f, 0, &mut buf, 1), Ok(1 << 20));
    assert!(buf == data[..1 << 20]);
    let reads = device.counts().0 - before.0;
    eprintln!("1 MiB read cold in {reads} device reads");
    assert!(reads <= 8, "{reads} device reads for 1 MiB");
    // Sequential 64 KiB reads of the rest: no walk of the chain from its start each time.
    let before = device.counts();
    let mut offset = 1 << 20;
    while offset < data.len() {
        let n = fs.read_at(f, offset as u64, &mut buf[..65536], 1).unwrap();
        assert!(buf[..n] == data[offset..offset + n]);
        offset += n;
    }
    let reads = device.counts().0 - before.0;
    eprintln!("3 MiB read in 64 KiB pieces in {reads} device reads");
    assert!(
        reads <= 60,
        "{reads} device reads for 3 MiB in 64 KiB pieces"
    );
    // A small read at an odd offset still works.
    let mut small = [0u8; 3];
    assert_eq!(fs.read_at(f, 4_000_001, &mut small, 1), Ok(3));
    assert_eq!(&small, &data[4_000_001..4_000_004]);
}

#[test]
fn threads_share_one_volume() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<FatFs>();
    let fs = Arc::new(FatFs::new(fat32(40 << 20, 512)).unwrap());
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let fs = fs.clone();
            std::thread::spawn(move || {
                let dir = fs.create(fs.root(), &format!("t{t}"), DIR, 1).unwrap();
                for i in 0..25u64 {
                    let name = format!("file{i}");
                    let f = fs.create(dir, &name, FILE, 1).unwrap();
                    let data = pattern(t * 100 + i, 1000 + i as usize * 50);
                    assert_eq!(fs.write_at(f, 0, &data, 1), Ok(data.len()));
                    let mut back = vec![0u8; data.len()];
                    assert_eq!(fs.read_at(f, 0, &mut back, 1), Ok(data.len()));
                    assert_eq!(back, data);
                    if i % 3 == 0 {
                        fs.remove(dir, &name, FILE, 1).unwrap();
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    for t in 0..4 {
        let (dir, _) = fs.lookup(fs.root(), &format!("t{t}")).unwrap();
        assert_eq!(fs.read_dir(dir, 0, 100).unwrap().len(), 16);
    }
    fs.sync().unwrap();
}
