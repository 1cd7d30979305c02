//! The host bus adapter: its reset, finding the ports with ATA disks, and handing requests,
//! interrupts and completions to the ports.

use crate::batch::Batch;
use crate::bindings::exports::wasi_dd::dd::block::{BlockCompletion, BlockRequest, DiskInfo};
use crate::bindings::wasi_dd::dd::dma::DmaBuffer;
use crate::bindings::wasi_dd::dd::irq::Interrupt;
use crate::bindings::wasi_dd::dd::mmio::MmioRegion;
use crate::bindings::wasi_dd::dd::pci::Device;
use crate::bindings::wasi_dd::dd::platform::{LogLevel, log, now_ns};
use crate::bindings::wasi_dd::dd::types::{ErrorCode, Width};
use crate::port::{
    ALL_ONES, CMD_CR, CMD_FR, CMD_FRE, CMD_POD, CMD_ST, CMD_SUD, DET_ESTABLISHED, IE_ENABLED,
    MEMORY_ALIGN, MEMORY_BYTES, PX_CI, PX_CLB, PX_CLBU, PX_CMD, PX_FB, PX_FBU, PX_IE, PX_IS,
    PX_SERR, PX_SIG, PX_SSTS, PX_TFD, Port, READY_TIMEOUT_NS, RECEIVED_FIS, SSTS_DET, TFD_BSY,
    TFD_DRQ,
};

/// The AHCI base address register (ABAR): BAR 5.
const ABAR: u8 = 5;
const CAP: u64 = 0x00;
const GHC: u64 = 0x04;
const IS: u64 = 0x08;
const PI: u64 = 0x0c;
const VS: u64 = 0x10;
const PORT_REGISTERS: u64 = 0x100;
const PORT_BYTES: u64 = 0x80;

const CAP_NCS_SHIFT: u64 = 8;
const CAP_S64A: u64 = 1 << 31;
const GHC_HR: u64 = 1 << 0;
const GHC_IE: u64 = 1 << 1;
const GHC_AE: u64 = 1 << 31;

/// PxSIG after the device's first D2H register FIS.
const SIGNATURE_ATA: u64 = 0x0000_0101;
const SIGNATURE_ATAPI: u64 = 0xeb14_0101;

/// The HBA clears GHC.HR within a second (AHCI 1.3, 10.4.3).
const RESET_TIMEOUT_NS: u64 = 1_000_000_000;
const STOP_TIMEOUT_NS: u64 = 500_000_000;
/// How long a port that sees a device (SSTS.DET 1) gets to bring the link up.
const LINK_UP_TIMEOUT_NS: u64 = 50_000_000;

pub struct Hba {
    registers: MmioRegion,
    /// `None` if the host could not route it: completions are then found by polling.
    interrupt: Option<Interrupt>,
    ports: Vec<Port>,
    /// 64-bit DMA addresses (CAP.S64A).
    s64a: bool,
    /// Memory of ports whose FIS receive would not stop: the HBA may still write there, so it
    /// is never given back.
    _parked: Vec<DmaBuffer>,
    _device: Device,
}

fn refused(request: BlockRequest, code: ErrorCode) -> BlockCompletion {
    BlockCompletion {
        tag: request.tag,
        outcome: Err(code),
        buffer: request.buffer,
    }
}

/// Every request refused with `code` (no controller, say).
pub fn refuse_all(requests: Vec<BlockRequest>, code: ErrorCode, done: &mut Vec<BlockCompletion>) {
    done.extend(requests.into_iter().map(|r| refused(r, code)));
}

impl Hba {
    /// Resets the HBA, finds the ports with ATA disks and identifies them, and turns
    /// interrupts on. Empty ports are not touched; ports with other devices (ATAPI drives,
    /// port multipliers) are stopped again and not listed.
    pub fn start(device: Device) -> Result<(Hba, Vec<DiskInfo>), ErrorCode> {
        let registers = device.map_bar(ABAR)?;
        let size = registers.size();
        if size < PORT_REGISTERS + PORT_BYTES {
            return Err(ErrorCode::NoSuchResource);
        }
        // AHCI mode first: HR is an AHCI register.
        let found = Batch::default()
            .write32(GHC, GHC_AE)
            .write32(GHC, GHC_AE | GHC_HR)
            .poll32(GHC, GHC_HR, 0, RESET_TIMEOUT_NS)
            .write32(GHC, GHC_AE)
            .read32(CAP)
            .read32(PI)
            .read32(VS)
            .on_registers(&registers, "HBA reset")?;
        let (cap, implemented, version) = (found[1], found[2], found[3]);
        let slot_count = (((cap >> CAP_NCS_SHIFT) & 0x1f) + 1) as usize;
        let s64a = cap & CAP_S64A != 0;
        device.set_bus_mastering(true)?;
        log(
            LogLevel::Info,
            &format!(
                "AHCI {}.{}, ports {implemented:#x}, {slot_count} command slots, {}-bit DMA",
                version >> 16,
                (version >> 8) & 0xff,
                if s64a { 64 } else { 32 }
            ),
        );
        let mut ports = Vec::new();
        let mut parked = Vec::new();
        for number in 0..32u32 {
            let base = PORT_REGISTERS + PORT_BYTES * u64::from(number);
            if implemented & (1 << number) == 0 || base + PORT_BYTES > size {
                continue;
            }
            let probe = Probe {
                registers: &registers,
                device: &device,
                number,
                base,
                s64a,
            };
            if let Some(port) = probe.run(slot_count, &mut parked) {
                ports.push(port);
            }
        }
        let interrupt = match device.interrupt() {
            Ok(interrupt) => Some(interrupt),
            Err(code) => {
                log(
                    LogLevel::Warn,
                    &format!("no interrupt ({}): completions by polling", code.name()),
                );
                None
            }
        };
        let mut enable = Batch::default();
        for port in &ports {
            enable
                .write32(port.base() + PX_IS, ALL_ONES)
                .write32(port.base() + PX_IE, IE_ENABLED);
        }
        let enabled = enable
            .write32(IS, ALL_ONES)
            .modify32(GHC, 0, GHC_IE)
            .on_registers(&registers, "enabling interrupts");
        if let Err(code) = enabled {
            // The ports' memory goes back with them: stop every port first.
            let _ = registers.write(GHC, Width::W32, GHC_AE | GHC_HR);
            return Err(code);
        }
        let disks = ports
            .iter()
            .map(|port| DiskInfo {
                index: port.number,
                sector_size: port.identity.sector_size,
                sector_count: port.identity.sector_count,
                model: port.identity.model.clone(),
                serial: port.identity.serial.clone(),
                queue_depth: slot_count as u32,
                max_sectors: port.max_sectors,
            })
            .collect();
        let hba = Hba {
            registers,
            interrupt,
            ports,
            s64a,
            _parked: parked,
            _device: device,
        };
        Ok((hba, disks))
    }

    /// Queues each request on its disk's port; all the new commands of a port are written in
    /// one batch and issued with one PxCI write.
    pub fn submit(&mut self, requests: Vec<BlockRequest>, done: &mut Vec<BlockCompletion>) {
        let mut prepared: Vec<(Batch, u32)> =
            self.ports.iter().map(|_| Default::default()).collect();
        for request in requests {
            let Some(index) = self.ports.iter().position(|p| p.number == request.disk) else {
                done.push(refused(request, ErrorCode::NoSuchResource));
                continue;
            };
            let (batch, slots) = &mut prepared[index];
            match self.ports[index].prepare(request, batch, self.s64a) {
                Ok(slot) => *slots |= 1 << slot,
                Err(completion) => done.push(completion),
            }
        }
        for (port, (batch, slots)) in self.ports.iter_mut().zip(prepared) {
            if slots != 0 {
                port.issue(&self.registers, &batch, slots, done);
            }
        }
    }

    /// Reads every port's PxCI, PxIS and PxCMD in one batch and lets the ports act on them.
    /// With `acknowledge` (after an interrupt) it also reads HBA IS and clears the causes it
    /// saw, the ports' first (W1C), then the HBA's, and tells the host; true if any was set.
    pub fn poll(&mut self, acknowledge: bool, done: &mut Vec<BlockCompletion>) -> bool {
        let live: Vec<usize> = (0..self.ports.len())
            .filter(|i| self.ports[*i].in_service())
            .collect();
        let mut batch = Batch::default();
        if acknowledge {
            batch.read32(IS);
        }
        for &i in &live {
            let base = self.ports[i].base();
            batch
                .read32(base + PX_CI)
                .read32(base + PX_IS)
                .read32(base + PX_CMD);
        }
        let Ok(values) = batch.on_registers(&self.registers, "port status") else {
            return false;
        };
        let (hba_causes, per_port) = if acknowledge {
            (values[0], &values[1..])
        } else {
            (0, &values[..])
        };
        let mut ours = hba_causes != 0;
        if acknowledge {
            let mut clear = Batch::default();
            let mut handled = hba_causes;
            for (&i, state) in live.iter().zip(per_port.chunks(3)) {
                if state[1] != 0 {
                    clear.write32(self.ports[i].base() + PX_IS, state[1]);
                    handled |= 1 << self.ports[i].number;
                    ours = true;
                }
            }
            if handled != 0 {
                clear.write32(IS, handled);
                let _ = clear.on_registers(&self.registers, "clearing interrupts");
            }
            if let Some(interrupt) = &self.interrupt {
                let _ = interrupt.acknowledge();
            }
        }
        let now = now_ns();
        for (&i, state) in live.iter().zip(per_port.chunks(3)) {
            self.ports[i].service(&self.registers, state[0], state[1], state[2], now, done);
        }
        ours
    }
}

/// Looking at one implemented port during start-up.
struct Probe<'a> {
    registers: &'a MmioRegion,
    device: &'a Device,
    number: u32,
    base: u64,
    s64a: bool,
}

impl Probe<'_> {
    /// The port as a disk port, or `None` (with the reason logged) if it has no ATA disk.
    fn run(&self, slot_count: usize, parked: &mut Vec<DmaBuffer>) -> Option<Port> {
        if !self.link_up() {
            log(LogLevel::Debug, &format!("port {}: empty", self.number));
            return None;
        }
        let memory = self.memory()?;
        let address = memory.device_address().ok()?;
        // The command engine and FIS receive must be off before CLB and FB change.
        let stopped = Batch::default()
            .modify32(self.base + PX_CMD, CMD_ST, 0)
            .poll32(self.base + PX_CMD, CMD_CR, 0, STOP_TIMEOUT_NS)
            .modify32(self.base + PX_CMD, CMD_FRE, 0)
            .poll32(self.base + PX_CMD, CMD_FR, 0, STOP_TIMEOUT_NS)
            .on_registers(self.registers, "stopping the port");
        if stopped.is_err() {
            self.skip("does not stop");
            return None;
        }
        let fis = address + RECEIVED_FIS;
        // PxSIG is valid once FIS receive has taken the device's first D2H register FIS.
        let attached = Batch::default()
            .write32(self.base + PX_CLB, address)
            .write32(self.base + PX_CLBU, address >> 32)
            .write32(self.base + PX_FB, fis)
            .write32(self.base + PX_FBU, fis >> 32)
            .write32(self.base + PX_SERR, ALL_ONES)
            .write32(self.base + PX_IE, 0)
            .write32(self.base + PX_IS, ALL_ONES)
            .modify32(self.base + PX_CMD, 0, CMD_FRE | CMD_SUD | CMD_POD)
            .poll32(self.base + PX_TFD, TFD_BSY | TFD_DRQ, 0, READY_TIMEOUT_NS)
            .read32(self.base + PX_SIG)
            .on_registers(self.registers, "attaching the port");
        let signature = match attached {
            Ok(values) => values[1],
            Err(_) => {
                self.skip("device not ready");
                self.release(memory, parked);
                return None;
            }
        };
        match signature {
            SIGNATURE_ATA => {}
            SIGNATURE_ATAPI => {
                self.skip("ATAPI device (CD/DVD drive), left alone");
                self.release(memory, parked);
                return None;
            }
            other => {
                self.skip(&format!("device with signature {other:#010x}, left alone"));
                self.release(memory, parked);
                return None;
            }
        }
        match Port::open(
            self.registers,
            self.number,
            self.base,
            memory,
            address,
            slot_count,
        ) {
            Ok(port) => {
                let identity = &port.identity;
                log(
                    LogLevel::Info,
                    &format!(
                        "port {}: {} (serial {}), {} sectors of {} bytes, {}-bit LBA",
                        self.number,
                        identity.model,
                        identity.serial,
                        identity.sector_count,
                        identity.sector_size,
                        if identity.lba48 { 48 } else { 28 }
                    ),
                );
                Some(port)
            }
            Err((why, memory)) => {
                self.skip(&why);
                self.release(memory, parked);
                None
            }
        }
    }

    /// A device is there with the link up (SSTS.DET 3). One still bringing its link up
    /// (DET 1), or behind a port whose device is not spun up yet (staggered spin-up leaves
    /// PxCMD.SUD clear after a reset; QEMU sets it), gets a moment.
    fn link_up(&self) -> bool {
        let Ok(state) = Batch::default()
            .read32(self.base + PX_SSTS)
            .read32(self.base + PX_CMD)
            .on_registers(self.registers, "link status")
        else {
            return false;
        };
        let (detected, spun_up) = (state[0] & SSTS_DET, state[1] & CMD_SUD != 0);
        let mut wait = Batch::default();
        match (detected, spun_up) {
            (DET_ESTABLISHED, _) => return true,
            (1, _) => {}
            (0, false) => {
                wait.modify32(self.base + PX_CMD, 0, CMD_SUD | CMD_POD);
            }
            _ => return false,
        }
        wait.poll32(
            self.base + PX_SSTS,
            SSTS_DET,
            DET_ESTABLISHED,
            LINK_UP_TIMEOUT_NS,
        )
        .on_registers(self.registers, "link up")
        .is_ok()
    }

    fn memory(&self) -> Option<DmaBuffer> {
        let memory = match self.device.allocate_dma(MEMORY_BYTES, MEMORY_ALIGN) {
            Ok(memory) => memory,
            Err(code) => {
                self.skip(&format!("no DMA memory ({})", code.name()));
                return None;
            }
        };
        let address = memory.device_address().ok()?;
        if !self.s64a && address.saturating_add(MEMORY_BYTES) > 1 << 32 {
            self.skip("DMA memory above 4 GiB on a 32-bit HBA");
            return None;
        }
        Some(memory)
    }

    fn skip(&self, why: &str) {
        log(LogLevel::Info, &format!("port {}: {why}", self.number));
    }

    /// Stops the port's command engine and FIS receive; its memory is given back only if they
    /// did stop.
    fn release(&self, memory: DmaBuffer, parked: &mut Vec<DmaBuffer>) {
        let stopped = Batch::default()
            .modify32(self.base + PX_CMD, CMD_ST | CMD_FRE, 0)
            .poll32(self.base + PX_CMD, CMD_CR | CMD_FR, 0, STOP_TIMEOUT_NS)
            .write32(self.base + PX_IS, ALL_ONES)
            .on_registers(self.registers, "stopping the port");
        if stopped.is_err() {
            parked.push(memory);
        }
    }
}
