//! What Keel needs from ACPI, read once at boot with the `acpi` crate: where the local APIC and
//! IOAPICs are, how legacy IRQs map to interrupt lines, how to power off (the FADT's PM1a
//! control block and the `\_S5` sleep type from the DSDT), and where PCI configuration space is
//! memory-mapped (the MCFG).
#![cfg_attr(not(test), no_std)]
#![deny(unsafe_code)]

extern crate alloc;

use acpi::mcfg::Mcfg;
use acpi::platform::interrupt::{InterruptModel, Polarity, TriggerMode};
use acpi::{AcpiHandler, AcpiTables, PhysicalMapping, address::AddressSpace, fadt::Fadt};
use alloc::collections::BTreeMap;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::ptr::NonNull;
use keel_memory::{FirmwareView, PhysAddr};
use keel_sync::IrqSafeMutex;

#[derive(Clone, Copy, Debug)]
pub struct IoApicInfo {
    pub address: u64,
    pub gsi_base: u32,
}

/// How a legacy ISA IRQ is wired.
#[derive(Clone, Copy, Debug)]
pub struct IrqRoute {
    pub gsi: u32,
    pub active_low: bool,
    pub level_triggered: bool,
}

/// One MCFG entry: the memory-mapped (ECAM) configuration space of buses
/// `bus_start..=bus_end` of PCI segment `segment`, 1 MiB per bus from `base`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PciConfigRegion {
    pub base: u64,
    pub segment: u16,
    pub bus_start: u8,
    pub bus_end: u8,
}

#[derive(Clone, Debug)]
pub struct AcpiInfo {
    pub local_apic_address: u64,
    pub io_apics: Vec<IoApicInfo>,
    overrides: Vec<(u8, IrqRoute)>,
    /// I/O port of the PM1a control block and the `\_S5` sleep type value.
    pub soft_off: Option<(u16, u16)>,
    /// The MCFG's ECAM regions (empty without an MCFG: then only the legacy ports reach PCI).
    pub pci_config_regions: Vec<PciConfigRegion>,
}

impl AcpiInfo {
    /// The wiring of ISA IRQ `irq` (identity, edge, active high unless overridden).
    pub fn isa_irq(&self, irq: u8) -> IrqRoute {
        self.overrides
            .iter()
            .find(|(i, _)| *i == irq)
            .map(|(_, r)| *r)
            .unwrap_or(IrqRoute {
                gsi: irq as u32,
                active_low: false,
                level_triggered: false,
            })
    }
}

#[derive(Debug)]
pub enum AcpiInfoError {
    Tables(acpi::AcpiError),
    NotApic,
}

/// Maps the tables that the `acpi` crate asks for through read-only firmware views.
#[derive(Clone, Default)]
struct Handler {
    views: Arc<IrqSafeMutex<BTreeMap<usize, FirmwareView>>>,
}

impl AcpiHandler for Handler {
    #[allow(unsafe_code)]
    unsafe fn map_physical_region<T>(
        &self,
        physical: usize,
        size: usize,
    ) -> PhysicalMapping<Self, T> {
        let view = keel_memory::view_firmware(PhysAddr::new(physical as u64), size as u64)
            .unwrap_or_else(|e| panic!("cannot map ACPI table at {physical:#x}: {e}"));
        let virt = view.address().as_u64() as usize;
        self.views.lock().insert(virt, view);
        // SAFETY: the view maps `size` bytes at `physical` read-only at `virt` until
        // `unmap_physical_region` drops it.
        unsafe {
            PhysicalMapping::new(
                physical,
                NonNull::new(virt as *mut T).expect("views are never at address 0"),
                size,
                size,
                self.clone(),
            )
        }
    }

    fn unmap_physical_region<T>(region: &PhysicalMapping<Self, T>) {
        let virt = region.virtual_start().as_ptr() as usize;
        region.handler().views.lock().remove(&virt);
    }
}

/// Where the root table is: from the boot loader's copy of the RSDP (revision and RSDT or
/// XSDT address), or unknown (then the BIOS area is searched).
#[derive(Clone, Copy, Debug)]
pub enum RootTable {
    Known { revision: u8, address: u64 },
    SearchBios,
}

/// Reads the MADT, FADT and DSDT.
#[allow(unsafe_code)]
pub fn read(root: RootTable) -> Result<AcpiInfo, AcpiInfoError> {
    let handler = Handler::default();
    // SAFETY: the address comes from the boot loader's RSDP tag, or the crate validates the RSDP
    // it finds in the BIOS area.
    let tables = unsafe {
        match root {
            RootTable::Known { revision, address } => {
                AcpiTables::from_rsdt(handler, revision, address as usize)
            }
            RootTable::SearchBios => AcpiTables::search_for_rsdp_bios(handler),
        }
    }
    .map_err(AcpiInfoError::Tables)?;
    let platform = tables.platform_info().map_err(AcpiInfoError::Tables)?;
    let InterruptModel::Apic(apic) = platform.interrupt_model else {
        return Err(AcpiInfoError::NotApic);
    };
    let io_apics = apic
        .io_apics
        .iter()
        .map(|io| IoApicInfo {
            address: io.address as u64,
            gsi_base: io.global_system_interrupt_base,
        })
        .collect();
    let overrides = apic
        .interrupt_source_overrides
        .iter()
        .map(|o| {
            (
                o.isa_source,
                IrqRoute {
                    gsi: o.global_system_interrupt,
                    active_low: matches!(o.polarity, Polarity::ActiveLow),
                    level_triggered: matches!(o.trigger_mode, TriggerMode::Level),
                },
            )
        })
        .collect();
    let soft_off = soft_off(&tables);
    Ok(AcpiInfo {
        local_apic_address: apic.local_apic_address,
        io_apics,
        overrides,
        soft_off,
        pci_config_regions: pci_config_regions(&tables),
    })
}

fn pci_config_regions(tables: &AcpiTables<Handler>) -> Vec<PciConfigRegion> {
    let Ok(mcfg) = tables.find_table::<Mcfg>() else {
        return Vec::new();
    };
    mcfg.entries()
        .iter()
        .map(|e| PciConfigRegion {
            // Copies out of the packed entry.
            base: e.base_address,
            segment: e.pci_segment_group,
            bus_start: e.bus_number_start,
            bus_end: e.bus_number_end,
        })
        .filter(|r| r.bus_start <= r.bus_end && r.base != 0)
        .collect()
}

fn soft_off(tables: &AcpiTables<Handler>) -> Option<(u16, u16)> {
    let fadt = tables.find_table::<Fadt>().ok()?;
    let block = fadt.pm1a_control_block().ok()?;
    if block.address_space != AddressSpace::SystemIo {
        return None;
    }
    let port = block.address as u16;
    let dsdt = tables.dsdt().ok()?;
    let view =
        keel_memory::view_firmware(PhysAddr::new(dsdt.address as u64), dsdt.length as u64).ok()?;
    let bytes = view_bytes(&view, dsdt.length as usize);
    let slp_typ = s5_sleep_type(bytes)?;
    Some((port, slp_typ))
}

#[allow(unsafe_code)]
fn view_bytes(view: &FirmwareView, len: usize) -> &[u8] {
    // SAFETY: the view maps `len` readable bytes at its address for as long as it lives, and the
    // slice borrows it.
    unsafe { core::slice::from_raw_parts(view.address().as_ptr::<u8>(), len) }
}

/// Finds `Name (_S5, Package () { SLP_TYPa, ... })` in AML and returns SLP_TYPa. This reads only
/// the encodings firmware uses for that object, not AML in general.
pub fn s5_sleep_type(aml: &[u8]) -> Option<u16> {
    let at = aml.windows(4).position(|w| w == b"_S5_")?;
    let mut i = at + 4;
    if *aml.get(i)? != 0x12 {
        return None; // PackageOp
    }
    i += 1;
    let lead = *aml.get(i)?;
    i += 1 + (lead >> 6) as usize; // PkgLength: extra bytes in bits 6-7
    i += 1; // NumElements
    match *aml.get(i)? {
        0x00 => Some(0),                           // ZeroOp
        0x01 => Some(1),                           // OneOp
        0x0A => aml.get(i + 1).map(|&b| b as u16), // BytePrefix
        b if b < 0x20 => Some(b as u16),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::s5_sleep_type;

    #[test]
    fn reads_s5_in_its_common_encodings() {
        assert_eq!(
            s5_sleep_type(b"xx\x08_S5_\x12\x06\x04\x0a\x05\x0a\x05\x00\x00"),
            Some(5)
        );
        assert_eq!(
            s5_sleep_type(b"\x08_S5_\x12\x06\x04\x00\x00\x00\x00"),
            Some(0)
        );
        assert_eq!(s5_sleep_type(b"\x08_S5_\x12\x46\x00\x04\x01"), Some(1));
        assert_eq!(s5_sleep_type(b"_S5_"), None);
        assert_eq!(s5_sleep_type(b"no sleep states here"), None);
    }
}
