//! PCI enumeration for Keel.
//!
//! * [`ConfigAccess`] is how configuration space is reached: ECAM (memory-mapped, 4096 bytes per
//!   function, windows from the ACPI MCFG table) or the legacy ports 0xCF8/0xCFC (256 bytes). Both
//!   backends live in the kernel-only `platform` module; tests use a fake.
//! * [`enumerate`] walks bus 0 and every bus behind a PCI-to-PCI bridge, probes every function of
//!   multi-function devices, sizes the BARs and walks the capability lists.
//! * The registry ([`install`], [`functions`], [`config_read`], [`config_write`],
//!   [`config_space_size`]) keeps the result and the access method for the driver host.
//! * [`names`] names vendors, devices and classes (the `pci-ids` database); [`format`] renders
//!   `lspci` lines.
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

extern crate alloc;

mod access;
mod enumerate;
pub mod format;
pub mod names;
#[cfg(target_os = "none")]
mod platform;
mod registry;
#[cfg(test)]
mod tests;

pub use access::{Address, ConfigAccess, PciError, Width, check_access};
pub use enumerate::{
    Bar, BarKind, BridgeBuses, Capability, ExtendedCapability, Function, HeaderType, Rom,
    enumerate, probe,
};
#[cfg(target_os = "none")]
pub use platform::{EcamRegion, InitReport, init};
pub use registry::{
    config_read, config_space_size, config_write, function, functions, install, mechanism,
};
