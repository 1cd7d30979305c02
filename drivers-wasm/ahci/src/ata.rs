//! The ATA side: the command FISes the driver sends and what IDENTIFY DEVICE says about a disk.

pub const IDENTIFY_DEVICE: u8 = 0xec;
pub const READ_DMA: u8 = 0xc8;
pub const WRITE_DMA: u8 = 0xca;
pub const READ_DMA_EXT: u8 = 0x25;
pub const WRITE_DMA_EXT: u8 = 0x35;
pub const FLUSH_CACHE: u8 = 0xe7;
pub const FLUSH_CACHE_EXT: u8 = 0xea;

/// Bytes of IDENTIFY DEVICE data.
pub const IDENTIFY_BYTES: u64 = 512;

const FIS_TYPE_REGISTER_H2D: u8 = 0x27;
/// Byte 1 of a host-to-device register FIS: the FIS carries a command.
const FIS_COMMAND: u8 = 0x80;
/// Device register: bits 7 and 5 are obsolete ones that hosts set, bit 6 selects LBA
/// addressing. QEMU's IDE core reads the LBA bit for 48-bit commands too.
const DEVICE_OBSOLETE: u8 = 0xa0;
const DEVICE_LBA: u8 = 0x40;

/// The largest 28-bit transfer (a count of 0 stands for 256) and 48-bit transfer (65535: the
/// count 0 that stands for 65536 is avoided, as Linux does, for devices that get it wrong).
pub const MAX_SECTORS_LBA28: u32 = 256;
pub const MAX_SECTORS_LBA48: u32 = 65535;

/// A host-to-device register FIS: 20 bytes, sent as the first bytes of a command table.
pub fn register_fis(command: u8, device: u8, lba: u64, count: u16) -> [u8; 20] {
    let lba = lba.to_le_bytes();
    let count = count.to_le_bytes();
    let mut fis = [0u8; 20];
    fis[0] = FIS_TYPE_REGISTER_H2D;
    fis[1] = FIS_COMMAND;
    fis[2] = command;
    fis[4..7].copy_from_slice(&lba[0..3]);
    fis[7] = device;
    fis[8..11].copy_from_slice(&lba[3..6]);
    fis[12..14].copy_from_slice(&count);
    fis
}

pub fn identify_fis() -> [u8; 20] {
    register_fis(IDENTIFY_DEVICE, DEVICE_OBSOLETE, 0, 0)
}

pub fn flush_fis(lba48: bool) -> [u8; 20] {
    let command = if lba48 { FLUSH_CACHE_EXT } else { FLUSH_CACHE };
    register_fis(command, DEVICE_OBSOLETE, 0, 0)
}

/// READ/WRITE DMA (EXT) of `count` sectors at `lba`; the caller checked both against the
/// disk's limits (28-bit commands carry LBA bits 24-27 in the device register).
pub fn transfer_fis(write: bool, lba48: bool, lba: u64, count: u32) -> [u8; 20] {
    let device = DEVICE_OBSOLETE | DEVICE_LBA;
    if lba48 {
        let command = if write { WRITE_DMA_EXT } else { READ_DMA_EXT };
        register_fis(command, device, lba, count as u16)
    } else {
        let command = if write { WRITE_DMA } else { READ_DMA };
        let high = ((lba >> 24) & 0x0f) as u8;
        register_fis(
            command,
            device | high,
            lba & 0x00ff_ffff,
            (count & 0xff) as u16,
        )
    }
}

/// What the driver needs from IDENTIFY DEVICE.
pub struct Identity {
    pub model: String,
    pub serial: String,
    pub sector_size: u32,
    pub sector_count: u64,
    /// The 48-bit address feature set (READ/WRITE DMA EXT, FLUSH CACHE EXT).
    pub lba48: bool,
}

impl Identity {
    /// Reads the 256 little-endian words of IDENTIFY DEVICE; refuses disks the driver cannot
    /// address (no LBA, no capacity, odd logical sector sizes).
    pub fn parse(data: &[u8]) -> Result<Identity, String> {
        if data.len() < IDENTIFY_BYTES as usize {
            return Err(format!("{} bytes of IDENTIFY data", data.len()));
        }
        let word = |i: usize| u16::from_le_bytes([data[2 * i], data[2 * i + 1]]);
        if word(0) & (1 << 15) != 0 {
            return Err("not an ATA device (IDENTIFY word 0)".into());
        }
        if word(49) & (1 << 9) == 0 {
            return Err("no LBA addressing".into());
        }
        // Words 83 and 106 are valid when bits 15:14 read 01b.
        let valid = |w: u16| w & 0xc000 == 0x4000;
        let lba48 = valid(word(83)) && word(83) & (1 << 10) != 0;
        let lba28_count = u64::from(word(60)) | (u64::from(word(61)) << 16);
        let lba48_count = (0..4).fold(0u64, |count, i| {
            count | (u64::from(word(100 + i)) << (16 * i))
        });
        let sector_count = if lba48 && lba48_count != 0 {
            lba48_count.min(1 << 48)
        } else {
            lba28_count.min(1 << 28)
        };
        if sector_count == 0 {
            return Err("no capacity".into());
        }
        let sector_size = if valid(word(106)) && word(106) & (1 << 12) != 0 {
            let words = u32::from(word(117)) | (u32::from(word(118)) << 16);
            words.saturating_mul(2)
        } else {
            512
        };
        if !sector_size.is_power_of_two() || !(512..=65536).contains(&sector_size) {
            return Err(format!("logical sectors of {sector_size} bytes"));
        }
        Ok(Identity {
            model: ata_string(data, 27, 20),
            serial: ata_string(data, 10, 10),
            sector_size,
            sector_count,
            lba48,
        })
    }
}

/// An ATA string: each word holds two characters, the first in its high byte; padded with
/// spaces. Bytes that are not printable ASCII become spaces.
fn ata_string(data: &[u8], first_word: usize, words: usize) -> String {
    let mut text = String::with_capacity(2 * words);
    for i in first_word..first_word + words {
        for byte in [data[2 * i + 1], data[2 * i]] {
            let printable = (0x20..0x7f).contains(&byte);
            text.push(if printable { char::from(byte) } else { ' ' });
        }
    }
    text.trim().to_string()
}
