//! The `e1000` driver (`drivers-wasm/e1000`, built by `keel build-drivers`) against the fake
//! 82540EM of `common/e1000.rs`: initialisation, frames out and in through host buffers, ring
//! wrap-around, full rings, interrupts and the link, and no access outside what it was given.

mod common;

use common::e1000::*;
use wasi_dd::bindings::host::wasi_dd::dd::dma::{DmaBuffer, HostDmaBuffer};
use wasi_dd::bindings::nic_driver::exports::wasi_dd::dd::nic::{LinkStatus, TxFrame};
use wasi_dd::{DriverHost, ErrorCode, NicDriver};
use wasmtime::Store;
use wasmtime::component::Resource;

const BUFFER_BYTES: u64 = 2048;
const TX_RING: usize = 32;
const RX_RING: usize = 256;

struct Nic {
    platform: FakeE1000,
    store: Store<DriverHost<FakeE1000>>,
    driver: NicDriver,
}

/// A frame: broadcast destination, the device's source address, an EtherType and a payload
/// that differs with `seed`.
fn frame(seed: usize, len: usize) -> Vec<u8> {
    let mut bytes = vec![0xff; 6];
    bytes.extend(MAC);
    bytes.extend([0x88, 0xb5]);
    bytes.extend((0..len - 14).map(|i| (i * 7 + seed * 31) as u8));
    bytes
}

impl Nic {
    fn new(platform: FakeE1000) -> Nic {
        let (store, driver) = instance(&platform);
        Nic {
            platform,
            store,
            driver,
        }
    }

    fn started() -> Nic {
        let mut nic = Nic::new(FakeE1000::new());
        assert_eq!(nic.init(), Ok(MAC.to_vec()));
        nic
    }

    fn init(&mut self) -> Result<Vec<u8>, ErrorCode> {
        let device = self.store.data_mut().device().unwrap();
        self.driver
            .wasi_dd_dd_nic()
            .call_init(&mut self.store, device)
            .unwrap()
    }

    fn buffer(&mut self, size: u64, contents: &[u8]) -> Resource<DmaBuffer> {
        let host = self.store.data_mut();
        let buffer = host.allocate_buffer(size).unwrap();
        host.write_buffer(&buffer, 0, contents).unwrap();
        buffer
    }

    fn contents(&mut self, buffer: &Resource<DmaBuffer>, len: usize) -> Vec<u8> {
        let mut out = vec![0; len];
        self.store
            .data_mut()
            .read_buffer(buffer, 0, &mut out)
            .unwrap();
        out
    }

    fn tx_frames(&mut self, frames: &[Vec<u8>]) -> Vec<TxFrame> {
        frames
            .iter()
            .map(|bytes| TxFrame {
                buffer: self.buffer(BUFFER_BYTES, bytes),
                length: bytes.len() as u32,
            })
            .collect()
    }

    fn transmit(&mut self, frames: Vec<TxFrame>) -> Result<u32, ErrorCode> {
        self.driver
            .wasi_dd_dd_nic()
            .call_transmit(&mut self.store, &frames)
            .unwrap()
    }

    fn send(&mut self, frames: &[Vec<u8>]) -> Result<u32, ErrorCode> {
        let frames = self.tx_frames(frames);
        self.transmit(frames)
    }

    fn reclaim(&mut self) -> Vec<Resource<DmaBuffer>> {
        self.driver
            .wasi_dd_dd_nic()
            .call_reclaim(&mut self.store)
            .unwrap()
    }

    fn supply(&mut self, buffers: Vec<Resource<DmaBuffer>>) -> Result<u32, ErrorCode> {
        self.driver
            .wasi_dd_dd_nic()
            .call_supply_rx(&mut self.store, &buffers)
            .unwrap()
    }

    fn supply_new(&mut self, count: usize) -> Result<u32, ErrorCode> {
        let buffers = (0..count).map(|_| self.buffer(BUFFER_BYTES, &[])).collect();
        self.supply(buffers)
    }

    /// Received frames: their contents (as long as the driver said) and their buffers.
    fn receive(&mut self, max: u32) -> Vec<(Vec<u8>, Resource<DmaBuffer>)> {
        let frames = self
            .driver
            .wasi_dd_dd_nic()
            .call_receive(&mut self.store, max)
            .unwrap();
        frames
            .into_iter()
            .map(|frame| {
                let bytes = self.contents(&frame.buffer, frame.length as usize);
                (bytes, frame.buffer)
            })
            .collect()
    }

    fn handle_interrupt(&mut self) -> bool {
        self.driver
            .wasi_dd_dd_nic()
            .call_handle_interrupt(&mut self.store)
            .unwrap()
    }

    /// `link()` as (up, speed in Mb/s, full duplex).
    fn link(&mut self) -> (bool, u32, bool) {
        let LinkStatus {
            up,
            speed_mbps,
            full_duplex,
        } = self
            .driver
            .wasi_dd_dd_nic()
            .call_link(&mut self.store)
            .unwrap();
        (up, speed_mbps, full_duplex)
    }

    fn free(&mut self, buffer: Resource<DmaBuffer>) {
        HostDmaBuffer::drop(self.store.data_mut(), buffer).unwrap();
    }

    fn register(&self, offset: u64) -> u32 {
        self.platform.state().register(offset)
    }

    fn writes_to(&self, offset: u64) -> Vec<u32> {
        let state = self.platform.state();
        state
            .writes
            .iter()
            .filter(|(o, _)| *o == offset)
            .map(|(_, v)| *v)
            .collect()
    }

    fn assert_clean(&self) {
        assert_eq!(self.platform.state().violations, Vec::<String>::new());
    }
}

#[test]
fn init_returns_the_mac_and_programs_the_rings() {
    let nic = Nic::started();
    let state = nic.platform.state();
    assert_eq!(state.register(RDLEN), RX_RING as u32 * 16);
    assert_eq!(state.register(TDLEN), TX_RING as u32 * 16);
    assert_eq!(state.register(RCTL), RCTL_EN | (1 << 15) | (1 << 26));
    assert_eq!(
        state.register(TCTL),
        TCTL_EN | (1 << 3) | (0x0f << 4) | (0x40 << 12)
    );
    assert_eq!(state.register(TIPG), 10 | (8 << 10) | (6 << 20));
    assert_eq!(
        state.register(IMS),
        INT_RXT0 | INT_RXO | (1 << 4) | INT_LSC | INT_TXDW
    );
    for head_or_tail in [RDH, RDT, TDH, TDT] {
        assert_eq!(state.register(head_or_tail), 0);
    }
    let rx_ring = u64::from(state.register(RDBAL)) | (u64::from(state.register(RDBAH)) << 32);
    let tx_ring = u64::from(state.register(TDBAL)) | (u64::from(state.register(TDBAH)) << 32);
    assert_ne!(rx_ring, tx_ring);
    for (ring, bytes) in [
        (rx_ring, RX_RING as u64 * 16),
        (tx_ring, TX_RING as u64 * 16),
    ] {
        assert!(
            state.allocations.contains(&(ring, bytes)),
            "ring {ring:#x} is not a {bytes}-byte DMA buffer of the driver: {:?}",
            state.allocations
        );
    }
    // Interrupts off, then the global reset, before anything else.
    assert_eq!(state.writes[0], (IMC, 0xffff_ffff));
    assert_eq!(state.writes[1].0, CTRL);
    assert_ne!(state.writes[1].1 & CTRL_RST, 0);
    assert_eq!(state.writes[2], (IMC, 0xffff_ffff));
    let ctrl = state.register(CTRL);
    assert_eq!(ctrl & CTRL_SLU, CTRL_SLU);
    assert_eq!(ctrl & (1 << 5), 1 << 5, "ASDE");
    assert_eq!(state.register(RAH0), 0x5634 | RAH_AV);
    assert_eq!(state.register(RAL0), 0x1200_5452);
    let mta: Vec<_> = state
        .writes
        .iter()
        .filter(|(o, _)| (MTA..MTA + 0x200).contains(o))
        .collect();
    assert_eq!(mta.len(), 128);
    assert!(mta.iter().all(|(_, v)| *v == 0));
    assert!(state.bus_master());
    drop(state);
    let mut nic = nic;
    assert_eq!(nic.link(), (true, 1000, true));
    nic.assert_clean();
}

#[test]
fn init_reads_the_mac_from_the_eeprom_when_the_receive_address_is_zero() {
    let platform = FakeE1000::new();
    let other = [0x02, 0x00, 0x5e, 0xaa, 0xbb, 0xcc];
    {
        let mut state = platform.state();
        state.autoload_mac = false;
        for i in 0..3 {
            state.eeprom[i] = u16::from_le_bytes([other[2 * i], other[2 * i + 1]]);
        }
    }
    let mut nic = Nic::new(platform);
    assert_eq!(nic.init(), Ok(other.to_vec()));
    assert_eq!(nic.register(RAL0), 0xaa5e_0002);
    assert_eq!(nic.register(RAH0), 0xccbb | RAH_AV);
    assert_eq!(nic.writes_to(EERD), vec![1, (1 << 8) | 1, (2 << 8) | 1]);
    nic.assert_clean();
}

#[test]
fn one_transmit_call_sends_three_frames_and_reclaim_returns_their_buffers() {
    let mut nic = Nic::started();
    let frames = vec![frame(1, 60), frame(2, 1514), frame(3, 342)];
    let tx_frames = nic.tx_frames(&frames);
    let reps: Vec<u32> = tx_frames.iter().map(|f| f.buffer.rep()).collect();
    let tdt_writes = nic.writes_to(TDT).len();
    assert_eq!(nic.transmit(tx_frames), Ok(3));
    assert_eq!(
        nic.writes_to(TDT).len(),
        tdt_writes + 1,
        "one TDT write a batch"
    );
    assert_eq!(nic.register(TDT), 3);
    let sent = nic.platform.state().sent.clone();
    assert_eq!(
        sent,
        frames
            .iter()
            .map(|bytes| Sent {
                bytes: bytes.clone(),
                command: TX_CMD_EOP | TX_CMD_IFCS | TX_CMD_RS,
            })
            .collect::<Vec<_>>()
    );
    let back = nic.reclaim();
    assert_eq!(back.iter().map(|b| b.rep()).collect::<Vec<_>>(), reps);
    for (buffer, bytes) in back.iter().zip(&frames) {
        assert_eq!(&nic.contents(buffer, bytes.len()), bytes);
    }
    assert!(nic.reclaim().is_empty());
    nic.assert_clean();
}

#[test]
fn reclaim_returns_only_the_frames_the_device_finished() {
    let mut nic = Nic::started();
    nic.platform.state().tx_paused = true;
    assert_eq!(nic.send(&[frame(1, 100), frame(2, 200)]), Ok(2));
    assert!(nic.platform.state().sent.is_empty());
    assert!(nic.reclaim().is_empty());
    nic.platform.state().run_tx();
    assert_eq!(nic.platform.state().sent.len(), 2);
    assert_eq!(nic.reclaim().len(), 2);
    nic.assert_clean();
}

#[test]
fn five_injected_frames_are_received_with_their_lengths_and_contents() {
    let mut nic = Nic::started();
    assert_eq!(nic.supply_new(8), Ok(8));
    assert_eq!(nic.register(RDT), 8);
    let frames: Vec<_> = [60, 1514, 64, 999, 128]
        .iter()
        .enumerate()
        .map(|(i, len)| frame(i, *len))
        .collect();
    for bytes in &frames {
        assert!(nic.platform.state().inject(bytes));
    }
    let received = nic.receive(8);
    assert_eq!(
        received.iter().map(|(b, _)| b.clone()).collect::<Vec<_>>(),
        frames
    );
    assert!(nic.receive(8).is_empty());
    nic.assert_clean();
}

#[test]
fn receive_hands_back_at_most_max_frames() {
    let mut nic = Nic::started();
    assert_eq!(nic.supply_new(8), Ok(8));
    for i in 0..5 {
        assert!(nic.platform.state().inject(&frame(i, 80)));
    }
    let first = nic.receive(2);
    assert_eq!(first.len(), 2);
    let rest = nic.receive(8);
    assert_eq!(
        rest.iter().map(|(b, _)| b.clone()).collect::<Vec<_>>(),
        (2..5).map(|i| frame(i, 80)).collect::<Vec<_>>()
    );
    nic.assert_clean();
}

#[test]
fn bad_and_split_frames_are_dropped_and_their_buffers_reposted() {
    let mut nic = Nic::started();
    assert_eq!(nic.supply_new(8), Ok(8));
    let good = [frame(1, 60), frame(2, 70), frame(3, 80)];
    {
        let mut state = nic.platform.state();
        assert!(state.inject(&good[0]));
        assert!(state.inject_descriptor(&frame(9, 90), RX_STA_DD | RX_STA_EOP, RX_ERR_CE));
        assert!(state.inject(&good[1]));
        assert!(state.inject_descriptor(&frame(10, 2048), RX_STA_DD, 0));
        assert!(state.inject_descriptor(&frame(11, 100), RX_STA_DD | RX_STA_EOP, 0));
        assert!(state.inject(&good[2]));
    }
    let received: Vec<_> = nic.receive(8).into_iter().map(|(b, _)| b).collect();
    assert_eq!(received, good.to_vec());
    assert_eq!(nic.register(RDT), 11, "three buffers went back to the ring");
    nic.assert_clean();
}

#[test]
fn both_rings_wrap_around() {
    let mut nic = Nic::started();
    let mut expected = Vec::new();
    for round in 0..5 {
        let frames: Vec<_> = (0..10)
            .map(|i| frame(round * 10 + i, 60 + i * 50))
            .collect();
        assert_eq!(nic.send(&frames), Ok(10));
        let back = nic.reclaim();
        assert_eq!(back.len(), 10);
        for buffer in back {
            nic.free(buffer);
        }
        expected.extend(frames);
    }
    let sent: Vec<_> = nic
        .platform
        .state()
        .sent
        .iter()
        .map(|s| s.bytes.clone())
        .collect();
    assert_eq!(sent, expected);
    assert_eq!(nic.register(TDH), (50 % TX_RING) as u32);

    assert_eq!(nic.supply_new(16), Ok(16));
    for round in 0..30 {
        let frames: Vec<_> = (0..10).map(|i| frame(round * 10 + i, 1514 - i)).collect();
        for bytes in &frames {
            assert!(nic.platform.state().inject(bytes));
        }
        let received = nic.receive(10);
        let (bytes, buffers): (Vec<_>, Vec<_>) = received.into_iter().unzip();
        assert_eq!(bytes, frames);
        assert_eq!(nic.supply(buffers), Ok(10));
    }
    assert_eq!(nic.register(RDH), (300 % RX_RING) as u32);
    assert_eq!(nic.register(RDT), ((16 + 300) % RX_RING) as u32);
    nic.assert_clean();
}

#[test]
fn full_rings_take_part_of_a_batch() {
    let mut nic = Nic::started();
    let frames: Vec<_> = (0..40).map(|i| frame(i, 100)).collect();
    let tx_frames = nic.tx_frames(&frames);
    let before = nic.store.data().dma_in_use();
    assert_eq!(nic.transmit(tx_frames), Ok(TX_RING as u32 - 1));
    assert_eq!(
        nic.store.data().dma_in_use(),
        before - 9 * BUFFER_BYTES,
        "the frames not taken are dropped, their buffers freed"
    );
    assert_eq!(nic.send(&[frame(99, 100)]), Ok(0));
    assert_eq!(nic.reclaim().len(), 31);
    assert_eq!(nic.send(&frames[31..36]), Ok(5));
    let sent: Vec<_> = nic
        .platform
        .state()
        .sent
        .iter()
        .map(|s| s.bytes.clone())
        .collect();
    assert_eq!(sent, frames[..36].to_vec());

    assert_eq!(nic.supply_new(300), Ok(RX_RING as u32 - 1));
    assert_eq!(nic.supply_new(1), Ok(0));
    for i in 0..RX_RING {
        assert_eq!(nic.platform.state().inject(&frame(i, 70)), i < RX_RING - 1);
    }
    assert_eq!(nic.receive(64).len(), 64);
    assert_eq!(nic.receive(u32::MAX).len(), RX_RING - 1 - 64);
    nic.assert_clean();
}

#[test]
fn handle_interrupt_reads_the_cause_and_tracks_the_link() {
    let mut nic = Nic::started();
    assert!(!nic.handle_interrupt(), "no cause pending after init");
    let interrupts = nic.platform.state().interrupts;
    nic.platform.state().set_cable(false);
    assert_eq!(nic.platform.state().interrupts, interrupts + 1);
    let acknowledged = nic.platform.state().acknowledged;
    assert!(nic.handle_interrupt());
    assert_eq!(nic.platform.state().acknowledged, acknowledged + 1);
    assert_eq!(nic.register(ICR), 0, "ICR cleared by the read");
    assert_eq!(nic.link(), (false, 0, false));
    nic.platform.state().set_cable(true);
    assert!(nic.handle_interrupt());
    assert_eq!(nic.link(), (true, 1000, true));

    assert_eq!(nic.send(&[frame(0, 60)]), Ok(1));
    assert_eq!(nic.register(ICR) & INT_TXDW, INT_TXDW);
    assert!(nic.handle_interrupt());
    assert_eq!(nic.register(ICR), 0);
    assert!(!nic.handle_interrupt());
    nic.assert_clean();
}

#[test]
fn bad_buffers_are_refused() {
    let mut nic = Nic::started();
    let small = nic.buffer(1024, &[]);
    assert_eq!(nic.supply(vec![small]), Err(ErrorCode::OutOfRange));
    assert_eq!(nic.register(RDT), 0);
    let buffer = nic.buffer(256, &frame(0, 60));
    let too_long = TxFrame {
        buffer,
        length: 257,
    };
    assert_eq!(nic.transmit(vec![too_long]), Err(ErrorCode::OutOfRange));
    let buffer = nic.buffer(256, &[]);
    let empty = TxFrame { buffer, length: 0 };
    assert_eq!(nic.transmit(vec![empty]), Err(ErrorCode::OutOfRange));
    assert!(nic.platform.state().sent.is_empty());
    assert_eq!(nic.register(TDT), 0);
    nic.assert_clean();
}

/// A driver that ends with its rings live (here: its store is dropped, as when it traps or is
/// killed) leaves a quiet device: the host turns bus mastering off before the rings' memory
/// and the frame buffers are freed.
#[test]
fn an_ended_driver_leaves_no_device_dma_into_freed_memory() {
    let mut nic = Nic::started();
    let buffers: Vec<_> = (0..8).map(|_| nic.buffer(BUFFER_BYTES, &[])).collect();
    let taken = nic
        .driver
        .wasi_dd_dd_nic()
        .call_supply_rx(&mut nic.store, &buffers)
        .unwrap()
        .unwrap();
    assert_eq!(taken, 8);
    assert!(nic.platform.state().bus_master());
    let Nic {
        platform, store, ..
    } = nic;
    let freed_before = platform.state().freed_while_mastering;
    drop(store);
    let state = platform.state();
    assert!(!state.bus_master(), "bus mastering left on");
    assert_eq!(
        state.freed_while_mastering, freed_before,
        "ring or frame memory freed while the device could still use it"
    );
    assert!(state.dma_is_empty(), "DMA memory not given back");
    assert_eq!(state.violations, Vec::<String>::new());
}

#[test]
fn calls_before_init_do_nothing() {
    let mut nic = Nic::new(FakeE1000::new());
    assert_eq!(nic.send(&[frame(0, 60)]), Err(ErrorCode::NoSuchResource));
    assert_eq!(nic.supply_new(1), Err(ErrorCode::NoSuchResource));
    assert!(nic.receive(8).is_empty());
    assert!(nic.reclaim().is_empty());
    assert!(!nic.handle_interrupt());
    assert_eq!(nic.link(), (false, 0, false));
    assert!(nic.platform.state().writes.is_empty());
    nic.assert_clean();
}
