//! Enumeration, BAR sizing, capabilities, names and the lspci format over a fake configuration
//! space that behaves like hardware: BARs keep their read-only low bits and hardwired-zero size
//! bits, absent functions read as all ones.

use crate::access::{Address, ConfigAccess, PciError, Width, check_access};
use crate::enumerate::{Bar, BarKind, BridgeBuses, Capability, ExtendedCapability, Rom, enumerate};
use crate::{format, names, registry};
use std::boxed::Box;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::vec::Vec;

const COMMAND: u16 = 0x04;

#[derive(Clone)]
struct FakeFunction {
    space: Vec<u8>,
    /// Writable bits of BAR-like registers (offset -> mask); other registers take any write.
    masks: BTreeMap<u16, u32>,
}

impl FakeFunction {
    fn new(vendor: u16, device: u16, class: u32, header: u8) -> Self {
        let mut f = Self {
            space: vec![0; 4096],
            masks: BTreeMap::new(),
        };
        f.put32(0x00, u32::from(device) << 16 | u32::from(vendor));
        f.put32(0x08, class);
        f.space[0x0E] = header;
        // Every BAR register of the header exists and is hardwired to zero unless set up.
        let bars = match header & 0x7F {
            0 => 6,
            1 => 2,
            _ => 0,
        };
        for i in 0..bars {
            f.masks.insert(0x10 + 4 * i, 0);
        }
        let rom = if header & 0x7F == 1 { 0x38 } else { 0x30 };
        f.masks.insert(rom, 0);
        f
    }

    fn put32(&mut self, at: u16, value: u32) {
        self.space[at as usize..at as usize + 4].copy_from_slice(&value.to_le_bytes());
    }

    fn get32(&self, at: u16) -> u32 {
        u32::from_le_bytes(self.space[at as usize..at as usize + 4].try_into().unwrap())
    }

    /// A memory or I/O BAR at register `index` with `low_bits` (type flags) and `size`.
    fn bar(mut self, index: u16, base: u32, low_bits: u32, size: u32) -> Self {
        let at = 0x10 + 4 * index;
        self.put32(at, base | low_bits);
        let flags = if low_bits & 1 != 0 { 0x3 } else { 0xF };
        self.masks.insert(at, !(size - 1) & !flags);
        self
    }

    /// A 64-bit memory BAR at registers `index` and `index + 1`.
    fn bar64(mut self, index: u16, base: u64, prefetchable: bool, size: u64) -> Self {
        let at = 0x10 + 4 * index;
        let low_bits = 0x4 | if prefetchable { 0x8 } else { 0 };
        self.put32(at, base as u32 | low_bits);
        self.put32(at + 4, (base >> 32) as u32);
        let mask = !(size - 1);
        self.masks.insert(at, mask as u32 & !0xF);
        self.masks.insert(at + 4, (mask >> 32) as u32);
        self
    }

    fn rom(mut self, base: u32, size: u32) -> Self {
        let at = if self.space[0x0E] & 0x7F == 1 {
            0x38
        } else {
            0x30
        };
        self.put32(at, base);
        self.masks.insert(at, !(size - 1) | 1);
        self
    }

    fn command(mut self, command: u16) -> Self {
        self.space[COMMAND as usize..COMMAND as usize + 2].copy_from_slice(&command.to_le_bytes());
        self
    }

    fn interrupt(mut self, pin: u8, line: u8) -> Self {
        self.space[0x3C] = line;
        self.space[0x3D] = pin;
        self
    }

    fn subsystem(mut self, vendor: u16, device: u16) -> Self {
        self.put32(0x2C, u32::from(device) << 16 | u32::from(vendor));
        self
    }

    /// Capabilities `(id, offset)` chained in order from the pointer at 0x34.
    fn capabilities(mut self, list: &[(u8, u8)]) -> Self {
        self.space[0x06] |= 0x10;
        self.space[0x34] = list.first().map_or(0, |c| c.1);
        for (i, &(id, at)) in list.iter().enumerate() {
            self.space[at as usize] = id;
            self.space[at as usize + 1] = list.get(i + 1).map_or(0, |c| c.1);
        }
        self
    }

    fn extended(mut self, list: &[(u16, u8, u16)]) -> Self {
        for (i, &(id, version, at)) in list.iter().enumerate() {
            let next = list.get(i + 1).map_or(0, |c| c.2);
            self.put32(
                at,
                u32::from(next) << 20 | u32::from(version) << 16 | u32::from(id),
            );
        }
        self
    }

    fn bridge(mut self, primary: u8, secondary: u8, subordinate: u8) -> Self {
        self.space[0x18] = primary;
        self.space[0x19] = secondary;
        self.space[0x1A] = subordinate;
        self
    }
}

/// What the fake saw that a correct enumeration must not do.
#[derive(Default)]
struct Violations {
    /// A BAR held all ones while its function decoded memory or I/O.
    sized_while_decoding: Vec<(Address, u16)>,
    /// Accesses that were misaligned or out of range.
    bad_accesses: Vec<(Address, u16)>,
}

struct Fake {
    functions: BTreeMap<Address, FakeFunction>,
    size: u16,
    violations: Arc<Mutex<Violations>>,
}

impl Fake {
    fn new(size: u16) -> Self {
        Self {
            functions: BTreeMap::new(),
            size,
            violations: Arc::default(),
        }
    }

    fn with(mut self, bus: u8, device: u8, function: u8, f: FakeFunction) -> Self {
        self.functions.insert(at(bus, device, function), f);
        self
    }
}

fn at(bus: u8, device: u8, function: u8) -> Address {
    Address::new(0, bus, device, function).unwrap()
}

impl ConfigAccess for Fake {
    fn space_size(&self) -> u16 {
        self.size
    }

    fn name(&self) -> &'static str {
        "fake"
    }

    fn read(&mut self, address: Address, offset: u16, width: Width) -> u32 {
        if check_access(offset, width, self.size).is_err() {
            self.violations
                .lock()
                .unwrap()
                .bad_accesses
                .push((address, offset));
        }
        let Some(f) = self.functions.get(&address) else {
            return width.truncate(u32::MAX);
        };
        let mut bytes = [0u8; 4];
        let n = width.bytes() as usize;
        bytes[..n].copy_from_slice(&f.space[offset as usize..offset as usize + n]);
        u32::from_le_bytes(bytes)
    }

    fn write(&mut self, address: Address, offset: u16, width: Width, value: u32) {
        if check_access(offset, width, self.size).is_err() {
            self.violations
                .lock()
                .unwrap()
                .bad_accesses
                .push((address, offset));
        }
        let Some(f) = self.functions.get_mut(&address) else {
            return;
        };
        if let Some(&mask) = f.masks.get(&offset) {
            assert_eq!(width, Width::U32, "BARs are written whole");
            let command = u16::from_le_bytes([f.space[4], f.space[5]]);
            if value == u32::MAX && command & 0x3 != 0 {
                self.violations
                    .lock()
                    .unwrap()
                    .sized_while_decoding
                    .push((address, offset));
            }
            let old = f.get32(offset);
            f.put32(offset, (value & mask) | (old & !mask));
            return;
        }
        let n = width.bytes() as usize;
        f.space[offset as usize..offset as usize + n].copy_from_slice(&value.to_le_bytes()[..n]);
    }
}

fn e1000() -> FakeFunction {
    FakeFunction::new(0x8086, 0x100e, 0x0200_0003, 0)
        .bar(0, 0xfeb8_0000, 0, 128 << 10)
        .bar(1, 0xc000, 1, 64)
        .rom(0xfeb4_0000, 256 << 10)
        .command(0x0107)
        .interrupt(1, 11)
        .subsystem(0x1af4, 0x1100)
}

fn ahci() -> FakeFunction {
    FakeFunction::new(0x8086, 0x2922, 0x0106_0102, 0)
        .bar(4, 0xd040, 1, 32)
        .bar(5, 0xfeb9_1000, 0, 4096)
        .command(0x0107)
        .interrupt(1, 10)
        .capabilities(&[(0x12, 0xa8), (0x05, 0x80)])
}

fn host_bridge() -> FakeFunction {
    FakeFunction::new(0x8086, 0x29c0, 0x0600_0000, 0)
}

#[test]
fn sizes_32_bit_memory_io_and_rom() {
    let mut fake = Fake::new(256).with(0, 2, 0, e1000());
    let before = fake.functions[&at(0, 2, 0)].space.clone();
    let found = enumerate(&mut fake, &[(0, 0)]);
    assert_eq!(found.len(), 1);
    let f = &found[0];
    assert_eq!(
        f.bars,
        [
            Bar {
                index: 0,
                kind: BarKind::Memory32,
                base: 0xfeb8_0000,
                size: 128 << 10,
                prefetchable: false,
            },
            Bar {
                index: 1,
                kind: BarKind::Io,
                base: 0xc000,
                size: 64,
                prefetchable: false,
            },
        ]
    );
    assert_eq!(
        f.rom,
        Some(Rom {
            base: 0xfeb4_0000,
            size: 256 << 10,
            enabled: false,
        })
    );
    // Every register, the command register included, is as the firmware left it.
    assert_eq!(fake.functions[&at(0, 2, 0)].space, before);
    let violations = fake.violations.lock().unwrap();
    assert!(violations.sized_while_decoding.is_empty());
    assert!(violations.bad_accesses.is_empty());
}

#[test]
fn sizes_64_bit_pairs_including_sizes_above_4_gib() {
    let device = FakeFunction::new(0x1b36, 0x0010, 0x0108_0200, 0)
        .bar64(0, 0xfe00_0000, false, 16 << 10)
        .bar(2, 0xfea0_0000, 0x8, 1 << 20)
        .bar64(4, 0x8_0000_0000, true, 8 << 30)
        .command(0x0006);
    let mut fake = Fake::new(4096).with(0, 3, 0, device);
    let before = fake.functions[&at(0, 3, 0)].space.clone();
    let f = enumerate(&mut fake, &[(0, 0)]).remove(0);
    assert_eq!(
        f.bars,
        [
            Bar {
                index: 0,
                kind: BarKind::Memory64,
                base: 0xfe00_0000,
                size: 16 << 10,
                prefetchable: false,
            },
            Bar {
                index: 2,
                kind: BarKind::Memory32,
                base: 0xfea0_0000,
                size: 1 << 20,
                prefetchable: true,
            },
            Bar {
                index: 4,
                kind: BarKind::Memory64,
                base: 0x8_0000_0000,
                size: 8 << 30,
                prefetchable: true,
            },
        ]
    );
    assert_eq!(f.rom, None);
    assert_eq!(fake.functions[&at(0, 3, 0)].space, before);
    assert!(
        fake.violations
            .lock()
            .unwrap()
            .sized_while_decoding
            .is_empty()
    );
}

#[test]
fn sixteen_bit_io_decoder_and_malformed_last_64_bit_bar() {
    let mut device = FakeFunction::new(0x1234, 0x0001, 0xff00_0000, 0).bar(0, 0x1000, 1, 16);
    // Upper half of the I/O BAR reads back as zero (a 16-bit decoder).
    let mask = device.masks[&0x10];
    device.masks.insert(0x10, mask & 0xFFFF);
    // A 64-bit type in BAR5 has no upper register: ignored.
    device.put32(0x24, 0xfe00_0004);
    device.masks.insert(0x24, 0xFFFF_F000);
    let mut fake = Fake::new(256).with(0, 4, 0, device);
    let f = enumerate(&mut fake, &[(0, 0)]).remove(0);
    assert_eq!(
        f.bars,
        [Bar {
            index: 0,
            kind: BarKind::Io,
            base: 0x1000,
            size: 16,
            prefetchable: false,
        }]
    );
}

#[test]
fn host_bridge_decoding_is_left_on() {
    let bridge = host_bridge().bar(0, 0xe000_0000, 0, 4096).command(0x0006);
    let mut fake = Fake::new(256).with(0, 0, 0, bridge);
    let f = enumerate(&mut fake, &[(0, 0)]).remove(0);
    assert_eq!(f.bars.len(), 1);
    let violations = fake.violations.lock().unwrap();
    // The fake flags the sizing, which is what host bridges get: the command register is never
    // written for them.
    assert!(
        violations
            .sized_while_decoding
            .contains(&(at(0, 0, 0), 0x10))
    );
    assert_eq!(fake.functions[&at(0, 0, 0)].space[4], 0x06);
}

#[test]
fn walks_bridges_multifunction_devices_and_skips_phantoms() {
    let fake = Fake::new(256)
        .with(0, 0, 0, host_bridge())
        .with(0, 2, 0, e1000())
        // Single-function device that answers on every function number (old hardware does):
        // only function 0 is real.
        .with(0, 5, 0, FakeFunction::new(0x1234, 0x1111, 0x0780_0000, 0))
        .with(0, 5, 1, FakeFunction::new(0x1234, 0x1111, 0x0780_0000, 0))
        // Multi-function device with a gap at function 1.
        .with(
            0,
            0x1f,
            0,
            FakeFunction::new(0x8086, 0x2918, 0x0601_0002, 0x80),
        )
        .with(0, 0x1f, 2, ahci())
        .with(
            0,
            0x1f,
            3,
            FakeFunction::new(0x8086, 0x2930, 0x0c05_0002, 0),
        )
        // Bridge to bus 1, which holds a device and a bridge to bus 2.
        .with(
            0,
            0x1e,
            0,
            FakeFunction::new(0x8086, 0x244e, 0x0604_0192, 1).bridge(0, 1, 2),
        )
        .with(1, 3, 0, FakeFunction::new(0x1af4, 0x1000, 0x0200_0000, 0))
        .with(
            1,
            4,
            0,
            FakeFunction::new(0x1b36, 0x0001, 0x0604_0000, 1).bridge(1, 2, 2),
        )
        .with(2, 0, 0, FakeFunction::new(0x1b36, 0x000d, 0x0c03_3001, 0))
        // An unconfigured bridge (secondary bus 0) leads nowhere.
        .with(
            2,
            1,
            0,
            FakeFunction::new(0x1b36, 0x0001, 0x0604_0000, 1).bridge(0, 0, 0),
        );
    let mut fake = fake;
    let found = enumerate(&mut fake, &[(0, 0)]);
    let addresses: Vec<String> = found.iter().map(|f| f.address.to_string()).collect();
    assert_eq!(
        addresses,
        [
            "00:00.0", "00:02.0", "00:05.0", "00:1e.0", "00:1f.0", "00:1f.2", "00:1f.3", "01:03.0",
            "01:04.0", "02:00.0", "02:01.0"
        ]
    );
    let bridge = found.iter().find(|f| f.address == at(0, 0x1e, 0)).unwrap();
    assert_eq!(
        bridge.bridge,
        Some(BridgeBuses {
            primary: 0,
            secondary: 1,
            subordinate: 2
        })
    );
    let lpc = found.iter().find(|f| f.address == at(0, 0x1f, 0)).unwrap();
    assert!(lpc.multifunction);
    assert_eq!((lpc.class, lpc.subclass, lpc.prog_if), (0x06, 0x01, 0x00));
    assert_eq!(lpc.revision, 0x02);
    assert!(fake.violations.lock().unwrap().bad_accesses.is_empty());
}

#[test]
fn capability_lists_msi_msix_and_extended() {
    let device = FakeFunction::new(0x1af4, 0x1041, 0x0200_0001, 0)
        .capabilities(&[(0x11, 0x98), (0x09, 0x84), (0x10, 0x70), (0x05, 0x60)])
        .extended(&[(0x0001, 2, 0x100), (0x0000, 0, 0x148), (0x000e, 1, 0x200)]);
    let mut fake = Fake::new(4096).with(0, 6, 0, device);
    let f = enumerate(&mut fake, &[(0, 0)]).remove(0);
    assert_eq!(f.msix, Some(0x98));
    assert_eq!(f.msi, Some(0x60));
    assert_eq!(
        f.capabilities,
        [
            Capability {
                id: 0x11,
                offset: 0x98
            },
            Capability {
                id: 0x09,
                offset: 0x84
            },
            Capability {
                id: 0x10,
                offset: 0x70
            },
            Capability {
                id: 0x05,
                offset: 0x60
            },
        ]
    );
    // The placeholder (id 0) at 0x148 is skipped, the list goes on behind it.
    assert_eq!(
        f.extended_capabilities,
        [
            ExtendedCapability {
                id: 0x0001,
                version: 2,
                offset: 0x100
            },
            ExtendedCapability {
                id: 0x000e,
                version: 1,
                offset: 0x200
            },
        ]
    );

    // Through the legacy ports the same function has no extended space to walk.
    let mut legacy = Fake::new(256).with(
        0,
        6,
        0,
        FakeFunction::new(0x1af4, 0x1041, 0x0200_0001, 0).capabilities(&[(0x10, 0x70)]),
    );
    let f = enumerate(&mut legacy, &[(0, 0)]).remove(0);
    assert!(f.extended_capabilities.is_empty());
    assert!(legacy.violations.lock().unwrap().bad_accesses.is_empty());
}

#[test]
fn capability_loop_is_bounded() {
    let mut device =
        FakeFunction::new(0x1234, 0x5678, 0xff00_0000, 0).capabilities(&[(0x05, 0x50)]);
    device.space[0x51] = 0x50; // points to itself
    let mut fake = Fake::new(256).with(0, 1, 0, device);
    let f = enumerate(&mut fake, &[(0, 0)]).remove(0);
    assert_eq!(f.capabilities.len(), 48);
    assert_eq!(f.msi, Some(0x50));
}

#[test]
fn names_from_the_pci_id_database() {
    assert_eq!(names::vendor(0x8086), Some("Intel Corporation"));
    assert_eq!(
        names::device(0x8086, 0x100e),
        Some("82540EM Gigabit Ethernet Controller")
    );
    assert!(names::device(0x8086, 0x2922).unwrap().contains("AHCI"));
    assert_eq!(names::class(0x02, 0x00), Some("Ethernet controller"));
    assert_eq!(names::class(0x01, 0x06), Some("SATA controller"));
    assert_eq!(names::class(0x06, 0x00), Some("Host bridge"));
    // Unknown subclass: the class's name.
    assert_eq!(names::class(0x02, 0x7f), Some("Network controller"));
    assert_eq!(names::prog_if(0x01, 0x06, 0x01), Some("AHCI 1.0"));
    assert_eq!(
        names::subsystem(0x8086, 0x100e, (0x1af4, 0x1100)),
        Some("QEMU Virtual Machine")
    );
    assert_eq!(names::vendor(0x0002), None);
    assert_eq!(names::class(0x42, 0x00), None);
    assert_eq!(names::capability(0x11), "MSI-X");
    assert_eq!(
        names::extended_capability(0x0001),
        "Advanced Error Reporting"
    );
}

#[test]
fn lspci_lines() {
    let mut fake = Fake::new(256)
        .with(0, 2, 0, e1000())
        .with(
            0,
            0x1f,
            0,
            FakeFunction::new(0x8086, 0x2918, 0x0601_0002, 0x80),
        )
        .with(0, 0x1f, 2, ahci())
        .with(0, 9, 0, FakeFunction::new(0x0002, 0x0001, 0x4200_0000, 0));
    let found = enumerate(&mut fake, &[(0, 0)]);
    assert_eq!(
        format::summary(&found[0], false),
        "00:02.0 Ethernet controller [0200]: Intel Corporation 82540EM Gigabit Ethernet \
         Controller [8086:100e] (rev 03)"
    );
    assert_eq!(
        format::details(&found[0]),
        [
            "Subsystem: Red Hat, Inc. QEMU Virtual Machine [1af4:1100]",
            "Interrupt: pin A, line 11",
            "BAR0: memory32 at 0xfeb80000 [size 128K]",
            "BAR1: io at 0xc000 [size 64]",
            "Expansion ROM at 0xfeb40000 [size 256K, disabled]",
        ]
    );
    // Unknown vendor, device and class; revision 0 is not shown.
    assert_eq!(
        format::summary(&found[1], false),
        "00:09.0 Class [4200]: Device [0002:0001]"
    );
    let ahci = &found[3];
    assert!(
        format::summary(ahci, true).ends_with("[8086:2922] (rev 02) (prog-if 01 [AHCI 1.0])"),
        "{}",
        format::summary(ahci, true)
    );
    assert!(format::summary(ahci, false).starts_with("00:1f.2 SATA controller [0106]: Intel"));
    assert_eq!(
        format::details(ahci),
        [
            "Interrupt: pin A, line 10",
            "BAR4: io at 0xd040 [size 32]",
            "BAR5: memory32 at 0xfeb91000 [size 4K]",
            "Capability [a8]: SATA Data/Index Configuration",
            "Capability [80]: MSI",
        ]
    );
}

#[test]
fn sizes_print_in_the_largest_exact_unit() {
    assert_eq!(format::size(64), "64");
    assert_eq!(format::size(4096), "4K");
    assert_eq!(format::size(128 << 10), "128K");
    assert_eq!(format::size(16 << 20), "16M");
    assert_eq!(format::size(8 << 30), "8G");
    assert_eq!(format::size(1536), "1536");
}

#[test]
fn addresses() {
    assert_eq!(at(0, 0x1f, 2).to_string(), "00:1f.2");
    assert_eq!(
        Address::new(1, 0x80, 0, 7).unwrap().to_string(),
        "0001:80:00.7"
    );
    assert_eq!(Address::new(0, 0, 32, 0), None);
    assert_eq!(Address::new(0, 0, 0, 8), None);
}

/// The only test that touches the global registry.
#[test]
fn registry_reads_and_writes_known_functions_only() {
    assert_eq!(registry::functions(), []);
    assert_eq!(
        registry::config_read(at(0, 2, 0), 0, Width::U16),
        Err(PciError::NotInitialized)
    );
    let fake = Fake::new(4096)
        .with(0, 0, 0, host_bridge())
        .with(0, 2, 0, e1000());
    let violations = Arc::clone(&fake.violations);
    assert_eq!(registry::install(Box::new(fake), &[(0, 0)]), 2);
    assert_eq!(registry::mechanism(), Some("fake"));
    let listed = registry::functions();
    assert_eq!(listed.len(), 2);
    assert_eq!(registry::function(at(0, 2, 0)), Some(listed[1].clone()));
    assert_eq!(registry::function(at(0, 3, 0)), None);

    let e1000 = at(0, 2, 0);
    assert_eq!(registry::config_space_size(e1000), Ok(4096));
    assert_eq!(registry::config_read(e1000, 0, Width::U32), Ok(0x100e_8086));
    assert_eq!(registry::config_read(e1000, 2, Width::U16), Ok(0x100e));
    assert_eq!(registry::config_read(e1000, 0x08, Width::U8), Ok(0x03));
    assert_eq!(registry::config_read(e1000, 0xffc, Width::U32), Ok(0));
    assert_eq!(
        registry::config_read(e1000, 0x1000, Width::U8),
        Err(PciError::OutOfRange)
    );
    assert_eq!(
        registry::config_read(e1000, 0xffe, Width::U32),
        Err(PciError::Misaligned)
    );
    assert_eq!(
        registry::config_read(e1000, 3, Width::U16),
        Err(PciError::Misaligned)
    );
    assert_eq!(
        registry::config_read(at(0, 3, 0), 0, Width::U16),
        Err(PciError::NoSuchFunction)
    );
    assert_eq!(
        registry::config_space_size(at(0, 3, 0)),
        Err(PciError::NoSuchFunction)
    );

    // A byte write touches that byte only.
    registry::config_write(e1000, COMMAND, Width::U8, 0x1_0006).unwrap();
    assert_eq!(
        registry::config_read(e1000, COMMAND, Width::U16),
        Ok(0x0106)
    );
    registry::config_write(e1000, 0x40, Width::U32, 0xdead_beef).unwrap();
    assert_eq!(registry::config_read(e1000, 0x42, Width::U16), Ok(0xdead));
    assert_eq!(
        registry::config_write(e1000, 0x41, Width::U16, 0),
        Err(PciError::Misaligned)
    );
    assert!(violations.lock().unwrap().bad_accesses.is_empty());
}
