//! The kernel's configuration-access backends and [`init`].
//!
//! * ECAM: each MCFG region maps bus `b` of its range at `base + (b - first bus) * 1 MiB`. A bus's
//!   1 MiB window is claimed from the device frames and mapped uncached the first time it is
//!   touched, and stays mapped.
//! * Legacy: ports 0xCF8/0xCFC through `keel-arch`, segment 0 only, 256 bytes per function.

use crate::access::{Address, ConfigAccess, Width};
use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use keel_arch::pci_ports::{self, LegacyRegister};
use keel_memory::{MappedPages, MemoryError, PhysAddr};

/// One MCFG entry: the ECAM window of buses `bus_start..=bus_end` of a segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EcamRegion {
    pub base: u64,
    pub segment: u16,
    pub bus_start: u8,
    pub bus_end: u8,
}

const BUS_WINDOW: u64 = 1 << 20;

struct Ecam {
    regions: Vec<EcamRegion>,
    /// Each bus's window once touched; `None` if it could not be mapped (reads as absent).
    buses: BTreeMap<(u16, u8), Option<MappedPages>>,
}

impl Ecam {
    fn region(&self, segment: u16, bus: u8) -> Option<&EcamRegion> {
        self.regions
            .iter()
            .find(|r| r.segment == segment && (r.bus_start..=r.bus_end).contains(&bus))
    }

    fn window(&mut self, segment: u16, bus: u8) -> Option<&mut MappedPages> {
        if !self.buses.contains_key(&(segment, bus)) {
            let mapped = self.region(segment, bus).and_then(|region| {
                let base = region.base + u64::from(bus - region.bus_start) * BUS_WINDOW;
                map_window(base).ok()
            });
            self.buses.insert((segment, bus), mapped);
        }
        self.buses.get_mut(&(segment, bus))?.as_mut()
    }
}

fn map_window(base: u64) -> Result<MappedPages, MemoryError> {
    keel_memory::map_device(PhysAddr::new(base), BUS_WINDOW)
}

/// The offset of a register in its bus's window.
fn ecam_offset(address: Address, offset: u16) -> usize {
    (usize::from(address.device) << 15) | (usize::from(address.function) << 12) | offset as usize
}

impl ConfigAccess for Ecam {
    fn space_size(&self) -> u16 {
        4096
    }

    fn name(&self) -> &'static str {
        "ECAM"
    }

    fn read(&mut self, address: Address, offset: u16, width: Width) -> u32 {
        let at = ecam_offset(address, offset);
        let Some(window) = self.window(address.segment, address.bus) else {
            return width.truncate(u32::MAX);
        };
        let value = match width {
            Width::U8 => window.read_volatile::<u8>(at).map(u32::from),
            Width::U16 => window.read_volatile::<u16>(at).map(u32::from),
            Width::U32 => window.read_volatile::<u32>(at),
        };
        value.unwrap_or(width.truncate(u32::MAX))
    }

    fn write(&mut self, address: Address, offset: u16, width: Width, value: u32) {
        let at = ecam_offset(address, offset);
        let Some(window) = self.window(address.segment, address.bus) else {
            return;
        };
        // Errors (misaligned, out of bounds) cannot happen for checked offsets; a write that
        // fails anyway is dropped, as a bus drops a write to nothing.
        let _ = match width {
            Width::U8 => window.write_volatile(at, value as u8),
            Width::U16 => window.write_volatile(at, value as u16),
            Width::U32 => window.write_volatile(at, value),
        };
    }
}

struct Legacy;

impl ConfigAccess for Legacy {
    fn space_size(&self) -> u16 {
        256
    }

    fn name(&self) -> &'static str {
        "ports 0xcf8/0xcfc"
    }

    fn read(&mut self, address: Address, offset: u16, width: Width) -> u32 {
        let register = legacy_register(address, offset);
        let value = register.and_then(|r| match width {
            Width::U8 => Some(u32::from(pci_ports::read_u8(r))),
            Width::U16 => pci_ports::read_u16(r).map(u32::from),
            Width::U32 => pci_ports::read_u32(r),
        });
        value.unwrap_or(width.truncate(u32::MAX))
    }

    fn write(&mut self, address: Address, offset: u16, width: Width, value: u32) {
        let Some(register) = legacy_register(address, offset) else {
            return;
        };
        match width {
            Width::U8 => pci_ports::write_u8(register, value as u8),
            Width::U16 => {
                pci_ports::write_u16(register, value as u16);
            }
            Width::U32 => {
                pci_ports::write_u32(register, value);
            }
        }
    }
}

/// The legacy mechanism reaches segment 0 and offsets below 256 only.
fn legacy_register(address: Address, offset: u16) -> Option<LegacyRegister> {
    if address.segment != 0 {
        return None;
    }
    let offset = u8::try_from(offset).ok()?;
    LegacyRegister::new(address.bus, address.device, address.function, offset)
}

/// What [`init`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InitReport {
    pub mechanism: &'static str,
    pub functions: usize,
}

/// Enumerates PCI through ECAM when the MCFG gave `ecam` regions (and they answer), else through
/// the legacy ports, and installs the registry.
pub fn init(ecam: &[EcamRegion]) -> InitReport {
    if !ecam.is_empty() {
        let roots: Vec<(u16, u8)> = ecam.iter().map(|r| (r.segment, r.bus_start)).collect();
        let access = Ecam {
            regions: ecam.to_vec(),
            buses: BTreeMap::new(),
        };
        let functions = crate::registry::install(Box::new(access), &roots);
        // Nothing through ECAM (a window that could not be mapped): try the ports.
        if functions > 0 {
            return InitReport {
                mechanism: "ECAM",
                functions,
            };
        }
    }
    let functions = crate::registry::install(Box::new(Legacy), &[(0, 0)]);
    InitReport {
        mechanism: Legacy.name(),
        functions,
    }
}
