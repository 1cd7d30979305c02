//! Serving a `nic-driver` to Linux: frames move between the driver's rings and a TAP interface
//! as DMA buffer handles, which the host fills and empties; the driver only writes
//! descriptors. The same round as Keel's `dd-host/src/nic.rs`, with a TAP where Keel has its
//! network stack: handle-interrupt and link (after an interrupt), receive and supply-rx, reclaim,
//! transmit.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::time::Duration;

use wasi_dd::bindings::host::wasi_dd::dd::dma::DmaBuffer;
use wasi_dd::bindings::nic_driver::exports::wasi_dd::dd::nic::{LinkStatus, TxFrame};
use wasi_dd::call_error;
use wasi_dd::platform::Platform;
use wasi_dd::{DriverHost, FRAME_BUFFER, NicDriver};
use wasmtime::Store;
use wasmtime::component::Resource;

use crate::sys::{self, Interest, Tap};

/// Frames taken from the driver per `receive` call.
const RECEIVE_BATCH: u32 = 64;
/// Frames read from Linux and offered to the driver per round.
pub const TX_BATCH: usize = 32;
/// Longest wait when nothing happens: the receive ring is looked at this often even if the
/// device's interrupt never comes.
const IDLE: Duration = Duration::from_millis(100);
/// Wait with frames queued for a full transmit ring (the completion interrupt normally ends it
/// sooner).
const TX_FULL_WAIT: Duration = Duration::from_millis(1);

/// Where frames come from and go to: the TAP interface, or a test's queue.
pub trait FramePort {
    /// One frame from Linux, if one is waiting (never blocks).
    fn read_frame(&mut self, buffer: &mut [u8]) -> io::Result<Option<usize>>;
    /// A frame for Linux.
    fn write_frame(&mut self, frame: &[u8]) -> io::Result<()>;
    /// The device's link went up or down.
    fn set_link(&mut self, up: bool);
}

impl FramePort for Tap {
    fn read_frame(&mut self, buffer: &mut [u8]) -> io::Result<Option<usize>> {
        match self.file().read(buffer) {
            Ok(length) => Ok(Some(length)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn write_frame(&mut self, frame: &[u8]) -> io::Result<()> {
        self.file().write(frame).map(drop)
    }

    fn set_link(&mut self, up: bool) {
        let _ = self.set_carrier(up);
    }
}

/// Frames and bytes each way, and frames dropped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NicCounters {
    pub received: u64,
    pub received_bytes: u64,
    /// Received frames Linux did not take (the interface down, its queue full).
    pub received_dropped: u64,
    pub sent: u64,
    pub sent_bytes: u64,
    /// Frames from Linux the driver could not send (longer than a buffer, or refused).
    pub sent_dropped: u64,
    /// Rounds of the loop, and how many of them followed an interrupt.
    pub rounds: u64,
    pub interrupts: u64,
    /// Waits that ended with no event (the timeout).
    pub timeouts: u64,
    /// Time spent in rounds (driver calls and copies), and waiting.
    pub busy_ns: u64,
    pub waiting_ns: u64,
}

/// How many queued frames to offer the driver this round. After the driver took fewer than it
/// was offered (its transmit ring is full) it gets only as many as it has since given back:
/// every buffer offered and not taken is dropped by the driver and must be allocated (and
/// mapped for DMA) again.
pub fn frames_to_offer(queued: usize, ring_full: bool, reclaimed: usize) -> usize {
    let offer = queued.min(TX_BATCH);
    if ring_full {
        offer.min(reclaimed)
    } else {
        offer
    }
}

/// The state of the frame loop between rounds.
pub struct NicLoop {
    tx_pool: Vec<Resource<DmaBuffer>>,
    /// Frames read from Linux that the driver has not taken yet (oldest first).
    queued: VecDeque<Vec<u8>>,
    /// The driver took fewer frames than offered last time.
    ring_full: bool,
    link: Option<LinkStatus>,
    pub counters: NicCounters,
    /// Set once a write to Linux failed, so that the log says it once.
    write_failed: bool,
}

/// What one round left to do: whether Linux's frames should be read (the queue has room) and
/// how long to wait at most.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NextWait {
    pub read_port: bool,
    pub timeout: Duration,
}

impl NicLoop {
    /// Initializes the NIC (`init`), fills its receive ring, and returns the loop with the MAC
    /// address the driver reported.
    pub fn start<P: Platform>(
        store: &mut Store<DriverHost<P>>,
        driver: &NicDriver,
    ) -> Result<(NicLoop, [u8; 6]), String> {
        let mac = wasi_dd::init_nic(store, driver)?;
        wasi_dd::fill_rx_ring(store, driver)?;
        let state = NicLoop {
            tx_pool: Vec::new(),
            queued: VecDeque::new(),
            ring_full: false,
            link: None,
            counters: NicCounters::default(),
            write_failed: false,
        };
        Ok((state, mac))
    }

    /// The link as the driver last reported it.
    pub fn link(&self) -> Option<LinkStatus> {
        self.link
    }

    /// One round: the interrupt cause and the link (if the interrupt `fired`), received frames
    /// to Linux and their buffers back to the ring, sent buffers back to the pool, then Linux's
    /// frames to the driver. `port_readable` says whether Linux may have frames waiting.
    pub fn round<P: Platform>(
        &mut self,
        store: &mut Store<DriverHost<P>>,
        driver: &NicDriver,
        port: &mut impl FramePort,
        fired: bool,
        port_readable: bool,
    ) -> Result<NextWait, String> {
        let nic = driver.wasi_dd_dd_nic();
        let ours = fired
            && nic
                .call_handle_interrupt(&mut *store)
                .map_err(|e| call_error("handle-interrupt", e))?;
        // The link is read after an interrupt that was the device's, and once at the start.
        if ours || self.link.is_none() {
            let link = nic
                .call_link(&mut *store)
                .map_err(|e| call_error("link", e))?;
            if self.link.is_none_or(|old| old.up != link.up) {
                port.set_link(link.up);
            }
            self.link = Some(link);
        }
        // Each frame goes to Linux as it is copied out, and the buffers go back to the ring
        // after all of them. Giving the buffers back first (Keel's order) measured slower in a
        // QEMU guest (a 16 MiB download: 21-24 s against 12-17 s). Either way the e1000's
        // 31 receive buffers overrun there (18-28 RXO per download, each dropped frame a
        // retransmission timeout of the sender), which is what bounds the throughput.
        let received = nic
            .call_receive(&mut *store, RECEIVE_BATCH)
            .map_err(|e| call_error("receive", e))?;
        let mut recycled = Vec::with_capacity(received.len());
        let mut bytes = vec![0; FRAME_BUFFER as usize];
        for rx in received {
            let length = (rx.length as usize).min(FRAME_BUFFER as usize);
            if store
                .data_mut()
                .read_buffer(&rx.buffer, 0, &mut bytes[..length])
                .is_ok()
            {
                match port.write_frame(&bytes[..length]) {
                    Ok(()) => {
                        self.counters.received += 1;
                        self.counters.received_bytes += length as u64;
                    }
                    Err(e) => {
                        self.counters.received_dropped += 1;
                        if !self.write_failed {
                            self.write_failed = true;
                            eprintln!("wasi-dd-run: a received frame was dropped: {e}");
                        }
                    }
                }
            }
            recycled.push(rx.buffer);
        }
        if !recycled.is_empty() {
            nic.call_supply_rx(&mut *store, &recycled)
                .map_err(|e| call_error("supply-rx", e))?
                .map_err(|code| format!("supply-rx: {}", code.name()))?;
        }
        let reclaimed = nic
            .call_reclaim(&mut *store)
            .map_err(|e| call_error("reclaim", e))?;
        let reclaimed_count = reclaimed.len();
        self.tx_pool.extend(reclaimed);
        // One byte more than a buffer holds, so that a frame too long to send shows.
        let mut frame = vec![0; FRAME_BUFFER as usize + 1];
        if port_readable {
            while self.queued.len() < TX_BATCH {
                match port.read_frame(&mut frame) {
                    // A frame longer than a buffer (an MTU above 2034 bytes) cannot be sent.
                    Ok(Some(length)) if length == frame.len() => self.counters.sent_dropped += 1,
                    Ok(Some(length)) if length > 0 => {
                        self.queued.push_back(frame[..length].to_vec())
                    }
                    Ok(_) => break,
                    Err(e) => return Err(format!("reading frames from Linux: {e}")),
                }
            }
        }
        let offer = frames_to_offer(self.queued.len(), self.ring_full, reclaimed_count);
        if offer > 0 {
            let mut batch = Vec::with_capacity(offer);
            for bytes in self.queued.iter().take(offer) {
                let buffer = match self.tx_pool.pop() {
                    Some(buffer) => buffer,
                    None => store
                        .data_mut()
                        .allocate_buffer(FRAME_BUFFER)
                        .map_err(|code| format!("transmit buffers: {}", code.name()))?,
                };
                store
                    .data_mut()
                    .write_buffer(&buffer, 0, bytes)
                    .map_err(|code| format!("filling a frame: {}", code.name()))?;
                batch.push(TxFrame {
                    buffer,
                    length: bytes.len() as u32,
                });
            }
            let taken = match nic.call_transmit(&mut *store, &batch) {
                Ok(Ok(taken)) => (taken as usize).min(offer),
                Ok(Err(code)) => {
                    // A frame the driver refuses (too long for it) would be refused forever.
                    let dropped = self.queued.pop_front().map_or(0, |f| f.len());
                    self.counters.sent_dropped += 1;
                    eprintln!(
                        "wasi-dd-run: transmit: {} (a {dropped}-byte frame dropped)",
                        code.name()
                    );
                    0
                }
                Err(e) => return Err(call_error("transmit", e)),
            };
            for bytes in self.queued.drain(..taken) {
                self.counters.sent += 1;
                self.counters.sent_bytes += bytes.len() as u64;
            }
            self.ring_full = taken < offer;
        } else if reclaimed_count > 0 {
            self.ring_full = false;
        }
        let backlog = !self.queued.is_empty();
        Ok(NextWait {
            read_port: self.queued.len() < TX_BATCH,
            timeout: if backlog { TX_FULL_WAIT } else { IDLE },
        })
    }
}

/// Runs the NIC on `tap` until the driver fails or `stop` (a signalfd) becomes readable. The
/// interrupt is waited for together with the TAP: `interrupt` returns its state once the
/// driver has routed it (a driver that polls has none).
pub fn serve<P: Platform>(
    store: &mut Store<DriverHost<P>>,
    driver: &NicDriver,
    mut state: NicLoop,
    tap: &mut Tap,
    interrupt: impl Fn() -> Option<std::sync::Arc<crate::platform::IrqState>>,
    stop: &std::fs::File,
) -> Result<NicCounters, String> {
    use std::os::fd::AsFd;
    // The first round reads the interrupt cause and the link as if the interrupt fired.
    let mut fired = true;
    let mut readable = true;
    loop {
        let started = std::time::Instant::now();
        let next = state.round(store, driver, tap, fired, readable)?;
        let waiting = std::time::Instant::now();
        state.counters.rounds += 1;
        state.counters.interrupts += u64::from(fired);
        state.counters.busy_ns += (waiting - started).as_nanos() as u64;
        let irq = interrupt();
        let mut fds = vec![(stop.as_fd(), Interest::Read)];
        if next.read_port {
            fds.push((tap.file().as_fd(), Interest::Read));
        }
        if let Some(irq) = &irq {
            fds.push((irq.fd(), Interest::Read));
        }
        let ready = sys::poll(&fds, Some(next.timeout)).map_err(|e| format!("poll: {e}"))?;
        state.counters.waiting_ns += waiting.elapsed().as_nanos() as u64;
        if ready[0] {
            return Ok(state.counters);
        }
        readable = next.read_port && ready[1];
        fired = irq.as_ref().is_some_and(|irq| irq.take());
        state.counters.timeouts += u64::from(!ready.contains(&true));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offers_everything_queued_up_to_a_batch_while_the_ring_has_room() {
        assert_eq!(frames_to_offer(0, false, 0), 0);
        assert_eq!(frames_to_offer(5, false, 0), 5);
        assert_eq!(frames_to_offer(100, false, 0), TX_BATCH);
    }

    #[test]
    fn a_full_ring_gets_only_what_it_gave_back() {
        assert_eq!(frames_to_offer(10, true, 0), 0);
        assert_eq!(frames_to_offer(10, true, 3), 3);
        assert_eq!(frames_to_offer(2, true, 3), 2);
        assert_eq!(frames_to_offer(100, true, 64), TX_BATCH);
    }
}
