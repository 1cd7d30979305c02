//! A WASI-dd block driver for AHCI 1.x SATA host bus adapters (QEMU's ICH9 `ahci`, 8086:2922),
//! world `block-driver`.
//!
//! The registers are BAR 5 (ABAR). `init` resets the HBA, and every implemented port whose
//! link is up and whose device signs as an ATA disk gets a command list, a received-FIS area
//! and 32 command tables in one DMA buffer, is identified (IDENTIFY DEVICE: model, serial,
//! capacity, logical sector size) and listed under its port number. ATAPI drives (the boot
//! CD-ROM of q35's chipset AHCI) and other devices are stopped again and not listed; empty
//! ports are not touched.
//!
//! Requests are READ/WRITE DMA EXT and FLUSH CACHE EXT (the 28-bit commands for disks without
//! 48-bit addressing), non-queued, one per command slot: up to 32 in flight per disk, which the
//! HBA runs in turn. The payload moves by DMA between the disk and the host's buffer, described
//! by a PRDT built from the buffer's device address. Native command queuing is not used: its
//! error recovery needs READ LOG EXT, and QEMU runs queued commands one at a time anyway.
//!
//! Completion is interrupt driven (`handle-interrupt` reads and clears the causes) and also
//! read from PxCI on every `completions`, so a lost interrupt delays a request but never loses
//! it. A task-file or host-bus error fails the command that caused it with `device-error`; the
//! port is stopped, cleared, reset if the device stays busy, restarted, and the other commands
//! are issued again. A port that finishes nothing for 30 s fails its current command with
//! `timed-out` and is recovered the same way (with a link reset).

#![deny(unsafe_code)]

#[allow(unsafe_code)]
mod bindings {
    wit_bindgen::generate!({ path: "../../wit/dd", world: "block-driver" });
}

mod ata;
mod batch;
mod hba;
mod port;

use std::cell::RefCell;

use bindings::exports::wasi_dd::dd::block::{BlockCompletion, BlockRequest, DiskInfo, Guest};
use bindings::wasi_dd::dd::pci::Device;
use bindings::wasi_dd::dd::types::ErrorCode;
use hba::Hba;

/// The driver instance's state: the HBA once `init` succeeded, and the completions not yet
/// collected (refusals land here too, before and after `init`).
struct Controller {
    hba: Option<Hba>,
    done: Vec<BlockCompletion>,
}

thread_local! {
    static CONTROLLER: RefCell<Controller> = const {
        RefCell::new(Controller {
            hba: None,
            done: Vec::new(),
        })
    };
}

fn with_controller<R>(f: impl FnOnce(&mut Controller) -> R) -> R {
    CONTROLLER.with(|controller| f(&mut controller.borrow_mut()))
}

struct Driver;

impl Guest for Driver {
    fn init(device: Device) -> Result<Vec<DiskInfo>, ErrorCode> {
        let (hba, disks) = Hba::start(device)?;
        with_controller(|controller| controller.hba = Some(hba));
        Ok(disks)
    }

    fn submit(requests: Vec<BlockRequest>) {
        with_controller(|Controller { hba, done }| match hba {
            Some(hba) => hba.submit(requests, done),
            None => hba::refuse_all(requests, ErrorCode::NoSuchResource, done),
        })
    }

    fn completions() -> Vec<BlockCompletion> {
        with_controller(|Controller { hba, done }| {
            if let Some(hba) = hba {
                hba.poll(false, done);
            }
            std::mem::take(done)
        })
    }

    fn handle_interrupt() -> bool {
        with_controller(|Controller { hba, done }| {
            hba.as_mut().is_some_and(|hba| hba.poll(true, done))
        })
    }
}

#[allow(unsafe_code)]
mod export {
    use super::Driver;
    crate::bindings::export!(Driver with_types_in crate::bindings);
}
