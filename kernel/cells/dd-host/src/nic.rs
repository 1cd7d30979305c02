//! A NIC driver instance serving Keel's network stack: frames move between the driver's rings
//! and [`keel_net::Stack`] as DMA buffer handles, which the host fills and empties; the driver
//! only writes descriptors.

use crate::platform::{InterruptSlot, KeelPlatform};
use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};
use keel_net::Stack;
use keel_sync::IrqSafeMutex;
use keel_task::{EventCount, Mutex};
use wasi_dd::DriverHost;
use wasi_dd::bindings::host::wasi_dd::dd::dma::DmaBuffer;
use wasi_dd::bindings::nic_driver::exports::wasi_dd::dd::nic::TxFrame;
use wasi_dd::call_error;
use wasi_dd::{FRAME_BUFFER, NicDriver};
use wasmtime::Store;
use wasmtime::component::Resource;

/// The network interface, once a NIC driver is up (Keel has one).
pub static NETWORK: Mutex<Option<Stack>> = Mutex::new(None);

/// Notified after every round of the NIC loop: programs waiting on sockets look again.
pub static ACTIVITY: EventCount = EventCount::new();

/// The running NIC driver's interrupt slot, so that [`kick`] can wake its loop.
static NIC_INTERRUPT: IrqSafeMutex<Option<alloc::sync::Arc<InterruptSlot>>> =
    IrqSafeMutex::new(None);

/// Asks the NIC loop for a round now: a program queued data to send.
pub fn kick() {
    let slot = NIC_INTERRUPT.lock().clone();
    if let Some(slot) = slot {
        slot.poke();
    }
}

/// Where the NIC loop's CPU time went since boot, for the per-packet split `ifconfig -v` shows
/// and `keel bench` reports.
#[derive(Clone, Copy, Debug, Default)]
pub struct PacketCost {
    /// Frames received plus frames sent.
    pub packets: u64,
    /// In the driver's Wasm code: its component calls minus the host calls they made.
    pub driver_ns: u64,
    /// In WASI-dd host functions the driver called (register batches, DMA buffer access, ...).
    pub host_calls_ns: u64,
    pub host_calls: u64,
    /// Copying frames between the stack and the DMA buffers.
    pub copy_ns: u64,
    /// In the network stack: frames in, timers, frames out.
    pub stack_ns: u64,
}

pub static PACKET_COST: IrqSafeMutex<PacketCost> = IrqSafeMutex::new(PacketCost {
    packets: 0,
    driver_ns: 0,
    host_calls_ns: 0,
    host_calls: 0,
    copy_ns: 0,
    stack_ns: 0,
});

/// Time in host functions of the NIC driver's store, summed by its call hook.
static HOST_CALLS_NS: AtomicU64 = AtomicU64::new(0);
static HOST_CALLS: AtomicU64 = AtomicU64::new(0);

/// Time spent in `f`, added to `total`.
fn timed<R>(total: &mut u64, f: impl FnOnce() -> R) -> R {
    let start = keel_time::now_ns();
    let result = f();
    *total += keel_time::now_ns() - start;
    result
}

/// Longest the loop sleeps when nothing happens, so timers and sockets are served.
const IDLE_NS: u64 = 10_000_000;

/// Initializes the NIC and serves the network stack until the driver fails or traps.
pub(crate) fn serve(
    store: &mut Store<DriverHost<KeelPlatform>>,
    driver: &NicDriver,
    interrupts: &alloc::sync::Arc<InterruptSlot>,
    running: impl FnOnce(),
) -> Result<String, String> {
    *NIC_INTERRUPT.lock() = Some(interrupts.clone());
    let mut entered = 0;
    let watch = keel_task::kill_watch();
    // Replaces the manager's hook: the same kill check, and the time spent in host calls.
    store.call_hook(move |_, hook| {
        match hook {
            wasmtime::CallHook::CallingHost => entered = keel_time::now_ns(),
            wasmtime::CallHook::ReturningFromHost => {
                HOST_CALLS_NS.fetch_add(keel_time::now_ns() - entered, Ordering::Relaxed);
                HOST_CALLS.fetch_add(1, Ordering::Relaxed);
            }
            _ => {}
        }
        crate::manager::stop_if_killed(&watch, hook)
    });
    let mac = wasi_dd::init_nic(store, driver)?;
    {
        // A restarted driver serves the stack that is already there, so that programs' sockets
        // (handles into it) stay valid; the link comes back with the driver's first round.
        let mut network = NETWORK.lock();
        match network.as_mut() {
            Some(stack) => stack.set_mac(mac),
            None => *network = Some(Stack::new(mac, keel_time::now_ns())),
        }
    }
    running();
    wasi_dd::fill_rx_ring(store, driver)?;
    let mut tx_pool: Vec<Resource<DmaBuffer>> = Vec::new();
    // The first round reads the interrupt cause and the link state as if the interrupt fired.
    let mut fired = true;
    let result = loop {
        if keel_task::kill_requested() {
            break String::from("killed");
        }
        match serve_once(store, driver, interrupts, &mut tx_pool, fired) {
            Ok(next) => fired = next,
            // A kill stops the driver's code with a trap, which the call reports.
            Err(_) if keel_task::kill_requested() => break String::from("killed"),
            Err(why) => break why,
        }
    };
    if let Some(stack) = NETWORK.lock().as_mut() {
        stack.set_link(false);
    }
    Err(result)
}

/// One round: the interrupt cause and link state (only if the interrupt `fired`), received
/// frames, the stack, frames to send, then a wait for the interrupt or the stack's next timer.
/// Returns whether the interrupt fired during that wait.
fn serve_once(
    store: &mut Store<DriverHost<KeelPlatform>>,
    driver: &NicDriver,
    interrupts: &InterruptSlot,
    tx_pool: &mut Vec<Resource<DmaBuffer>>,
    fired: bool,
) -> Result<bool, String> {
    let nic = driver.wasi_dd_dd_nic();
    let mut cost = PacketCost::default();
    let host_before = HOST_CALLS_NS.load(Ordering::Relaxed);
    let calls_before = HOST_CALLS.load(Ordering::Relaxed);
    let mut in_driver = 0;
    let link = if fired
        && timed(&mut in_driver, || nic.call_handle_interrupt(&mut *store))
            .map_err(|e| call_error("handle-interrupt", e))?
    {
        Some(
            timed(&mut in_driver, || nic.call_link(&mut *store))
                .map_err(|e| call_error("link", e))?,
        )
    } else {
        None
    };
    let received = timed(&mut in_driver, || nic.call_receive(&mut *store, 64))
        .map_err(|e| call_error("receive", e))?;
    let mut frames = Vec::with_capacity(received.len());
    let mut recycled = Vec::with_capacity(received.len());
    timed(&mut cost.copy_ns, || {
        for frame in received {
            let mut bytes = vec![0; frame.length as usize];
            if store
                .data_mut()
                .read_buffer(&frame.buffer, 0, &mut bytes)
                .is_ok()
            {
                frames.push(bytes);
            }
            recycled.push(frame.buffer);
        }
    });
    cost.packets += frames.len() as u64;
    if !recycled.is_empty() {
        timed(&mut in_driver, || {
            nic.call_supply_rx(&mut *store, &recycled)
        })
        .map_err(|e| call_error("supply-rx", e))?
        .map_err(|code| format!("supply-rx: {}", code.name()))?;
    }
    let (outgoing, delay) = timed(&mut cost.stack_ns, || {
        let mut network = NETWORK.lock();
        let stack = network.as_mut().ok_or("the network stack is gone")?;
        if let Some(link) = link {
            stack.set_link(link.up);
        }
        for frame in frames {
            stack.receive_frame(frame);
        }
        let delay = stack.poll(keel_time::now_ns());
        Ok::<_, String>((stack.take_frames(32), delay))
    })?;
    tx_pool.extend(
        timed(&mut in_driver, || nic.call_reclaim(&mut *store))
            .map_err(|e| call_error("reclaim", e))?,
    );
    if !outgoing.is_empty() {
        let mut batch = Vec::with_capacity(outgoing.len());
        let mut lengths = Vec::with_capacity(outgoing.len());
        timed(&mut cost.copy_ns, || {
            for frame in &outgoing {
                let buffer = match tx_pool.pop() {
                    Some(buffer) => buffer,
                    None => store
                        .data_mut()
                        .allocate_buffer(FRAME_BUFFER)
                        .map_err(|code| format!("transmit buffers: {}", code.name()))?,
                };
                store
                    .data_mut()
                    .write_buffer(&buffer, 0, frame)
                    .map_err(|code| format!("filling a frame: {}", code.name()))?;
                lengths.push(frame.len() as u64);
                batch.push(TxFrame {
                    buffer,
                    length: frame.len() as u32,
                });
            }
            Ok::<_, String>(())
        })?;
        let taken = match timed(&mut in_driver, || nic.call_transmit(&mut *store, &batch)) {
            Ok(Ok(taken)) => taken as usize,
            Ok(Err(_)) => 0,
            Err(e) => return Err(call_error("transmit", e)),
        };
        cost.packets += taken as u64;
        let bytes: u64 = lengths.iter().take(taken).sum();
        if let Some(stack) = NETWORK.lock().as_mut() {
            stack.count_sent(taken as u64, bytes, (outgoing.len() - taken) as u64);
        }
    }
    let host_ns = HOST_CALLS_NS.load(Ordering::Relaxed) - host_before;
    {
        let mut total = PACKET_COST.lock();
        total.packets += cost.packets;
        total.driver_ns += in_driver.saturating_sub(host_ns);
        total.host_calls_ns += host_ns;
        total.host_calls += HOST_CALLS.load(Ordering::Relaxed) - calls_before;
        total.copy_ns += cost.copy_ns;
        total.stack_ns += cost.stack_ns;
    }
    ACTIVITY.notify_all();
    let wait = delay.unwrap_or(IDLE_NS).min(IDLE_NS);
    Ok(wait > 0 && interrupts.wait(wait))
}
