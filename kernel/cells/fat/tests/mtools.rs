//! FatFs against the host's FAT tools: images made by `mkfs.fat` and filled by `mcopy` are read
//! back byte for byte; what FatFs writes is read back by `mcopy`/`mdir` and passes
//! `fsck.fat -n`. Each test is skipped (with a note) if the tools are not installed.

mod common;

use common::*;
use keel_block::{BlockDevice, MemDisk, partitions, read_partitions};
use keel_fat::{FatFs, FatType};
use keel_vfs::{Errno, FileSystem, FileType, OFlags, Vfs};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Copies `data` into the image at `dest` (an mtools path like `::/dir/name`).
fn mcopy_in(image: &str, data: &[u8], dest: &str) {
    let src = TempFile::new("src");
    std::fs::write(&src.0, data).unwrap();
    run("mcopy", &["-i", image, src.path(), dest]);
}

/// The bytes of `path` in the image, as mtools reads them.
fn mcopy_out(image: &str, path: &str) -> Vec<u8> {
    let out = TempFile::new("out");
    run("mcopy", &["-n", "-i", image, path, out.path()]);
    std::fs::read(&out.0).unwrap()
}

/// Every path in the image, as `mdir -/ -b` lists them (directories end with `/`).
fn mdir_tree(image: &str) -> Vec<String> {
    let mut paths: Vec<String> = run("mdir", &["-i", image, "-/", "-b", "::/"])
        .lines()
        .filter(|l| l.starts_with("::/"))
        .map(|l| l.trim_start_matches("::/").to_string())
        .collect();
    paths.sort();
    paths
}

/// The files of the first test image: path -> contents (`None` for a directory).
fn sample_tree() -> BTreeMap<String, Option<Vec<u8>>> {
    let mut tree = BTreeMap::new();
    let mut dir = |p: &str| tree.insert(p.to_string(), None);
    dir("Sub");
    dir("Sub/deeper");
    dir("Sub/deeper/deepest");
    dir("Ünïcödé dir");
    dir("crowded");
    let mut file = |p: &str, data: Vec<u8>| tree.insert(p.to_string(), Some(data));
    file("A long file name with spaces.txt", b"long name\n".to_vec());
    file("short.txt", b"8.3 name, stored lower case\n".to_vec());
    file("empty", Vec::new());
    file(
        "Sub/deeper/deepest/big.bin",
        pattern(7, 3 * 1024 * 1024 + 123),
    );
    file(
        "Ünïcödé dir/naïve café.txt",
        "crème brûlée\n".as_bytes().to_vec(),
    );
    for i in 0..60 {
        file(
            &format!("crowded/entry number {i:03}.dat"),
            pattern(i, i as usize * 37),
        );
    }
    tree
}

#[test]
fn reads_what_mcopy_wrote() {
    require_tools!("mkfs.fat", "mmd", "mcopy");
    let image = mkfs("read", 40 << 20, &["-F", "32", "-s", "1"]);
    let tree = sample_tree();
    for (path, data) in &tree {
        let dest = format!("::/{path}");
        match data {
            None => drop(run("mmd", &["-i", image.path(), &dest])),
            Some(bytes) => mcopy_in(image.path(), bytes, &dest),
        }
    }
    let fs = Arc::new(FatFs::new(load(image.path())).unwrap());
    assert_eq!(fs.fat_type(), FatType::Fat32);
    assert_eq!(fs.cluster_size(), 512);
    let (vfs, disk) = mount(fs.clone());
    for (path, data) in &tree {
        let stat = vfs.path_stat(&disk, path).unwrap();
        match data {
            None => assert_eq!(stat.filetype, FileType::Directory, "{path}"),
            Some(bytes) => {
                assert_eq!(stat.size, bytes.len() as u64, "{path}");
                assert!(get(&vfs, &disk, path).unwrap() == *bytes, "{path}");
            }
        }
    }
    // Every directory lists exactly its children.
    for dir in ["", "Sub", "Sub/deeper", "crowded", "Ünïcödé dir"] {
        let prefix = if dir.is_empty() {
            String::new()
        } else {
            format!("{dir}/")
        };
        let expected: Vec<String> = tree
            .keys()
            .filter_map(|p| p.strip_prefix(&prefix))
            .filter(|rest| !rest.is_empty() && !rest.contains('/'))
            .map(str::to_string)
            .collect();
        let path = if dir.is_empty() { "." } else { dir };
        assert_eq!(names(&vfs, &disk, path), expected, "{dir}");
    }
    assert_eq!(vfs.path_stat(&disk, "crowded").unwrap().size, 60);
    // Names compare ignoring ASCII case, as on any FAT system.
    assert_eq!(
        get(&vfs, &disk, "SHORT.TXT").unwrap(),
        tree["short.txt"].clone().unwrap()
    );
    assert_eq!(
        vfs.path_stat(&disk, "sub/DEEPER").unwrap().ino,
        vfs.path_stat(&disk, "Sub/deeper").unwrap().ino
    );
    // The 8.3 alias of a long name finds it too.
    assert_eq!(get(&vfs, &disk, "ALONGF~1.TXT").unwrap(), b"long name\n");
}

#[test]
fn writes_that_mtools_and_fsck_accept() {
    require_tools!("mkfs.fat", "mcopy", "mdir", "fsck.fat");
    let image = mkfs("write", 40 << 20, &["-F", "32", "-s", "1"]);
    let memdisk = load(image.path());
    let fs = Arc::new(FatFs::new(memdisk.clone()).unwrap());
    let (vfs, disk) = mount(fs.clone());
    vfs.create_dir(&disk, "docs").unwrap();
    vfs.create_dir(&disk, "docs/old").unwrap();
    vfs.create_dir(&disk, "docs/old/inner").unwrap();
    vfs.create_dir(&disk, "gone").unwrap();
    put(&vfs, &disk, "docs/Read Me.txt", b"read me\n");
    put(&vfs, &disk, "docs/old/notes.md", b"# notes\n");
    put(&vfs, &disk, "docs/old/inner/deep.txt", b"deep\n");
    let big = pattern(11, 2_621_447);
    put(&vfs, &disk, "big.bin", &big);
    put(&vfs, &disk, "to-delete", b"bye");
    put(&vfs, &disk, "to-rename.txt", b"renamed");
    put(&vfs, &disk, "a", b"a wins");
    put(&vfs, &disk, "b", b"b loses");
    put(&vfs, &disk, "trunc.bin", &pattern(3, 10_000));
    put(&vfs, &disk, "extend.bin", b"0123456789");
    put(&vfs, &disk, "case.txt", b"case");
    vfs.create_dir(&disk, "Ünïcödé").unwrap();
    put(&vfs, &disk, "Ünïcödé/Élan.txt", "élan".as_bytes());
    let f = vfs.open(&disk, "trunc.bin", OFlags::NONE, NO, RW).unwrap();
    vfs.set_size(&f, 3000).unwrap();
    let f = vfs.open(&disk, "extend.bin", OFlags::NONE, NO, RW).unwrap();
    vfs.set_size(&f, 70_000).unwrap();
    let f = vfs.open(&disk, "sparse", OFlags::CREAT, NO, RW).unwrap();
    assert_eq!(vfs.pwrite(&f, b"end", 100_000), Ok(3));
    // Overwrite in the middle of the big file.
    let f = vfs.open(&disk, "big.bin", OFlags::NONE, NO, RW).unwrap();
    assert_eq!(vfs.pwrite(&f, &[0xAB; 5000], 1_000_001), Ok(5000));
    drop(f);
    vfs.rename(&disk, "docs/old", &disk, "archive").unwrap();
    vfs.rename(&disk, "to-rename.txt", &disk, "docs/renamed.txt")
        .unwrap();
    vfs.rename(&disk, "a", &disk, "b").unwrap();
    vfs.rename(&disk, "case.txt", &disk, "CASE.txt").unwrap();
    vfs.unlink_file(&disk, "to-delete").unwrap();
    vfs.remove_dir(&disk, "gone").unwrap();
    // 2020-05-17T10:20:30Z
    let f = vfs.open(&disk, "b", OFlags::NONE, NO, RW).unwrap();
    vfs.set_times(&f, None, Some(1_589_710_830_000_000_000))
        .unwrap();
    drop(f);
    vfs.sync_all().unwrap();
    save(&memdisk, image.path());

    assert_clean(image.path());
    assert_eq!(
        mdir_tree(image.path()),
        [
            "CASE.txt",
            "archive/",
            "archive/inner/",
            "archive/inner/deep.txt",
            "archive/notes.md",
            "b",
            "big.bin",
            "docs/",
            "docs/Read Me.txt",
            "docs/renamed.txt",
            "extend.bin",
            "sparse",
            "trunc.bin",
            "Ünïcödé/",
            "Ünïcödé/Élan.txt",
        ]
    );
    let mut expected_big = big.clone();
    expected_big[1_000_001..1_005_001].fill(0xAB);
    let mut extended = b"0123456789".to_vec();
    extended.resize(70_000, 0);
    let mut sparse = vec![0u8; 100_000];
    sparse.extend_from_slice(b"end");
    for (path, data) in [
        ("big.bin", expected_big),
        ("b", b"a wins".to_vec()),
        ("docs/renamed.txt", b"renamed".to_vec()),
        ("archive/inner/deep.txt", b"deep\n".to_vec()),
        ("trunc.bin", pattern(3, 3000)),
        ("extend.bin", extended),
        ("sparse", sparse),
        ("Ünïcödé/Élan.txt", "élan".as_bytes().to_vec()),
    ] {
        assert!(
            mcopy_out(image.path(), &format!("::/{path}")) == data,
            "{path}"
        );
    }
    let listing = run("mdir", &["-i", image.path(), "::/"]);
    let line = listing
        .lines()
        .find(|l| l.ends_with(" b") || l.starts_with("B "))
        .unwrap();
    assert!(
        line.contains("2020-05-17") && line.contains("10:20"),
        "{listing}"
    );
    // And FatFs reads back what it wrote, from a fresh mount.
    let again = Arc::new(FatFs::new(load(image.path())).unwrap());
    let (vfs, disk) = mount(again);
    assert_eq!(get(&vfs, &disk, "archive/notes.md").unwrap(), b"# notes\n");
    assert_eq!(
        vfs.path_stat(&disk, "b").unwrap().mtim,
        1_589_710_830_000_000_000
    );
}

#[test]
fn unmount_and_drop_leave_the_volume_clean() {
    require_tools!("mkfs.fat", "fsck.fat", "mcopy");
    // Through the VFS's unmount.
    let image = mkfs("unmount", 40 << 20, &["-F", "32", "-s", "1"]);
    let memdisk = load(image.path());
    let fs = Arc::new(FatFs::new(memdisk.clone()).unwrap());
    let (vfs, disk) = mount(fs.clone());
    put(&vfs, &disk, "kept.txt", b"kept");
    let open = vfs.open(&disk, "kept.txt", OFlags::NONE, NO, RW).unwrap();
    assert!(matches!(vfs.unmount("/disk"), Err(Errno::Busy)));
    drop((open, disk));
    vfs.unmount("/disk").unwrap();
    save(&memdisk, image.path());
    assert_clean(image.path());
    assert_eq!(mcopy_out(image.path(), "::/kept.txt"), b"kept");
    // FatFs::unmount retires it.
    fs.unmount().unwrap();
    fs.unmount().unwrap();
    assert_eq!(fs.stat(fs.root()).unwrap_err(), Errno::Nodev);
    assert_eq!(fs.sync(), Err(Errno::Nodev));

    // Dropped without a sync: nothing is lost and the volume is clean.
    let image = mkfs("drop", 40 << 20, &["-F", "32", "-s", "1"]);
    let memdisk = load(image.path());
    {
        let fs = Arc::new(FatFs::new(memdisk.clone()).unwrap());
        let (vfs, disk) = mount(fs);
        put(&vfs, &disk, "dropped.bin", &pattern(5, 300_000));
    }
    save(&memdisk, image.path());
    assert_clean(image.path());
    assert_eq!(
        mcopy_out(image.path(), "::/dropped.bin"),
        pattern(5, 300_000)
    );
}

/// Writes an MBR with one FAT32 partition from sector `start` to the end.
fn write_mbr(path: &str, start: u32) {
    let mut bytes = std::fs::read(path).unwrap();
    let sectors = (bytes.len() / 512) as u32;
    let entry = &mut bytes[446..462];
    entry[4] = 0x0C;
    entry[8..12].copy_from_slice(&start.to_le_bytes());
    entry[12..16].copy_from_slice(&(sectors - start).to_le_bytes());
    bytes[510] = 0x55;
    bytes[511] = 0xAA;
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn partition_at_one_mib() {
    require_tools!("mkfs.fat", "mcopy", "fsck.fat");
    let image = mkfs(
        "part",
        48 << 20,
        &["--offset", "2048", "-F", "32", "-s", "1"],
    );
    write_mbr(image.path(), 2048);
    let inside = image.at(1 << 20);
    mcopy_in(&inside, b"from mtools\n", "::/hello.txt");

    let memdisk = load(image.path());
    let whole: Arc<dyn BlockDevice> = memdisk.clone();
    let table = read_partitions(&*whole).unwrap();
    assert_eq!(table.scheme, partitions::Scheme::Mbr);
    let info = &table.partitions[0];
    assert_eq!((info.number, info.first_lba), (1, 2048));
    assert!(info.may_hold_fat());
    let part = Arc::new(info.open(whole.clone()).unwrap());
    let fs = Arc::new(FatFs::new(part).unwrap());
    let (vfs, disk) = mount(fs.clone());
    assert_eq!(get(&vfs, &disk, "hello.txt").unwrap(), b"from mtools\n");
    put(&vfs, &disk, "from keel.bin", &pattern(9, 1_500_000));
    vfs.sync_all().unwrap();
    // The MBR and the gap before the partition are untouched.
    let bytes = memdisk.to_bytes();
    assert_eq!(&bytes[510..512], &[0x55, 0xAA]);
    assert!(bytes[512..1 << 20].iter().all(|&b| b == 0));
    save(&memdisk, image.path());
    assert_eq!(
        mcopy_out(&inside, "::/from keel.bin"),
        pattern(9, 1_500_000)
    );
    // fsck.fat wants the partition on its own.
    let alone = TempFile::new("alone");
    std::fs::write(&alone.0, &bytes[1 << 20..]).unwrap();
    assert_clean(alone.path());
}

#[test]
fn fat12_and_fat16() {
    require_tools!("mkfs.fat", "mcopy", "fsck.fat");
    for (bits, size, expected) in [
        ("12", 2u64 << 20, FatType::Fat12),
        ("16", 24 << 20, FatType::Fat16),
    ] {
        let image = mkfs(&format!("fat{bits}"), size, &["-F", bits]);
        mcopy_in(image.path(), b"old", "::/OLD.TXT");
        let memdisk = load(image.path());
        let fs = Arc::new(FatFs::new(memdisk.clone()).unwrap());
        assert_eq!(fs.fat_type(), expected);
        let (vfs, disk) = mount(fs.clone());
        assert_eq!(get(&vfs, &disk, "old.txt").unwrap(), b"old");
        vfs.create_dir(&disk, "one").unwrap();
        vfs.create_dir(&disk, "one/two").unwrap();
        vfs.create_dir(&disk, "three").unwrap();
        let data = pattern(bits.len() as u64, 300_001);
        put(&vfs, &disk, "one/two/file.bin", &data);
        // A directory moves from a subdirectory to the fixed root and back down.
        vfs.rename(&disk, "one/two", &disk, "two").unwrap();
        vfs.rename(&disk, "two", &disk, "three/two").unwrap();
        vfs.unlink_file(&disk, "old.txt").unwrap();
        vfs.remove_dir(&disk, "one").unwrap();
        vfs.sync_all().unwrap();
        save(&memdisk, image.path());
        assert_clean(image.path());
        assert!(
            mcopy_out(image.path(), "::/three/two/file.bin") == data,
            "FAT{bits}"
        );
    }
}

#[test]
fn timestamps_are_utc() {
    require_tools!("mkfs.fat", "mdir");
    let image = mkfs("times", 40 << 20, &["-F", "32", "-s", "1"]);
    let memdisk = load(image.path());
    let fs = FatFs::new(memdisk.clone()).unwrap();
    // 2023-07-08T09:10:12.5Z
    let now = 1_688_807_412_500_000_000;
    let ino = fs
        .create(fs.root(), "stamped.txt", FileType::RegularFile, now)
        .unwrap();
    let dir = fs
        .create(fs.root(), "dir", FileType::Directory, now)
        .unwrap();
    let stat = fs.stat(ino).unwrap();
    assert_eq!(stat.mtim, 1_688_807_412_000_000_000); // FAT keeps even seconds
    assert_eq!(stat.ctim, stat.mtim);
    assert_eq!(stat.atim, 1_688_774_400_000_000_000); // and the access date only
    // Writing moves the modification time.
    fs.write_at(ino, 0, b"x", now + 3_600_000_000_000).unwrap();
    assert_eq!(fs.stat(ino).unwrap().mtim, 1_688_811_012_000_000_000);
    // set_times on a directory; out-of-range times are clamped to FAT's years.
    fs.set_times(dir, Some(0), Some(u64::MAX), now).unwrap();
    let stat = fs.stat(dir).unwrap();
    assert_eq!(stat.atim, 315_532_800_000_000_000);
    assert_eq!(stat.mtim, 4_354_819_198_000_000_000);
    fs.sync().unwrap();
    save(&memdisk, image.path());
    let listing = run("mdir", &["-i", image.path(), "::/"]);
    let line = listing.lines().find(|l| l.contains("stamped.txt")).unwrap();
    assert!(
        line.contains("2023-07-08") && line.contains("10:10"),
        "{listing}"
    );
    let line = listing.lines().find(|l| l.contains("<DIR>")).unwrap();
    assert!(
        line.contains("2107-12-31") && line.contains("23:59"),
        "{listing}"
    );
}

/// The same FatFs answers through two VFS mounts' worth of handles, and a fresh mount sees
/// everything after a sync even if the old one is still alive.
#[test]
fn sync_makes_it_visible_to_another_mount() {
    require_tools!("mkfs.fat");
    let image = mkfs("visible", 40 << 20, &["-F", "32", "-s", "1"]);
    let memdisk = load(image.path());
    let fs = Arc::new(FatFs::new(memdisk.clone()).unwrap());
    let (vfs, disk) = mount(fs.clone());
    put(&vfs, &disk, "x", b"synced");
    fs.sync().unwrap();
    let copy = Arc::new(MemDisk::from_bytes(512, memdisk.to_bytes()));
    let other = Arc::new(FatFs::new(copy).unwrap());
    assert!(!other.was_dirty());
    let (vfs2, disk2) = mount(other);
    assert_eq!(get(&vfs2, &disk2, "x").unwrap(), b"synced");
    let _: &Vfs = &vfs;
}
