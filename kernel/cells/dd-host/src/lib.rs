//! WASI-dd on Keel: the platform that gives driver components their device's registers, ports,
//! DMA memory and interrupt, and the driver manager that binds drivers to PCI functions.
#![no_std]
#![deny(unsafe_code)]

extern crate alloc;

pub mod block;
pub mod interrupts;
pub mod manager;
pub mod nic;
pub mod platform;

pub use manager::{
    DeviceMatch, DriverImage, DriverRecord, DriverState, DriverWorld, begin_binding, bind_all,
    binding, end_binding, parse_manifest, records,
};
pub use platform::{ConfigSpace, KeelPlatform};
