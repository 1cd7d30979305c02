//! A block driver instance serving Keel's block layer. Each disk the driver finds becomes a
//! [`DriverDisk`], a [`BlockDevice`] that any task may use: its requests are queued to the
//! driver's task, which moves them into DMA buffers, submits as many as the disk takes at once,
//! and hands back results as the driver completes them. Payloads never pass through the driver:
//! the host fills and empties the buffers, the device moves them by DMA.

use crate::platform::{InterruptSlot, KeelPlatform};
use alloc::collections::{BTreeMap, VecDeque};
use alloc::format;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec;
use alloc::vec::Vec;
use keel_block::{BlockDevice, BlockError, check_request};
use keel_sync::IrqSafeMutex;
use keel_task::WaitQueue;
use wasi_dd::bindings::block_driver::exports::wasi_dd::dd::block::{BlockOp, BlockRequest};
use wasi_dd::bindings::host::wasi_dd::dd::dma::DmaBuffer;
use wasi_dd::bindings::host::wasi_dd::dd::types::ErrorCode;
use wasi_dd::types::PciAddress;
use wasi_dd::{BlockDriver, DriverHost};
use wasmtime::Store;
use wasmtime::component::Resource;

/// Longest one request may be (in bytes), whatever the driver allows: big enough for full-speed
/// sequential transfers, small enough that a few in flight do not exhaust DMA memory.
const MAX_REQUEST_BYTES: usize = 1 << 20;
/// Free DMA buffers kept for reuse, per size class.
const POOLED_PER_CLASS: usize = 8;
/// How long the driver's loop sleeps with requests in flight before it asks the driver for
/// completions anyway (an interrupt normally ends the wait much sooner).
const IN_FLIGHT_POLL_NS: u64 = 20_000_000;
/// How long the loop sleeps with nothing to do.
const IDLE_NS: u64 = 1_000_000_000;

/// What the driver reported about one of its disks.
#[derive(Clone, Debug)]
pub struct DiskInfo {
    pub sector_size: u32,
    pub sector_count: u64,
    pub model: String,
    pub serial: String,
    pub queue_depth: u32,
    pub max_sectors: u32,
}

/// A disk of a block driver instance: Keel's name for it, what the driver said, and the way to
/// its driver's task.
pub struct DriverDisk {
    pub name: String,
    pub driver: String,
    pub info: DiskInfo,
    /// The controller and its name for the disk: a restarted driver on the same controller
    /// serves the same `DriverDisk` again (mounted file systems keep working).
    function: PciAddress,
    index: u32,
    queue: IrqSafeMutex<Arc<RequestQueue>>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Op {
    Read,
    Write,
    Flush,
}

/// Where a finished request's result lands; the submitting task waits on `done`.
struct Reply {
    result: IrqSafeMutex<Option<Result<Vec<u8>, BlockError>>>,
    done: WaitQueue,
}

impl Reply {
    fn new() -> Arc<Reply> {
        Arc::new(Reply {
            result: IrqSafeMutex::new(None),
            done: WaitQueue::new(),
        })
    }

    fn complete(&self, result: Result<Vec<u8>, BlockError>) {
        *self.result.lock() = Some(result);
        self.done.notify_all();
    }

    fn wait(&self) -> Result<Vec<u8>, BlockError> {
        self.done.wait_until(|| self.result.lock().take())
    }
}

struct Pending {
    disk: u32,
    op: Op,
    lba: u64,
    count: u32,
    /// The transfer's size (0 for a flush).
    bytes: usize,
    /// What to write; for a read, empty.
    data: Vec<u8>,
    reply: Arc<Reply>,
}

/// The requests of one driver instance's disks, between the tasks that make them and the
/// driver's task that serves them. One lock covers both fields, so a request is either queued
/// before the driver stops (and failed by `stop`) or refused after: never left behind.
struct RequestQueue {
    state: IrqSafeMutex<QueueState>,
    interrupts: Arc<InterruptSlot>,
}

#[derive(Default)]
struct QueueState {
    pending: VecDeque<Pending>,
    /// Why the driver stopped serving, once it has: every request from then on fails.
    stopped: Option<String>,
}

impl RequestQueue {
    fn push(&self, request: Pending) {
        let refused = {
            let mut state = self.state.lock();
            if state.stopped.is_some() {
                Some(request)
            } else {
                state.pending.push_back(request);
                None
            }
        };
        match refused {
            Some(request) => request.reply.complete(Err(BlockError::Gone)),
            None => self.interrupts.poke(),
        }
    }

    fn stop(&self, why: &str) {
        let pending = {
            let mut state = self.state.lock();
            state.stopped = Some(String::from(why));
            core::mem::take(&mut state.pending)
        };
        for request in pending {
            request.reply.complete(Err(BlockError::Gone));
        }
    }

    fn stopped(&self) -> Option<String> {
        self.state.lock().stopped.clone()
    }
}

impl DriverDisk {
    /// Why the disk's driver stopped, if it did (and was not restarted).
    pub fn stopped(&self) -> Option<String> {
        self.queue().stopped()
    }

    /// The queue of the driver instance serving the disk now.
    fn queue(&self) -> Arc<RequestQueue> {
        self.queue.lock().clone()
    }

    fn chunk_sectors(&self) -> u64 {
        let by_bytes = (MAX_REQUEST_BYTES / self.info.sector_size as usize) as u64;
        by_bytes.min(u64::from(self.info.max_sectors)).max(1)
    }

    /// Splits a transfer into requests the driver takes, queues them all (so that several are
    /// in flight), and waits for every one.
    fn transfer(&self, op: Op, lba: u64, len: usize, data: Option<&[u8]>) -> Vec<Arc<Reply>> {
        let size = self.info.sector_size as usize;
        let chunk = self.chunk_sectors();
        let sectors = (len / size) as u64;
        let queue = self.queue();
        let mut replies = Vec::new();
        let mut done = 0;
        while done < sectors {
            let count = chunk.min(sectors - done);
            let range = done as usize * size..(done + count) as usize * size;
            let reply = Reply::new();
            queue.push(Pending {
                disk: self.index,
                op,
                lba: lba + done,
                count: count as u32,
                bytes: range.len(),
                data: data.map(|d| d[range].to_vec()).unwrap_or_default(),
                reply: reply.clone(),
            });
            replies.push(reply);
            done += count;
        }
        replies
    }
}

impl BlockDevice for DriverDisk {
    fn sector_size(&self) -> u32 {
        self.info.sector_size
    }

    fn sector_count(&self) -> u64 {
        self.info.sector_count
    }

    fn read(&self, lba: u64, buf: &mut [u8]) -> Result<(), BlockError> {
        check_request(
            self.info.sector_size,
            self.info.sector_count,
            lba,
            buf.len(),
        )?;
        let replies = self.transfer(Op::Read, lba, buf.len(), None);
        let mut result = Ok(());
        let mut offset = 0;
        for reply in replies {
            match reply.wait() {
                Ok(bytes) => {
                    buf[offset..offset + bytes.len()].copy_from_slice(&bytes);
                    offset += bytes.len();
                }
                Err(e) => result = result.and(Err(e)),
            }
        }
        result
    }

    fn write(&self, lba: u64, data: &[u8]) -> Result<(), BlockError> {
        check_request(
            self.info.sector_size,
            self.info.sector_count,
            lba,
            data.len(),
        )?;
        let replies = self.transfer(Op::Write, lba, data.len(), Some(data));
        let mut result = Ok(());
        for reply in replies {
            result = result.and(reply.wait().map(drop));
        }
        result
    }

    fn flush(&self) -> Result<(), BlockError> {
        let reply = Reply::new();
        self.queue().push(Pending {
            disk: self.index,
            op: Op::Flush,
            lba: 0,
            count: 0,
            bytes: 0,
            data: Vec::new(),
            reply: reply.clone(),
        });
        reply.wait().map(drop)
    }
}

/// Every disk a block driver serves (or served: a stopped driver's disks stay listed and fail).
static DISKS: IrqSafeMutex<Vec<Arc<DriverDisk>>> = IrqSafeMutex::new(Vec::new());
/// Notified when a disk is added.
pub static DISKS_CHANGED: WaitQueue = WaitQueue::new();

pub fn disks() -> Vec<Arc<DriverDisk>> {
    DISKS.lock().clone()
}

/// How many disks were ever added (a task waiting for new ones compares it).
pub fn disk_count() -> usize {
    DISKS.lock().len()
}

fn block_error(code: ErrorCode) -> BlockError {
    match code {
        ErrorCode::OutOfRange | ErrorCode::Misaligned => BlockError::OutOfRange,
        ErrorCode::OutOfMemory => BlockError::NoMemory,
        ErrorCode::StaleHandle | ErrorCode::NoSuchResource => BlockError::Gone,
        _ => BlockError::Device,
    }
}

/// DMA buffers by size class (powers of two from 4 KiB), reused across requests.
#[derive(Default)]
struct BufferPool {
    free: BTreeMap<u64, Vec<Resource<DmaBuffer>>>,
}

impl BufferPool {
    fn class(bytes: usize) -> u64 {
        (bytes.max(4096) as u64).next_power_of_two()
    }

    fn take(
        &mut self,
        host: &mut DriverHost<KeelPlatform>,
        bytes: usize,
    ) -> Result<Resource<DmaBuffer>, ErrorCode> {
        let class = Self::class(bytes);
        match self.free.get_mut(&class).and_then(Vec::pop) {
            Some(buffer) => Ok(buffer),
            None => host.allocate_buffer(class),
        }
    }

    /// Keeps `buffer` for reuse in `class` if it is that big and the class has room; frees it
    /// otherwise (a host-side handle dropped would keep the memory in the instance's table).
    fn give(
        &mut self,
        host: &mut DriverHost<KeelPlatform>,
        class: u64,
        buffer: Resource<DmaBuffer>,
    ) {
        let fits = host.buffer_size(&buffer).is_some_and(|size| size >= class);
        let free = self.free.entry(class).or_default();
        if fits && free.len() < POOLED_PER_CLASS {
            free.push(buffer);
        } else {
            host.free_buffer(buffer);
        }
    }
}

/// A request in the driver's hands.
struct InFlight {
    /// When it was submitted.
    since_ns: u64,
    disk: u32,
    op: Op,
    bytes: usize,
    class: u64,
    reply: Arc<Reply>,
}

/// How long a request may stay with the driver. Drivers time out stuck commands themselves
/// (AHCI after 30 s); a driver that never answers at all is treated as failed after this.
const REQUEST_DEADLINE_NS: u64 = 90_000_000_000;

/// Whether a disk's geometry is one Keel can use (and `size_bytes` cannot overflow).
fn usable(info: &wasi_dd::bindings::block_driver::exports::wasi_dd::dd::block::DiskInfo) -> bool {
    (512..=65536).contains(&info.sector_size)
        && info.sector_size.is_power_of_two()
        && info.sector_count > 0
        && info
            .sector_count
            .checked_mul(u64::from(info.sector_size))
            .is_some()
}

/// Initializes the controller, publishes its disks, and serves their requests until the driver
/// fails, traps or is killed. Returns why it stopped; its disks fail every request from then
/// on, until a restarted instance on the same controller takes them over.
pub(crate) fn serve(
    store: &mut Store<DriverHost<KeelPlatform>>,
    driver: &BlockDriver,
    driver_name: &str,
    function: PciAddress,
    interrupts: &Arc<InterruptSlot>,
    running: impl FnOnce(),
) -> Result<String, String> {
    let found = wasi_dd::init_block(store, driver)?;
    let queue = Arc::new(RequestQueue {
        state: IrqSafeMutex::new(QueueState::default()),
        interrupts: interrupts.clone(),
    });
    let mut depth: BTreeMap<u32, (u32, u32)> = BTreeMap::new();
    {
        let mut disks = DISKS.lock();
        for info in found.into_iter().filter(usable) {
            let info_here = DiskInfo {
                sector_size: info.sector_size,
                sector_count: info.sector_count,
                model: info.model,
                serial: info.serial,
                queue_depth: info.queue_depth.max(1),
                max_sectors: info.max_sectors.max(1),
            };
            if depth
                .insert(info.index, (info_here.queue_depth, 0))
                .is_some()
            {
                continue;
            }
            let earlier = disks.iter().find(|d| {
                d.function == function
                    && d.index == info.index
                    && d.driver == driver_name
                    && d.info.serial == info_here.serial
                    && d.info.sector_count == info_here.sector_count
                    && d.info.sector_size == info_here.sector_size
            });
            match earlier {
                Some(disk) => *disk.queue.lock() = queue.clone(),
                None => {
                    let name = format!("sd{}", disks.len());
                    disks.push(Arc::new(DriverDisk {
                        name,
                        driver: String::from(driver_name),
                        info: info_here,
                        function,
                        index: info.index,
                        queue: IrqSafeMutex::new(queue.clone()),
                    }));
                }
            }
        }
    }
    DISKS_CHANGED.notify_all();
    running();
    let mut pool = BufferPool::default();
    let mut in_flight: BTreeMap<u64, InFlight> = BTreeMap::new();
    let mut next_tag = 0u64;
    let mut fired = false;
    let why = loop {
        if keel_task::kill_requested() {
            break String::from("killed");
        }
        if let Some(oldest) = in_flight.values().map(|r| r.since_ns).min()
            && keel_time::now_ns().saturating_sub(oldest) > REQUEST_DEADLINE_NS
        {
            break String::from("the driver did not complete a request in 90 s");
        }
        match serve_once(
            store,
            driver,
            &queue,
            &mut depth,
            &mut pool,
            &mut in_flight,
            &mut next_tag,
            fired,
        ) {
            Ok(busy) => {
                let wait = if busy { IN_FLIGHT_POLL_NS } else { IDLE_NS };
                fired = interrupts.wait(wait);
            }
            // A kill stops the driver's code with a trap, which the call reports.
            Err(_) if keel_task::kill_requested() => break String::from("killed"),
            Err(why) => break why,
        }
    };
    queue.stop(&why);
    for (_, request) in in_flight {
        request.reply.complete(Err(BlockError::Gone));
    }
    Err(why)
}

/// One round: new requests into the driver (as far as each disk's queue depth allows), then
/// the interrupt cause (if it `fired`) and the finished requests. Returns whether requests are
/// still in flight.
#[allow(clippy::too_many_arguments)]
fn serve_once(
    store: &mut Store<DriverHost<KeelPlatform>>,
    driver: &BlockDriver,
    queue: &RequestQueue,
    depth: &mut BTreeMap<u32, (u32, u32)>,
    pool: &mut BufferPool,
    in_flight: &mut BTreeMap<u64, InFlight>,
    next_tag: &mut u64,
    fired: bool,
) -> Result<bool, String> {
    let mut batch = Vec::new();
    loop {
        let request = {
            let mut state = queue.state.lock();
            let pending = &mut state.pending;
            let Some(position) = pending.iter().position(|p| {
                depth
                    .get(&p.disk)
                    .is_some_and(|&(limit, used)| used < limit)
            }) else {
                break;
            };
            pending.remove(position)
        };
        let Some(request) = request else { break };
        let bytes = request.bytes;
        let buffer = if request.op == Op::Flush {
            None
        } else {
            let host = store.data_mut();
            let buffer = match pool.take(host, bytes) {
                Ok(buffer) => buffer,
                Err(code) => {
                    request.reply.complete(Err(block_error(code)));
                    continue;
                }
            };
            if request.op == Op::Write
                && let Err(code) = host.write_buffer(&buffer, 0, &request.data)
            {
                pool.give(host, BufferPool::class(bytes), buffer);
                request.reply.complete(Err(block_error(code)));
                continue;
            }
            Some(buffer)
        };
        let tag = *next_tag;
        *next_tag += 1;
        if let Some((_, used)) = depth.get_mut(&request.disk) {
            *used += 1;
        }
        batch.push(BlockRequest {
            tag,
            disk: request.disk,
            op: match request.op {
                Op::Read => BlockOp::Read,
                Op::Write => BlockOp::Write,
                Op::Flush => BlockOp::Flush,
            },
            lba: request.lba,
            count: request.count,
            buffer,
        });
        in_flight.insert(
            tag,
            InFlight {
                since_ns: keel_time::now_ns(),
                disk: request.disk,
                op: request.op,
                bytes,
                class: BufferPool::class(bytes),
                reply: request.reply,
            },
        );
    }
    let finished = wasi_dd::exchange_block(store, driver, &batch, fired, !in_flight.is_empty())?;
    if in_flight.is_empty() {
        return Ok(false);
    }
    for completion in finished {
        let Some(request) = in_flight.remove(&completion.tag) else {
            // Not a tag in flight (unknown, or completed twice): its buffer is freed.
            if let Some(buffer) = completion.buffer {
                store.data_mut().free_buffer(buffer);
            }
            continue;
        };
        if let Some((_, used)) = depth.get_mut(&request.disk) {
            *used = used.saturating_sub(1);
        }
        let mut result = completion.outcome.map_err(block_error).map(|()| Vec::new());
        if let Some(buffer) = completion.buffer {
            if result.is_ok() && request.op == Op::Read {
                let mut bytes = vec![0; request.bytes];
                // A buffer other than the request's (too small, or stale) reads as an error.
                result = store
                    .data_mut()
                    .read_buffer(&buffer, 0, &mut bytes)
                    .map(|()| bytes)
                    .map_err(|_| BlockError::Device);
            }
            pool.give(store.data_mut(), request.class, buffer);
        } else if request.op != Op::Flush && result.is_ok() {
            result = Err(BlockError::Device);
        }
        request.reply.complete(result);
    }
    Ok(!in_flight.is_empty() || !queue.state.lock().pending.is_empty())
}
