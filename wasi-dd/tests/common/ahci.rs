//! A fake ICH9 AHCI HBA (QEMU's `ahci`, 8086:2922) behind a fake [`Platform`], for the tests of
//! the `ahci` driver: ABAR (BAR 5, 4 KiB of registers, 32-bit accesses only) and the index/data
//! I/O pair (BAR 4, which the driver has no reason to touch); six ports, each empty or with an
//! ATA disk (backed by a vector of sectors) or an ATAPI drive; HBA reset, port start and stop,
//! signatures received once FIS receive is on (as in QEMU), COMRESET through PxSCTL.DET.
//!
//! Setting a bit in PxCI runs the slot's command: the fake walks the command header, the
//! command table, its FIS and PRDT in the driver's DMA memory, moves the data, writes a D2H
//! register FIS, sets PxIS and raises the interrupt when enabled. Commands run one at a time
//! in round-robin slot order, as an HBA runs non-queued commands. With `hold`, PxCI writes only
//! latch commands (several are then truly in flight) until [`State::run_commands`].
//!
//! Errors follow AHCI: a sector in `bad_lbas` makes its command fail with a task-file error
//! (PxTFD.ERR, PxIS.TFES), its PxCI bit stays set, PxCMD.CCS points at it and the port stops
//! processing until PxCMD.ST is cleared. With `qemu_errors`, it fails as QEMU's does instead:
//! the bit is cleared, CCS stays 0 and the next command runs. `hang_lba` makes a command that
//! never finishes (PxTFD.BSY) until a COMRESET; `busy_after_error` leaves PxTFD.DRQ set after
//! an error, also until a COMRESET.
//!
//! Violations: any register access that is not an aligned 32-bit one, device DMA outside the
//! live buffers, DMA with bus mastering off, CLB/FB changed while their engine runs, PxCMD.ST
//! set without FIS receive or with the device busy, PxCI written while stopped, malformed
//! command headers, FISes or PRDTs (odd addresses or byte counts, a PRDT shorter than the
//! transfer, the write bit disagreeing with the command, CHS addressing).

use std::sync::{Arc, Mutex, MutexGuard};

use wasi_dd::platform::{DmaMemory, InterruptLine, LogLevel, MmioWindow, Platform, PlatformError};
use wasi_dd::types::{Access, Bar, BarKind, DeviceId, PciAddress, PciFunction};
use wasi_dd::{BlockDriver, DriverHost, Limits};
use wasmtime::Store;
use wasmtime::component::Linker;

pub const ABAR_BASE: u64 = 0xfebf_1000;
pub const ABAR_SIZE: u64 = 0x1000;
pub const IDP_BASE: u64 = 0xc0c0;
pub const IDP_SIZE: u64 = 0x20;
/// Above 4 GiB, so that the upper halves of CLB, FB, CTBA and the PRDs matter.
pub const DMA_BASE: u64 = 0x1_4000_0000;
pub const PORTS: usize = 6;
pub const SLOTS: usize = 32;

pub const CAP: u64 = 0x00;
pub const GHC: u64 = 0x04;
pub const IS: u64 = 0x08;
pub const PI: u64 = 0x0c;
pub const VS: u64 = 0x10;
pub const GHC_HR: u32 = 1 << 0;
pub const GHC_IE: u32 = 1 << 1;
pub const GHC_AE: u32 = 1 << 31;

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
pub const PX_SACT: u64 = 0x34;
pub const PX_CI: u64 = 0x38;

pub const CMD_ST: u32 = 1 << 0;
pub const CMD_SUD: u32 = 1 << 1;
pub const CMD_POD: u32 = 1 << 2;
pub const CMD_FRE: u32 = 1 << 4;
pub const CMD_FR: u32 = 1 << 14;
pub const CMD_CR: u32 = 1 << 15;
pub const IS_DHRS: u32 = 1 << 0;
pub const IS_PSS: u32 = 1 << 1;
pub const IS_TFES: u32 = 1 << 30;

pub const SIGNATURE_ATA: u32 = 0x0000_0101;
pub const SIGNATURE_ATAPI: u32 = 0xeb14_0101;
/// Status after a command: DRDY and DSC; with ERR; BSY; DRQ.
pub const STATUS_READY: u32 = 0x50;
pub const STATUS_ERR: u32 = 0x01;
pub const STATUS_BSY: u32 = 0x80;
pub const STATUS_DRQ: u32 = 0x08;
/// Error register values: uncorrectable data, ID not found, aborted command.
pub const ERROR_UNC: u32 = 0x40;
pub const ERROR_IDNF: u32 = 0x10;
pub const ERROR_ABRT: u32 = 0x04;

pub const IDENTIFY_DEVICE: u8 = 0xec;
pub const READ_DMA: u8 = 0xc8;
pub const WRITE_DMA: u8 = 0xca;
pub const READ_DMA_EXT: u8 = 0x25;
pub const WRITE_DMA_EXT: u8 = 0x35;
pub const FLUSH_CACHE: u8 = 0xe7;
pub const FLUSH_CACHE_EXT: u8 = 0xea;

/// Reads of GHC that still show HR after it was set.
pub const RESET_READS: u32 = 2;
/// PxIE bits that exist (QEMU's mask).
const IE_WRITABLE: u32 = 0xfdc0_00ff;

/// An ATA disk: its sectors and what IDENTIFY DEVICE says about it.
#[derive(Clone, Debug)]
pub struct Disk {
    pub data: Vec<u8>,
    pub sector_size: usize,
    pub model: String,
    pub serial: String,
    /// The 48-bit address feature set; without it, capacity is in words 60-61 only.
    pub lba48: bool,
    /// Reads or writes that touch one of these sectors fail with a task-file error.
    pub bad_lbas: Vec<u64>,
    /// A command that touches this sector never finishes (until a COMRESET; once).
    pub hang_lba: Option<u64>,
    pub flushes: u32,
}

impl Disk {
    /// A disk of `sectors` 512-byte sectors, like QEMU's `ide-hd`.
    pub fn new(sectors: usize) -> Disk {
        Disk {
            data: vec![0; sectors * 512],
            sector_size: 512,
            model: "QEMU HARDDISK".into(),
            serial: "QM00005".into(),
            lba48: true,
            bad_lbas: Vec::new(),
            hang_lba: None,
            flushes: 0,
        }
    }

    pub fn sectors(&self) -> u64 {
        (self.data.len() / self.sector_size) as u64
    }

    /// The 256 words of IDENTIFY DEVICE, as bytes.
    pub fn identify(&self) -> Vec<u8> {
        let mut words = [0u16; 256];
        let mut text = |first: usize, count: usize, value: &str| {
            let mut bytes = value.as_bytes().to_vec();
            bytes.resize(2 * count, b' ');
            for i in 0..count {
                words[first + i] = u16::from_be_bytes([bytes[2 * i], bytes[2 * i + 1]]);
            }
        };
        text(10, 10, &self.serial);
        text(23, 4, "2.5+");
        text(27, 20, &self.model);
        words[0] = 0x0040;
        words[49] = (1 << 9) | (1 << 8);
        let sectors = self.sectors();
        let lba28 = sectors.min(0x0fff_ffff);
        words[60] = lba28 as u16;
        words[61] = (lba28 >> 16) as u16;
        words[83] = 0x4000 | if self.lba48 { (1 << 10) | (1 << 13) } else { 0 };
        words[86] = if self.lba48 { (1 << 10) | (1 << 13) } else { 0 };
        if self.lba48 {
            for i in 0..4 {
                words[100 + i] = (sectors >> (16 * i)) as u16;
            }
        }
        if self.sector_size != 512 {
            let per_sector = (self.sector_size / 2) as u32;
            words[106] = 0x4000 | (1 << 12);
            words[117] = per_sector as u16;
            words[118] = (per_sector >> 16) as u16;
        }
        words.iter().flat_map(|w| w.to_le_bytes()).collect()
    }
}

#[derive(Clone, Debug)]
pub enum Attached {
    Empty,
    Disk(Disk),
    Atapi,
}

/// A command the fake ran (or that hangs): from which slot, and what it asked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Executed {
    pub slot: usize,
    pub command: u8,
    pub lba: u64,
    pub count: u32,
    /// The PRDT: data base address and byte count of each entry.
    pub prdt: Vec<(u64, u32)>,
    pub ok: bool,
}

enum Outcome {
    Done { bytes: u32, pio: bool },
    Failed { error: u32, bytes: u32 },
    Hang,
}

pub struct Port {
    pub attached: Attached,
    pub clb: u64,
    pub fb: u64,
    pub is: u32,
    pub ie: u32,
    /// PxCMD without CCS, CR and FR (kept below).
    pub cmd: u32,
    pub tfd: u32,
    pub sig: u32,
    pub sctl: u32,
    pub serr: u32,
    pub ci: u32,
    pub cr: bool,
    pub fr: bool,
    pub ccs: usize,
    /// Stopped after an error until PxCMD.ST is cleared.
    pub halted: bool,
    /// The slot of a command that never finishes.
    pub hung: Option<usize>,
    init_d2h_sent: bool,
    next_slot: usize,
    pub executed: Vec<Executed>,
    /// Most PxCI bits set at once.
    pub max_outstanding: u32,
    pub starts: u32,
    pub stops: u32,
    pub comresets: u32,
}

impl Port {
    fn new(attached: Attached) -> Port {
        Port {
            attached,
            clb: 0,
            fb: 0,
            is: 0,
            ie: 0,
            cmd: CMD_SUD | CMD_POD,
            tfd: 0x7f,
            sig: 0xffff_ffff,
            sctl: 0,
            serr: 0,
            ci: 0,
            cr: false,
            fr: false,
            ccs: 0,
            halted: false,
            hung: None,
            init_d2h_sent: false,
            next_slot: 0,
            executed: Vec::new(),
            max_outstanding: 0,
            starts: 0,
            stops: 0,
            comresets: 0,
        }
    }

    pub fn disk(&self) -> Option<&Disk> {
        match &self.attached {
            Attached::Disk(disk) => Some(disk),
            _ => None,
        }
    }

    pub fn disk_mut(&mut self) -> Option<&mut Disk> {
        match &mut self.attached {
            Attached::Disk(disk) => Some(disk),
            _ => None,
        }
    }

    fn present(&self) -> bool {
        !matches!(self.attached, Attached::Empty)
    }

    fn signature(&self) -> u32 {
        match self.attached {
            Attached::Atapi => SIGNATURE_ATAPI,
            _ => SIGNATURE_ATA,
        }
    }

    /// The registers an HBA or port reset leaves (CLB and FB survive, as in QEMU).
    fn reset(&mut self) {
        self.is = 0;
        self.ie = 0;
        self.cmd = CMD_SUD | CMD_POD;
        self.sctl = 0;
        self.reset_link();
    }

    /// COMRESET: the device starts over and sends its signature again once FIS receive is on.
    fn reset_link(&mut self) {
        self.serr = 0;
        self.tfd = 0x7f;
        self.sig = 0xffff_ffff;
        self.halted = false;
        if self.hung.take().is_some()
            && let Some(disk) = self.disk_mut()
        {
            disk.hang_lba = None;
        }
        self.init_d2h_sent = false;
    }

    fn ssts(&self) -> u32 {
        if !self.present() {
            0
        } else if self.sctl & 0xf == 1 {
            0x1
        } else {
            // DET 3 (device, link up), SPD 1 (Gen 1), IPM 1 (active).
            0x113
        }
    }

    fn cmd_value(&self, report_ccs: bool) -> u32 {
        let ccs = if report_ccs && self.cmd & CMD_ST != 0 {
            (self.ccs as u32) << 8
        } else {
            0
        };
        self.cmd | ccs | if self.cr { CMD_CR } else { 0 } | if self.fr { CMD_FR } else { 0 }
    }
}

pub struct State {
    pub ports: Vec<Port>,
    pub ghc: u32,
    pub hba_is: u32,
    pub resets: u32,
    reset_reads_left: u32,
    /// While set, PxCI writes only latch commands; [`State::run_commands`] runs them.
    pub hold: bool,
    /// Fail commands as QEMU does (PxCI bit cleared, CCS 0, the next command runs).
    pub qemu_errors: bool,
    /// A failed command leaves the device with DRQ set (until a COMRESET).
    pub busy_after_error: bool,
    /// GHC.HR never clears (a broken HBA).
    pub reset_never_ends: bool,
    /// How far the clock moves on each `now_ns`.
    pub clock_step: u64,
    pub violations: Vec<String>,
    /// Every register write, in order: (offset, value).
    pub writes: Vec<(u64, u32)>,
    pub reads: u64,
    /// Writes into DMA buffers through the host (the driver's descriptors, the test's data).
    pub memory_writes: u64,
    pub config: [u8; 256],
    pub interrupts: u64,
    pub acknowledged: u64,
    pending: bool,
    pub logs: Vec<(LogLevel, String)>,
    pub allocations: Vec<(u64, u64)>,
    dma: Vec<(u64, Arc<Mutex<Vec<u8>>>)>,
    next_dma: u64,
    pub now: u64,
}

fn le32(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap())
}

impl State {
    fn new(attached: Vec<Attached>) -> Self {
        let mut config = [0u8; 256];
        let mut put = |offset: usize, bytes: &[u8]| {
            config[offset..offset + bytes.len()].copy_from_slice(bytes)
        };
        put(0x00, &0x8086u16.to_le_bytes());
        put(0x02, &0x2922u16.to_le_bytes());
        put(0x06, &0x0010u16.to_le_bytes());
        put(0x08, &[0x02, 0x01, 0x06, 0x01]);
        put(0x20, &(IDP_BASE as u32 | 1).to_le_bytes());
        put(0x24, &(ABAR_BASE as u32).to_le_bytes());
        put(0x2c, &0x1af4u16.to_le_bytes());
        put(0x2e, &0x1100u16.to_le_bytes());
        put(0x34, &[0x80]);
        put(0x3c, &[10, 1]);
        // MSI (no 64-bit address), then the SATA capability.
        put(0x80, &[0x05, 0xa8, 0x00, 0x00]);
        put(0xa8, &[0x12, 0x00, 0x10, 0x00]);
        let mut ports: Vec<Port> = attached.into_iter().map(Port::new).collect();
        ports.resize_with(PORTS, || Port::new(Attached::Empty));
        State {
            ports,
            ghc: GHC_AE,
            hba_is: 0,
            resets: 0,
            reset_reads_left: 0,
            hold: false,
            qemu_errors: false,
            busy_after_error: false,
            reset_never_ends: false,
            clock_step: 100,
            violations: Vec::new(),
            writes: Vec::new(),
            reads: 0,
            memory_writes: 0,
            config,
            interrupts: 0,
            acknowledged: 0,
            pending: false,
            logs: Vec::new(),
            allocations: Vec::new(),
            dma: Vec::new(),
            next_dma: DMA_BASE,
            now: 1_000_000,
        }
    }

    pub fn port(&self, port: usize) -> &Port {
        &self.ports[port]
    }

    pub fn disk(&self, port: usize) -> &Disk {
        self.ports[port].disk().expect("a disk on that port")
    }

    pub fn disk_mut(&mut self, port: usize) -> &mut Disk {
        self.ports[port].disk_mut().expect("a disk on that port")
    }

    /// The bus-master bit of the PCI command register.
    pub fn bus_master(&self) -> bool {
        self.config[0x04] & 0x04 != 0
    }

    /// Register writes to port `port`'s register `register`.
    pub fn port_writes(&self, port: usize, register: u64) -> Vec<u32> {
        let offset = 0x100 + 0x80 * port as u64 + register;
        self.writes
            .iter()
            .filter(|(o, _)| *o == offset)
            .map(|(_, v)| *v)
            .collect()
    }

    fn violation(&mut self, what: String) {
        self.violations.push(what);
    }

    /// Latches HBA IS for ports with an enabled cause and drives the interrupt: it fires on
    /// each rise (an MSI per new cause, or a level line going up).
    fn update_interrupt(&mut self) {
        for (number, port) in self.ports.iter().enumerate() {
            if port.is & port.ie != 0 {
                self.hba_is |= 1 << number;
            }
        }
        let asserted = self.hba_is != 0 && self.ghc & GHC_IE != 0;
        if asserted && !self.pending {
            self.interrupts += 1;
        }
        self.pending = asserted;
    }

    fn raise(&mut self, port: usize, causes: u32) {
        self.ports[port].is |= causes;
        self.update_interrupt();
    }

    fn reset_hba(&mut self) {
        self.resets += 1;
        self.reset_reads_left = RESET_READS;
        self.ghc = GHC_AE;
        self.hba_is = 0;
        for port in &mut self.ports {
            port.reset();
            port.ci = 0;
            port.cr = false;
            port.fr = false;
            port.ccs = 0;
        }
        self.update_interrupt();
    }

    fn read(&mut self, offset: u64) -> u32 {
        self.reads += 1;
        match offset {
            CAP => {
                // NP, NCS, ISS Gen 1, SAM (AHCI only), SNCQ, S64A: QEMU's values.
                (PORTS as u32 - 1)
                    | ((SLOTS as u32 - 1) << 8)
                    | (1 << 20)
                    | (1 << 18)
                    | (1 << 30)
                    | (1 << 31)
            }
            GHC => {
                if self.reset_never_ends {
                    self.ghc | GHC_HR
                } else if self.reset_reads_left > 0 {
                    self.reset_reads_left -= 1;
                    self.ghc | GHC_HR
                } else {
                    self.ghc
                }
            }
            IS => self.hba_is,
            PI => (1 << PORTS) - 1,
            VS => 0x0001_0000,
            0x100.. => {
                let (number, register) = ((offset - 0x100) / 0x80, (offset - 0x100) % 0x80);
                let Some(port) = self.ports.get(number as usize) else {
                    return 0;
                };
                let report_ccs = !self.qemu_errors;
                match register {
                    PX_CLB => port.clb as u32,
                    PX_CLBU => (port.clb >> 32) as u32,
                    PX_FB => port.fb as u32,
                    PX_FBU => (port.fb >> 32) as u32,
                    PX_IS => port.is,
                    PX_IE => port.ie,
                    PX_CMD => port.cmd_value(report_ccs),
                    PX_TFD => port.tfd,
                    PX_SIG => port.sig,
                    PX_SSTS => port.ssts(),
                    PX_SCTL => port.sctl,
                    PX_SERR => port.serr,
                    PX_CI => port.ci,
                    _ => 0,
                }
            }
            _ => 0,
        }
    }

    fn write(&mut self, offset: u64, value: u32) {
        self.writes.push((offset, value));
        match offset {
            GHC => {
                if value & GHC_HR != 0 {
                    self.reset_hba();
                } else {
                    self.ghc = (value & GHC_IE) | GHC_AE;
                    self.update_interrupt();
                }
            }
            IS => {
                self.hba_is &= !value;
                self.update_interrupt();
            }
            0x100.. => {
                let (number, register) = ((offset - 0x100) / 0x80, (offset - 0x100) % 0x80);
                if (number as usize) < PORTS {
                    self.port_write(number as usize, register, value);
                }
            }
            _ => {}
        }
    }

    fn port_write(&mut self, number: usize, register: u64, value: u32) {
        let port = &self.ports[number];
        let running = port.cmd & CMD_ST != 0 || port.cr;
        let receiving = port.cmd & CMD_FRE != 0 || port.fr;
        let low = |old: u64| (old & !0xffff_ffff) | u64::from(value);
        let high = |old: u64| (old & 0xffff_ffff) | (u64::from(value) << 32);
        match register {
            PX_CLB | PX_CLBU if running => {
                self.violation(format!("port {number}: CLB written while the port runs"))
            }
            PX_FB | PX_FBU if receiving => {
                self.violation(format!("port {number}: FB written while FIS receive is on"))
            }
            PX_CLB => self.ports[number].clb = low(self.ports[number].clb),
            PX_CLBU => self.ports[number].clb = high(self.ports[number].clb),
            PX_FB => self.ports[number].fb = low(self.ports[number].fb),
            PX_FBU => self.ports[number].fb = high(self.ports[number].fb),
            PX_IS => {
                self.ports[number].is &= !value;
                self.update_interrupt();
            }
            PX_IE => {
                self.ports[number].ie = value & IE_WRITABLE;
                self.update_interrupt();
            }
            PX_CMD => self.write_cmd(number, value),
            PX_SCTL => self.write_sctl(number, value),
            PX_SERR => self.ports[number].serr &= !value,
            PX_SACT if value != 0 => {
                self.violation(format!("port {number}: PxSACT set (no NCQ expected)"))
            }
            PX_CI => {
                if self.ports[number].cmd & CMD_ST == 0 {
                    self.violation(format!("port {number}: PxCI written while stopped"));
                    return;
                }
                let port = &mut self.ports[number];
                port.ci |= value;
                port.max_outstanding = port.max_outstanding.max(port.ci.count_ones());
                if !self.hold {
                    self.process(number);
                }
            }
            _ => {}
        }
    }

    /// DET going from 1 (COMRESET) back to 0 resets the link and the device.
    fn write_sctl(&mut self, number: usize, value: u32) {
        let port = &mut self.ports[number];
        let was = port.sctl & 0xf;
        port.sctl = value;
        if was != 1 || value & 0xf != 0 {
            return;
        }
        if port.cmd & CMD_ST != 0 {
            self.violation(format!("port {number}: COMRESET with PxCMD.ST set"));
        }
        let port = &mut self.ports[number];
        port.comresets += 1;
        port.reset_link();
        if port.fr {
            self.send_signature(number);
        }
    }

    fn write_cmd(&mut self, number: usize, value: u32) {
        let writable = CMD_ST | CMD_SUD | CMD_POD | CMD_FRE;
        let before = self.ports[number].cmd;
        let turned_on = |bit: u32| before & bit == 0 && value & bit != 0;
        let turned_off = |bit: u32| before & bit != 0 && value & bit == 0;
        let (st_on, st_off) = (turned_on(CMD_ST), turned_off(CMD_ST));
        let (fre_on, fre_off) = (turned_on(CMD_FRE), turned_off(CMD_FRE));
        self.ports[number].cmd = value & writable;
        if st_off {
            // Stopping clears PxCI and ends the HBA's part of the command in progress (a
            // device that hangs stays busy until a COMRESET).
            let port = &mut self.ports[number];
            port.stops += 1;
            port.cr = false;
            port.ci = 0;
            port.ccs = 0;
            port.halted = false;
        }
        if fre_off {
            if self.ports[number].cr {
                self.violation(format!("port {number}: FRE cleared while the port runs"));
            }
            self.ports[number].fr = false;
        }
        if fre_on {
            let fb = self.ports[number].fb;
            if fb == 0 || !fb.is_multiple_of(256) {
                self.violation(format!("port {number}: FRE set with FB {fb:#x}"));
            }
            let port = &mut self.ports[number];
            port.fr = true;
            if !port.init_d2h_sent && port.present() {
                self.send_signature(number);
            }
        }
        if st_on {
            let port = &self.ports[number];
            let why = if !port.fr {
                Some("without FIS receive")
            } else if port.cr {
                Some("while CR is still set")
            } else if port.tfd & (STATUS_BSY | STATUS_DRQ) != 0 {
                Some("while the device is busy")
            } else if port.clb == 0 || !port.clb.is_multiple_of(1024) {
                Some("with a bad command list address")
            } else {
                None
            };
            if let Some(why) = why {
                self.violation(format!("port {number}: ST set {why}"));
            }
            let port = &mut self.ports[number];
            port.starts += 1;
            port.cr = true;
            port.next_slot = 0;
        }
    }

    /// The device's first D2H register FIS after a reset: PxSIG and PxTFD are loaded from it.
    fn send_signature(&mut self, number: usize) {
        let port = &mut self.ports[number];
        let signature = port.signature();
        port.sig = signature;
        port.tfd = STATUS_READY | (1 << 8);
        port.init_d2h_sent = true;
        let fis = [
            0x34,
            0,
            STATUS_READY as u8,
            1,
            signature as u8,
            (signature >> 16) as u8,
            (signature >> 24) as u8,
            0,
            0,
            0,
            0,
            0,
            (signature >> 8) as u8,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
        ];
        let fb = port.fb;
        self.dma_write(fb + 0x40, &fis);
        self.raise(number, IS_DHRS);
    }

    /// Runs the latched commands of every port (after `hold`).
    pub fn run_commands(&mut self) {
        for number in 0..PORTS {
            self.process(number);
        }
    }

    /// Runs issued commands one at a time, from the slot after the last one, until none is
    /// left, the port stopped on an error, or a command hangs.
    fn process(&mut self, number: usize) {
        loop {
            let port = &self.ports[number];
            if port.cmd & CMD_ST == 0 || port.halted || port.hung.is_some() || port.ci == 0 {
                return;
            }
            let slot = (0..SLOTS)
                .map(|i| (port.next_slot + i) % SLOTS)
                .find(|slot| port.ci & (1 << slot) != 0)
                .unwrap();
            self.ports[number].ccs = slot;
            let outcome = self.execute(number, slot);
            self.ports[number].next_slot = (slot + 1) % SLOTS;
            match outcome {
                Outcome::Done { bytes, pio } => {
                    let port = &mut self.ports[number];
                    port.ci &= !(1 << slot);
                    port.tfd = STATUS_READY;
                    self.finish(number, slot, bytes, STATUS_READY, 0);
                    if pio {
                        self.raise(number, IS_PSS);
                    }
                    self.raise(number, IS_DHRS);
                }
                Outcome::Failed { error, bytes } => {
                    let drq = if self.busy_after_error { STATUS_DRQ } else { 0 };
                    let status = STATUS_READY | STATUS_ERR | drq;
                    let qemu_errors = self.qemu_errors;
                    let port = &mut self.ports[number];
                    port.tfd = (error << 8) | status;
                    if qemu_errors {
                        port.ci &= !(1 << slot);
                    } else {
                        port.halted = true;
                    }
                    self.finish(number, slot, bytes, status, error);
                    self.raise(number, IS_TFES | IS_DHRS);
                }
                Outcome::Hang => {
                    let port = &mut self.ports[number];
                    port.hung = Some(slot);
                    port.tfd = STATUS_READY | STATUS_BSY;
                    return;
                }
            }
        }
    }

    /// PRDBC into the command header, and the D2H register FIS into the FIS area.
    fn finish(&mut self, number: usize, slot: usize, bytes: u32, status: u32, error: u32) {
        let port = &self.ports[number];
        let (clb, fb, fr) = (port.clb, port.fb, port.fr);
        self.dma_write(clb + 32 * slot as u64 + 4, &bytes.to_le_bytes());
        if fr {
            let mut fis = [0u8; 20];
            fis[0] = 0x34;
            fis[1] = 0x40;
            fis[2] = status as u8;
            fis[3] = error as u8;
            self.dma_write(fb + 0x40, &fis);
        }
    }

    fn execute(&mut self, number: usize, slot: usize) -> Outcome {
        let clb = self.ports[number].clb;
        let header = self.dma_read(clb + 32 * slot as u64, 32);
        let flags = le32(&header, 0);
        let prdt_length = (flags >> 16) as usize;
        let write_bit = flags & (1 << 6) != 0;
        let table = u64::from(le32(&header, 8)) | (u64::from(le32(&header, 12)) << 32);
        if flags & 0x1f != 5 || flags & (1 << 5) != 0 {
            self.violation(format!(
                "port {number} slot {slot}: header flags {flags:#x}"
            ));
        }
        if !table.is_multiple_of(128) {
            self.violation(format!(
                "port {number} slot {slot}: command table {table:#x}"
            ));
        }
        let fis = self.dma_read(table, 64);
        let raw_prdt = self.dma_read(table + 0x80, 16 * prdt_length);
        let prdt: Vec<(u64, u32)> = raw_prdt
            .chunks(16)
            .map(|e| {
                let address = u64::from(le32(e, 0)) | (u64::from(le32(e, 4)) << 32);
                (address, (le32(e, 12) & 0x3f_ffff) + 1)
            })
            .collect();
        for (address, bytes) in &prdt {
            if address % 2 != 0 || bytes % 2 != 0 {
                self.violation(format!(
                    "port {number} slot {slot}: PRD {address:#x} {bytes} bytes"
                ));
            }
        }
        if fis[0] != 0x27 || fis[1] & 0x80 == 0 {
            self.violation(format!("port {number} slot {slot}: FIS {:02x?}", &fis[..4]));
            return Outcome::Failed {
                error: ERROR_ABRT,
                bytes: 0,
            };
        }
        let command = fis[2];
        let device = fis[7];
        let ext = matches!(command, READ_DMA_EXT | WRITE_DMA_EXT);
        let (lba, count) = if ext {
            let lba = [fis[4], fis[5], fis[6], fis[8], fis[9], fis[10], 0, 0];
            let count = u32::from(u16::from_le_bytes([fis[12], fis[13]]));
            (
                u64::from_le_bytes(lba),
                if count == 0 { 65536 } else { count },
            )
        } else {
            let lba = u64::from_le_bytes([fis[4], fis[5], fis[6], device & 0x0f, 0, 0, 0, 0]);
            let count = u32::from(fis[12]);
            (lba, if count == 0 { 256 } else { count })
        };
        let mut executed = Executed {
            slot,
            command,
            lba,
            count,
            prdt: prdt.clone(),
            ok: false,
        };
        let outcome = self.run_ata(number, slot, &mut executed, device, write_bit, &prdt);
        executed.ok = matches!(outcome, Outcome::Done { .. });
        self.ports[number].executed.push(executed);
        outcome
    }

    fn run_ata(
        &mut self,
        number: usize,
        slot: usize,
        executed: &mut Executed,
        device: u8,
        write_bit: bool,
        prdt: &[(u64, u32)],
    ) -> Outcome {
        let abort = Outcome::Failed {
            error: ERROR_ABRT,
            bytes: 0,
        };
        let Some(disk) = self.ports[number].disk().cloned() else {
            // An ATAPI device aborts ATA commands other than the packet ones.
            return abort;
        };
        let command = executed.command;
        match command {
            IDENTIFY_DEVICE => {
                let data = disk.identify();
                match self.scatter(number, slot, prdt, &data) {
                    Some(bytes) => Outcome::Done { bytes, pio: true },
                    None => abort,
                }
            }
            FLUSH_CACHE | FLUSH_CACHE_EXT => {
                if command == FLUSH_CACHE_EXT && !disk.lba48 {
                    return abort;
                }
                self.disk_mut(number).flushes += 1;
                Outcome::Done {
                    bytes: 0,
                    pio: false,
                }
            }
            READ_DMA | WRITE_DMA | READ_DMA_EXT | WRITE_DMA_EXT => {
                let write = matches!(command, WRITE_DMA | WRITE_DMA_EXT);
                if matches!(command, READ_DMA_EXT | WRITE_DMA_EXT) && !disk.lba48 {
                    return abort;
                }
                if write != write_bit {
                    self.violation(format!(
                        "port {number} slot {slot}: command {command:#x} with write bit {write_bit}"
                    ));
                }
                if device & 0x40 == 0 {
                    self.violation(format!("port {number} slot {slot}: CHS addressing"));
                }
                let (lba, count) = (executed.lba, u64::from(executed.count));
                if lba + count > disk.sectors() {
                    return Outcome::Failed {
                        error: ERROR_IDNF,
                        bytes: 0,
                    };
                }
                let sectors = lba..lba + count;
                if disk.hang_lba.is_some_and(|hang| sectors.contains(&hang)) {
                    return Outcome::Hang;
                }
                let size = disk.sector_size;
                let start = lba as usize * size;
                let len = count as usize * size;
                if let Some(bad) = disk.bad_lbas.iter().find(|bad| sectors.contains(bad)) {
                    // The sectors before the bad one moved.
                    let good = (bad - lba) as usize * size;
                    if !write {
                        let data = disk.data[start..start + good].to_vec();
                        self.scatter(number, slot, prdt, &data);
                    }
                    return Outcome::Failed {
                        error: ERROR_UNC,
                        bytes: good as u32,
                    };
                }
                if write {
                    let Some(data) = self.gather(number, slot, prdt, len) else {
                        return abort;
                    };
                    self.disk_mut(number).data[start..start + len].copy_from_slice(&data);
                } else {
                    let data = disk.data[start..start + len].to_vec();
                    if self.scatter(number, slot, prdt, &data).is_none() {
                        return abort;
                    }
                }
                Outcome::Done {
                    bytes: len as u32,
                    pio: false,
                }
            }
            _ => abort,
        }
    }

    /// Device to memory through the PRDT; `None` (and a violation) if it is too short.
    fn scatter(
        &mut self,
        number: usize,
        slot: usize,
        prdt: &[(u64, u32)],
        data: &[u8],
    ) -> Option<u32> {
        let total: u64 = prdt.iter().map(|(_, bytes)| u64::from(*bytes)).sum();
        if total < data.len() as u64 {
            self.violation(format!(
                "port {number} slot {slot}: PRDT of {total} bytes for {}",
                data.len()
            ));
            return None;
        }
        let mut done = 0;
        for (address, bytes) in prdt {
            if done == data.len() {
                break;
            }
            let len = (*bytes as usize).min(data.len() - done);
            self.dma_write(*address, &data[done..done + len]);
            done += len;
        }
        Some(done as u32)
    }

    /// Memory to device through the PRDT.
    fn gather(
        &mut self,
        number: usize,
        slot: usize,
        prdt: &[(u64, u32)],
        len: usize,
    ) -> Option<Vec<u8>> {
        let total: u64 = prdt.iter().map(|(_, bytes)| u64::from(*bytes)).sum();
        if total < len as u64 {
            self.violation(format!(
                "port {number} slot {slot}: PRDT of {total} bytes for {len}"
            ));
            return None;
        }
        let mut data = Vec::with_capacity(len);
        for (address, bytes) in prdt {
            if data.len() == len {
                break;
            }
            let take = (*bytes as usize).min(len - data.len());
            data.extend(self.dma_read(*address, take));
        }
        Some(data)
    }

    fn dma_buffer(&mut self, address: u64, len: usize) -> Option<(Arc<Mutex<Vec<u8>>>, usize)> {
        if !self.bus_master() {
            self.violation(format!("device DMA at {address:#x} with bus mastering off"));
        }
        let found = self.dma.iter().find(|(base, memory)| {
            let size = memory.lock().unwrap().len() as u64;
            address >= *base && address + len as u64 <= base + size
        });
        match found {
            Some((base, memory)) => Some((memory.clone(), (address - base) as usize)),
            None => {
                self.violation(format!("device DMA {len} bytes at {address:#x}: no buffer"));
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
}

/// The fake platform with one AHCI HBA. Clones share it.
#[derive(Clone)]
pub struct FakeAhci {
    state: Arc<Mutex<State>>,
}

impl FakeAhci {
    /// An HBA with these devices on ports 0, 1, ... (the rest empty).
    pub fn new(attached: Vec<Attached>) -> Self {
        FakeAhci {
            state: Arc::new(Mutex::new(State::new(attached))),
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
                device: 0x1f,
                function: 2,
            },
            id: DeviceId {
                vendor: 0x8086,
                device: 0x2922,
                subsystem_vendor: 0x1af4,
                subsystem: 0x1100,
                class: 0x01,
                subclass: 0x06,
                prog_if: 0x01,
                revision: 0x02,
            },
            bars: vec![
                Bar {
                    index: 4,
                    kind: BarKind::Io,
                    base: IDP_BASE,
                    size: IDP_SIZE,
                    prefetchable: false,
                },
                Bar {
                    index: 5,
                    kind: BarKind::Memory32,
                    base: ABAR_BASE,
                    size: ABAR_SIZE,
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
        let fits = offset.is_multiple_of(4) && offset + 4 <= ABAR_SIZE;
        if access != Access::W32 || !fits {
            state.violation(format!("register {what} {offset:#x} {access:?}"));
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

impl Memory {
    fn written(&self) {
        self.state.lock().unwrap().memory_writes += 1;
    }
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
        self.written();
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

impl Platform for FakeAhci {
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
        if (base, size) != (ABAR_BASE, ABAR_SIZE) {
            self.state()
                .violation(format!("map {base:#x} size {size:#x}"));
        }
        Ok(Registers {
            state: self.state.clone(),
        })
    }

    fn port_read(&self, port: u16, _access: Access) -> u32 {
        self.state().violation(format!("port read {port:#x}"));
        0
    }

    fn port_write(&self, port: u16, _access: Access, _value: u32) {
        self.state().violation(format!("port write {port:#x}"));
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
        state.now += state.clock_step;
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

/// An instance of the `ahci` driver component on `platform`.
pub fn instance(platform: &FakeAhci, limits: Limits) -> (Store<DriverHost<FakeAhci>>, BlockDriver) {
    let mut linker = Linker::new(super::engine());
    wasi_dd::add_to_linker(&mut linker, |host: &mut DriverHost<FakeAhci>| host)
        .expect("linking WASI-dd");
    let host = DriverHost::new(Arc::new(platform.clone()), FakeAhci::function())
        .with_limits(limits)
        .with_name("ahci");
    let mut store = Store::new(super::engine(), host);
    let driver = BlockDriver::instantiate(&mut store, &super::driver("ahci"), &linker)
        .unwrap_or_else(|e| panic!("instantiating ahci: {e:#}"));
    (store, driver)
}
