//! The x86_64 machine layer of Keel. All of the kernel's direct hardware access that is not
//! memory management lives here, behind safe interfaces.
#![no_std]
#![feature(abi_x86_interrupt)]
#![deny(unsafe_op_in_unsafe_fn)]

pub mod apic;
#[cfg(target_os = "none")]
pub mod boot;
pub mod context;
pub mod cpu;
pub mod gdt;
pub mod interrupts;
pub mod ioapic;
pub mod pci_ports;
pub mod pic;
pub mod pit;
pub mod ports;
pub mod power;
pub mod rtc;
pub mod serial;
