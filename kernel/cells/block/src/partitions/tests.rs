use super::*;
use crate::MemDisk;
use std::sync::atomic::{AtomicU64, Ordering};

const ESP: Guid = Guid::EFI_SYSTEM;
const DATA: Guid = Guid::MICROSOFT_BASIC_DATA;

fn sector(disk: &MemDisk, lba: u64) -> Vec<u8> {
    let mut buf = vec![0u8; disk.sector_size() as usize];
    disk.read(lba, &mut buf).unwrap();
    buf
}

fn put(disk: &MemDisk, lba: u64, bytes: &[u8]) {
    disk.write(lba, bytes).unwrap();
}

fn set_slot(sector: &mut [u8], slot: usize, status: u8, system_id: u8, start: u32, count: u32) {
    let at = MBR_TABLE + slot * 16;
    sector[at] = status;
    sector[at + 4] = system_id;
    sector[at + 8..at + 12].copy_from_slice(&start.to_le_bytes());
    sector[at + 12..at + 16].copy_from_slice(&count.to_le_bytes());
}

fn signed(size: usize) -> Vec<u8> {
    let mut s = vec![0u8; size];
    s[510] = 0x55;
    s[511] = 0xAA;
    s
}

/// One GPT partition: type, first and last (inclusive) LBA, name.
type Spec<'a> = (Guid, u64, u64, &'a str);

const ENTRIES: u64 = 128;
const ENTRY_SIZE: u64 = 128;

fn array_sectors(disk: &MemDisk) -> u64 {
    (ENTRIES * ENTRY_SIZE).div_ceil(u64::from(disk.sector_size()))
}

fn usable(disk: &MemDisk) -> (u64, u64) {
    let n = array_sectors(disk);
    (2 + n, disk.sector_count() - 2 - n)
}

fn entry_array(parts: &[Spec]) -> Vec<u8> {
    let mut array = vec![0u8; (ENTRIES * ENTRY_SIZE) as usize];
    for (i, (type_guid, first, last, name)) in parts.iter().enumerate() {
        let e = &mut array[i * ENTRY_SIZE as usize..(i + 1) * ENTRY_SIZE as usize];
        e[0..16].copy_from_slice(&type_guid.0);
        e[16..32].copy_from_slice(&[i as u8 + 1; 16]);
        e[32..40].copy_from_slice(&first.to_le_bytes());
        e[40..48].copy_from_slice(&last.to_le_bytes());
        e[48..56].copy_from_slice(&(1u64 << 63).to_le_bytes());
        for (j, unit) in name.encode_utf16().enumerate() {
            e[56 + 2 * j..58 + 2 * j].copy_from_slice(&unit.to_le_bytes());
        }
    }
    array
}

fn gpt_header(
    disk: &MemDisk,
    my_lba: u64,
    alternate: u64,
    entries_lba: u64,
    array: &[u8],
) -> Vec<u8> {
    let (first_usable, last_usable) = usable(disk);
    let mut h = vec![0u8; disk.sector_size() as usize];
    h[0..8].copy_from_slice(GPT_SIGNATURE);
    h[8..12].copy_from_slice(&0x0001_0000u32.to_le_bytes());
    h[12..16].copy_from_slice(&92u32.to_le_bytes());
    h[24..32].copy_from_slice(&my_lba.to_le_bytes());
    h[32..40].copy_from_slice(&alternate.to_le_bytes());
    h[40..48].copy_from_slice(&first_usable.to_le_bytes());
    h[48..56].copy_from_slice(&last_usable.to_le_bytes());
    h[56..72].copy_from_slice(&[0x42; 16]);
    h[72..80].copy_from_slice(&entries_lba.to_le_bytes());
    h[80..84].copy_from_slice(&(ENTRIES as u32).to_le_bytes());
    h[84..88].copy_from_slice(&(ENTRY_SIZE as u32).to_le_bytes());
    h[88..92].copy_from_slice(&crc32fast::hash(array).to_le_bytes());
    let crc = crc32fast::hash(&h[..92]);
    h[16..20].copy_from_slice(&crc.to_le_bytes());
    h
}

fn write_array(disk: &MemDisk, lba: u64, array: &[u8]) {
    let size = disk.sector_size() as usize;
    let mut padded = array.to_vec();
    padded.resize(padded.len().div_ceil(size) * size, 0);
    put(disk, lba, &padded);
}

/// A protective MBR, the primary header and entries, the backup entries and header.
fn write_gpt(disk: &MemDisk, parts: &[Spec]) {
    let size = disk.sector_size() as usize;
    let last = disk.sector_count() - 1;
    let mut mbr = signed(size);
    set_slot(
        &mut mbr,
        0,
        0,
        PROTECTIVE,
        1,
        (last).min(u64::from(u32::MAX)) as u32,
    );
    put(disk, 0, &mbr);
    let array = entry_array(parts);
    let n = array_sectors(disk);
    write_array(disk, 2, &array);
    put(disk, 1, &gpt_header(disk, 1, last, 2, &array));
    write_array(disk, last - n, &array);
    put(disk, last, &gpt_header(disk, last, 1, last - n, &array));
}

fn flip(disk: &MemDisk, lba: u64, at: usize) {
    let mut s = sector(disk, lba);
    s[at] ^= 0x01;
    put(disk, lba, &s);
}

#[test]
fn guid_display() {
    assert_eq!(
        Guid::EFI_SYSTEM.to_string(),
        "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
    );
    assert_eq!(
        format!("{:?}", Guid::MICROSOFT_BASIC_DATA),
        "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7"
    );
}

#[test]
fn gpt_entries_names_and_guids() {
    let disk = MemDisk::new(512, 4096);
    write_gpt(
        &disk,
        &[(ESP, 64, 1087, "EFI system"), (DATA, 2048, 4000, "données")],
    );
    let table = read_partitions(&disk).unwrap();
    assert_eq!(table.scheme, Scheme::Gpt);
    assert!(!table.used_backup_gpt);
    assert_eq!(table.partitions.len(), 2);
    let esp = &table.partitions[0];
    assert_eq!((esp.number, esp.first_lba, esp.sector_count), (1, 64, 1024));
    assert_eq!(
        esp.kind,
        PartitionKind::Gpt {
            type_guid: ESP,
            unique_guid: Guid([1; 16]),
            name: "EFI system".into(),
            attributes: 1 << 63,
        }
    );
    let data = &table.partitions[1];
    assert_eq!(
        (data.number, data.first_lba, data.sector_count),
        (2, 2048, 1953)
    );
    assert!(matches!(&data.kind, PartitionKind::Gpt { name, .. } if name == "données"));
    assert!(esp.may_hold_fat() && data.may_hold_fat());
}

#[test]
fn gpt_skips_empty_slots_and_numbers_by_slot() {
    let disk = MemDisk::new(512, 4096);
    write_gpt(
        &disk,
        &[
            (DATA, 100, 199, "a"),
            (Guid::ZERO, 0, 0, ""),
            (Guid::LINUX_FILESYSTEM, 300, 399, "c"),
        ],
    );
    let table = read_partitions(&disk).unwrap();
    let numbers: Vec<u32> = table.partitions.iter().map(|p| p.number).collect();
    assert_eq!(numbers, [1, 3]);
    assert!(!table.partitions[1].may_hold_fat());
}

#[test]
fn gpt_bad_primary_header_crc_uses_the_backup() {
    let disk = MemDisk::new(512, 4096);
    write_gpt(&disk, &[(DATA, 100, 199, "a")]);
    flip(&disk, 1, 60); // inside the header, so its CRC no longer matches
    let table = read_partitions(&disk).unwrap();
    assert!(table.used_backup_gpt);
    assert_eq!(table.partitions[0].first_lba, 100);
}

#[test]
fn gpt_bad_primary_entry_crc_uses_the_backup() {
    let disk = MemDisk::new(512, 4096);
    write_gpt(&disk, &[(DATA, 100, 199, "a")]);
    flip(&disk, 2, 33); // the first entry's start LBA
    let table = read_partitions(&disk).unwrap();
    assert!(table.used_backup_gpt);
    assert_eq!(table.partitions[0].first_lba, 100);
}

#[test]
fn gpt_missing_primary_uses_the_backup() {
    let disk = MemDisk::new(512, 4096);
    write_gpt(&disk, &[(DATA, 100, 199, "a")]);
    put(&disk, 1, &[0u8; 512]);
    let table = read_partitions(&disk).unwrap();
    assert!(table.used_backup_gpt);
    assert_eq!(table.partitions.len(), 1);
}

#[test]
fn gpt_both_headers_bad_is_an_error() {
    let disk = MemDisk::new(512, 4096);
    write_gpt(&disk, &[(DATA, 100, 199, "a")]);
    flip(&disk, 1, 60);
    flip(&disk, 4095, 60);
    assert_eq!(read_partitions(&disk), Err(TableError::BadGpt));
}

#[test]
fn gpt_header_in_the_wrong_place_is_rejected() {
    // A copy of the primary header at the end claims LBA 1: the backup check must see that.
    let disk = MemDisk::new(512, 4096);
    write_gpt(&disk, &[(DATA, 100, 199, "a")]);
    let primary = sector(&disk, 1);
    put(&disk, 4095, &primary);
    flip(&disk, 1, 60);
    assert_eq!(read_partitions(&disk), Err(TableError::BadGpt));
}

#[test]
fn gpt_overlapping_entries_are_rejected() {
    let disk = MemDisk::new(512, 4096);
    write_gpt(&disk, &[(DATA, 100, 300, "a"), (DATA, 300, 400, "b")]);
    assert_eq!(
        read_partitions(&disk),
        Err(TableError::Overlap {
            first: 1,
            second: 2
        })
    );
}

#[test]
fn gpt_entries_outside_the_usable_area_are_rejected() {
    let disk = MemDisk::new(512, 4096);
    let (first_usable, last_usable) = usable(&disk);
    for (first, last) in [
        (first_usable - 1, 200),
        (100, last_usable + 1),
        (300, 200),
        (100, u64::MAX),
    ] {
        write_gpt(&disk, &[(DATA, 50, 60, "ok"), (DATA, first, last, "bad")]);
        assert_eq!(
            read_partitions(&disk),
            Err(TableError::BadEntry { number: 2 }),
            "{first}..={last}"
        );
    }
}

#[test]
fn gpt_on_4096_byte_sectors() {
    let disk = MemDisk::new(4096, 1024);
    write_gpt(&disk, &[(ESP, 256, 1000, "esp")]);
    let table = read_partitions(&disk).unwrap();
    assert_eq!(table.scheme, Scheme::Gpt);
    assert_eq!(table.partitions[0].sector_count, 745);
}

#[test]
fn gpt_without_protective_mbr_is_still_found() {
    let disk = MemDisk::new(512, 4096);
    write_gpt(&disk, &[(DATA, 100, 199, "a")]);
    put(&disk, 0, &[0u8; 512]);
    assert_eq!(read_partitions(&disk).unwrap().scheme, Scheme::Gpt);
}

fn mbr_disk() -> MemDisk {
    // 1: FAT32 (bootable) at 2048; 2: extended 10000..20000 with two logical partitions.
    let disk = MemDisk::new(512, 32768);
    let mut mbr = signed(512);
    set_slot(&mut mbr, 0, 0x80, 0x0C, 2048, 4096);
    set_slot(&mut mbr, 1, 0, 0x0F, 10000, 10000);
    set_slot(&mut mbr, 3, 0, 0x83, 25000, 1000);
    put(&disk, 0, &mbr);
    let mut ebr1 = signed(512);
    set_slot(&mut ebr1, 0, 0, 0x06, 63, 1000);
    set_slot(&mut ebr1, 1, 0, 0x05, 2000, 3000);
    put(&disk, 10000, &ebr1);
    let mut ebr2 = signed(512);
    set_slot(&mut ebr2, 0, 0, 0x83, 1, 2999);
    put(&disk, 12000, &ebr2);
    disk
}

#[test]
fn mbr_primaries_and_logicals() {
    let disk = mbr_disk();
    let table = read_partitions(&disk).unwrap();
    assert_eq!(table.scheme, Scheme::Mbr);
    let summary: Vec<(u32, u64, u64, u8, bool, bool)> = table
        .partitions
        .iter()
        .map(|p| match p.kind {
            PartitionKind::Mbr {
                system_id,
                bootable,
                logical,
            } => (
                p.number,
                p.first_lba,
                p.sector_count,
                system_id,
                bootable,
                logical,
            ),
            _ => panic!("{p:?}"),
        })
        .collect();
    assert_eq!(
        summary,
        [
            (1, 2048, 4096, 0x0C, true, false),
            (4, 25000, 1000, 0x83, false, false),
            (5, 10063, 1000, 0x06, false, true),
            (6, 12001, 2999, 0x83, false, true),
        ]
    );
    assert!(table.partitions[0].may_hold_fat());
    assert!(table.partitions[2].may_hold_fat());
    assert!(!table.partitions[3].may_hold_fat());
}

#[test]
fn mbr_entry_past_the_disk_is_rejected() {
    let disk = mbr_disk();
    let mut mbr = sector(&disk, 0);
    set_slot(&mut mbr, 2, 0, 0x0C, 30000, 4000);
    put(&disk, 0, &mbr);
    assert_eq!(
        read_partitions(&disk),
        Err(TableError::BadEntry { number: 3 })
    );
}

#[test]
fn mbr_overlapping_primaries_are_rejected() {
    let disk = mbr_disk();
    let mut mbr = sector(&disk, 0);
    set_slot(&mut mbr, 2, 0, 0x0C, 19000, 2000); // into the extended partition
    put(&disk, 0, &mbr);
    assert_eq!(
        read_partitions(&disk),
        Err(TableError::Overlap {
            first: 2,
            second: 3
        })
    );
}

#[test]
fn mbr_two_extended_partitions_are_rejected() {
    let disk = mbr_disk();
    let mut mbr = sector(&disk, 0);
    set_slot(&mut mbr, 2, 0, 0x05, 21000, 1000);
    put(&disk, 0, &mbr);
    assert_eq!(read_partitions(&disk), Err(TableError::BadMbr));
}

#[test]
fn mbr_looping_logical_chain_is_rejected() {
    let disk = mbr_disk();
    let mut ebr2 = sector(&disk, 12000);
    set_slot(&mut ebr2, 1, 0, 0x05, 0, 3000); // back to the first EBR
    put(&disk, 12000, &ebr2);
    assert_eq!(read_partitions(&disk), Err(TableError::BadMbr));
}

#[test]
fn mbr_logical_outside_its_container_is_rejected() {
    let disk = mbr_disk();
    let mut ebr2 = sector(&disk, 12000);
    set_slot(&mut ebr2, 0, 0, 0x83, 1, 9000);
    put(&disk, 12000, &ebr2);
    assert_eq!(
        read_partitions(&disk),
        Err(TableError::BadEntry { number: 6 })
    );
}

#[test]
fn mbr_logical_covering_the_next_ebr_is_rejected() {
    let disk = mbr_disk();
    let mut ebr1 = sector(&disk, 10000);
    set_slot(&mut ebr1, 0, 0, 0x06, 63, 1938); // 10063..12001 covers the EBR at 12000
    put(&disk, 10000, &ebr1);
    assert_eq!(
        read_partitions(&disk),
        Err(TableError::BadEntry { number: 5 })
    );
}

#[test]
fn mbr_with_no_partitions() {
    let disk = MemDisk::new(512, 100);
    put(&disk, 0, &signed(512));
    let table = read_partitions(&disk).unwrap();
    assert_eq!(table.scheme, Scheme::Mbr);
    assert!(table.partitions.is_empty());
}

/// A FAT16 boot sector as `mformat` writes one on a bare image.
fn fat_boot_sector(total: u16) -> Vec<u8> {
    let mut s = signed(512);
    s[0..3].copy_from_slice(&[0xEB, 0x3C, 0x90]);
    s[3..11].copy_from_slice(b"MTOO4043");
    s[11..13].copy_from_slice(&512u16.to_le_bytes());
    s[13] = 4;
    s[14..16].copy_from_slice(&1u16.to_le_bytes());
    s[16] = 2;
    s[17..19].copy_from_slice(&512u16.to_le_bytes());
    s[19..21].copy_from_slice(&total.to_le_bytes());
    s[21] = 0xF8;
    s[22..24].copy_from_slice(&16u16.to_le_bytes());
    // Boot code where an MBR's table would be: not a partition table.
    for (i, byte) in s[MBR_TABLE..510].iter_mut().enumerate() {
        *byte = (i * 7 + 3) as u8;
    }
    s
}

#[test]
fn superfloppy_is_one_whole_disk_volume() {
    let disk = MemDisk::new(512, 16384);
    put(&disk, 0, &fat_boot_sector(16384));
    let table = read_partitions(&disk).unwrap();
    assert_eq!(table.scheme, Scheme::Superfloppy);
    assert_eq!(
        table.partitions,
        [PartitionInfo {
            number: 1,
            first_lba: 0,
            sector_count: 16384,
            kind: PartitionKind::WholeDisk,
        }]
    );
    assert!(table.partitions[0].may_hold_fat());
}

#[test]
fn blank_and_foreign_disks_have_no_volumes() {
    let disk = MemDisk::new(512, 100);
    assert_eq!(read_partitions(&disk).unwrap().scheme, Scheme::Unknown);
    // Signed, but the "status bytes" are not 0 or 0x80: another system's boot sector.
    let mut s = signed(512);
    set_slot(&mut s, 0, 0x33, 0x07, 1, 10);
    put(&disk, 0, &s);
    let table = read_partitions(&disk).unwrap();
    assert_eq!(table.scheme, Scheme::Unknown);
    assert!(table.partitions.is_empty());
    // An empty device.
    let empty = MemDisk::new(512, 0);
    assert_eq!(read_partitions(&empty).unwrap().scheme, Scheme::Unknown);
}

/// Counts the requests that reach the disk.
struct Counting {
    inner: MemDisk,
    requests: AtomicU64,
}

impl BlockDevice for Counting {
    fn sector_size(&self) -> u32 {
        self.inner.sector_size()
    }
    fn sector_count(&self) -> u64 {
        self.inner.sector_count()
    }
    fn read(&self, lba: u64, buf: &mut [u8]) -> Result<(), BlockError> {
        self.requests.fetch_add(1, Ordering::SeqCst);
        self.inner.read(lba, buf)
    }
    fn write(&self, lba: u64, data: &[u8]) -> Result<(), BlockError> {
        self.requests.fetch_add(1, Ordering::SeqCst);
        self.inner.write(lba, data)
    }
    fn flush(&self) -> Result<(), BlockError> {
        self.requests.fetch_add(1, Ordering::SeqCst);
        self.inner.flush()
    }
}

#[test]
fn partition_is_a_window_onto_its_disk() {
    let disk = Arc::new(Counting {
        inner: MemDisk::new(512, 100),
        requests: AtomicU64::new(0),
    });
    let part = Partition::new(disk.clone(), 10, 20).unwrap();
    assert_eq!((part.sector_size(), part.sector_count()), (512, 20));
    assert_eq!(part.size_bytes(), 20 * 512);
    part.write(0, &[1u8; 512]).unwrap();
    part.write(19, &[2u8; 512]).unwrap();
    assert_eq!(sector(&disk.inner, 10), [1u8; 512]);
    assert_eq!(sector(&disk.inner, 29), [2u8; 512]);
    let mut buf = [0u8; 1024];
    part.read(18, &mut buf).unwrap();
    assert_eq!(&buf[512..], &[2u8; 512]);
    part.flush().unwrap();
    assert_eq!(disk.inner.flushes(), 1);

    let before = disk.requests.load(Ordering::SeqCst);
    assert_eq!(part.read(20, &mut [0u8; 512]), Err(BlockError::OutOfRange));
    assert_eq!(part.read(19, &mut [0u8; 1024]), Err(BlockError::OutOfRange));
    assert_eq!(
        part.write(u64::MAX, &[0u8; 512]),
        Err(BlockError::OutOfRange)
    );
    assert_eq!(part.write(0, &[0u8; 100]), Err(BlockError::OutOfRange));
    assert_eq!(disk.requests.load(Ordering::SeqCst), before);
    assert_eq!(sector(&disk.inner, 30), [0u8; 512]);

    assert!(Partition::new(disk.clone(), 90, 11).is_err());
    assert!(Partition::new(disk.clone(), u64::MAX, 2).is_err());
    assert!(Partition::new(disk, 90, 10).is_ok());
}

#[test]
fn opening_a_found_partition() {
    let disk = Arc::new(mbr_disk());
    let table = read_partitions(&*disk).unwrap();
    let part = table.partitions[0].open(disk.clone()).unwrap();
    assert_eq!((part.first_lba(), part.sector_count()), (2048, 4096));
    part.write(0, &[9u8; 512]).unwrap();
    assert_eq!(sector(&disk, 2048), [9u8; 512]);
}

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Garbage tables (with valid signatures and checksums, so the deeper checks run) give
/// answers or errors, never panics.
#[test]
fn random_tables_never_panic() {
    let mut rng = XorShift(0x1234_5678_9abc_def1);
    let mut outcomes = [0usize; 3];
    for round in 0..3000 {
        let size = if round % 5 == 0 { 4096 } else { 512 };
        let count = 8 + rng.next() % 200;
        let disk = MemDisk::new(size, count);
        let garbage = |lba: u64, rng: &mut XorShift| {
            let mut s: Vec<u8> = (0..size).map(|_| rng.next() as u8).collect();
            if rng.next().is_multiple_of(2) {
                s[510] = 0x55;
                s[511] = 0xAA;
            }
            (s, lba)
        };
        let (mut mbr, _) = garbage(0, &mut rng);
        for slot in 0..4 {
            let at = MBR_TABLE + slot * 16;
            mbr[at] = [0, 0x80][(rng.next() % 2) as usize];
            mbr[at + 4] = [0, 0x0C, 0x05, PROTECTIVE][(rng.next() % 4) as usize];
            let start = (rng.next() % (count + 4)) as u32;
            let len = (rng.next() % (count + 4)) as u32;
            mbr[at + 8..at + 12].copy_from_slice(&start.to_le_bytes());
            mbr[at + 12..at + 16].copy_from_slice(&len.to_le_bytes());
        }
        if rng.next().is_multiple_of(3) {
            mbr[510] = 0x55;
            mbr[511] = 0xAA;
        }
        put(&disk, 0, &mbr);
        for lba in 1..count.min(40) {
            let (mut s, _) = garbage(lba, &mut rng);
            if rng.next().is_multiple_of(4) {
                s[..8].copy_from_slice(GPT_SIGNATURE);
                let small = |rng: &mut XorShift| rng.next() % (count + 3);
                s[12..16].copy_from_slice(&92u32.to_le_bytes());
                s[24..32].copy_from_slice(&lba.to_le_bytes());
                for at in [40, 48, 72] {
                    let v = small(&mut rng);
                    s[at..at + 8].copy_from_slice(&v.to_le_bytes());
                }
                s[80..84].copy_from_slice(&((rng.next() % 300) as u32).to_le_bytes());
                s[84..88].copy_from_slice(
                    &([128u32, 256, 7, 0][(rng.next() % 4) as usize]).to_le_bytes(),
                );
                s[16..20].fill(0);
                let crc = crc32fast::hash(&s[..92]);
                s[16..20].copy_from_slice(&crc.to_le_bytes());
            }
            put(&disk, lba, &s);
        }
        match read_partitions(&disk) {
            Ok(table) => {
                outcomes[usize::from(!table.partitions.is_empty())] += 1;
                for p in &table.partitions {
                    assert!(p.first_lba + p.sector_count <= count, "{p:?}");
                    assert!(p.sector_count > 0);
                }
            }
            Err(_) => outcomes[2] += 1,
        }
    }
    assert!(outcomes.iter().all(|&n| n > 0), "{outcomes:?}");
}
