//! The volumes of a disk: a GUID partition table, an MBR (with logical partitions in an extended
//! one), or a "superfloppy" (a FAT file system on the whole disk, with no partition table, as
//! `mformat` makes on a bare image).
//!
//! [`read_partitions`] only reads. Everything it finds is checked before it is believed: both GPT
//! checksums, every partition inside the disk (and the GPT's usable area), no two partitions
//! overlapping. A table that fails is a [`TableError`]; nothing here panics on what a disk holds.
//! [`Partition`] is a [`BlockDevice`] that is a window onto its disk: requests outside it fail
//! with [`BlockError::OutOfRange`] and never reach the disk.

use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec;
use alloc::vec::Vec;
use core::fmt;

use crate::{BlockDevice, BlockError, check_request};

/// A part of a disk: sectors `first_lba .. first_lba + sector_count` of `disk`.
pub struct Partition {
    disk: Arc<dyn BlockDevice>,
    first_lba: u64,
    sector_count: u64,
}

impl Partition {
    /// The window `first_lba .. first_lba + sector_count` of `disk`; [`BlockError::OutOfRange`]
    /// unless it lies on the disk.
    pub fn new(
        disk: Arc<dyn BlockDevice>,
        first_lba: u64,
        sector_count: u64,
    ) -> Result<Partition, BlockError> {
        match first_lba.checked_add(sector_count) {
            Some(end) if end <= disk.sector_count() => Ok(Partition {
                disk,
                first_lba,
                sector_count,
            }),
            _ => Err(BlockError::OutOfRange),
        }
    }

    /// Where the window starts on the disk.
    pub fn first_lba(&self) -> u64 {
        self.first_lba
    }

    /// The whole disk.
    pub fn disk(&self) -> &Arc<dyn BlockDevice> {
        &self.disk
    }
}

impl BlockDevice for Partition {
    fn sector_size(&self) -> u32 {
        self.disk.sector_size()
    }

    fn sector_count(&self) -> u64 {
        self.sector_count
    }

    fn read(&self, lba: u64, buf: &mut [u8]) -> Result<(), BlockError> {
        check_request(self.sector_size(), self.sector_count, lba, buf.len())?;
        self.disk.read(self.first_lba + lba, buf)
    }

    fn write(&self, lba: u64, data: &[u8]) -> Result<(), BlockError> {
        check_request(self.sector_size(), self.sector_count, lba, data.len())?;
        self.disk.write(self.first_lba + lba, data)
    }

    fn flush(&self) -> Result<(), BlockError> {
        self.disk.flush()
    }
}

/// A GUID as GPT stores it: the first three fields little-endian, the rest as bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Guid(pub [u8; 16]);

impl Guid {
    pub const ZERO: Guid = Guid([0; 16]);
    /// EFI system partition (FAT).
    pub const EFI_SYSTEM: Guid = Guid::from_fields(
        0xC12A_7328,
        0xF81F,
        0x11D2,
        [0xBA, 0x4B, 0x00, 0xA0, 0xC9, 0x3E, 0xC9, 0x3B],
    );
    /// Microsoft basic data (FAT, exFAT, NTFS).
    pub const MICROSOFT_BASIC_DATA: Guid = Guid::from_fields(
        0xEBD0_A0A2,
        0xB9E5,
        0x4433,
        [0x87, 0xC0, 0x68, 0xB6, 0xB7, 0x26, 0x99, 0xC7],
    );
    /// Linux file system data.
    pub const LINUX_FILESYSTEM: Guid = Guid::from_fields(
        0x0FC6_3DAF,
        0x8483,
        0x4772,
        [0x8E, 0x79, 0x3D, 0x69, 0xD8, 0x47, 0x7D, 0xE4],
    );

    /// The GUID written `d1-d2-d3-d4[0..2]-d4[2..8]`.
    pub const fn from_fields(d1: u32, d2: u16, d3: u16, d4: [u8; 8]) -> Guid {
        let a = d1.to_le_bytes();
        let b = d2.to_le_bytes();
        let c = d3.to_le_bytes();
        Guid([
            a[0], a[1], a[2], a[3], b[0], b[1], c[0], c[1], d4[0], d4[1], d4[2], d4[3], d4[4],
            d4[5], d4[6], d4[7],
        ])
    }
}

impl fmt::Display for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let g = &self.0;
        write!(
            f,
            "{:08X}-{:04X}-{:04X}-",
            u32::from_le_bytes([g[0], g[1], g[2], g[3]]),
            u16::from_le_bytes([g[4], g[5]]),
            u16::from_le_bytes([g[6], g[7]]),
        )?;
        for (i, byte) in g[8..].iter().enumerate() {
            if i == 2 {
                f.write_str("-")?;
            }
            write!(f, "{byte:02X}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Why a disk's partition table was not accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TableError {
    /// Reading the disk failed.
    Device(BlockError),
    /// The protective MBR announces a GPT, but neither header (primary at LBA 1, backup at the
    /// last LBA) passes its checks (signature, CRC32 of header and entries, layout).
    BadGpt,
    /// The MBR or an extended boot record is malformed (more than one extended partition, a
    /// missing signature, a chain of logical partitions that goes backwards or is too long).
    BadMbr,
    /// Partition `number` is empty, or lies (partly) outside the disk, the GPT's usable area or
    /// its extended partition.
    BadEntry { number: u32 },
    /// Partitions `first` and `second` overlap.
    Overlap { first: u32, second: u32 },
}

impl From<BlockError> for TableError {
    fn from(error: BlockError) -> TableError {
        TableError::Device(error)
    }
}

impl fmt::Display for TableError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TableError::Device(e) => write!(f, "reading the partition table: {e}"),
            TableError::BadGpt => f.write_str("both GPT headers are invalid"),
            TableError::BadMbr => f.write_str("malformed MBR"),
            TableError::BadEntry { number } => {
                write!(f, "partition {number} is empty or outside its area")
            }
            TableError::Overlap { first, second } => {
                write!(f, "partitions {first} and {second} overlap")
            }
        }
    }
}

/// How the disk is laid out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    Gpt,
    Mbr,
    /// No partition table: the whole disk is one FAT volume.
    Superfloppy,
    /// Nothing recognized (a blank disk, or a layout this module does not know).
    Unknown,
}

/// What a partition table says about a partition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PartitionKind {
    Gpt {
        type_guid: Guid,
        unique_guid: Guid,
        /// The UTF-16 name (invalid code units become U+FFFD).
        name: String,
        attributes: u64,
    },
    Mbr {
        /// The partition type byte (0x0C FAT32 LBA, 0x83 Linux, ...).
        system_id: u8,
        bootable: bool,
        /// In the extended partition.
        logical: bool,
    },
    /// The whole disk, which holds a FAT boot sector.
    WholeDisk,
}

/// A volume found on a disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionInfo {
    /// 1-based, as Linux numbers them: GPT entry index + 1; MBR primaries 1-4 by slot, logical
    /// partitions from 5 in chain order; 1 for a superfloppy.
    pub number: u32,
    pub first_lba: u64,
    pub sector_count: u64,
    pub kind: PartitionKind,
}

impl PartitionInfo {
    /// Whether the type says it may hold a FAT file system (FAT MBR types, the EFI system and
    /// basic data GUIDs, a superfloppy).
    pub fn may_hold_fat(&self) -> bool {
        match &self.kind {
            PartitionKind::Gpt { type_guid, .. } => {
                *type_guid == Guid::EFI_SYSTEM || *type_guid == Guid::MICROSOFT_BASIC_DATA
            }
            PartitionKind::Mbr { system_id, .. } => {
                matches!(system_id, 0x01 | 0x04 | 0x06 | 0x0B | 0x0C | 0x0E | 0xEF)
            }
            PartitionKind::WholeDisk => true,
        }
    }

    /// This partition of `disk` as a block device.
    pub fn open(&self, disk: Arc<dyn BlockDevice>) -> Result<Partition, BlockError> {
        Partition::new(disk, self.first_lba, self.sector_count)
    }

    fn end(&self) -> u64 {
        self.first_lba + self.sector_count
    }
}

/// A disk's layout and volumes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionTable {
    pub scheme: Scheme,
    /// In table order (GPT slots and MBR primaries by number, then logical partitions).
    pub partitions: Vec<PartitionInfo>,
    /// GPT only: the primary header or its entry array was bad, so the backup was used.
    pub used_backup_gpt: bool,
}

impl PartitionTable {
    fn new(scheme: Scheme, partitions: Vec<PartitionInfo>) -> PartitionTable {
        PartitionTable {
            scheme,
            partitions,
            used_backup_gpt: false,
        }
    }
}

const MBR_TABLE: usize = 446;
const PROTECTIVE: u8 = 0xEE;
/// Logical partitions followed at most, so that a looping chain ends.
const MAX_LOGICAL: u32 = 128;
/// Largest GPT entry array read (the usual one is 16 KiB).
const MAX_GPT_ARRAY: u64 = 1 << 20;

fn has_boot_signature(sector: &[u8]) -> bool {
    sector.len() >= 512 && sector[510] == 0x55 && sector[511] == 0xAA
}

fn le16(bytes: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([bytes[at], bytes[at + 1]])
}

fn le32(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

fn le64(bytes: &[u8], at: usize) -> u64 {
    let mut raw = [0u8; 8];
    raw.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(raw)
}

/// Whether `sector` is a FAT boot sector: a jump, then a BIOS parameter block whose fields
/// are all plausible. (An MBR's boot code does not pass: its bytes 11-35 are not a BPB.)
pub fn is_fat_boot_sector(sector: &[u8]) -> bool {
    if !has_boot_signature(sector) {
        return false;
    }
    let jump = sector[0] == 0xEB || sector[0] == 0xE9;
    let bytes_per_sector = le16(sector, 11);
    let sectors_per_cluster = sector[13];
    let reserved = le16(sector, 14);
    let fats = sector[16];
    let media = sector[21];
    let total = u32::from(le16(sector, 19)).max(le32(sector, 32));
    let per_fat = u32::from(le16(sector, 22)).max(le32(sector, 36));
    jump && matches!(bytes_per_sector, 512 | 1024 | 2048 | 4096)
        && sectors_per_cluster.is_power_of_two()
        && reserved >= 1
        && (1..=4).contains(&fats)
        && (media == 0xF0 || media >= 0xF8)
        && total > 0
        && per_fat > 0
}

/// Finds the volumes of `disk`: a GPT (when the MBR is protective, or LBA 1 holds a GPT
/// header), else a whole-disk FAT volume, else an MBR. A disk with none of them is
/// [`Scheme::Unknown`] with no partitions.
pub fn read_partitions(disk: &dyn BlockDevice) -> Result<PartitionTable, TableError> {
    let sector_size = disk.sector_size() as usize;
    let count = disk.sector_count();
    if sector_size < 512 || count < 1 {
        return Ok(PartitionTable::new(Scheme::Unknown, Vec::new()));
    }
    let mut mbr = vec![0u8; sector_size];
    disk.read(0, &mut mbr)?;
    let signed = has_boot_signature(&mbr);
    let protective = signed && (0..4).any(|slot| mbr[MBR_TABLE + slot * 16 + 4] == PROTECTIVE);

    let gpt_signed_at_1 = count > 1 && {
        let mut header = vec![0u8; sector_size];
        disk.read(1, &mut header)?;
        &header[..8] == GPT_SIGNATURE
    };
    if protective || gpt_signed_at_1 {
        match read_gpt(disk) {
            Ok(table) => return Ok(table),
            Err(e) if protective => return Err(e),
            Err(_) => {}
        }
    }
    if is_fat_boot_sector(&mbr) {
        let whole = PartitionInfo {
            number: 1,
            first_lba: 0,
            sector_count: count,
            kind: PartitionKind::WholeDisk,
        };
        return Ok(PartitionTable::new(Scheme::Superfloppy, vec![whole]));
    }
    if !signed {
        return Ok(PartitionTable::new(Scheme::Unknown, Vec::new()));
    }
    read_mbr(disk, &mbr)
}

/// An MBR partition slot.
struct MbrSlot {
    status: u8,
    system_id: u8,
    start: u64,
    count: u64,
}

fn mbr_slot(sector: &[u8], slot: usize) -> MbrSlot {
    let raw = &sector[MBR_TABLE + slot * 16..MBR_TABLE + slot * 16 + 16];
    MbrSlot {
        status: raw[0],
        system_id: raw[4],
        start: u64::from(le32(raw, 8)),
        count: u64::from(le32(raw, 12)),
    }
}

fn is_extended(system_id: u8) -> bool {
    matches!(system_id, 0x05 | 0x0F | 0x85)
}

fn read_mbr(disk: &dyn BlockDevice, mbr: &[u8]) -> Result<PartitionTable, TableError> {
    let count = disk.sector_count();
    let slots: Vec<MbrSlot> = (0..4).map(|slot| mbr_slot(mbr, slot)).collect();
    // A status byte other than "inactive" or "active" means this is not a partition table
    // (another file system's boot sector, say).
    if slots.iter().any(|s| s.status != 0 && s.status != 0x80) {
        return Ok(PartitionTable::new(Scheme::Unknown, Vec::new()));
    }
    let mut primaries = Vec::new();
    let mut extended = None;
    for (index, slot) in slots.iter().enumerate() {
        if slot.system_id == 0 {
            continue;
        }
        let info = PartitionInfo {
            number: index as u32 + 1,
            first_lba: slot.start,
            sector_count: slot.count,
            kind: PartitionKind::Mbr {
                system_id: slot.system_id,
                bootable: slot.status == 0x80,
                logical: false,
            },
        };
        if slot.start == 0 || slot.count == 0 || info.end() > count {
            return Err(TableError::BadEntry {
                number: info.number,
            });
        }
        if is_extended(slot.system_id) {
            if extended.is_some() {
                return Err(TableError::BadMbr);
            }
            extended = Some(info.clone());
        }
        primaries.push(info);
    }
    check_overlaps(&primaries)?;
    primaries.retain(
        |p| !matches!(p.kind, PartitionKind::Mbr { system_id, .. } if is_extended(system_id)),
    );
    if let Some(container) = extended {
        let logicals = read_logicals(disk, &container)?;
        primaries.extend(logicals);
    }
    Ok(PartitionTable::new(Scheme::Mbr, primaries))
}

/// Follows the chain of extended boot records in `container`. Each link must point further
/// into the container than the one before, so the walk always ends.
fn read_logicals(
    disk: &dyn BlockDevice,
    container: &PartitionInfo,
) -> Result<Vec<PartitionInfo>, TableError> {
    let mut sector = vec![0u8; disk.sector_size() as usize];
    let mut logicals = Vec::new();
    let mut ebrs = Vec::new();
    let mut link = 0u64;
    for number in 5..5 + MAX_LOGICAL {
        let ebr = container.first_lba + link;
        if ebr >= container.end() {
            return Err(TableError::BadMbr);
        }
        disk.read(ebr, &mut sector)?;
        if !has_boot_signature(&sector) {
            return Err(TableError::BadMbr);
        }
        ebrs.push(ebr);
        let this = mbr_slot(&sector, 0);
        if this.system_id != 0 {
            let info = PartitionInfo {
                number,
                first_lba: ebr + this.start,
                sector_count: this.count,
                kind: PartitionKind::Mbr {
                    system_id: this.system_id,
                    bootable: this.status == 0x80,
                    logical: true,
                },
            };
            if this.start == 0 || this.count == 0 || info.end() > container.end() {
                return Err(TableError::BadEntry { number });
            }
            logicals.push(info);
        }
        let next = mbr_slot(&sector, 1);
        if next.system_id == 0 {
            check_overlaps(&logicals)?;
            // No partition may cover an extended boot record.
            for logical in &logicals {
                if ebrs
                    .iter()
                    .any(|&e| e >= logical.first_lba && e < logical.end())
                {
                    return Err(TableError::BadEntry {
                        number: logical.number,
                    });
                }
            }
            return Ok(logicals);
        }
        if !is_extended(next.system_id) || next.start <= link {
            return Err(TableError::BadMbr);
        }
        link = next.start;
    }
    Err(TableError::BadMbr)
}

/// [`TableError::Overlap`] for the first two partitions that share a sector.
fn check_overlaps(partitions: &[PartitionInfo]) -> Result<(), TableError> {
    let mut sorted: Vec<&PartitionInfo> = partitions.iter().collect();
    sorted.sort_by_key(|p| p.first_lba);
    for pair in sorted.windows(2) {
        if pair[1].first_lba < pair[0].end() {
            let (a, b) = (
                pair[0].number.min(pair[1].number),
                pair[0].number.max(pair[1].number),
            );
            return Err(TableError::Overlap {
                first: a,
                second: b,
            });
        }
    }
    Ok(())
}

const GPT_SIGNATURE: &[u8; 8] = b"EFI PART";

/// A GPT header that passed its own checks, with its entry array.
struct GptHeader {
    first_usable: u64,
    last_usable: u64,
    entry_size: usize,
    entries: Vec<u8>,
}

fn read_gpt(disk: &dyn BlockDevice) -> Result<PartitionTable, TableError> {
    // Room for the protective MBR and the two headers at least.
    if disk.sector_count() < 3 {
        return Err(TableError::BadGpt);
    }
    let last = disk.sector_count() - 1;
    let (header, used_backup) = match read_gpt_header(disk, 1)? {
        Some(header) => (header, false),
        None => match read_gpt_header(disk, last)? {
            Some(header) => (header, true),
            None => return Err(TableError::BadGpt),
        },
    };
    let mut partitions = Vec::new();
    for (index, raw) in header.entries.chunks_exact(header.entry_size).enumerate() {
        let type_guid = guid_at(raw, 0);
        if type_guid == Guid::ZERO {
            continue;
        }
        let number = index as u32 + 1;
        let first = le64(raw, 32);
        let end_inclusive = le64(raw, 40);
        if first > end_inclusive
            || first < header.first_usable
            || end_inclusive > header.last_usable
        {
            return Err(TableError::BadEntry { number });
        }
        let name_units = (0..36)
            .map(|i| le16(raw, 56 + 2 * i))
            .take_while(|&unit| unit != 0);
        let name = char::decode_utf16(name_units)
            .map(|c| c.unwrap_or(char::REPLACEMENT_CHARACTER))
            .collect();
        partitions.push(PartitionInfo {
            number,
            first_lba: first,
            sector_count: end_inclusive - first + 1,
            kind: PartitionKind::Gpt {
                type_guid,
                unique_guid: guid_at(raw, 16),
                name,
                attributes: le64(raw, 48),
            },
        });
    }
    check_overlaps(&partitions)?;
    Ok(PartitionTable {
        scheme: Scheme::Gpt,
        partitions,
        used_backup_gpt: used_backup,
    })
}

fn guid_at(bytes: &[u8], at: usize) -> Guid {
    let mut raw = [0u8; 16];
    raw.copy_from_slice(&bytes[at..at + 16]);
    Guid(raw)
}

/// The GPT header at `lba` and its entries if everything checks out: signature, size, CRC32,
/// its own LBA, a usable area on the disk, an entry array on the disk outside the usable area,
/// and the entry array's CRC32. `None` if anything does not.
fn read_gpt_header(disk: &dyn BlockDevice, lba: u64) -> Result<Option<GptHeader>, TableError> {
    let sector_size = disk.sector_size() as usize;
    let count = disk.sector_count();
    let mut sector = vec![0u8; sector_size];
    disk.read(lba, &mut sector)?;
    if &sector[..8] != GPT_SIGNATURE {
        return Ok(None);
    }
    let header_size = le32(&sector, 12) as usize;
    if !(92..=sector_size).contains(&header_size) {
        return Ok(None);
    }
    let stored_crc = le32(&sector, 16);
    let mut header = sector[..header_size].to_vec();
    header[16..20].fill(0);
    if crc32fast::hash(&header) != stored_crc || le64(&sector, 24) != lba {
        return Ok(None);
    }
    let first_usable = le64(&sector, 40);
    let last_usable = le64(&sector, 48);
    let entries_lba = le64(&sector, 72);
    let entry_count = u64::from(le32(&sector, 80));
    let entry_size = u64::from(le32(&sector, 84));
    let entries_crc = le32(&sector, 88);
    if first_usable < 2 || first_usable > last_usable || last_usable >= count {
        return Ok(None);
    }
    if entry_size < 128 || entry_size % 8 != 0 || entry_size * entry_count > MAX_GPT_ARRAY {
        return Ok(None);
    }
    let array_bytes = entry_size * entry_count;
    let array_sectors = array_bytes.div_ceil(sector_size as u64);
    let Some(array_end) = entries_lba.checked_add(array_sectors) else {
        return Ok(None);
    };
    let outside_usable = array_end <= first_usable || entries_lba > last_usable;
    let clear_of_header = lba < entries_lba || lba >= array_end;
    if entries_lba < 1 || array_end > count || !outside_usable || !clear_of_header {
        return Ok(None);
    }
    let mut entries = vec![0u8; (array_sectors as usize) * sector_size];
    disk.read(entries_lba, &mut entries)?;
    entries.truncate(array_bytes as usize);
    if crc32fast::hash(&entries) != entries_crc {
        return Ok(None);
    }
    Ok(Some(GptHeader {
        first_usable,
        last_usable,
        entry_size: entry_size as usize,
        entries,
    }))
}

#[cfg(test)]
mod tests;
