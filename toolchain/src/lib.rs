//! Keel's host tools: building the kernel and its GRUB image, running it in QEMU, and driving it
//! over the serial console for the integration tests and benchmarks.

#![forbid(unsafe_code)]

pub mod apps;
pub mod bench;
pub mod cli;
pub mod cpio;
pub mod disk;
pub mod drivers;
pub mod http;
pub mod image;
pub mod json;
pub mod kernel;
pub mod linux;
pub mod paths;
pub mod process;
pub mod qemu;
pub mod vm;
