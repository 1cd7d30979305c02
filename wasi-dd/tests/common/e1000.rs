//! A fake Intel 82540EM (QEMU's `e1000`, 8086:100e) behind a fake [`Platform`], for the tests
//! of the `e1000` driver: a 128 KiB register file (reset that clears itself after a few reads,
//! RAL0/RAH0 loaded from an EEPROM, ICR cleared by reading, IMS/IMC), DMA memory the device
//! reaches by address, a transmit engine that runs on a TDT write, a receive injector, and a
//! cable to pull. Register accesses that are not 32-bit, DMA outside any live buffer and
//! accesses outside the BAR are recorded as violations.

use std::sync::{Arc, Mutex, MutexGuard};

use wasi_dd::platform::{DmaMemory, InterruptLine, LogLevel, MmioWindow, Platform, PlatformError};
use wasi_dd::types::{Access, Bar, BarKind, DeviceId, PciAddress, PciFunction};
use wasi_dd::{DriverHost, Limits, NicDriver};
use wasmtime::Store;
use wasmtime::component::Linker;

pub const BAR0_BASE: u64 = 0xfeb8_0000;
pub const BAR0_SIZE: u64 = 0x2_0000;
pub const PORT_BASE: u64 = 0xc040;
pub const PORT_COUNT: u64 = 0x40;
pub const DMA_BASE: u64 = 0x1_2000_0000;
pub const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];

pub const CTRL: u64 = 0x0000;
pub const STATUS: u64 = 0x0008;
pub const EERD: u64 = 0x0014;
pub const ICR: u64 = 0x00c0;
pub const ICS: u64 = 0x00c8;
pub const IMS: u64 = 0x00d0;
pub const IMC: u64 = 0x00d8;
pub const RCTL: u64 = 0x0100;
pub const TCTL: u64 = 0x0400;
pub const TIPG: u64 = 0x0410;
pub const RDBAL: u64 = 0x2800;
pub const RDBAH: u64 = 0x2804;
pub const RDLEN: u64 = 0x2808;
pub const RDH: u64 = 0x2810;
pub const RDT: u64 = 0x2818;
pub const TDBAL: u64 = 0x3800;
pub const TDBAH: u64 = 0x3804;
pub const TDLEN: u64 = 0x3808;
pub const TDH: u64 = 0x3810;
pub const TDT: u64 = 0x3818;
pub const MTA: u64 = 0x5200;
pub const RAL0: u64 = 0x5400;
pub const RAH0: u64 = 0x5404;

pub const CTRL_SLU: u32 = 1 << 6;
pub const CTRL_RST: u32 = 1 << 26;
pub const STATUS_FD: u32 = 1 << 0;
pub const STATUS_LU: u32 = 1 << 1;
pub const STATUS_SPEED_1000: u32 = 0b10 << 6;
pub const EERD_START: u32 = 1 << 0;
pub const EERD_DONE: u32 = 1 << 4;
pub const INT_TXDW: u32 = 1 << 0;
pub const INT_LSC: u32 = 1 << 2;
pub const INT_RXO: u32 = 1 << 6;
pub const INT_RXT0: u32 = 1 << 7;
pub const RCTL_EN: u32 = 1 << 1;
pub const TCTL_EN: u32 = 1 << 1;
pub const RAH_AV: u32 = 1 << 31;
pub const TX_CMD_EOP: u8 = 1 << 0;
pub const TX_CMD_IFCS: u8 = 1 << 1;
pub const TX_CMD_RS: u8 = 1 << 3;
pub const RX_STA_DD: u8 = 1 << 0;
pub const RX_STA_EOP: u8 = 1 << 1;
pub const RX_ERR_CE: u8 = 1 << 0;
/// Reads of CTRL that still show RST after it was set.
pub const RESET_READS: u32 = 2;
/// The buffer size RCTL.BSIZE 0 (and BSEX 0) stands for.
pub const RX_BUFFER_BYTES: usize = 2048;

/// A frame the transmit engine took from the ring, with the command of its last descriptor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sent {
    pub bytes: Vec<u8>,
    pub command: u8,
}

pub struct State {
    pub registers: Vec<u32>,
    /// Every register write, in order: (offset, value).
    pub writes: Vec<(u64, u32)>,
    pub violations: Vec<String>,
    /// DMA buffers freed while the bus-master bit was on (fine for a buffer the device is done
    /// with; not for the rings of a driver that ended).
    pub freed_while_mastering: usize,
    pub config: [u8; 256],
    pub sent: Vec<Sent>,
    /// While set, TDT writes do not start the transmit engine (see [`FakeE1000::run_tx`]).
    pub tx_paused: bool,
    /// Whether reset loads RAL0/RAH0 from the EEPROM (a NIC whose EEPROM autoload is off
    /// leaves them zero).
    pub autoload_mac: bool,
    pub eeprom: [u16; 64],
    pub cable: bool,
    pub interrupts: u64,
    pub acknowledged: u64,
    pub logs: Vec<(LogLevel, String)>,
    pub allocations: Vec<(u64, u64)>,
    reset_reads_left: u32,
    pending: bool,
    dma: Vec<(u64, Arc<Mutex<Vec<u8>>>)>,
    next_dma: u64,
    now: u64,
}

impl State {
    fn new() -> Self {
        let mut config = [0u8; 256];
        let mut put = |offset: usize, bytes: &[u8]| {
            config[offset..offset + bytes.len()].copy_from_slice(bytes)
        };
        put(0x00, &0x8086u16.to_le_bytes());
        put(0x02, &0x100eu16.to_le_bytes());
        put(0x08, &[0x03, 0x00, 0x00, 0x02]);
        put(0x10, &(BAR0_BASE as u32).to_le_bytes());
        put(0x14, &(PORT_BASE as u32 | 1).to_le_bytes());
        put(0x2c, &0x8086u16.to_le_bytes());
        put(0x2e, &0x001eu16.to_le_bytes());
        put(0x3c, &[11, 1]);
        let mut eeprom = [0u16; 64];
        for (i, word) in eeprom.iter_mut().take(3).enumerate() {
            *word = u16::from_le_bytes([MAC[2 * i], MAC[2 * i + 1]]);
        }
        let mut state = State {
            registers: vec![0; (BAR0_SIZE / 4) as usize],
            writes: Vec::new(),
            violations: Vec::new(),
            freed_while_mastering: 0,
            config,
            sent: Vec::new(),
            tx_paused: false,
            autoload_mac: true,
            eeprom,
            cable: true,
            interrupts: 0,
            acknowledged: 0,
            logs: Vec::new(),
            allocations: Vec::new(),
            reset_reads_left: 0,
            pending: false,
            dma: Vec::new(),
            next_dma: DMA_BASE,
            now: 1_000_000,
        };
        state.reset();
        state
    }

    pub fn register(&self, offset: u64) -> u32 {
        self.registers[(offset / 4) as usize]
    }

    fn set(&mut self, offset: u64, value: u32) {
        self.registers[(offset / 4) as usize] = value;
    }

    /// Whether every DMA buffer was given back.
    pub fn dma_is_empty(&self) -> bool {
        self.dma.is_empty()
    }

    /// The bus-master bit of the PCI command register.
    pub fn bus_master(&self) -> bool {
        self.config[0x04] & 0x04 != 0
    }

    fn reset(&mut self) {
        self.registers.fill(0);
        if self.autoload_mac {
            self.set(RAL0, u32::from_le_bytes([MAC[0], MAC[1], MAC[2], MAC[3]]));
            self.set(
                RAH0,
                u32::from(u16::from_le_bytes([MAC[4], MAC[5]])) | RAH_AV,
            );
        }
        self.pending = false;
    }

    fn status(&self) -> u32 {
        if self.cable && self.register(CTRL) & CTRL_SLU != 0 {
            STATUS_LU | STATUS_FD | STATUS_SPEED_1000
        } else {
            0
        }
    }

    /// Sets cause bits in ICR; the interrupt fires when an enabled cause is newly pending.
    pub fn raise(&mut self, cause: u32) {
        let icr = self.register(ICR) | cause;
        self.set(ICR, icr);
        self.update_interrupt();
    }

    fn update_interrupt(&mut self) {
        let asserted = self.register(ICR) & self.register(IMS) != 0;
        if asserted && !self.pending {
            self.interrupts += 1;
        }
        self.pending = asserted;
    }

    fn read(&mut self, offset: u64) -> u32 {
        match offset {
            CTRL => {
                if self.reset_reads_left > 0 {
                    self.reset_reads_left -= 1;
                    if self.reset_reads_left == 0 {
                        let value = self.register(CTRL) & !CTRL_RST;
                        self.set(CTRL, value);
                    }
                    self.register(CTRL) | CTRL_RST
                } else {
                    self.register(CTRL)
                }
            }
            STATUS => self.status(),
            ICR => {
                let icr = self.register(ICR);
                self.set(ICR, 0);
                self.update_interrupt();
                icr
            }
            _ => self.register(offset),
        }
    }

    fn write(&mut self, offset: u64, value: u32) {
        self.writes.push((offset, value));
        match offset {
            CTRL if value & CTRL_RST != 0 => {
                self.reset();
                self.set(CTRL, value & !CTRL_RST);
                self.reset_reads_left = RESET_READS;
            }
            STATUS => {}
            EERD if value & EERD_START != 0 => {
                let address = (value >> 8) & 0xff;
                let data = self.eeprom.get(address as usize).copied().unwrap_or(0xffff);
                self.set(EERD, (u32::from(data) << 16) | (address << 8) | EERD_DONE);
            }
            ICR => {
                let icr = self.register(ICR) & !value;
                self.set(ICR, icr);
                self.update_interrupt();
            }
            ICS => self.raise(value),
            IMS => {
                let ims = self.register(IMS) | value;
                self.set(IMS, ims);
                self.update_interrupt();
            }
            IMC => {
                let ims = self.register(IMS) & !value;
                self.set(IMS, ims);
                self.update_interrupt();
            }
            TDT => {
                self.set(TDT, value);
                if !self.tx_paused {
                    self.run_tx();
                }
            }
            _ => self.set(offset, value),
        }
    }

    fn dma_buffer(&mut self, address: u64, len: usize) -> Option<(Arc<Mutex<Vec<u8>>>, usize)> {
        let found = self.dma.iter().find(|(base, memory)| {
            let size = memory.lock().unwrap().len() as u64;
            address >= *base && address + len as u64 <= base + size
        });
        match found {
            Some((base, memory)) => Some((memory.clone(), (address - base) as usize)),
            None => {
                self.violations
                    .push(format!("device DMA {len} bytes at {address:#x}: no buffer"));
                None
            }
        }
    }

    fn dma_read(&mut self, address: u64, len: usize) -> Vec<u8> {
        match self.dma_buffer(address, len) {
            Some((memory, offset)) => memory.lock().unwrap()[offset..offset + len].to_vec(),
            None => vec![0; len],
        }
    }

    fn dma_write(&mut self, address: u64, bytes: &[u8]) {
        if let Some((memory, offset)) = self.dma_buffer(address, bytes.len()) {
            memory.lock().unwrap()[offset..offset + bytes.len()].copy_from_slice(bytes);
        }
    }

    fn ring_base(&self, low: u64, high: u64) -> u64 {
        u64::from(self.register(low)) | (u64::from(self.register(high)) << 32)
    }

    /// Sends every descriptor from TDH to TDT: frames are gathered up to an end of packet,
    /// descriptors with RS get DD written back.
    pub fn run_tx(&mut self) {
        if self.register(TCTL) & TCTL_EN == 0 {
            return;
        }
        let count = self.register(TDLEN) / 16;
        let base = self.ring_base(TDBAL, TDBAH);
        let mut frame = Vec::new();
        let mut reported = false;
        while count > 0 && self.register(TDH) != self.register(TDT) {
            let head = self.register(TDH);
            let address = base + u64::from(head) * 16;
            let descriptor = self.dma_read(address, 16);
            let buffer = u64::from_le_bytes(descriptor[0..8].try_into().unwrap());
            let length = u16::from_le_bytes([descriptor[8], descriptor[9]]) as usize;
            let command = descriptor[11];
            frame.extend(self.dma_read(buffer, length));
            if command & TX_CMD_EOP != 0 {
                self.sent.push(Sent {
                    bytes: std::mem::take(&mut frame),
                    command,
                });
            }
            if command & TX_CMD_RS != 0 {
                self.dma_write(address + 12, &[descriptor[12] | 1]);
                reported = true;
            }
            self.set(TDH, (head + 1) % count);
        }
        if reported {
            self.raise(INT_TXDW);
        }
    }

    /// Receives `frame` into the descriptor at RDH, as the device does off the wire. False
    /// (and RXO raised) when the driver left no descriptor.
    pub fn inject(&mut self, frame: &[u8]) -> bool {
        self.inject_descriptor(frame, RX_STA_DD | RX_STA_EOP, 0)
    }

    /// Fills the descriptor at RDH with `bytes` and the given status and error bits (a frame
    /// with errors, or one part of a frame that spans descriptors).
    pub fn inject_descriptor(&mut self, frame: &[u8], status: u8, errors: u8) -> bool {
        let count = self.register(RDLEN) / 16;
        if self.register(RCTL) & RCTL_EN == 0 || count == 0 {
            return false;
        }
        let head = self.register(RDH);
        if head == self.register(RDT) {
            self.raise(INT_RXO);
            return false;
        }
        assert!(
            frame.len() <= RX_BUFFER_BYTES,
            "a frame the fake cannot receive"
        );
        let address = self.ring_base(RDBAL, RDBAH) + u64::from(head) * 16;
        let descriptor = self.dma_read(address, 16);
        let buffer = u64::from_le_bytes(descriptor[0..8].try_into().unwrap());
        // The device may fill the whole BSIZE: the buffer must hold that much.
        if self.dma_buffer(buffer, RX_BUFFER_BYTES).is_none() {
            return false;
        }
        self.dma_write(buffer, frame);
        let mut written = Vec::with_capacity(8);
        written.extend((frame.len() as u16).to_le_bytes());
        written.extend([0, 0, status, errors, 0, 0]);
        self.dma_write(address + 8, &written);
        self.set(RDH, (head + 1) % count);
        self.raise(INT_RXT0);
        true
    }

    /// Plugs or pulls the cable; a change of link raises LSC.
    pub fn set_cable(&mut self, connected: bool) {
        let before = self.status() & STATUS_LU;
        self.cable = connected;
        if self.status() & STATUS_LU != before {
            self.raise(INT_LSC);
        }
    }
}

/// The fake platform with one 82540EM. Clones share the device.
#[derive(Clone)]
pub struct FakeE1000 {
    state: Arc<Mutex<State>>,
}

impl FakeE1000 {
    pub fn new() -> Self {
        FakeE1000 {
            state: Arc::new(Mutex::new(State::new())),
        }
    }

    pub fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn function() -> PciFunction {
        PciFunction {
            address: PciAddress {
                segment: 0,
                bus: 0,
                device: 3,
                function: 0,
            },
            id: DeviceId {
                vendor: 0x8086,
                device: 0x100e,
                subsystem_vendor: 0x8086,
                subsystem: 0x001e,
                class: 0x02,
                subclass: 0x00,
                prog_if: 0x00,
                revision: 0x03,
            },
            bars: vec![
                Bar {
                    index: 0,
                    kind: BarKind::Memory32,
                    base: BAR0_BASE,
                    size: BAR0_SIZE,
                    prefetchable: false,
                },
                Bar {
                    index: 1,
                    kind: BarKind::Io,
                    base: PORT_BASE,
                    size: PORT_COUNT,
                    prefetchable: false,
                },
            ],
        }
    }
}

pub struct Registers {
    state: Arc<Mutex<State>>,
}

impl Registers {
    fn check(state: &mut State, what: &str, offset: u64, access: Access) -> bool {
        let fits = offset.is_multiple_of(4) && offset + 4 <= BAR0_SIZE;
        if access != Access::W32 || !fits {
            state
                .violations
                .push(format!("register {what} {offset:#x} {access:?}"));
            return false;
        }
        true
    }
}

impl MmioWindow for Registers {
    fn read(&self, offset: u64, access: Access) -> u64 {
        let mut state = self.state.lock().unwrap();
        if !Self::check(&mut state, "read", offset, access) {
            return 0;
        }
        u64::from(state.read(offset))
    }

    fn write(&self, offset: u64, access: Access, value: u64) {
        let mut state = self.state.lock().unwrap();
        if Self::check(&mut state, "write", offset, access) {
            state.write(offset, value as u32);
        }
    }
}

pub struct Memory {
    state: Arc<Mutex<State>>,
    address: u64,
    data: Arc<Mutex<Vec<u8>>>,
}

impl DmaMemory for Memory {
    fn len(&self) -> u64 {
        self.data.lock().unwrap().len() as u64
    }

    fn device_address(&self) -> u64 {
        self.address
    }

    fn read(&self, offset: u64, out: &mut [u8]) {
        let offset = offset as usize;
        out.copy_from_slice(&self.data.lock().unwrap()[offset..offset + out.len()]);
    }

    fn write(&self, offset: u64, bytes: &[u8]) {
        let offset = offset as usize;
        self.data.lock().unwrap()[offset..offset + bytes.len()].copy_from_slice(bytes);
    }

    fn read_value(&self, offset: u64, access: Access) -> u64 {
        let mut bytes = [0u8; 8];
        let width = access.bytes() as usize;
        self.read(offset, &mut bytes[..width]);
        u64::from_le_bytes(bytes)
    }

    fn write_value(&self, offset: u64, access: Access, value: u64) {
        let width = access.bytes() as usize;
        self.write(offset, &value.to_le_bytes()[..width]);
    }
}

impl Drop for Memory {
    fn drop(&mut self) {
        let address = self.address;
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.bus_master() {
            state.freed_while_mastering += 1;
        }
        state.dma.retain(|(base, _)| *base != address);
    }
}

pub struct Line {
    state: Arc<Mutex<State>>,
}

impl InterruptLine for Line {
    fn wait(&self, _timeout_ns: u64) -> bool {
        self.state.lock().unwrap().pending
    }

    fn acknowledge(&self) {
        self.state.lock().unwrap().acknowledged += 1;
    }

    fn mask(&self) {}

    fn unmask(&self) {}

    fn count(&self) -> u64 {
        self.state.lock().unwrap().interrupts
    }
}

impl Platform for FakeE1000 {
    type Mmio = Registers;
    type Dma = Memory;
    type Interrupt = Line;

    fn config_read(&self, _function: PciAddress, offset: u16, access: Access) -> u32 {
        let state = self.state();
        let offset = offset as usize;
        let mut bytes = [0u8; 4];
        let width = access.bytes() as usize;
        bytes[..width].copy_from_slice(&state.config[offset..offset + width]);
        u32::from_le_bytes(bytes)
    }

    fn config_write(&self, _function: PciAddress, offset: u16, access: Access, value: u32) {
        let mut state = self.state();
        let offset = offset as usize;
        let width = access.bytes() as usize;
        state.config[offset..offset + width].copy_from_slice(&value.to_le_bytes()[..width]);
    }

    fn config_space_size(&self, _function: PciAddress) -> u16 {
        256
    }

    fn map_mmio(&self, base: u64, size: u64) -> Result<Registers, PlatformError> {
        if (base, size) != (BAR0_BASE, BAR0_SIZE) {
            self.state()
                .violations
                .push(format!("map {base:#x} size {size:#x}"));
        }
        Ok(Registers {
            state: self.state.clone(),
        })
    }

    fn port_read(&self, port: u16, _access: Access) -> u32 {
        self.state().violations.push(format!("port read {port:#x}"));
        0
    }

    fn port_write(&self, port: u16, _access: Access, _value: u32) {
        self.state()
            .violations
            .push(format!("port write {port:#x}"));
    }

    fn allocate_dma(
        &self,
        _function: PciAddress,
        size: u64,
        align: u64,
    ) -> Result<Memory, PlatformError> {
        let mut state = self.state();
        let address = state.next_dma.next_multiple_of(align.max(4096));
        state.next_dma = address + size;
        let data = Arc::new(Mutex::new(vec![0; size as usize]));
        state.dma.push((address, data.clone()));
        state.allocations.push((address, size));
        Ok(Memory {
            state: self.state.clone(),
            address,
            data,
        })
    }

    fn route_interrupt(&self, _function: PciAddress) -> Result<Line, PlatformError> {
        Ok(Line {
            state: self.state.clone(),
        })
    }

    fn now_ns(&self) -> u64 {
        let mut state = self.state();
        state.now += 100;
        state.now
    }

    fn sleep_ns(&self, ns: u64) {
        let mut state = self.state();
        state.now = state.now.saturating_add(ns);
    }

    fn log(&self, level: LogLevel, message: &str) {
        self.state().logs.push((level, message.into()));
    }
}

/// An instance of the `e1000` driver component on `platform`.
pub fn instance(platform: &FakeE1000) -> (Store<DriverHost<FakeE1000>>, NicDriver) {
    let mut linker = Linker::new(super::engine());
    wasi_dd::add_to_linker(&mut linker, |host: &mut DriverHost<FakeE1000>| host)
        .expect("linking WASI-dd");
    let host = DriverHost::new(Arc::new(platform.clone()), FakeE1000::function())
        .with_limits(Limits::default())
        .with_name("e1000");
    let mut store = Store::new(super::engine(), host);
    let driver = NicDriver::instantiate(&mut store, &super::driver("e1000"), &linker)
        .unwrap_or_else(|e| panic!("instantiating e1000: {e:#}"));
    (store, driver)
}
