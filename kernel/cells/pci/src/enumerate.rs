//! The bus walk and what is read from each function: identification, BARs (sized), the
//! expansion ROM, interrupt pin and line, capabilities, bridge bus numbers.

use crate::access::{Address, ConfigAccess};
use alloc::collections::BTreeSet;
use alloc::vec::Vec;

// Registers of the common header.
const VENDOR_ID: u16 = 0x00;
const COMMAND: u16 = 0x04;
const STATUS: u16 = 0x06;
const CLASS_REVISION: u16 = 0x08;
const HEADER_TYPE: u16 = 0x0E;
const BAR0: u16 = 0x10;
const INTERRUPT_LINE: u16 = 0x3C;
const INTERRUPT_PIN: u16 = 0x3D;
// Type 0 (endpoint).
const SUBSYSTEM_VENDOR_0: u16 = 0x2C;
const ROM_0: u16 = 0x30;
const CAPABILITIES: u16 = 0x34;
// Type 1 (PCI-to-PCI bridge) and type 2 (CardBus bridge).
const PRIMARY_BUS: u16 = 0x18;
const ROM_1: u16 = 0x38;
const CAPABILITIES_CARDBUS: u16 = 0x14;
const SUBSYSTEM_VENDOR_CARDBUS: u16 = 0x40;

const COMMAND_IO: u16 = 1 << 0;
const COMMAND_MEMORY: u16 = 1 << 1;
const STATUS_CAPABILITIES: u16 = 1 << 4;
const MULTIFUNCTION: u8 = 0x80;

const CAP_MSI: u8 = 0x05;
const CAP_BRIDGE_SUBSYSTEM: u8 = 0x0D;
const CAP_PCI_EXPRESS: u8 = 0x10;
const CAP_MSIX: u8 = 0x11;
const EXTENDED_CAPABILITIES: u16 = 0x100;
/// A list longer than this (48 capabilities of 4 bytes fill the 192 bytes after the header) is a
/// loop in a broken or hostile device.
const MAX_CAPABILITIES: usize = 48;
const MAX_EXTENDED_CAPABILITIES: usize = (4096 - 256) / 8;

/// The layout of a function's configuration header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeaderType {
    /// Type 0: an endpoint, six BARs.
    Endpoint,
    /// Type 1: a PCI-to-PCI bridge, two BARs and a secondary bus.
    PciBridge,
    /// Type 2: a CardBus bridge.
    CardBusBridge,
    Unknown(u8),
}

impl HeaderType {
    fn from_register(value: u8) -> Self {
        match value & !MULTIFUNCTION {
            0 => HeaderType::Endpoint,
            1 => HeaderType::PciBridge,
            2 => HeaderType::CardBusBridge,
            other => HeaderType::Unknown(other),
        }
    }

    /// How many BAR registers this header has.
    fn bar_count(self) -> u8 {
        match self {
            HeaderType::Endpoint => 6,
            HeaderType::PciBridge => 2,
            HeaderType::CardBusBridge => 1,
            HeaderType::Unknown(_) => 0,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BarKind {
    /// A memory BAR decoded below 4 GiB (including the obsolete "below 1 MiB" type).
    Memory32,
    /// A memory BAR spanning two registers.
    Memory64,
    /// An I/O port range.
    Io,
}

/// One implemented base address register, sized.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bar {
    /// The register index (0-5); a 64-bit BAR has the index of its low half.
    pub index: u8,
    pub kind: BarKind,
    /// The physical address (memory) or first port (I/O) the firmware assigned.
    pub base: u64,
    /// The size in bytes (a power of two).
    pub size: u64,
    pub prefetchable: bool,
}

/// The expansion ROM BAR.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rom {
    pub base: u64,
    pub size: u64,
    /// Whether the ROM's address decoding is switched on.
    pub enabled: bool,
}

/// A capability in the standard list (first 256 bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capability {
    pub id: u8,
    pub offset: u16,
}

/// A PCI Express extended capability (offsets 0x100 and up; ECAM only).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExtendedCapability {
    pub id: u16,
    pub version: u8,
    pub offset: u16,
}

/// The bus numbers of a bridge.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BridgeBuses {
    pub primary: u8,
    pub secondary: u8,
    pub subordinate: u8,
}

/// Everything enumeration learned about one function.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Function {
    pub address: Address,
    pub vendor_id: u16,
    pub device_id: u16,
    /// Subsystem vendor and subsystem ids, if the function has them (for bridges: from the
    /// bridge subsystem capability).
    pub subsystem: Option<(u16, u16)>,
    pub class: u8,
    pub subclass: u8,
    pub prog_if: u8,
    pub revision: u8,
    pub header_type: HeaderType,
    pub multifunction: bool,
    /// The interrupt line register (the legacy IRQ firmware routed INTx to; 0xFF: none).
    pub interrupt_line: u8,
    /// The interrupt pin: 0 none, 1-4 INTA#-INTD#.
    pub interrupt_pin: u8,
    pub bars: Vec<Bar>,
    pub rom: Option<Rom>,
    pub capabilities: Vec<Capability>,
    pub extended_capabilities: Vec<ExtendedCapability>,
    /// Offset of the MSI capability, if any.
    pub msi: Option<u16>,
    /// Offset of the MSI-X capability, if any.
    pub msix: Option<u16>,
    pub bridge: Option<BridgeBuses>,
}

impl Function {
    /// Class and subclass as one number, `0x0200` for an Ethernet controller.
    pub fn class_code(&self) -> u16 {
        u16::from(self.class) << 8 | u16::from(self.subclass)
    }

    pub fn bar(&self, index: u8) -> Option<&Bar> {
        self.bars.iter().find(|b| b.index == index)
    }

    pub fn is_pci_express(&self) -> bool {
        self.capabilities.iter().any(|c| c.id == CAP_PCI_EXPRESS)
    }

    fn is_host_bridge(&self) -> bool {
        self.class == 0x06 && self.subclass == 0x00
    }
}

fn present(access: &mut dyn ConfigAccess, address: Address) -> bool {
    !matches!(access.read_u16(address, VENDOR_ID), 0xFFFF | 0x0000)
}

/// Finds every function reachable from the `roots` (segment, bus): each bus is scanned once,
/// every function of multi-function devices is probed, and the secondary bus of every bridge
/// is scanned in turn. Bus numbers are taken as the firmware assigned them. Sorted by address.
pub fn enumerate(access: &mut dyn ConfigAccess, roots: &[(u16, u8)]) -> Vec<Function> {
    let mut found = Vec::new();
    let mut scanned = BTreeSet::new();
    let mut pending: Vec<(u16, u8)> = roots.to_vec();
    while let Some((segment, bus)) = pending.pop() {
        if !scanned.insert((segment, bus)) {
            continue;
        }
        for device in 0..32 {
            let Some(first) = Address::new(segment, bus, device, 0) else {
                continue;
            };
            if !present(access, first) {
                continue;
            }
            let functions = if access.read_u8(first, HEADER_TYPE) & MULTIFUNCTION != 0 {
                8
            } else {
                1
            };
            for number in 0..functions {
                let Some(address) = Address::new(segment, bus, device, number) else {
                    continue;
                };
                if !present(access, address) {
                    continue;
                }
                let function = probe(access, address);
                if let Some(buses) = function.bridge
                    && buses.secondary > bus
                {
                    pending.push((segment, buses.secondary));
                }
                found.push(function);
            }
        }
    }
    found.sort_by_key(|f| f.address);
    found
}

/// Reads everything about the function at `address` (which must be present), sizing its BARs.
pub fn probe(access: &mut dyn ConfigAccess, address: Address) -> Function {
    let id = access.read_u32(address, VENDOR_ID);
    let class = access.read_u32(address, CLASS_REVISION);
    let header = access.read_u8(address, HEADER_TYPE);
    let header_type = HeaderType::from_register(header);
    let status = access.read_u16(address, STATUS);
    let mut function = Function {
        address,
        vendor_id: id as u16,
        device_id: (id >> 16) as u16,
        subsystem: None,
        class: (class >> 24) as u8,
        subclass: (class >> 16) as u8,
        prog_if: (class >> 8) as u8,
        revision: class as u8,
        header_type,
        multifunction: header & MULTIFUNCTION != 0,
        interrupt_line: access.read_u8(address, INTERRUPT_LINE),
        interrupt_pin: access.read_u8(address, INTERRUPT_PIN),
        bars: Vec::new(),
        rom: None,
        capabilities: Vec::new(),
        extended_capabilities: Vec::new(),
        msi: None,
        msix: None,
        bridge: None,
    };
    if status & STATUS_CAPABILITIES != 0 {
        let pointer = match header_type {
            HeaderType::CardBusBridge => CAPABILITIES_CARDBUS,
            _ => CAPABILITIES,
        };
        function.capabilities = capabilities(access, address, pointer);
    }
    function.msi = find_capability(&function.capabilities, CAP_MSI);
    function.msix = find_capability(&function.capabilities, CAP_MSIX);
    if function.is_pci_express() && access.space_size() > EXTENDED_CAPABILITIES {
        function.extended_capabilities = extended_capabilities(access, address);
    }
    function.subsystem = match header_type {
        HeaderType::Endpoint => subsystem_at(access, address, SUBSYSTEM_VENDOR_0),
        HeaderType::CardBusBridge => subsystem_at(access, address, SUBSYSTEM_VENDOR_CARDBUS),
        HeaderType::PciBridge => find_capability(&function.capabilities, CAP_BRIDGE_SUBSYSTEM)
            .and_then(|at| subsystem_at(access, address, at + 4)),
        HeaderType::Unknown(_) => None,
    };
    if matches!(
        header_type,
        HeaderType::PciBridge | HeaderType::CardBusBridge
    ) {
        let buses = access.read_u32(address, PRIMARY_BUS);
        function.bridge = Some(BridgeBuses {
            primary: buses as u8,
            secondary: (buses >> 8) as u8,
            subordinate: (buses >> 16) as u8,
        });
    }
    let rom = match header_type {
        HeaderType::Endpoint => Some(ROM_0),
        HeaderType::PciBridge => Some(ROM_1),
        _ => None,
    };
    // Host bridges may decode the memory the kernel runs from (on some chipsets even the ECAM
    // window): their decoding is never switched off, as in Linux.
    let keep_decoding = function.is_host_bridge();
    let (bars, rom) = size_bars(access, address, header_type.bar_count(), rom, keep_decoding);
    function.bars = bars;
    function.rom = rom;
    function
}

fn subsystem_at(access: &mut dyn ConfigAccess, address: Address, at: u16) -> Option<(u16, u16)> {
    let ids = access.read_u32(address, at);
    let vendor = ids as u16;
    (vendor != 0 && vendor != 0xFFFF).then_some((vendor, (ids >> 16) as u16))
}

fn find_capability(capabilities: &[Capability], id: u8) -> Option<u16> {
    capabilities.iter().find(|c| c.id == id).map(|c| c.offset)
}

/// Walks the standard capability list from the pointer register at `pointer`.
fn capabilities(access: &mut dyn ConfigAccess, address: Address, pointer: u16) -> Vec<Capability> {
    let mut list = Vec::new();
    let mut at = u16::from(access.read_u8(address, pointer) & 0xFC);
    // Capabilities live after the 64-byte header and before offset 256.
    while at >= 0x40 && list.len() < MAX_CAPABILITIES {
        let header = access.read_u16(address, at);
        list.push(Capability {
            id: header as u8,
            offset: at,
        });
        at = (header >> 8) & 0xFC;
    }
    list
}

/// Walks the PCI Express extended capability list at 0x100.
fn extended_capabilities(
    access: &mut dyn ConfigAccess,
    address: Address,
) -> Vec<ExtendedCapability> {
    let mut list = Vec::new();
    let mut at = EXTENDED_CAPABILITIES;
    for _ in 0..MAX_EXTENDED_CAPABILITIES {
        let header = access.read_u32(address, at);
        if header == 0 || header == 0xFFFF_FFFF {
            break;
        }
        let id = header as u16;
        // An id of 0 with a next pointer is a placeholder, not a capability.
        if id != 0 {
            list.push(ExtendedCapability {
                id,
                version: ((header >> 16) & 0xF) as u8,
                offset: at,
            });
        }
        let next = ((header >> 20) & 0xFFC) as u16;
        if next < EXTENDED_CAPABILITIES {
            break;
        }
        at = next;
    }
    list
}

/// Writes all ones to the register at `offset`, reads what sticks, and puts the original back.
fn probe_register(access: &mut dyn ConfigAccess, address: Address, offset: u16, ones: u32) -> u32 {
    let original = access.read_u32(address, offset);
    access.write_u32(address, offset, ones);
    let mask = access.read_u32(address, offset);
    access.write_u32(address, offset, original);
    mask
}

/// Sizes the `count` BARs and the expansion ROM (at `rom`). Memory and I/O decoding are off
/// while the registers hold all ones (so the device answers no stray addresses), then the
/// command register is restored; `keep_decoding` leaves it alone (host bridges).
fn size_bars(
    access: &mut dyn ConfigAccess,
    address: Address,
    count: u8,
    rom: Option<u16>,
    keep_decoding: bool,
) -> (Vec<Bar>, Option<Rom>) {
    let command = access.read_u16(address, COMMAND);
    let decoding = command & (COMMAND_IO | COMMAND_MEMORY);
    let toggle = decoding != 0 && !keep_decoding;
    if toggle {
        access.write_u16(address, COMMAND, command & !decoding);
    }
    let mut bars = Vec::new();
    let mut index = 0;
    while index < count {
        let offset = BAR0 + 4 * u16::from(index);
        let original = access.read_u32(address, offset);
        let mask = probe_register(access, address, offset, 0xFFFF_FFFF);
        let is_io = original & 1 != 0;
        let is_64 = !is_io && (original >> 1) & 3 == 2;
        if is_io {
            // 16-bit I/O decoders leave the upper half zero; the lowest writable bit gives the
            // size either way.
            let writable = mask & !0x3;
            if writable != 0 {
                bars.push(Bar {
                    index,
                    kind: BarKind::Io,
                    base: u64::from(original & !0x3),
                    size: 1 << writable.trailing_zeros(),
                    prefetchable: false,
                });
            }
            index += 1;
        } else if is_64 {
            if index + 1 >= count {
                // A 64-bit BAR in the last register has no upper half: malformed, ignored.
                break;
            }
            let high_offset = offset + 4;
            let high = access.read_u32(address, high_offset);
            let high_mask = probe_register(access, address, high_offset, 0xFFFF_FFFF);
            let writable = u64::from(high_mask) << 32 | u64::from(mask & !0xF);
            if writable != 0 {
                bars.push(Bar {
                    index,
                    kind: BarKind::Memory64,
                    base: u64::from(high) << 32 | u64::from(original & !0xF),
                    size: 1 << writable.trailing_zeros(),
                    prefetchable: original & 0x8 != 0,
                });
            }
            index += 2;
        } else {
            let writable = mask & !0xF;
            if writable != 0 {
                bars.push(Bar {
                    index,
                    kind: BarKind::Memory32,
                    base: u64::from(original & !0xF),
                    size: 1 << writable.trailing_zeros(),
                    prefetchable: original & 0x8 != 0,
                });
            }
            index += 1;
        }
    }
    let rom = rom.and_then(|offset| {
        let original = access.read_u32(address, offset);
        // The enable bit stays clear while sizing.
        let writable = probe_register(access, address, offset, 0xFFFF_F800) & 0xFFFF_F800;
        (writable != 0).then_some(Rom {
            base: u64::from(original & 0xFFFF_F800),
            size: 1 << writable.trailing_zeros(),
            enabled: original & 1 != 0,
        })
    });
    if toggle {
        access.write_u16(address, COMMAND, command);
    }
    (bars, rom)
}
