//! A WASI-dd network driver for the Intel 82540EM (8086:100e, QEMU's `e1000`), world
//! `nic-driver`.
//!
//! BAR 0 holds the registers (128 KiB, every access 32 bits wide). Two rings of legacy
//! descriptors (16 bytes each; 256 to receive, as Linux's driver has, and 32 to transmit) live
//! in DMA buffers the driver allocates; the frames themselves
//! are in buffers the host allocates and hands over. A transmit buffer stays in the driver from
//! `transmit` until its descriptor reports done (DD) and `reclaim` hands it back; a receive
//! buffer stays from `supply-rx` until the device filled it and `receive` hands it back. A ring
//! holds one buffer fewer than it has descriptors: the device treats head == tail as empty.

#![deny(unsafe_code)]

#[allow(unsafe_code)]
mod bindings {
    wit_bindgen::generate!({ path: "../../wit/dd", world: "nic-driver" });
}

use std::cell::RefCell;

use bindings::exports::wasi_dd::dd::nic::{Guest, LinkStatus, RxFrame, TxFrame};
use bindings::wasi_dd::dd::dma::DmaBuffer;
use bindings::wasi_dd::dd::irq::Interrupt;
use bindings::wasi_dd::dd::mmio::MmioRegion;
use bindings::wasi_dd::dd::pci::Device;
use bindings::wasi_dd::dd::platform::{LogLevel, log, parameters};
use bindings::wasi_dd::dd::types::{BatchError, ErrorCode, Width};

const BAR0_SIZE: u64 = 0x2_0000;

const CTRL: u64 = 0x0000;
const STATUS: u64 = 0x0008;
const EERD: u64 = 0x0014;
const ICR: u64 = 0x00c0;
const IMS: u64 = 0x00d0;
const IMC: u64 = 0x00d8;
const RCTL: u64 = 0x0100;
const TCTL: u64 = 0x0400;
const TIPG: u64 = 0x0410;
const RDBAL: u64 = 0x2800;
const RDBAH: u64 = 0x2804;
const RDLEN: u64 = 0x2808;
const RDH: u64 = 0x2810;
const RDT: u64 = 0x2818;
const TDBAL: u64 = 0x3800;
const TDBAH: u64 = 0x3804;
const TDLEN: u64 = 0x3808;
const TDH: u64 = 0x3810;
const TDT: u64 = 0x3818;
const MTA: u64 = 0x5200;
const MTA_ENTRIES: u64 = 128;
const RAL0: u64 = 0x5400;
const RAH0: u64 = 0x5404;

const CTRL_LRST: u64 = 1 << 3;
const CTRL_ASDE: u64 = 1 << 5;
const CTRL_SLU: u64 = 1 << 6;
const CTRL_ILOS: u64 = 1 << 7;
const CTRL_RST: u64 = 1 << 26;
const CTRL_VME: u64 = 1 << 30;
const CTRL_PHY_RST: u64 = 1 << 31;

const STATUS_FD: u64 = 1 << 0;
const STATUS_LU: u64 = 1 << 1;
const STATUS_SPEED_SHIFT: u64 = 6;

const EERD_START: u64 = 1 << 0;
const EERD_DONE: u64 = 1 << 4;
const EERD_ADDR_SHIFT: u64 = 8;
const EERD_DATA_SHIFT: u64 = 16;

const INT_TXDW: u64 = 1 << 0;
const INT_LSC: u64 = 1 << 2;
const INT_RXDMT0: u64 = 1 << 4;
const INT_RXO: u64 = 1 << 6;
const INT_RXT0: u64 = 1 << 7;
const INT_ALL: u64 = 0xffff_ffff;
const INT_ENABLED: u64 = INT_RXT0 | INT_RXO | INT_RXDMT0 | INT_LSC | INT_TXDW;

/// Receive on, broadcasts accepted, 2048-byte buffers (BSIZE 0, BSEX 0), CRC stripped.
const RCTL_EN: u64 = 1 << 1;
const RCTL_BAM: u64 = 1 << 15;
const RCTL_SECRC: u64 = 1 << 26;
const RCTL_VALUE: u64 = RCTL_EN | RCTL_BAM | RCTL_SECRC;
/// Transmit on, short frames padded, collision threshold 15, full-duplex collision distance 64.
const TCTL_EN: u64 = 1 << 1;
const TCTL_PSP: u64 = 1 << 3;
const TCTL_CT: u64 = 0x0f << 4;
const TCTL_COLD: u64 = 0x40 << 12;
const TCTL_VALUE: u64 = TCTL_EN | TCTL_PSP | TCTL_CT | TCTL_COLD;
/// IPGT 10, IPGR1 8, IPGR2 6 (the datasheet's values for the 82540EM's copper PHY).
const TIPG_VALUE: u64 = 10 | (8 << 10) | (6 << 20);
const RAH_AV: u64 = 1 << 31;

/// Receive descriptors: at 32, a burst arriving while the host was busy overran the ring.
const RX_RING: usize = 256;
const TX_RING: usize = 32;
const DESCRIPTOR_BYTES: u64 = 16;
/// Status words read per batch while looking for received frames.
const STATUS_CHUNK: usize = 16;
/// Descriptor rings: base 16-byte aligned, length a multiple of 128 bytes.
const RING_ALIGN: u64 = 128;
const RX_BUFFER_BYTES: u64 = 2048;
const TX_MAX_FRAME: u32 = 16288;

/// The second 8 bytes of a descriptor as one little-endian word.
const TX_CMD_SHIFT: u64 = 24;
const TX_CMD_EOP: u64 = 1 << 0;
const TX_CMD_IFCS: u64 = 1 << 1;
const TX_CMD_RS: u64 = 1 << 3;
const TX_STA_SHIFT: u64 = 32;
const TX_STA_DD: u64 = 1 << 0;
const TX_STA_EC: u64 = 1 << 1;
const TX_STA_LC: u64 = 1 << 2;
const RX_STATUS_SHIFT: u64 = 32;
const RX_ERRORS_SHIFT: u64 = 40;
const RX_STA_DD: u64 = 1 << 0;
const RX_STA_EOP: u64 = 1 << 1;

const RESET_SETTLE_NS: u64 = 1_000;
const RESET_TIMEOUT_NS: u64 = 10_000_000;
const EEPROM_TIMEOUT_NS: u64 = 10_000_000;

/// Packed batch operations (`wasi-dd:dd/types`): a header word of kind, width and offset.
#[derive(Default)]
struct Batch(Vec<u64>);

const OP_READ: u64 = 0;
const OP_WRITE: u64 = 1;
const OP_MODIFY: u64 = 2;
const OP_POLL: u64 = 3;
const OP_DELAY: u64 = 4;
const W32: u64 = 2;
const W64: u64 = 3;

impl Batch {
    fn header(kind: u64, width: u64, offset: u64) -> u64 {
        kind | (width << 8) | (offset << 16)
    }

    fn read32(&mut self, offset: u64) -> &mut Self {
        self.0.push(Self::header(OP_READ, W32, offset));
        self
    }

    fn write32(&mut self, offset: u64, value: u64) -> &mut Self {
        self.0
            .extend([Self::header(OP_WRITE, W32, offset), value & 0xffff_ffff]);
        self
    }

    fn modify32(&mut self, offset: u64, clear: u64, set: u64) -> &mut Self {
        self.0
            .extend([Self::header(OP_MODIFY, W32, offset), clear, set]);
        self
    }

    fn poll32(&mut self, offset: u64, mask: u64, expect: u64, timeout_ns: u64) -> &mut Self {
        self.0
            .extend([Self::header(OP_POLL, W32, offset), mask, expect, timeout_ns]);
        self
    }

    fn delay(&mut self, ns: u64) -> &mut Self {
        self.0.extend([Self::header(OP_DELAY, 0, 0), ns]);
        self
    }

    fn read64(&mut self, offset: u64) -> &mut Self {
        self.0.push(Self::header(OP_READ, W64, offset));
        self
    }

    fn write64(&mut self, offset: u64, value: u64) -> &mut Self {
        self.0.extend([Self::header(OP_WRITE, W64, offset), value]);
        self
    }

    fn on_registers(&self, registers: &MmioRegion, what: &str) -> Result<Vec<u64>, ErrorCode> {
        registers.batch_packed(&self.0).map_err(|e| failed(what, e))
    }

    fn on_memory(&self, memory: &DmaBuffer, what: &str) -> Result<Vec<u64>, ErrorCode> {
        memory.batch_packed(&self.0).map_err(|e| failed(what, e))
    }
}

fn failed(what: &str, error: BatchError) -> ErrorCode {
    log(
        LogLevel::Error,
        &format!(
            "{what}: operation {} failed: {}",
            error.index,
            error.code.name()
        ),
    );
    error.code
}

/// A descriptor ring and the host buffers its descriptors point at. Descriptors `head` up to
/// (not including) `tail` hold a buffer; the device owns those it has not marked done.
struct Ring {
    memory: DmaBuffer,
    size: usize,
    buffers: Vec<Option<DmaBuffer>>,
    head: usize,
    tail: usize,
}

impl Ring {
    fn new(device: &Device, size: usize) -> Result<(Ring, u64), ErrorCode> {
        let memory = device.allocate_dma(Self::bytes(size), RING_ALIGN)?;
        let address = memory.device_address()?;
        let ring = Ring {
            memory,
            size,
            buffers: (0..size).map(|_| None).collect(),
            head: 0,
            tail: 0,
        };
        Ok((ring, address))
    }

    /// The ring's length in bytes (a multiple of [`RING_ALIGN`] for the sizes used).
    const fn bytes(size: usize) -> u64 {
        size as u64 * DESCRIPTOR_BYTES
    }

    fn in_use(&self) -> usize {
        (self.tail + self.size - self.head) % self.size
    }

    fn room(&self) -> usize {
        self.size - 1 - self.in_use()
    }

    /// The second words (length, command or status) of the `count` descriptors from `head`.
    fn status_words(&self, count: usize, what: &str) -> Vec<u64> {
        self.status_words_from(0, count, what)
    }

    /// The second words of `count` descriptors, starting `skip` descriptors after `head`.
    fn status_words_from(&self, skip: usize, count: usize, what: &str) -> Vec<u64> {
        let mut batch = Batch::default();
        for i in skip..skip + count {
            batch.read64(descriptor((self.head + i) % self.size) + 8);
        }
        batch.on_memory(&self.memory, what).unwrap_or_default()
    }

    /// The second words of the descriptors from `head` that the device has marked done
    /// (`done_bit` in the status byte at `status_shift`), up to `max`: read a chunk at a time,
    /// so a large ring with few frames costs little.
    fn done_words(&self, max: usize, status_shift: u64, done_bit: u64, what: &str) -> Vec<u64> {
        let count = self.in_use().min(max);
        let mut words = Vec::new();
        while words.len() < count {
            let chunk = (count - words.len()).min(STATUS_CHUNK);
            let read = self.status_words_from(words.len(), chunk, what);
            let done = read
                .iter()
                .take_while(|&&word| (word >> status_shift) & done_bit != 0)
                .count();
            words.extend_from_slice(&read[..done]);
            if done < chunk {
                break;
            }
        }
        words
    }

    /// Points the next descriptors at `buffers` (with their device addresses and second words)
    /// and keeps the buffers; the caller checked there is room. Returns the new tail.
    fn fill(&mut self, buffers: Vec<(DmaBuffer, u64, u64)>, what: &str) -> Result<u64, ErrorCode> {
        let mut batch = Batch::default();
        for (i, (_, address, word)) in buffers.iter().enumerate() {
            let slot = descriptor((self.tail + i) % self.size);
            batch.write64(slot, *address).write64(slot + 8, *word);
        }
        batch.on_memory(&self.memory, what)?;
        for (buffer, _, _) in buffers {
            self.buffers[self.tail] = Some(buffer);
            self.tail = (self.tail + 1) % self.size;
        }
        Ok(self.tail as u64)
    }

    /// Hands back the buffer of the descriptor at `head` and moves past it.
    fn take(&mut self) -> Option<DmaBuffer> {
        let buffer = self.buffers[self.head].take();
        self.head = (self.head + 1) % self.size;
        buffer
    }
}

fn descriptor(index: usize) -> u64 {
    index as u64 * DESCRIPTOR_BYTES
}

#[derive(Default)]
struct Statistics {
    rx_packets: u64,
    rx_bytes: u64,
    rx_errors: u64,
    rx_overruns: u64,
    tx_packets: u64,
    tx_bytes: u64,
    tx_errors: u64,
}

#[derive(Clone, Copy)]
struct Link {
    up: bool,
    speed_mbps: u32,
    full_duplex: bool,
}

impl Link {
    fn from_status(status: u64) -> Link {
        if status & STATUS_LU == 0 {
            return Link {
                up: false,
                speed_mbps: 0,
                full_duplex: false,
            };
        }
        let speed_mbps = match (status >> STATUS_SPEED_SHIFT) & 0b11 {
            0b00 => 10,
            0b01 => 100,
            _ => 1000,
        };
        Link {
            up: true,
            speed_mbps,
            full_duplex: status & STATUS_FD != 0,
        }
    }
}

struct Nic {
    registers: MmioRegion,
    interrupt: Interrupt,
    rx: Ring,
    tx: Ring,
    /// Receive descriptors up to the next end of packet belong to a frame being dropped.
    rx_discarding: bool,
    link: Link,
    statistics: Statistics,
    /// Fault injection, so that hosts can test how they contain a driver that fails
    /// mid-traffic: once it has moved N frames it traps (`fault-after-frames=N`) or never
    /// returns again (`hang-after-frames=N`).
    fault_injection: Option<(FaultKind, u64)>,
    _device: Device,
}

/// How an injected fault shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FaultKind {
    Trap,
    Hang,
}

/// The instance's parameters; unknown keys and bad values are refused.
fn fault_injection() -> Result<Option<(FaultKind, u64)>, ErrorCode> {
    let mut fault = None;
    for (key, value) in parameters() {
        match (key.as_str(), value.parse::<u64>()) {
            ("fault-after-frames", Ok(frames)) => fault = Some((FaultKind::Trap, frames)),
            ("hang-after-frames", Ok(frames)) => fault = Some((FaultKind::Hang, frames)),
            _ => {
                log(
                    LogLevel::Error,
                    &format!(
                        "unknown parameter {key}={value} (known: fault-after-frames=N, \
                         hang-after-frames=N)"
                    ),
                );
                return Err(ErrorCode::Unsupported);
            }
        }
    }
    Ok(fault)
}

impl Nic {
    fn start(device: Device) -> Result<(Nic, [u8; 6]), ErrorCode> {
        let fault_injection = fault_injection()?;
        let registers = device.map_bar(0)?;
        if registers.size() < BAR0_SIZE {
            return Err(ErrorCode::NoSuchResource);
        }
        Batch::default()
            .write32(IMC, INT_ALL)
            .modify32(CTRL, 0, CTRL_RST)
            .delay(RESET_SETTLE_NS)
            .poll32(CTRL, CTRL_RST, 0, RESET_TIMEOUT_NS)
            .write32(IMC, INT_ALL)
            .read32(ICR)
            .on_registers(&registers, "reset")?;
        let mac = read_mac(&registers)?;
        let mut setup = Batch::default();
        setup
            .write32(
                RAL0,
                u64::from(u32::from_le_bytes([mac[0], mac[1], mac[2], mac[3]])),
            )
            .write32(
                RAH0,
                u64::from(u16::from_le_bytes([mac[4], mac[5]])) | RAH_AV,
            )
            .modify32(
                CTRL,
                CTRL_LRST | CTRL_PHY_RST | CTRL_ILOS | CTRL_VME,
                CTRL_SLU | CTRL_ASDE,
            );
        for i in 0..MTA_ENTRIES {
            setup.write32(MTA + 4 * i, 0);
        }
        setup.on_registers(&registers, "link and filters")?;

        let (rx, rx_address) = Ring::new(&device, RX_RING)?;
        let (tx, tx_address) = Ring::new(&device, TX_RING)?;
        device.set_bus_mastering(true)?;
        let interrupt = device.interrupt()?;
        let started = Batch::default()
            .write32(RDBAL, rx_address)
            .write32(RDBAH, rx_address >> 32)
            .write32(RDLEN, Ring::bytes(RX_RING))
            .write32(RDH, 0)
            .write32(RDT, 0)
            .write32(RCTL, RCTL_VALUE)
            .write32(TDBAL, tx_address)
            .write32(TDBAH, tx_address >> 32)
            .write32(TDLEN, Ring::bytes(TX_RING))
            .write32(TDH, 0)
            .write32(TDT, 0)
            .write32(TIPG, TIPG_VALUE)
            .write32(TCTL, TCTL_VALUE)
            .write32(IMS, INT_ENABLED)
            .read32(STATUS)
            .on_registers(&registers, "rings")?;
        let link = Link::from_status(started[0]);
        let nic = Nic {
            registers,
            interrupt,
            rx,
            tx,
            rx_discarding: false,
            link,
            statistics: Statistics::default(),
            fault_injection,
            _device: device,
        };
        log(
            LogLevel::Info,
            &format!(
                "82540EM {}, link {}",
                mac.iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<Vec<_>>()
                    .join(":"),
                nic.describe_link()
            ),
        );
        Ok((nic, mac))
    }

    fn describe_link(&self) -> String {
        if self.link.up {
            let duplex = if self.link.full_duplex {
                "full"
            } else {
                "half"
            };
            format!("up, {} Mb/s {duplex} duplex", self.link.speed_mbps)
        } else {
            "down".into()
        }
    }

    fn transmit(&mut self, mut frames: Vec<TxFrame>) -> Result<u32, ErrorCode> {
        self.check_fault_injection();
        frames.truncate(self.tx.room());
        let mut queued = Vec::with_capacity(frames.len());
        for frame in frames {
            if frame.length == 0
                || frame.length > TX_MAX_FRAME
                || u64::from(frame.length) > frame.buffer.size()
            {
                return Err(ErrorCode::OutOfRange);
            }
            let address = frame.buffer.device_address()?;
            let command = TX_CMD_EOP | TX_CMD_IFCS | TX_CMD_RS;
            let word = u64::from(frame.length) | (command << TX_CMD_SHIFT);
            queued.push((frame.buffer, address, word));
        }
        if queued.is_empty() {
            return Ok(0);
        }
        let count = queued.len() as u32;
        let tail = self.tx.fill(queued, "transmit descriptors")?;
        self.registers.write(TDT, Width::W32, tail)?;
        Ok(count)
    }

    fn reclaim(&mut self) -> Vec<DmaBuffer> {
        let words = self.tx.status_words(self.tx.in_use(), "transmit status");
        let mut sent = Vec::new();
        for word in words {
            let status = (word >> TX_STA_SHIFT) & 0xf;
            if status & TX_STA_DD == 0 {
                break;
            }
            if status & (TX_STA_EC | TX_STA_LC) != 0 {
                self.statistics.tx_errors += 1;
            } else {
                self.statistics.tx_packets += 1;
                self.statistics.tx_bytes += word & 0xffff;
            }
            sent.extend(self.tx.take());
        }
        sent
    }

    fn supply(&mut self, mut buffers: Vec<DmaBuffer>) -> Result<u32, ErrorCode> {
        buffers.truncate(self.rx.room());
        let mut posted = Vec::with_capacity(buffers.len());
        for buffer in buffers {
            if buffer.size() < RX_BUFFER_BYTES {
                return Err(ErrorCode::OutOfRange);
            }
            let address = buffer.device_address()?;
            posted.push((buffer, address, 0));
        }
        if posted.is_empty() {
            return Ok(0);
        }
        let count = posted.len() as u32;
        let tail = self.rx.fill(posted, "receive descriptors")?;
        self.registers.write(RDT, Width::W32, tail)?;
        Ok(count)
    }

    /// Traps (a Rust panic is a Wasm `unreachable`) or spins forever once the injected fault
    /// is due.
    fn check_fault_injection(&self) {
        let moved = self.statistics.rx_packets + self.statistics.tx_packets;
        match self.fault_injection {
            Some((FaultKind::Trap, limit)) if moved >= limit => {
                panic!("fault injection: {moved} frames moved (fault-after-frames={limit})");
            }
            Some((FaultKind::Hang, limit)) if moved >= limit => {
                log(
                    LogLevel::Warn,
                    &format!(
                        "fault injection: {moved} frames moved, hanging (hang-after-frames={limit})"
                    ),
                );
                #[allow(clippy::empty_loop)]
                loop {}
            }
            _ => {}
        }
    }

    fn receive(&mut self, max: u32) -> Vec<RxFrame> {
        self.check_fault_injection();
        let words = self
            .rx
            .done_words(max as usize, RX_STATUS_SHIFT, RX_STA_DD, "receive status");
        let mut frames = Vec::new();
        let mut recycled = Vec::new();
        for word in words {
            let status = (word >> RX_STATUS_SHIFT) & 0xff;
            if status & RX_STA_DD == 0 {
                break;
            }
            let errors = (word >> RX_ERRORS_SHIFT) & 0xff;
            let length = (word & 0xffff) as u32;
            let end = status & RX_STA_EOP != 0;
            let Some(buffer) = self.rx.take() else {
                continue;
            };
            let whole = !self.rx_discarding && end && errors == 0 && length > 0;
            self.rx_discarding = !end;
            if whole {
                self.statistics.rx_packets += 1;
                self.statistics.rx_bytes += u64::from(length);
                frames.push(RxFrame { buffer, length });
            } else {
                if end {
                    self.statistics.rx_errors += 1;
                }
                recycled.push(buffer);
            }
        }
        if !recycled.is_empty()
            && let Err(code) = self.supply(recycled)
        {
            log(
                LogLevel::Error,
                &format!("re-posting receive buffers: {}", code.name()),
            );
        }
        frames
    }

    fn handle_interrupt(&mut self) -> bool {
        let cause = match self.registers.read(ICR, Width::W32) {
            Ok(cause) => cause,
            Err(code) => {
                log(LogLevel::Error, &format!("reading ICR: {}", code.name()));
                return false;
            }
        };
        let _ = self.interrupt.acknowledge();
        if cause & INT_RXO != 0 {
            self.statistics.rx_overruns += 1;
        }
        if cause & INT_LSC != 0
            && let Ok(status) = self.registers.read(STATUS, Width::W32)
        {
            self.link = Link::from_status(status);
            log(LogLevel::Info, &format!("link {}", self.describe_link()));
            let s = &self.statistics;
            log(
                LogLevel::Debug,
                &format!(
                    "rx {} packets {} bytes {} errors {} overruns, tx {} packets {} bytes {} errors",
                    s.rx_packets,
                    s.rx_bytes,
                    s.rx_errors,
                    s.rx_overruns,
                    s.tx_packets,
                    s.tx_bytes,
                    s.tx_errors
                ),
            );
        }
        cause != 0
    }
}

/// The station address: RAL0/RAH0 as the device loaded them, else EEPROM words 0-2.
fn read_mac(registers: &MmioRegion) -> Result<[u8; 6], ErrorCode> {
    let loaded = Batch::default()
        .read32(RAL0)
        .read32(RAH0)
        .on_registers(registers, "receive address")?;
    let (low, high) = (loaded[0] as u32, loaded[1] as u32 & 0xffff);
    let words: [u16; 3] = if low != 0 || high != 0 {
        [low as u16, (low >> 16) as u16, high as u16]
    } else {
        let mut batch = Batch::default();
        for word in 0..3 {
            batch
                .write32(EERD, EERD_START | (word << EERD_ADDR_SHIFT))
                .poll32(EERD, EERD_DONE, EERD_DONE, EEPROM_TIMEOUT_NS);
        }
        let read = batch.on_registers(registers, "EEPROM")?;
        [0, 1, 2].map(|i| (read[i] >> EERD_DATA_SHIFT) as u16)
    };
    let mut mac = [0u8; 6];
    for (i, word) in words.iter().enumerate() {
        mac[2 * i..2 * i + 2].copy_from_slice(&word.to_le_bytes());
    }
    Ok(mac)
}

thread_local! {
    static NIC: RefCell<Option<Nic>> = const { RefCell::new(None) };
}

fn with_nic<R>(idle: R, f: impl FnOnce(&mut Nic) -> R) -> R {
    NIC.with(|nic| match nic.borrow_mut().as_mut() {
        Some(nic) => f(nic),
        None => idle,
    })
}

struct Driver;

impl Guest for Driver {
    fn init(device: Device) -> Result<Vec<u8>, ErrorCode> {
        let (nic, mac) = Nic::start(device)?;
        NIC.with(|slot| *slot.borrow_mut() = Some(nic));
        Ok(mac.to_vec())
    }

    fn link() -> LinkStatus {
        let link = with_nic(
            Link {
                up: false,
                speed_mbps: 0,
                full_duplex: false,
            },
            |nic| nic.link,
        );
        LinkStatus {
            up: link.up,
            speed_mbps: link.speed_mbps,
            full_duplex: link.full_duplex,
        }
    }

    fn transmit(frames: Vec<TxFrame>) -> Result<u32, ErrorCode> {
        with_nic(Err(ErrorCode::NoSuchResource), |nic| nic.transmit(frames))
    }

    fn reclaim() -> Vec<DmaBuffer> {
        with_nic(Vec::new(), Nic::reclaim)
    }

    fn supply_rx(buffers: Vec<DmaBuffer>) -> Result<u32, ErrorCode> {
        with_nic(Err(ErrorCode::NoSuchResource), |nic| nic.supply(buffers))
    }

    fn receive(max: u32) -> Vec<RxFrame> {
        with_nic(Vec::new(), |nic| nic.receive(max))
    }

    fn handle_interrupt() -> bool {
        with_nic(false, Nic::handle_interrupt)
    }
}

#[allow(unsafe_code)]
mod export {
    use super::Driver;
    crate::bindings::export!(Driver with_types_in crate::bindings);
}
