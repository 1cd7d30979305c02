//! The volume's geometry from its boot sector, checked before fatfs sees it.
//!
//! fatfs trusts cluster numbers: a FAT entry or directory entry naming cluster 1, or one past
//! the end of the volume, makes its arithmetic overflow (a panic with overflow checks, a wild
//! offset without). So this module checks the boot sector with checked arithmetic (an
//! implausible one is refused at mount), and [`FatGuard`] rewrites impossible FAT entries as
//! "bad cluster" as fatfs reads them, so that a chain simply ends there. Directory entries are
//! checked by [`crate::FatFs`] before fatfs uses a directory.

use fatfs::FatType;

/// What the boot sector says, checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    pub bytes_per_sector: u32,
    pub cluster_size: u32,
    pub fat_type: FatType,
    /// Data clusters; valid cluster numbers are `2 .. total_clusters + 2`.
    pub total_clusters: u32,
    /// Byte offset and length of the FAT that fatfs reads (the first, or the active one when
    /// mirroring is off).
    pub fat_start: u64,
    pub fat_bytes: u64,
    /// FAT12/16: byte offset and length of the fixed root directory.
    pub root_region: Option<(u64, u64)>,
    /// FAT32: the root directory's first cluster.
    pub root_cluster: u32,
    /// Bytes of the volume (may be less than the device).
    pub volume_bytes: u64,
}

/// Why a boot sector was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NotFat;

fn le16(b: &[u8], at: usize) -> u32 {
    u32::from(u16::from_le_bytes([b[at], b[at + 1]]))
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Most clusters FAT32 allows (0x0FFFFFF5 and up are reserved values).
const FAT32_MAX_CLUSTERS: u64 = 0x0FFF_FFF4;

impl Layout {
    /// Checks the boot sector `boot` (at least 512 bytes) of a device of `device_bytes` bytes.
    pub fn parse(boot: &[u8], device_bytes: u64) -> Result<Layout, NotFat> {
        if boot.len() < 512 || boot[510] != 0x55 || boot[511] != 0xAA {
            return Err(NotFat);
        }
        let bytes_per_sector = le16(boot, 11);
        let sectors_per_cluster = u32::from(boot[13]);
        let reserved = u64::from(le16(boot, 14));
        let fats = u64::from(boot[16]);
        let root_entries = u64::from(le16(boot, 17));
        let total16 = le16(boot, 19);
        let per_fat16 = le16(boot, 22);
        let total32 = le32(boot, 32);
        let is_fat32 = per_fat16 == 0;
        let per_fat = u64::from(if is_fat32 { le32(boot, 36) } else { per_fat16 });
        let total = u64::from(if total16 != 0 { total16 } else { total32 });
        if !matches!(bytes_per_sector, 512 | 1024 | 2048 | 4096)
            || !sectors_per_cluster.is_power_of_two()
            || sectors_per_cluster > 128
            || reserved == 0
            || !(1..=4).contains(&fats)
            || per_fat == 0
            || total == 0
            || (is_fat32 && (root_entries != 0 || total16 != 0))
            || (!is_fat32 && root_entries == 0)
        {
            return Err(NotFat);
        }
        let bps = u64::from(bytes_per_sector);
        let root_sectors = (root_entries * 32).div_ceil(bps);
        let first_data = reserved + fats * per_fat + root_sectors;
        if first_data >= total || total * bps > device_bytes {
            return Err(NotFat);
        }
        let total_clusters = (total - first_data) / u64::from(sectors_per_cluster);
        let fat_type = match total_clusters {
            0 => return Err(NotFat),
            1..4085 => FatType::Fat12,
            4085..65525 => FatType::Fat16,
            _ => FatType::Fat32,
        };
        if (fat_type == FatType::Fat32) != is_fat32 || total_clusters > FAT32_MAX_CLUSTERS {
            return Err(NotFat);
        }
        let entry_bits = match fat_type {
            FatType::Fat12 => 12,
            FatType::Fat16 => 16,
            FatType::Fat32 => 32,
        };
        // The FAT must have an entry for every cluster.
        if per_fat * bps * 8 / entry_bits < total_clusters + 2 {
            return Err(NotFat);
        }
        let mut root_cluster = 0;
        let mut active_fat = 0;
        if is_fat32 {
            let flags = le16(boot, 40);
            let version = le16(boot, 42);
            root_cluster = le32(boot, 44);
            let fs_info = u64::from(le16(boot, 48));
            let backup = u64::from(le16(boot, 50));
            if version != 0
                || root_cluster < 2
                || u64::from(root_cluster) >= total_clusters + 2
                || fs_info == 0
                || fs_info >= reserved
                || backup >= reserved
            {
                return Err(NotFat);
            }
            if flags & 0x80 != 0 {
                active_fat = u64::from(flags & 0x0F);
                if active_fat >= fats {
                    return Err(NotFat);
                }
            }
        }
        let root_region =
            (!is_fat32).then(|| ((reserved + fats * per_fat) * bps, root_entries * 32));
        Ok(Layout {
            bytes_per_sector,
            cluster_size: bytes_per_sector * sectors_per_cluster,
            fat_type,
            total_clusters: total_clusters as u32,
            fat_start: (reserved + active_fat * per_fat) * bps,
            fat_bytes: per_fat * bps,
            root_region,
            root_cluster,
            volume_bytes: total * bps,
        })
    }

    /// Whether `cluster` is a data cluster of this volume.
    pub fn valid_cluster(&self, cluster: u32) -> bool {
        cluster >= 2 && u64::from(cluster) < u64::from(self.total_clusters) + 2
    }

    pub fn guard(&self) -> FatGuard {
        FatGuard {
            fat_type: self.fat_type,
            start: self.fat_start,
            bytes: self.fat_bytes,
            end_cluster: self.total_clusters + 2,
        }
    }
}

/// Rewrites FAT entries that point at no cluster of the volume (1, or past the end, short of
/// the reserved values) as "bad cluster" in what fatfs reads, so that fatfs sees the chain end
/// there instead of computing an offset from it. The disk is not changed (unless fatfs writes
/// a neighbouring FAT12 entry back, which then stores the "bad" marker: the chain was broken
/// anyway).
#[derive(Clone, Copy, Debug)]
pub struct FatGuard {
    fat_type: FatType,
    start: u64,
    bytes: u64,
    end_cluster: u32,
}

impl FatGuard {
    /// Fixes the entries wholly inside `buf`, which holds the volume's bytes from `pos`.
    pub fn sanitize(&self, pos: u64, buf: &mut [u8]) {
        let end = pos + buf.len() as u64;
        let fat_end = self.start + self.bytes;
        if end <= self.start || pos >= fat_end {
            return;
        }
        // The part of the FAT in `buf`, as offsets into the FAT.
        let from = pos.max(self.start) - self.start;
        let to = end.min(fat_end) - self.start;
        // Where FAT offset `x` (at least `from`) is in `buf`.
        let at = |x: u64| (self.start + x - pos) as usize;
        let bad = |value: u32, reserved_from: u32| {
            value == 1 || (value >= self.end_cluster && value < reserved_from)
        };
        match self.fat_type {
            FatType::Fat32 => {
                let first = from.div_ceil(4).max(2);
                for cluster in first..(to / 4).min(u64::from(self.end_cluster)) {
                    let i = at(cluster * 4);
                    let raw = u32::from_le_bytes([buf[i], buf[i + 1], buf[i + 2], buf[i + 3]]);
                    if bad(raw & 0x0FFF_FFFF, 0x0FFF_FFF7) {
                        let fixed = (raw & 0xF000_0000) | 0x0FFF_FFF7;
                        buf[i..i + 4].copy_from_slice(&fixed.to_le_bytes());
                    }
                }
            }
            FatType::Fat16 => {
                let first = from.div_ceil(2).max(2);
                for cluster in first..(to / 2).min(u64::from(self.end_cluster)) {
                    let i = at(cluster * 2);
                    let raw = u32::from(u16::from_le_bytes([buf[i], buf[i + 1]]));
                    if bad(raw, 0xFFF7) {
                        buf[i..i + 2].copy_from_slice(&0xFFF7u16.to_le_bytes());
                    }
                }
            }
            FatType::Fat12 => {
                let first = (from * 2 / 3).saturating_sub(1).max(2);
                for cluster in first..u64::from(self.end_cluster) {
                    let offset = cluster + cluster / 2;
                    if offset < from {
                        continue;
                    }
                    if offset + 2 > to {
                        break;
                    }
                    let i = at(offset);
                    let raw = u16::from_le_bytes([buf[i], buf[i + 1]]);
                    let odd = cluster % 2 == 1;
                    let value = if odd { raw >> 4 } else { raw & 0x0FFF };
                    if bad(u32::from(value), 0xFF7) {
                        let fixed = if odd {
                            (raw & 0x000F) | (0xFF7 << 4)
                        } else {
                            (raw & 0xF000) | 0xFF7
                        };
                        buf[i..i + 2].copy_from_slice(&fixed.to_le_bytes());
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A FAT16 boot sector: 512-byte sectors, 4 per cluster, 1 reserved, 2 FATs of 32
    /// sectors, 512 root entries, 20000 sectors.
    fn fat16() -> [u8; 512] {
        let mut s = [0u8; 512];
        s[0] = 0xEB;
        s[11..13].copy_from_slice(&512u16.to_le_bytes());
        s[13] = 4;
        s[14] = 1;
        s[16] = 2;
        s[17..19].copy_from_slice(&512u16.to_le_bytes());
        s[19..21].copy_from_slice(&20000u16.to_le_bytes());
        s[21] = 0xF8;
        s[22..24].copy_from_slice(&32u16.to_le_bytes());
        s[510] = 0x55;
        s[511] = 0xAA;
        s
    }

    #[test]
    fn parses_a_fat16_boot_sector() {
        let layout = Layout::parse(&fat16(), 20000 * 512).unwrap();
        assert_eq!(layout.fat_type, FatType::Fat16);
        assert_eq!(layout.total_clusters, (20000 - 1 - 64 - 32) / 4);
        assert_eq!((layout.fat_start, layout.fat_bytes), (512, 32 * 512));
        assert_eq!(layout.root_region, Some((65 * 512, 512 * 32)));
        assert_eq!(layout.cluster_size, 2048);
    }

    #[test]
    fn refuses_implausible_boot_sectors() {
        let cases: [(usize, &[u8]); 9] = [
            (11, &[0, 0]),       // 0 bytes per sector
            (13, &[3]),          // 3 sectors per cluster
            (14, &[0, 0]),       // no reserved sectors
            (16, &[0]),          // no FAT
            (19, &[0, 0]),       // no sectors
            (22, &[1, 0]),       // a FAT too small for the clusters
            (17, &[0, 0]),       // FAT16 with no root directory
            (510, &[0, 0]),      // no signature
            (19, &[0xFF, 0xFF]), // more sectors than the device
        ];
        for (at, bytes) in cases {
            let mut s = fat16();
            s[at..at + bytes.len()].copy_from_slice(bytes);
            assert_eq!(Layout::parse(&s, 20000 * 512), Err(NotFat), "{at}");
        }
    }

    #[test]
    fn guard_rewrites_impossible_fat32_entries() {
        let guard = FatGuard {
            fat_type: FatType::Fat32,
            start: 1000,
            bytes: 400,
            end_cluster: 50,
        };
        let mut fat = [0u8; 400];
        let values: [(usize, u32); 6] = [
            (0, 1),           // reserved entry: untouched
            (2, 1),           // impossible: bad
            (3, 49),          // the last cluster: fine
            (4, 50),          // past the end: bad
            (5, 0x0FFF_FFF8), // end of chain: fine
            (6, 0x1000_0033), // past the end, with a reserved high nibble kept
        ];
        for (cluster, value) in values {
            fat[cluster * 4..cluster * 4 + 4].copy_from_slice(&value.to_le_bytes());
        }
        // Read from an offset that splits entry 2.
        let mut window = fat[9..].to_vec();
        guard.sanitize(1009, &mut window);
        let entry = |c: usize| {
            let i = c * 4 - 9;
            u32::from_le_bytes([window[i], window[i + 1], window[i + 2], window[i + 3]])
        };
        assert_eq!(&window[..3], &fat[9..12]); // the split entry is left alone
        assert_eq!(entry(3), 49);
        assert_eq!(entry(4), 0x0FFF_FFF7);
        assert_eq!(entry(5), 0x0FFF_FFF8);
        assert_eq!(entry(6), 0x1FFF_FFF7);
        let mut whole = fat.to_vec();
        guard.sanitize(1000, &mut whole);
        assert_eq!(&whole[8..12], &0x0FFF_FFF7u32.to_le_bytes());
        assert_eq!(&whole[0..4], &1u32.to_le_bytes()); // entry 0 is not a chain link
    }

    #[test]
    fn guard_rewrites_impossible_fat12_entries() {
        let guard = FatGuard {
            fat_type: FatType::Fat12,
            start: 0,
            bytes: 30,
            end_cluster: 10,
        };
        // Clusters 2 and 3 share bytes 3..6: 2 -> 1 (bad), 3 -> 4 (fine).
        let mut fat = [0u8; 30];
        let pack = |fat: &mut [u8], c: usize, v: u16| {
            let i = c + c / 2;
            let raw = u16::from_le_bytes([fat[i], fat[i + 1]]);
            let raw = if c % 2 == 1 {
                (raw & 0x000F) | (v << 4)
            } else {
                (raw & 0xF000) | v
            };
            fat[i..i + 2].copy_from_slice(&raw.to_le_bytes());
        };
        let unpack = |fat: &[u8], c: usize| {
            let i = c + c / 2;
            let raw = u16::from_le_bytes([fat[i], fat[i + 1]]);
            if c % 2 == 1 { raw >> 4 } else { raw & 0xFFF }
        };
        pack(&mut fat, 2, 1);
        pack(&mut fat, 3, 4);
        pack(&mut fat, 4, 0xFFF);
        pack(&mut fat, 5, 0x123);
        guard.sanitize(0, &mut fat);
        assert_eq!(
            [
                unpack(&fat, 2),
                unpack(&fat, 3),
                unpack(&fat, 4),
                unpack(&fat, 5)
            ],
            [0xFF7, 4, 0xFFF, 0xFF7]
        );
    }
}
