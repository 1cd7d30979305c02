//! WASI-dd on Linux: the driver components Keel runs (`target/drivers-wasm/<name>.wasm`), run
//! unchanged as Linux processes that drive real PCI functions through VFIO.
//!
//! This crate is the worked example of porting WASI-dd to a kernel: [`platform::VfioPlatform`]
//! implements `wasi_dd::platform::Platform` (the whole porting surface), and the runner
//! ([`runner`], the `wasi-dd-run` binary) plays the part of Keel's driver manager and of the
//! consumers of each driver world: Linux's network stack through a TAP interface ([`nic`]),
//! Linux's block layer through NBD ([`block`], [`nbd`]). `README.md` has the usage, the
//! decisions a porter meets, the build for a guest and what was measured there.
//!
//! | module | what it is | Keel's counterpart |
//! |---|---|---|
//! | [`platform`] | `Platform` over a VFIO device | `kernel/cells/dd-host/src/platform.rs` |
//! | [`vfio`] | opening a function: group, container, type1 IOMMU, device | PCI enumeration |
//! | [`uio`] | `Platform` over sysfs and UIO without an IOMMU: DMA unconfined, `--unconfined` only | — |
//! | [`iova`] | where DMA buffers appear to the device | frame allocation below 4 GiB |
//! | [`nic`] | the frame loop between a nic-driver and a TAP | `dd-host/src/nic.rs` |
//! | [`block`], [`nbd`] | block requests between a block-driver and `/dev/nbdN` | `dd-host/src/block.rs` |
//! | [`world`] | a component's world, and the world a PCI class takes | `boot-drivers.txt` |
//! | [`runner`] | binding, compiling, instantiating, dispatching by world | `dd-host/src/manager.rs` |
//! | [`sys`], [`vfio::uapi`] | all the `unsafe` code: system calls, mappings, ioctls | `keel_memory`, `keel_arch` |

#![deny(unsafe_code)]
#![deny(unsafe_op_in_unsafe_fn)]

pub mod block;
pub mod iova;
pub mod nbd;
pub mod nic;
pub mod pci;
pub mod platform;
pub mod runner;
#[allow(unsafe_code)]
pub mod sys;
pub mod uio;
pub mod vfio;
pub mod world;
