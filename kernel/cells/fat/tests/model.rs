//! A seeded random walk of VFS operations on FatFs and on MemFs side by side: every result
//! (data, errors, listings, sizes) must agree. At the end the FAT volume is synced, mounted
//! afresh and compared again (and checked by `fsck.fat` if it is installed).

mod common;

use common::*;
use keel_block::MemDisk;
use keel_fat::{FatFs, FatType, FormatOptions};
use keel_vfs::{Errno, FdFlags, FileSystem, FileType, MemFs, OFlags, OpenFile, Rights, Vfs};
use std::sync::Arc;

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Names that differ in more than case (FAT ignores case), some long, one not ASCII-first.
const NAMES: [&str; 6] = ["a", "b.txt", "dir", "a longer name", "ünï", "x"];

/// Every path on `vfs` under `dir`, depth first: (components, is_dir).
fn tree(vfs: &Vfs, dir: &OpenFile, prefix: &mut Vec<String>, out: &mut Vec<(Vec<String>, bool)>) {
    let mut entries = Vec::new();
    let mut cookie = 0;
    loop {
        let batch = vfs.read_dir(dir, cookie, 4).unwrap();
        let Some(last) = batch.last() else { break };
        cookie = last.next;
        entries.extend(
            batch
                .into_iter()
                .filter(|e| e.name != "." && e.name != ".."),
        );
    }
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    for e in entries {
        prefix.push(e.name.clone());
        let is_dir = e.filetype == FileType::Directory;
        out.push((prefix.clone(), is_dir));
        if is_dir {
            let sub = vfs
                .open(dir, &e.name, OFlags::DIRECTORY, NO, Rights::READ)
                .unwrap();
            tree(vfs, &sub, prefix, out);
        }
        prefix.pop();
    }
}

fn all_paths(vfs: &Vfs, root: &OpenFile) -> Vec<(Vec<String>, bool)> {
    let mut out = Vec::new();
    tree(vfs, root, &mut Vec::new(), &mut out);
    out
}

fn random_path(rng: &mut XorShift, existing: &[(Vec<String>, bool)]) -> String {
    let mut path: Vec<String> = if !existing.is_empty() && rng.below(2) == 0 {
        existing[rng.below(existing.len() as u64) as usize]
            .0
            .clone()
    } else {
        Vec::new()
    };
    if path.is_empty() || rng.below(3) == 0 {
        path.push(NAMES[rng.below(NAMES.len() as u64) as usize].to_string());
    }
    path.join("/")
}

fn random_data(rng: &mut XorShift) -> Vec<u8> {
    let len = match rng.below(10) {
        0 => rng.below(40_000),
        1 => 0,
        _ => rng.below(1500),
    } as usize;
    pattern(rng.next(), len)
}

/// The whole tree with file contents, for comparing two file systems.
fn snapshot(vfs: &Vfs, root: &OpenFile) -> Vec<(String, Option<Vec<u8>>)> {
    all_paths(vfs, root)
        .into_iter()
        .map(|(path, is_dir)| {
            let path = path.join("/");
            let data = (!is_dir).then(|| get(vfs, root, &path).unwrap());
            (path, data)
        })
        .collect()
}

#[test]
fn randomized_fat16_against_memfs() {
    run(FatType::Fat16, 8 << 20, 512, 0x5eed_1234_abcd_9876);
}

#[test]
fn randomized_fat32_against_memfs() {
    run(FatType::Fat32, 40 << 20, 512, 0x0dd0_c0ff_ee12_3400);
}

#[test]
fn randomized_fat12_against_memfs() {
    run(FatType::Fat12, 2 << 20, 1024, 0xfee1_900d_5eed);
}

fn run(fat_type: FatType, bytes: u64, cluster: u32, seed: u64) {
    let disk = fresh(
        bytes,
        &FormatOptions {
            fat_type: Some(fat_type),
            bytes_per_cluster: Some(cluster),
            ..FormatOptions::default()
        },
    );
    let fat = Arc::new(FatFs::new(disk.clone()).unwrap());
    let (fvfs, froot) = mount(fat.clone());
    let (mvfs, mroot) = mount(Arc::new(MemFs::new(1 << 40)));
    let both = [(&fvfs, &froot), (&mvfs, &mroot)];
    let mut rng = XorShift(seed);
    let mut handles: Vec<(OpenFile, OpenFile, String)> = Vec::new();
    let mut counts = [0usize; 14];
    let mut errors = 0;
    for step in 0..1500 {
        let existing = all_paths(&mvfs, &mroot);
        let op = rng.below(14) as usize;
        let p = random_path(&mut rng, &existing);
        // Each operation, run on both; results must be equal.
        let results: Vec<Result<String, Errno>> = match op {
            0 | 1 => {
                let data = random_data(&mut rng);
                let flags = if op == 0 {
                    OFlags::CREAT | OFlags::TRUNC
                } else {
                    OFlags::CREAT
                };
                let offset = rng.below(3000);
                both.iter()
                    .map(|(vfs, root)| {
                        let f = vfs.open(root, &p, flags, NO, RW)?;
                        Ok(format!("{:?}", vfs.pwrite(&f, &data, offset)))
                    })
                    .collect()
            }
            2 => {
                let data = random_data(&mut rng);
                both.iter()
                    .map(|(vfs, root)| {
                        let mut f = vfs.open(root, &p, OFlags::NONE, FdFlags::APPEND, RW)?;
                        Ok(format!("{:?}", vfs.write(&mut f, &data)))
                    })
                    .collect()
            }
            3 => {
                let size = rng.below(60_000);
                both.iter()
                    .map(|(vfs, root)| {
                        let f = vfs.open(root, &p, OFlags::NONE, NO, RW)?;
                        vfs.set_size(&f, size).map(|()| String::new())
                    })
                    .collect()
            }
            4 => both
                .iter()
                .map(|(vfs, root)| get(vfs, root, &p).map(|d| format!("{d:?}")))
                .collect(),
            5 => both
                .iter()
                .map(|(vfs, root)| vfs.create_dir(root, &p).map(|()| String::new()))
                .collect(),
            6 => both
                .iter()
                .map(|(vfs, root)| vfs.remove_dir(root, &p).map(|()| String::new()))
                .collect(),
            7 => both
                .iter()
                .map(|(vfs, root)| vfs.unlink_file(root, &p).map(|()| String::new()))
                .collect(),
            8 => {
                let q = random_path(&mut rng, &existing);
                both.iter()
                    .map(|(vfs, root)| vfs.rename(root, &p, root, &q).map(|()| String::new()))
                    .collect()
            }
            9 => both
                .iter()
                .map(|(vfs, root)| {
                    vfs.path_stat(root, &p)
                        .map(|s| format!("{:?} {} {}", s.filetype, s.size, s.nlink))
                })
                .collect(),
            10 => both
                .iter()
                .map(|(vfs, root)| {
                    let dir = vfs.open(root, &p, OFlags::DIRECTORY, NO, Rights::READ)?;
                    let mut listed: Vec<String> = Vec::new();
                    let mut cookie = 0;
                    loop {
                        let batch = vfs.read_dir(&dir, cookie, 1 + step % 3)?;
                        let Some(last) = batch.last() else { break };
                        cookie = last.next;
                        listed.extend(batch.into_iter().map(|e| e.name));
                    }
                    listed.sort();
                    Ok(listed.join("|"))
                })
                .collect(),
            // Handles that outlive their names.
            11 if handles.len() < 4 => {
                let opened: Vec<Result<OpenFile, Errno>> = both
                    .iter()
                    .map(|(vfs, root)| vfs.open(root, &p, OFlags::NONE, NO, RW))
                    .collect();
                let results = opened
                    .iter()
                    .map(|r| {
                        r.as_ref()
                            .map(|f| format!("{:?}", f.file_type()))
                            .map_err(|e| *e)
                    })
                    .collect();
                if let [Ok(f), Ok(m)] = <[_; 2]>::try_from(opened).unwrap() {
                    handles.push((f, m, p.clone()));
                }
                results
            }
            11 | 12 if !handles.is_empty() => {
                let i = rng.below(handles.len() as u64) as usize;
                let (f, m, _) = &handles[i];
                let data = random_data(&mut rng);
                let offset = rng.below(5000);
                let mut results = Vec::new();
                for (vfs, file) in [(&fvfs, f), (&mvfs, m)] {
                    let written = vfs.pwrite(file, &data, offset);
                    let mut buf = vec![0u8; 70_000];
                    let read = vfs.pread(file, &mut buf, 0).map(|n| buf[..n].to_vec());
                    let stat = vfs.stat(file).map(|s| (s.size, s.nlink));
                    results.push(Ok(format!("{written:?} {read:?} {stat:?}")));
                }
                if op == 12 && rng.below(2) == 0 {
                    handles.swap_remove(i);
                }
                results
            }
            _ => {
                fat.sync().unwrap();
                vec![Ok(String::new()), Ok(String::new())]
            }
        };
        assert_eq!(results[0], results[1], "step {step}: op {op} on {p:?}");
        if results[0].is_ok() {
            counts[op] += 1;
        } else {
            errors += 1;
        }
    }
    drop(handles);
    assert!(counts[..11].iter().all(|&n| n > 5), "{counts:?}");
    assert!(errors > 200, "{errors}");
    let expected = snapshot(&mvfs, &mroot);
    assert_eq!(snapshot(&fvfs, &froot), expected);
    assert!(expected.len() >= 5, "{}", expected.len());

    // Everything is on the disk: a fresh mount of a copy sees the same tree.
    fat.sync().unwrap();
    let copy = Arc::new(MemDisk::from_bytes(512, disk.to_bytes()));
    let (vfs2, root2) = mount(Arc::new(FatFs::new(copy).unwrap()));
    assert_eq!(snapshot(&vfs2, &root2), expected);
    if tool("fsck.fat").is_some() {
        let image = TempFile::new("model");
        save(&disk, image.path());
        assert_clean(image.path());
    } else {
        eprintln!("fsck.fat is not installed: the final image was not checked by it");
    }
}
