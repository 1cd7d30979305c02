//! WASI-dd's portable host runtime: runs WebAssembly device drivers (components of the
//! `wasi-dd:dd` worlds in `wit/dd`) on any kernel that implements [`Platform`].
//!
//! Each driver instance gets a [`DriverHost`]: the one PCI function it drives, the platform,
//! and its handles. Everything the driver asks for is checked here (offsets against BAR sizes,
//! access widths and alignment, configuration-space rules, DMA sizes, handles that were freed)
//! and answered with an `error-code` value on misuse; the platform only ever sees accesses that
//! passed. A handle index the instance never received (forged in raw canonical-ABI calls) is
//! rejected by Wasmtime itself, as a trap of that instance alone: the host is unaffected.
//!
//! Embedding:
//!
//! ```text
//! let mut linker = Linker::new(&engine);
//! wasi_dd::add_to_linker(&mut linker, |host: &mut DriverHost<MyPlatform>| host)?;
//! let mut store = Store::new(&engine, DriverHost::new(platform, function));
//! let driver = wasi_dd::NicDriver::instantiate(&mut store, &component, &linker)?;
//! let device = store.data_mut().device()?;
//! let mac = driver.wasi_dd_dd_nic().call_init(&mut store, device)?;
//! ```

#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;
#[cfg(any(feature = "std", test))]
extern crate std;

pub mod bindings;

/// The command register and the bit hosts toggle themselves (a platform that unmasks INTx
/// through configuration space, as Linux's UIO does, uses them too).
pub mod config_space {
    pub const COMMAND: u16 = 0x04;
    pub const COMMAND_INTX_DISABLE: u32 = 1 << 10;
}
mod host;
pub mod platform;
mod registers;
pub mod serve;
pub mod types;

pub use bindings::block_driver::BlockDriver;
pub use bindings::host::wasi_dd::dd::types::{BatchError, ErrorCode, RegOp, Width};
pub use bindings::nic_driver::NicDriver;
pub use bindings::test_driver::TestDriver;
pub use host::{DriverHost, Limits, MAX_DMA_ALIGN, add_to_linker};
pub use platform::Platform;
pub use serve::{
    FRAME_BUFFER, RX_BUFFERS, call_error, exchange_block, fill_rx_ring, init_block, init_nic,
};
