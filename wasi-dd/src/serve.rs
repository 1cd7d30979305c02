//! What every host does first with a NIC or block driver, whatever it then serves it to: call
//! `init` with a fresh device handle (and fill a NIC's receive ring) and turn any failure into
//! one line for its log (Keel's `kernel/cells/dd-host`, Linux's `wasi-dd/linux`).

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use wasmtime::Store;

use crate::bindings::block_driver::exports::wasi_dd::dd::block::{
    BlockCompletion, BlockRequest, DiskInfo,
};
use crate::platform::Platform;
use crate::{BlockDriver, DriverHost, NicDriver};

/// A failed call into a driver component (a trap, or the instance interrupted) as a line.
pub fn call_error(what: &str, e: wasmtime::Error) -> String {
    format!("{what}: {e:#}")
}

/// Initializes a NIC driver on the instance's device; its MAC address.
pub fn init_nic<P: Platform>(
    store: &mut Store<DriverHost<P>>,
    driver: &NicDriver,
) -> Result<[u8; 6], String> {
    let device = store.data_mut().device().map_err(|e| format!("{e:#}"))?;
    let mac = driver
        .wasi_dd_dd_nic()
        .call_init(&mut *store, device)
        .map_err(|e| call_error("init", e))?
        .map_err(|code| format!("init: {}", code.name()))?;
    mac.try_into()
        .map_err(|m: Vec<u8>| format!("init returned a {}-byte MAC address", m.len()))
}

/// Receive buffers a host offers a NIC driver's ring: what a ring of 256 descriptors holds (the
/// size Linux's e1000 driver uses). A driver with a smaller ring takes fewer (`supply-rx` says
/// how many) and the rest are freed.
pub const RX_BUFFERS: usize = 255;
/// Size of every frame buffer: a full Ethernet frame (and a VLAN tag) fits.
pub const FRAME_BUFFER: u64 = 2048;

/// Fills a NIC driver's receive ring with [`RX_BUFFERS`] fresh frame buffers; returns how many
/// it took.
pub fn fill_rx_ring<P: Platform>(
    store: &mut Store<DriverHost<P>>,
    driver: &NicDriver,
) -> Result<u32, String> {
    let mut buffers = Vec::with_capacity(RX_BUFFERS);
    for _ in 0..RX_BUFFERS {
        buffers.push(
            store
                .data_mut()
                .allocate_buffer(FRAME_BUFFER)
                .map_err(|code| format!("receive buffers: {}", code.name()))?,
        );
    }
    driver
        .wasi_dd_dd_nic()
        .call_supply_rx(&mut *store, &buffers)
        .map_err(|e| call_error("supply-rx", e))?
        .map_err(|code| format!("supply-rx: {}", code.name()))
}

/// Initializes a block driver on the instance's device; the disks it found.
pub fn init_block<P: Platform>(
    store: &mut Store<DriverHost<P>>,
    driver: &BlockDriver,
) -> Result<Vec<DiskInfo>, String> {
    let device = store.data_mut().device().map_err(|e| format!("{e:#}"))?;
    driver
        .wasi_dd_dd_block()
        .call_init(&mut *store, device)
        .map_err(|e| call_error("init", e))?
        .map_err(|code| format!("init: {}", code.name()))
}

/// One exchange with a block driver once the host has queued `batch`: submits it (if any),
/// lets the driver take its interrupt if it `fired`, and, if requests are `in_flight`,
/// collects the finished ones.
pub fn exchange_block<P: Platform>(
    store: &mut Store<DriverHost<P>>,
    driver: &BlockDriver,
    batch: &[BlockRequest],
    fired: bool,
    in_flight: bool,
) -> Result<Vec<BlockCompletion>, String> {
    let block = driver.wasi_dd_dd_block();
    if !batch.is_empty() {
        block
            .call_submit(&mut *store, batch)
            .map_err(|e| call_error("submit", e))?;
    }
    if fired {
        block
            .call_handle_interrupt(&mut *store)
            .map_err(|e| call_error("handle-interrupt", e))?;
    }
    if !in_flight {
        return Ok(Vec::new());
    }
    block
        .call_completions(&mut *store)
        .map_err(|e| call_error("completions", e))
}
