//! One port with an ATA disk: its command list, received-FIS area and command tables (all in
//! one DMA buffer the driver allocated), the requests in its command slots, their completion,
//! and the port's recovery after an error or a timeout.
//!
//! Requests are non-queued ATA commands, several issued at once in different slots: the HBA
//! runs them one after the other without waiting for the driver. A slot's command is done when
//! the HBA clears its bit in PxCI. After an error, an AHCI HBA keeps the failing command's bit
//! set, points PxCMD.CCS at it and stops; QEMU instead clears the bit, leaves CCS at 0 and goes
//! on with the next slot. The driver tells the failing command apart either way (see
//! [`Port::failed_commands`]).

use crate::ata::{self, Identity};
use crate::batch::Batch;
use crate::bindings::exports::wasi_dd::dd::block::{BlockCompletion, BlockOp, BlockRequest};
use crate::bindings::wasi_dd::dd::dma::DmaBuffer;
use crate::bindings::wasi_dd::dd::mmio::MmioRegion;
use crate::bindings::wasi_dd::dd::platform::{LogLevel, log, now_ns, sleep_ns};
use crate::bindings::wasi_dd::dd::types::{ErrorCode, Width};

/// Port registers, from the port's base (0x100 + 0x80 * port number).
pub const PX_CLB: u64 = 0x00;
pub const PX_CLBU: u64 = 0x04;
pub const PX_FB: u64 = 0x08;
pub const PX_FBU: u64 = 0x0c;
pub const PX_IS: u64 = 0x10;
pub const PX_IE: u64 = 0x14;
pub const PX_CMD: u64 = 0x18;
pub const PX_TFD: u64 = 0x20;
pub const PX_SIG: u64 = 0x24;
pub const PX_SSTS: u64 = 0x28;
pub const PX_SCTL: u64 = 0x2c;
pub const PX_SERR: u64 = 0x30;
pub const PX_CI: u64 = 0x38;

pub const CMD_ST: u64 = 1 << 0;
pub const CMD_SUD: u64 = 1 << 1;
pub const CMD_POD: u64 = 1 << 2;
pub const CMD_FRE: u64 = 1 << 4;
const CMD_CCS_SHIFT: u64 = 8;
pub const CMD_FR: u64 = 1 << 14;
pub const CMD_CR: u64 = 1 << 15;

const IS_DHRS: u64 = 1 << 0;
const IS_PSS: u64 = 1 << 1;
const IS_DSS: u64 = 1 << 2;
const IS_SDBS: u64 = 1 << 3;
const IS_UFS: u64 = 1 << 4;
const IS_OFS: u64 = 1 << 24;
const IS_INFS: u64 = 1 << 26;
const IS_IFS: u64 = 1 << 27;
const IS_HBDS: u64 = 1 << 28;
const IS_HBFS: u64 = 1 << 29;
const IS_TFES: u64 = 1 << 30;
/// Causes after which the HBA stops processing the port's commands until it is restarted.
const IS_FATAL: u64 = IS_TFES | IS_HBFS | IS_HBDS | IS_IFS | IS_OFS;
/// What interrupts: completions (D2H register, PIO setup, DMA setup, set device bits FISes)
/// and errors. Link changes (hot plug) are not handled.
pub const IE_ENABLED: u64 = IS_DHRS | IS_PSS | IS_DSS | IS_SDBS | IS_UFS | IS_INFS | IS_FATAL;

pub const TFD_BSY: u64 = 1 << 7;
pub const TFD_DRQ: u64 = 1 << 3;
pub const SSTS_DET: u64 = 0x0f;
/// SSTS.DET: a device is present and the link is up.
pub const DET_ESTABLISHED: u64 = 3;
const SCTL_DET: u64 = 0x0f;
const SCTL_DET_COMRESET: u64 = 1;
pub const ALL_ONES: u64 = 0xffff_ffff;

/// The port's DMA buffer: the command list (32 headers of 32 bytes, 1 KiB aligned), the
/// received-FIS area (256 bytes, 256 aligned), IDENTIFY data, then one command table per slot
/// (128-byte aligned: the command FIS, the ATAPI command, then the PRDT).
pub const MEMORY_BYTES: u64 = 0x3000;
pub const MEMORY_ALIGN: u64 = 4096;
const COMMAND_LIST: u64 = 0x0000;
pub const RECEIVED_FIS: u64 = 0x0400;
const IDENTIFY_DATA: u64 = 0x0600;
const COMMAND_TABLES: u64 = 0x1000;
const TABLE_BYTES: u64 = 0x100;
const HEADER_BYTES: u64 = 32;
const PRDT: u64 = 0x80;
const PRD_BYTES: u64 = 16;
/// PRD entries per command table: (0x100 - 0x80) / 16.
const PRD_ENTRIES: u64 = (TABLE_BYTES - PRDT) / PRD_BYTES;
/// One PRD entry moves at most 4 MiB (a 22-bit byte count, stored minus one).
const PRD_MAX_BYTES: u64 = 4 << 20;
/// Command header: the FIS is 5 double words; bit 6 says data goes to the device.
const HEADER_CFL_REGISTER_FIS: u64 = 5;
const HEADER_WRITE: u64 = 1 << 6;
const HEADER_PRDTL_SHIFT: u64 = 16;

const STOP_TIMEOUT_NS: u64 = 500_000_000;
const COMRESET_HOLD_NS: u64 = 1_000_000;
const LINK_TIMEOUT_NS: u64 = 1_000_000_000;
/// How long a device may stay busy after a reset (a disk may be spinning up).
pub const READY_TIMEOUT_NS: u64 = 10_000_000_000;
const IDENTIFY_TIMEOUT_NS: u64 = 5_000_000_000;
const IDENTIFY_POLL_NS: u64 = 10_000;
/// How long the port may go without finishing a command while it has some (Linux's value).
pub const COMMAND_TIMEOUT_NS: u64 = 30_000_000_000;
/// Issues of one request, re-issues after recoveries included, before it fails for good.
const MAX_ATTEMPTS: u32 = 3;

/// A request in a command slot.
struct Command {
    tag: u64,
    op: BlockOp,
    buffer: Option<DmaBuffer>,
    /// What the HBA reports in PRDBC when the transfer is whole (0 for a flush).
    bytes: u64,
    attempts: u32,
    /// Order of submission, to find the oldest outstanding command.
    sequence: u64,
}

pub struct Port {
    pub number: u32,
    base: u64,
    memory: DmaBuffer,
    memory_address: u64,
    pub identity: Identity,
    pub max_sectors: u32,
    slots: Vec<Option<Command>>,
    /// Slots whose PxCI bit the driver set and whose command has not completed.
    issued: u32,
    /// Where the search for a free slot starts: slots are used in turn, so that an HBA that
    /// serves low slots first (QEMU) cannot starve a request in a high one for long.
    next_slot: usize,
    sequence: u64,
    /// When a command last finished (or was issued to an idle port), for timeouts.
    last_progress_ns: u64,
    /// Recovery failed: the port is stopped and every request fails with `device-error`.
    out_of_service: bool,
}

/// The slot numbers whose bits are set in `mask`.
fn slots_of(mask: u32) -> impl Iterator<Item = usize> {
    (0..32).filter(move |slot| mask & (1 << slot) != 0)
}

fn header(slot: usize) -> u64 {
    COMMAND_LIST + slot as u64 * HEADER_BYTES
}

fn command_table(slot: usize) -> u64 {
    COMMAND_TABLES + slot as u64 * TABLE_BYTES
}

fn refused(request: BlockRequest, code: ErrorCode) -> BlockCompletion {
    BlockCompletion {
        tag: request.tag,
        outcome: Err(code),
        buffer: request.buffer,
    }
}

/// Every command slot's memory fits the buffer.
const _: () = assert!(COMMAND_TABLES + 32 * TABLE_BYTES <= MEMORY_BYTES);

impl Port {
    /// Takes a port whose command list and FIS area are programmed and whose FIS receive is
    /// on, with an ATA disk behind it: starts the command engine and identifies the disk.
    /// On failure, the memory comes back so the caller can stop the port before freeing it.
    pub fn open(
        registers: &MmioRegion,
        number: u32,
        base: u64,
        memory: DmaBuffer,
        memory_address: u64,
        slot_count: usize,
    ) -> Result<Port, (String, DmaBuffer)> {
        let mut port = Port {
            number,
            base,
            memory,
            memory_address,
            identity: Identity {
                model: String::new(),
                serial: String::new(),
                sector_size: 512,
                sector_count: 0,
                lba48: false,
            },
            max_sectors: 0,
            slots: (0..slot_count).map(|_| None).collect(),
            issued: 0,
            next_slot: 0,
            sequence: 0,
            last_progress_ns: 0,
            out_of_service: false,
        };
        match port.identify(registers) {
            Ok(identity) => {
                // IDENTIFY used slot 0: the HBA goes on from slot 1, and so does the driver,
                // so that requests run in the order they came.
                port.next_slot = 1 % slot_count;
                let by_prdt = PRD_ENTRIES * PRD_MAX_BYTES / u64::from(identity.sector_size);
                let by_ata = if identity.lba48 {
                    ata::MAX_SECTORS_LBA48
                } else {
                    ata::MAX_SECTORS_LBA28
                };
                port.max_sectors = by_ata.min(by_prdt as u32);
                port.identity = identity;
                Ok(port)
            }
            Err(why) => Err((why, port.memory)),
        }
    }

    /// IDENTIFY DEVICE in slot 0, waited for by polling (interrupts are not on yet).
    fn identify(&mut self, registers: &MmioRegion) -> Result<Identity, String> {
        let why = |what: &str, code: ErrorCode| format!("{what}: {}", code.name());
        Batch::default()
            .modify32(self.base + PX_CMD, 0, CMD_ST)
            .on_registers(registers, "starting the port")
            .map_err(|code| why("starting the port", code))?;
        let mut batch = Batch::default();
        let data = (self.memory_address + IDENTIFY_DATA, ata::IDENTIFY_BYTES);
        self.encode(&mut batch, 0, &ata::identify_fis(), false, Some(data));
        batch
            .on_memory(&self.memory, "IDENTIFY command")
            .map_err(|code| why("writing the command", code))?;
        registers
            .write(self.base + PX_CI, Width::W32, 1)
            .map_err(|code| why("issuing IDENTIFY", code))?;
        let deadline = now_ns().saturating_add(IDENTIFY_TIMEOUT_NS);
        loop {
            let state = Batch::default()
                .read32(self.base + PX_CI)
                .read32(self.base + PX_IS)
                .read32(self.base + PX_TFD)
                .on_registers(registers, "IDENTIFY status")
                .map_err(|code| why("reading the status", code))?;
            if state[1] & IS_FATAL != 0 {
                return Err(format!(
                    "IDENTIFY failed (PxIS {:#x}, PxTFD {:#x})",
                    state[1], state[2]
                ));
            }
            if state[0] & 1 == 0 {
                break;
            }
            if now_ns() >= deadline {
                return Err("IDENTIFY timed out".into());
            }
            sleep_ns(IDENTIFY_POLL_NS);
        }
        let _ = registers.write(self.base + PX_IS, Width::W32, ALL_ONES);
        let data = self
            .memory
            .read(IDENTIFY_DATA, ata::IDENTIFY_BYTES)
            .map_err(|code| why("reading IDENTIFY data", code))?;
        Identity::parse(&data)
    }

    /// Appends the writes that put a command into `slot`: the FIS and the PRDT (`data` is the
    /// device address and length of one contiguous buffer) in the slot's command table, then
    /// the header that points at them, with PRDBC zeroed.
    fn encode(
        &self,
        batch: &mut Batch,
        slot: usize,
        fis: &[u8; 20],
        write: bool,
        data: Option<(u64, u64)>,
    ) {
        let table = command_table(slot);
        for (i, chunk) in fis.chunks(8).enumerate() {
            let mut bytes = [0u8; 8];
            bytes[..chunk.len()].copy_from_slice(chunk);
            batch.write64(table + 8 * i as u64, u64::from_le_bytes(bytes));
        }
        let mut entries = 0;
        if let Some((address, bytes)) = data {
            let mut done = 0;
            while done < bytes && entries < PRD_ENTRIES {
                let len = (bytes - done).min(PRD_MAX_BYTES);
                let entry = table + PRDT + entries * PRD_BYTES;
                // DBA, DBAU; then reserved and DBC (byte count - 1; interrupt bit off).
                batch
                    .write64(entry, address + done)
                    .write64(entry + 8, (len - 1) << 32);
                done += len;
                entries += 1;
            }
        }
        let flags = HEADER_CFL_REGISTER_FIS
            | if write { HEADER_WRITE } else { 0 }
            | (entries << HEADER_PRDTL_SHIFT);
        batch
            .write64(header(slot), flags)
            .write64(header(slot) + 8, self.memory_address + table);
    }

    /// Checks a transfer against the disk and its buffer: the buffer's device address and the
    /// bytes to move, or why the request is refused. A flush moves nothing.
    fn check(&self, request: &BlockRequest, s64a: bool) -> Result<Option<(u64, u64)>, ErrorCode> {
        if request.op == BlockOp::Flush {
            return Ok(None);
        }
        if request.count == 0 || request.count > self.max_sectors {
            return Err(ErrorCode::OutOfRange);
        }
        let end = request
            .lba
            .checked_add(u64::from(request.count))
            .ok_or(ErrorCode::OutOfRange)?;
        if end > self.identity.sector_count {
            return Err(ErrorCode::OutOfRange);
        }
        let bytes = u64::from(request.count) * u64::from(self.identity.sector_size);
        let buffer = request.buffer.as_ref().ok_or(ErrorCode::OutOfRange)?;
        if buffer.size() < bytes {
            return Err(ErrorCode::OutOfRange);
        }
        let address = buffer.device_address()?;
        // PRD data base addresses are word aligned.
        if address & 1 != 0 {
            return Err(ErrorCode::Misaligned);
        }
        let end = address.checked_add(bytes).ok_or(ErrorCode::OutOfRange)?;
        if !s64a && end > 1 << 32 {
            return Err(ErrorCode::Unsupported);
        }
        Ok(Some((address, bytes)))
    }

    fn free_slot(&mut self) -> Option<usize> {
        let count = self.slots.len();
        let slot = (0..count)
            .map(|i| (self.next_slot + i) % count)
            .find(|slot| self.slots[*slot].is_none())?;
        self.next_slot = (slot + 1) % count;
        Some(slot)
    }

    /// Puts `request` into a free slot, its command's memory writes appended to `batch` (the
    /// caller runs them and sets the slot's PxCI bit); or refuses it, untouched by the device.
    pub fn prepare(
        &mut self,
        request: BlockRequest,
        batch: &mut Batch,
        s64a: bool,
    ) -> Result<usize, BlockCompletion> {
        if self.out_of_service {
            return Err(refused(request, ErrorCode::DeviceError));
        }
        let data = match self.check(&request, s64a) {
            Ok(data) => data,
            Err(code) => return Err(refused(request, code)),
        };
        let Some(slot) = self.free_slot() else {
            return Err(refused(request, ErrorCode::InUse));
        };
        let lba48 = self.identity.lba48;
        let (fis, write) = match request.op {
            BlockOp::Flush => (ata::flush_fis(lba48), false),
            BlockOp::Read => (
                ata::transfer_fis(false, lba48, request.lba, request.count),
                false,
            ),
            BlockOp::Write => (
                ata::transfer_fis(true, lba48, request.lba, request.count),
                true,
            ),
        };
        self.encode(batch, slot, &fis, write, data);
        self.sequence += 1;
        self.slots[slot] = Some(Command {
            tag: request.tag,
            op: request.op,
            buffer: request.buffer,
            bytes: data.map_or(0, |(_, bytes)| bytes),
            attempts: 1,
            sequence: self.sequence,
        });
        Ok(slot)
    }

    /// Writes the prepared commands of `slots` and hands them to the HBA.
    pub fn issue(
        &mut self,
        registers: &MmioRegion,
        batch: &Batch,
        slots: u32,
        done: &mut Vec<BlockCompletion>,
    ) {
        let issued = batch
            .on_memory(&self.memory, "command tables")
            .and_then(|_| registers.write(self.base + PX_CI, Width::W32, u64::from(slots)));
        match issued {
            Ok(()) => {
                if self.issued == 0 {
                    self.last_progress_ns = now_ns();
                }
                self.issued |= slots;
            }
            Err(code) => self.complete_all(slots, Err(code), done),
        }
    }

    fn complete(
        &mut self,
        slot: usize,
        outcome: Result<(), ErrorCode>,
        done: &mut Vec<BlockCompletion>,
    ) {
        self.issued &= !(1 << slot);
        if let Some(command) = self.slots[slot].take() {
            done.push(BlockCompletion {
                tag: command.tag,
                outcome,
                buffer: command.buffer,
            });
        }
    }

    fn complete_all(
        &mut self,
        mask: u32,
        outcome: Result<(), ErrorCode>,
        done: &mut Vec<BlockCompletion>,
    ) {
        for slot in slots_of(mask) {
            self.complete(slot, outcome, done);
        }
    }

    pub fn in_service(&self) -> bool {
        !self.out_of_service
    }

    pub fn base(&self) -> u64 {
        self.base
    }

    /// Acts on the port's registers as just read (PxCI before PxIS, so that a command whose
    /// bit an error cleared is seen with the error): completes finished commands, recovers
    /// from an error, and fails a command the port has been stuck on for too long.
    pub fn service(
        &mut self,
        registers: &MmioRegion,
        ci: u64,
        is: u64,
        cmd: u64,
        now: u64,
        done: &mut Vec<BlockCompletion>,
    ) {
        let ci = ci as u32;
        if is & IS_FATAL != 0 {
            self.recover_from_error(registers, ci, cmd, is, done);
            return;
        }
        let finished = self.issued & !ci;
        if finished != 0 {
            self.complete_all(finished, Ok(()), done);
            self.last_progress_ns = now;
        }
        if self.issued != 0 && now.saturating_sub(self.last_progress_ns) >= COMMAND_TIMEOUT_NS {
            self.time_out(registers, cmd, done);
        }
    }

    fn recover_from_error(
        &mut self,
        registers: &MmioRegion,
        ci: u32,
        cmd: u64,
        is: u64,
        done: &mut Vec<BlockCompletion>,
    ) {
        let outstanding = self.issued & ci;
        let finished = self.issued & !ci;
        let ccs = ((cmd >> CMD_CCS_SHIFT) & 0x1f) as usize;
        let failed = self.failed_commands(outstanding, finished, ccs);
        let tfd = registers.read(self.base + PX_TFD, Width::W32).unwrap_or(0);
        log(
            LogLevel::Warn,
            &format!(
                "port {}: error, PxIS {is:#x} PxTFD {tfd:#x}: slots {failed:#x} failed, \
                 {:#x} re-issued",
                self.number,
                outstanding & !failed
            ),
        );
        self.complete_all(finished & !failed, Ok(()), done);
        self.complete_all(failed, Err(ErrorCode::DeviceError), done);
        self.restart(registers, outstanding & !failed, false, done);
    }

    /// Which of the commands in flight at an error failed. `outstanding` still have their PxCI
    /// bit, `finished` do not. An HBA that follows AHCI keeps the failing command outstanding
    /// with PxCMD.CCS on it, and the finished ones succeeded. QEMU clears the failing
    /// command's bit (and never sets CCS): a data command that moved fewer bytes than asked is
    /// the one; failing that, a flush among the finished. When it cannot be told, every
    /// candidate fails: a request failed in vain is retried by its owner, a failure reported
    /// as success is lost data.
    fn failed_commands(&self, outstanding: u32, finished: u32, ccs: usize) -> u32 {
        let short = self.short_transfers(finished);
        if short != 0 {
            return short;
        }
        let at_ccs = if outstanding & (1 << ccs) != 0 {
            1 << ccs
        } else {
            0
        };
        let flushes = slots_of(finished)
            .filter(|slot| {
                self.slots[*slot]
                    .as_ref()
                    .is_some_and(|command| command.op == BlockOp::Flush)
            })
            .fold(0, |mask, slot| mask | 1 << slot);
        match (at_ccs, flushes) {
            (0, 0) => finished,
            (0, flushes) => flushes,
            (at_ccs, 0) => at_ccs,
            // QEMU's CCS always reads 0: a nonzero CCS comes from an HBA that follows AHCI.
            (at_ccs, _) if ccs != 0 => at_ccs,
            (at_ccs, flushes) => at_ccs | flushes,
        }
    }

    /// Finished data commands whose PRDBC is short of their length.
    fn short_transfers(&self, finished: u32) -> u32 {
        let moving: Vec<(usize, u64)> = slots_of(finished)
            .filter_map(|slot| {
                let bytes = self.slots[slot].as_ref()?.bytes;
                (bytes > 0).then_some((slot, bytes))
            })
            .collect();
        if moving.is_empty() {
            return 0;
        }
        let mut batch = Batch::default();
        for (slot, _) in &moving {
            batch.read32(header(*slot) + 4);
        }
        let all = moving.iter().fold(0, |mask, (slot, _)| mask | 1 << slot);
        let Ok(counts) = batch.on_memory(&self.memory, "byte counts") else {
            return all;
        };
        moving
            .iter()
            .zip(counts)
            .filter(|((_, bytes), count)| count < bytes)
            .fold(0, |mask, ((slot, _), _)| mask | 1 << slot)
    }

    /// The port has had commands and finished none for [`COMMAND_TIMEOUT_NS`]: the command the
    /// HBA is on (CCS, when it says; else the oldest outstanding) fails with `timed-out`, the
    /// link is reset, and the others go again.
    fn time_out(&mut self, registers: &MmioRegion, cmd: u64, done: &mut Vec<BlockCompletion>) {
        let ccs = ((cmd >> CMD_CCS_SHIFT) & 0x1f) as usize;
        let stuck = if ccs != 0 && self.issued & (1 << ccs) != 0 {
            Some(ccs)
        } else {
            slots_of(self.issued).min_by_key(|slot| {
                self.slots[*slot]
                    .as_ref()
                    .map_or(u64::MAX, |command| command.sequence)
            })
        };
        let Some(stuck) = stuck else {
            return;
        };
        log(
            LogLevel::Warn,
            &format!(
                "port {}: slot {stuck} timed out, resetting the link",
                self.number
            ),
        );
        self.complete(stuck, Err(ErrorCode::TimedOut), done);
        let others = self.issued;
        self.restart(registers, others, true, done);
    }

    /// AHCI's port recovery: stops the command engine (an HBA clears PxCI then), clears PxSERR
    /// and PxIS, resets the link (COMRESET) if asked or if the device stays busy, starts again
    /// and re-issues `reissue` (commands out of attempts fail instead). If the port cannot be
    /// recovered it goes out of service and everything in it fails.
    fn restart(
        &mut self,
        registers: &MmioRegion,
        reissue: u32,
        comreset: bool,
        done: &mut Vec<BlockCompletion>,
    ) {
        let mut again = 0;
        for slot in slots_of(reissue) {
            match self.slots[slot].as_mut() {
                Some(command) if command.attempts < MAX_ATTEMPTS => {
                    command.attempts += 1;
                    again |= 1 << slot;
                }
                _ => self.complete(slot, Err(ErrorCode::DeviceError), done),
            }
        }
        match self.reset_engine(registers, comreset, again) {
            Ok(()) => {
                self.issued = again;
                self.last_progress_ns = now_ns();
            }
            Err(code) => {
                log(
                    LogLevel::Error,
                    &format!(
                        "port {}: recovery failed ({}), the disk is out of service",
                        self.number,
                        code.name()
                    ),
                );
                let everything = self.issued | again;
                self.complete_all(everything, Err(ErrorCode::DeviceError), done);
                self.out_of_service = true;
                let _ = Batch::default()
                    .write32(self.base + PX_IE, 0)
                    .modify32(self.base + PX_CMD, CMD_ST, 0)
                    .write32(self.base + PX_IS, ALL_ONES)
                    .on_registers(registers, "stopping the port");
            }
        }
    }

    fn reset_engine(
        &mut self,
        registers: &MmioRegion,
        comreset: bool,
        again: u32,
    ) -> Result<(), ErrorCode> {
        let base = self.base;
        let stopped = Batch::default()
            .modify32(base + PX_CMD, CMD_ST, 0)
            .poll32(base + PX_CMD, CMD_CR, 0, STOP_TIMEOUT_NS)
            .write32(base + PX_SERR, ALL_ONES)
            .write32(base + PX_IS, ALL_ONES)
            .read32(base + PX_TFD)
            .on_registers(registers, "stopping the port")?;
        let busy = stopped[1] & (TFD_BSY | TFD_DRQ) != 0;
        if comreset || busy {
            Batch::default()
                .modify32(base + PX_SCTL, SCTL_DET, SCTL_DET_COMRESET)
                .delay(COMRESET_HOLD_NS)
                .modify32(base + PX_SCTL, SCTL_DET, 0)
                .poll32(base + PX_SSTS, SSTS_DET, DET_ESTABLISHED, LINK_TIMEOUT_NS)
                .write32(base + PX_SERR, ALL_ONES)
                .poll32(base + PX_TFD, TFD_BSY | TFD_DRQ, 0, READY_TIMEOUT_NS)
                .write32(base + PX_IS, ALL_ONES)
                .on_registers(registers, "resetting the link")?;
        }
        // An HBA that keeps PxCI across a stop (QEMU) would run whatever is left in a slot
        // once started again: the slots not re-issued get an empty header and no FIS, so that
        // nothing touches a buffer already given back. Re-issued ones start with PRDBC 0.
        let mut memory = Batch::default();
        for slot in 0..self.slots.len() {
            if again & (1 << slot) != 0 {
                memory.write32(header(slot) + 4, 0);
            } else {
                memory
                    .write64(header(slot), 0)
                    .write64(command_table(slot), 0);
            }
        }
        memory.on_memory(&self.memory, "clearing command slots")?;
        let mut start = Batch::default();
        start.modify32(base + PX_CMD, 0, CMD_ST);
        if again != 0 {
            start.write32(base + PX_CI, u64::from(again));
        }
        start.on_registers(registers, "restarting the port")?;
        Ok(())
    }
}
