//! Disks and their file systems: the disks that block driver components serve, their
//! partitions, FAT volumes mounted at `/disk`, `/disk1`, ..., and the shell's `lsblk`, `df`,
//! `mount`, `umount` and `sync`.
//!
//! A task watches for disks as drivers publish them, scans each for volumes and mounts the FAT
//! ones. Mounting cannot happen in the driver's own task: the mount reads the disk, which needs
//! that task to serve the reads.

use alloc::format;
use alloc::string::{String, ToString};
use alloc::sync::Arc;
use alloc::vec;
use alloc::vec::Vec;
use keel_block::BlockDevice;
use keel_block::partitions::{Scheme, read_partitions};
use keel_console::println;
use keel_fat::FatFs;
use keel_sync::IrqSafeMutex;
use keel_vfs::FileSystem;

/// A disk or a volume on one, as `lsblk` lists it.
#[derive(Clone)]
struct Volume {
    /// `sd0` for a whole disk, `sd0p1` for its first partition.
    name: String,
    /// The disk the volume is on (itself for a whole disk).
    disk: String,
    device: Arc<dyn BlockDevice>,
    /// What is on it: `disk`, `part`, plus the file system found.
    kind: &'static str,
    /// Where it starts on its disk (0 for the disk itself).
    first_lba: u64,
    fs_type: Option<&'static str>,
    mounted: Option<Mounted>,
}

#[derive(Clone)]
struct Mounted {
    path: String,
    fs: Arc<FatFs>,
}

/// Held only for moments (it turns interrupts off): never across disk I/O.
static VOLUMES: IrqSafeMutex<Vec<Volume>> = IrqSafeMutex::new(Vec::new());
/// Mounts and unmounts one at a time, so a volume cannot be mounted twice by a boot-time
/// mount racing a user's (two FAT caches on one partition would corrupt it).
static MOUNTING: keel_task::Mutex<()> = keel_task::Mutex::new(());

/// Starts the task that finds the disks' volumes and mounts them.
pub fn start() {
    let spawned = keel_task::Builder::new("storage")
        .stack_size(256 * 1024)
        .spawn(watch);
    if let Err(e) = spawned {
        println!("storage: cannot start its task: {e:?}");
    }
}

fn watch() {
    let mut seen = 0;
    loop {
        keel_dd_host::block::DISKS_CHANGED
            .wait_until(|| (keel_dd_host::block::disk_count() > seen).then_some(()));
        let disks = keel_dd_host::block::disks();
        for disk in &disks[seen..] {
            add_disk(disk.clone());
        }
        seen = disks.len();
    }
}

fn add_disk(disk: Arc<keel_dd_host::block::DriverDisk>) {
    let name = disk.name.clone();
    let device: Arc<dyn BlockDevice> = disk.clone();
    let mut whole = Volume {
        name: name.clone(),
        disk: name.clone(),
        device: device.clone(),
        kind: "disk",
        first_lba: 0,
        fs_type: None,
        mounted: None,
    };
    let mut parts = Vec::new();
    match read_partitions(&*device) {
        Ok(table) if table.scheme == Scheme::Superfloppy => whole.fs_type = Some("vfat"),
        Ok(table) => {
            for info in table.partitions {
                match info.open(device.clone()) {
                    Ok(part) => parts.push(Volume {
                        name: format!("{name}p{}", info.number),
                        disk: name.clone(),
                        device: Arc::new(part),
                        kind: "part",
                        first_lba: info.first_lba,
                        fs_type: info.may_hold_fat().then_some("vfat"),
                        mounted: None,
                    }),
                    Err(e) => println!("storage: {name}p{}: {e}", info.number),
                }
            }
        }
        Err(e) => println!("storage: {name}: {e}"),
    }
    let candidates: Vec<String> = core::iter::once(&whole)
        .chain(&parts)
        .filter(|v| v.fs_type.is_some())
        .map(|v| v.name.clone())
        .collect();
    {
        let mut volumes = VOLUMES.lock();
        volumes.push(whole);
        volumes.extend(parts);
    }
    for volume in candidates {
        let path = free_mount_point();
        match mount(&volume, &path) {
            Ok(()) => {}
            Err(why) => {
                // A FAT type byte is only a hint: what is there may be another file system.
                if let Some(v) = VOLUMES.lock().iter_mut().find(|v| v.name == volume) {
                    v.fs_type = None;
                }
                println!("storage: {volume}: {why}");
            }
        }
    }
}

/// `/disk` for the first volume, then `/disk1`, `/disk2`, ...
fn free_mount_point() -> String {
    let taken: Vec<String> = VOLUMES
        .lock()
        .iter()
        .filter_map(|v| v.mounted.as_ref().map(|m| m.path.clone()))
        .collect();
    (0..)
        .map(|n| {
            if n == 0 {
                String::from("/disk")
            } else {
                format!("/disk{n}")
            }
        })
        .find(|p| !taken.contains(p))
        .unwrap_or_default()
}

fn volume(name: &str) -> Result<Volume, String> {
    VOLUMES
        .lock()
        .iter()
        .find(|v| v.name == name)
        .cloned()
        .ok_or_else(|| format!("no volume '{name}' (see lsblk)"))
}

/// Mounts the FAT volume `name` at `path`, making the directory if it is missing.
fn mount(name: &str, path: &str) -> Result<(), String> {
    let _one_at_a_time = MOUNTING.lock();
    let volume = volume(name)?;
    if let Some(mounted) = &volume.mounted {
        return Err(format!("{name} is already mounted at {}", mounted.path));
    }
    let fs = Arc::new(
        FatFs::new(volume.device.clone()).map_err(|e| format!("no FAT file system: {e}"))?,
    );
    let vfs = crate::files::vfs();
    let root = vfs.preopen("/").map_err(|e| format!("{e}"))?;
    let relative = path.trim_start_matches('/');
    match vfs.create_dir(&root, relative) {
        Ok(()) | Err(keel_vfs::Errno::Exist) => {}
        Err(e) => return Err(format!("{path}: {e}")),
    }
    vfs.mount(path, fs.clone() as Arc<dyn FileSystem>)
        .map_err(|e| format!("{path}: {e}"))?;
    if let Some(v) = VOLUMES.lock().iter_mut().find(|v| v.name == name) {
        v.mounted = Some(Mounted {
            path: path.to_string(),
            fs,
        });
    }
    Ok(())
}

/// The mount point as recorded (`/disk/` and `/disk` are the same).
fn mount_point(path: &str) -> &str {
    match path.trim_end_matches('/') {
        "" => "/",
        trimmed => trimmed,
    }
}

/// Detaches the volume at `path` and leaves it clean. With `force` (power-off), a volume still
/// in use by a program is written out and retired anyway; otherwise that is an error.
fn unmount(path: &str, force: bool) -> Result<(), String> {
    let _one_at_a_time = MOUNTING.lock();
    let path = mount_point(path);
    let (name, fs) = VOLUMES
        .lock()
        .iter()
        .find_map(|v| {
            let m = v.mounted.as_ref().filter(|m| m.path == path)?;
            Some((v.name.clone(), m.fs.clone()))
        })
        .ok_or_else(|| format!("nothing is mounted at {path}"))?;
    let detached = crate::files::vfs().unmount(path);
    if let Err(e) = &detached
        && !force
    {
        return Err(format!("{path}: {e}"));
    }
    if let Some(v) = VOLUMES.lock().iter_mut().find(|v| v.name == name)
        && detached.is_ok()
    {
        v.mounted = None;
    }
    fs.unmount().map_err(|e| format!("{path}: {e}"))
}

/// Writes every mounted file system's changes to its disk.
pub fn sync_all() -> Result<(), String> {
    crate::files::vfs()
        .sync_all()
        .map_err(|e| format!("sync: {e}"))
}

/// Before power-off or reset: every volume unmounted, so each is left clean.
pub fn unmount_all() {
    let paths: Vec<String> = VOLUMES
        .lock()
        .iter()
        .filter_map(|v| v.mounted.as_ref().map(|m| m.path.clone()))
        .collect();
    for path in paths {
        if let Err(why) = unmount(&path, true) {
            println!("storage: {why}");
        }
    }
}

fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "K", "M", "G", "T"];
    let mut value = bytes;
    let mut unit = 0;
    while value >= 10 * 1024 && unit < UNITS.len() - 1 {
        value /= 1024;
        unit += 1;
    }
    format!("{value}{}", UNITS[unit])
}

/// `lsblk`: disks and their partitions with size, file system, mount point and model.
pub fn lsblk(args: &[String]) -> Result<(), String> {
    if !args.is_empty() {
        return Err(String::from("takes no arguments"));
    }
    let disks = keel_dd_host::block::disks();
    if disks.is_empty() {
        println!("no disks (a block driver serves them; see 'drivers')");
        return Ok(());
    }
    println!(
        "{:<8} {:>8} {:<5} {:<6} {:<10} MODEL",
        "NAME", "SIZE", "TYPE", "FS", "MOUNT"
    );
    let volumes = VOLUMES.lock().clone();
    for disk in &disks {
        let own = volumes.iter().find(|v| v.name == disk.name);
        let state = match disk.stopped() {
            Some(why) => format!(" (driver stopped: {why})"),
            None => String::new(),
        };
        println!(
            "{:<8} {:>8} {:<5} {:<6} {:<10} {} (serial {}, {}-byte sectors){state}",
            disk.name,
            human(disk.size_bytes()),
            "disk",
            match own {
                Some(v) => v.fs_type.unwrap_or("-"),
                None => "?",
            },
            match own {
                Some(v) => v.mounted.as_ref().map_or("-", |m| m.path.as_str()),
                None => "(scanning)",
            },
            disk.info.model,
            disk.info.serial,
            disk.info.sector_size,
        );
        for part in volumes
            .iter()
            .filter(|v| v.disk == disk.name && v.kind == "part")
        {
            println!(
                "{:<8} {:>8} {:<5} {:<6} {}",
                part.name,
                human(part.device.size_bytes()),
                part.kind,
                part.fs_type.unwrap_or("-"),
                part.mounted.as_ref().map_or("-", |m| m.path.as_str()),
            );
        }
    }
    Ok(())
}

/// `df`: size, use and free space of every mounted file system.
pub fn df(args: &[String]) -> Result<(), String> {
    if !args.is_empty() {
        return Err(String::from("takes no arguments"));
    }
    println!(
        "{:<10} {:>10} {:>10} {:>10} {:>5} MOUNTED ON",
        "FILESYSTEM", "SIZE", "USED", "AVAIL", "USE%"
    );
    // Every mount of the VFS, the in-memory root included; volumes go by their lsblk names.
    let names: Vec<(String, String)> = VOLUMES
        .lock()
        .iter()
        .filter_map(|v| Some((v.mounted.as_ref()?.path.clone(), v.name.clone())))
        .collect();
    let vfs = crate::files::vfs();
    let rows = vfs.mounts().into_iter().map(|(path, id)| {
        let name = match names.iter().find(|(p, _)| *p == path) {
            Some((_, name)) => name.clone(),
            None if path == "/" => String::from("memfs"),
            None => String::from("?"),
        };
        (name, path, vfs.usage(id))
    });
    for (name, path, usage) in rows {
        let Some(u) = usage else {
            println!(
                "{name:<10} {:>10} {:>10} {:>10} {:>5} {path}",
                "-", "-", "-", "-"
            );
            continue;
        };
        let used = u.total_bytes.saturating_sub(u.free_bytes);
        let percent = (used * 100).checked_div(u.total_bytes).unwrap_or(0);
        println!(
            "{name:<10} {:>10} {:>10} {:>10} {:>4}% {path}",
            human(u.total_bytes),
            human(used),
            human(u.free_bytes),
            percent
        );
    }
    Ok(())
}

/// `mount`: lists mounts; `mount VOLUME PATH` mounts a FAT volume.
pub fn mount_command(args: &[String]) -> Result<(), String> {
    match args {
        [] => {
            println!("memfs on / type memfs (rw)");
            for v in VOLUMES.lock().iter() {
                if let Some(m) = &v.mounted {
                    println!(
                        "{} on {} type {} (rw)",
                        v.name,
                        m.path,
                        v.fs_type.unwrap_or("?")
                    );
                }
            }
            Ok(())
        }
        [name, path] if path.starts_with('/') && path.len() > 1 => mount(name, path),
        _ => Err(String::from("usage: mount [VOLUME /PATH]")),
    }
}

/// `umount PATH`: writes the volume's changes and detaches it.
pub fn umount_command(args: &[String]) -> Result<(), String> {
    match args {
        [path] => unmount(path, false),
        _ => Err(String::from("usage: umount /PATH")),
    }
}

/// `sync`: writes every mounted file system's changes to its disk.
pub fn sync_command(args: &[String]) -> Result<(), String> {
    if !args.is_empty() {
        return Err(String::from("takes no arguments"));
    }
    sync_all()
}

/// Raw-device throughput (overwrites `mib` MiB from sector `first`): sequential writes and
/// reads in 1 MiB requests, then 4 KiB reads at random aligned places, one at a time. Prints
/// `BENCH` lines as `bench` does.
fn bench(
    device: &Arc<dyn BlockDevice>,
    first: u64,
    mib: u64,
) -> Result<(), keel_block::BlockError> {
    const MIB: usize = 1 << 20;
    const READS: u64 = 1000;
    let sector = u64::from(device.sector_size());
    let per_mib = MIB as u64 / sector;
    keel_block::check_request(
        device.sector_size(),
        device.sector_count(),
        first,
        (mib as usize) * MIB,
    )?;
    let mut buf: Vec<u8> = (0..MIB).map(|i| (i * 131 + 7) as u8).collect();
    let line = |name: &str, ns: u64, iterations: u64| {
        println!(
            "BENCH {{\"name\":\"{name}\",\"median_ns\":{:.1},\"iterations\":{iterations}}}",
            ns as f64 / iterations as f64
        );
    };
    let start = keel_time::now_ns();
    for i in 0..mib {
        device.write(first + i * per_mib, &buf)?;
    }
    device.flush()?;
    line("disk_seq_write_per_mib", keel_time::now_ns() - start, mib);
    let start = keel_time::now_ns();
    for i in 0..mib {
        device.read(first + i * per_mib, &mut buf)?;
    }
    line("disk_seq_read_per_mib", keel_time::now_ns() - start, mib);
    let small = (4096 / sector).max(1);
    let slots = mib * per_mib / small;
    let mut state = 0x243f_6a88_85a3_08d3u64;
    let start = keel_time::now_ns();
    for _ in 0..READS {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let lba = first + (state % slots) * small;
        device.read(lba, &mut buf[..(small * sector) as usize])?;
    }
    line("disk_random_read_4k", keel_time::now_ns() - start, READS);
    Ok(())
}

/// `blk read NAME LBA [COUNT]`: reads sectors straight from a disk or partition and prints a
/// checksum of them (FNV-1a), for checking the block path without a file system.
pub fn blk_command(args: &[String]) -> Result<(), String> {
    const USAGE: &str = "usage: blk read NAME LBA [COUNT] | blk bench NAME FIRST_LBA MIB";
    if let [op, name, first, mib] = args
        && op == "bench"
    {
        let first: u64 = first.parse().map_err(|_| format!("bad LBA '{first}'"))?;
        let mib: u64 = mib
            .parse()
            .ok()
            .filter(|m| (1..=1024).contains(m))
            .ok_or_else(|| format!("bad MIB '{mib}' (1 to 1024)"))?;
        let target = volume(name)?;
        let end = first.saturating_add(mib << 20 >> 9);
        // The volume itself mounted, or (for a whole disk) a mounted partition in the range.
        let overlaps_mount = target.mounted.is_some()
            || VOLUMES.lock().iter().any(|v| {
                let (start, stop) = (v.first_lba, v.first_lba + v.device.sector_count());
                target.kind == "disk"
                    && v.disk == target.name
                    && v.kind == "part"
                    && v.mounted.is_some()
                    && first < stop
                    && start < end
            });
        if overlaps_mount {
            return Err(format!(
                "{name}: sectors {first}..{end} hold a mounted file system (umount it first)"
            ));
        }
        return bench(&target.device, first, mib).map_err(|e| format!("{name}: {e}"));
    }
    let (name, lba, count) = match args {
        [op, name, lba] if op == "read" => (name, lba, "1"),
        [op, name, lba, count] if op == "read" => (name, lba, count.as_str()),
        _ => return Err(String::from(USAGE)),
    };
    let lba: u64 = lba
        .parse()
        .map_err(|_| format!("bad LBA '{lba}' ({USAGE})"))?;
    let count: u32 = count
        .parse()
        .ok()
        .filter(|c| (1..=8192).contains(c))
        .ok_or_else(|| format!("bad COUNT '{count}' (1 to 8192)"))?;
    let device = volume(name)?.device;
    let mut buf = vec![0u8; count as usize * device.sector_size() as usize];
    device
        .read(lba, &mut buf)
        .map_err(|e| format!("{name}: {e}"))?;
    let checksum = buf.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    let plural = if count == 1 { "" } else { "s" };
    println!("read {count} sector{plural} from {name} at {lba}: fnv1a {checksum:016x}");
    Ok(())
}
