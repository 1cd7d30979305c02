//! Serving a `block-driver`'s disks to Linux over NBD: each disk is one connection (the
//! kernel's `/dev/nbdN` on one end of a socket pair, [`BlockServer`] on the other). NBD
//! requests become driver requests, split to what the disk takes at once, as many in flight
//! as its queue depth allows; payloads move in DMA buffers the host fills and empties, never
//! through the driver. The same request handling as Keel's `dd-host/src/block.rs`, with NBD
//! connections where Keel has its block layer.

use std::collections::{BTreeMap, VecDeque};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::Duration;

use wasi_dd::bindings::block_driver::exports::wasi_dd::dd::block::{
    BlockOp, BlockRequest, DiskInfo,
};
use wasi_dd::bindings::host::wasi_dd::dd::dma::DmaBuffer;
use wasi_dd::bindings::host::wasi_dd::dd::types::ErrorCode;
use wasi_dd::platform::Platform;
use wasi_dd::{BlockDriver, DriverHost};
use wasmtime::Store;
use wasmtime::component::Resource;

use crate::nbd::{self, Command, RequestReader, errno};
use crate::platform::IrqState;
use crate::sys::{self, Interest};

/// Longest one driver request may be, whatever the disk allows (as in Keel): big enough for
/// full-speed transfers, small enough that a queue of them does not exhaust DMA memory.
pub const MAX_REQUEST_BYTES: u64 = 1 << 20;
/// Free DMA buffers kept for reuse, per size class.
const POOLED_PER_CLASS: usize = 8;
/// How long the loop waits with requests in flight before it asks the driver for completions
/// anyway (the driver also notices stuck commands there); an interrupt ends it sooner.
const IN_FLIGHT_POLL: Duration = Duration::from_millis(20);
const IDLE: Duration = Duration::from_secs(1);

/// Calls the driver's `init`: the disks it found.
pub fn start<P: Platform>(
    store: &mut Store<DriverHost<P>>,
    driver: &BlockDriver,
) -> Result<Vec<DiskInfo>, String> {
    let disks = wasi_dd::init_block(store, driver)?;
    Ok(disks
        .into_iter()
        .filter(|d| d.sector_size > 0 && d.sector_count > 0)
        .collect())
}

/// The errno an NBD reply carries for a driver's error code.
pub fn errno_of(code: ErrorCode) -> u32 {
    match code {
        ErrorCode::OutOfRange | ErrorCode::Misaligned => errno::EINVAL,
        ErrorCode::OutOfMemory => errno::ENOMEM,
        ErrorCode::Denied => errno::EPERM,
        ErrorCode::StaleHandle | ErrorCode::NoSuchResource => errno::ESHUTDOWN,
        _ => errno::EIO,
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Read,
    Write,
    Flush,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Connection {
    Open,
    /// The kernel sent a disconnect: answer what is in flight, then close.
    Draining,
    Closed,
}

/// One disk served on one NBD connection.
pub struct Export {
    pub name: String,
    pub disk: DiskInfo,
    stream: UnixStream,
    reader: RequestReader,
    state: Connection,
    /// Requests of this disk in the driver's hands, against its queue depth.
    in_driver: u32,
    /// Driver requests waiting for a free slot of the disk.
    waiting: VecDeque<Job>,
}

impl Export {
    /// Sectors per driver request for this disk.
    fn chunk_sectors(&self) -> u64 {
        let by_bytes = MAX_REQUEST_BYTES / u64::from(self.disk.sector_size.max(1));
        by_bytes.min(u64::from(self.disk.max_sectors)).max(1)
    }
}

/// An NBD request being served: its reply goes out when its last chunk completes.
struct Transfer {
    export: usize,
    handle: u64,
    op: Op,
    /// The data written, or read so far.
    data: Vec<u8>,
    chunks_left: usize,
    /// The first error of a chunk (0: none).
    error: u32,
}

/// One driver request of a transfer.
#[derive(Clone, Copy, Debug)]
struct Job {
    transfer: u64,
    op: Op,
    lba: u64,
    count: u32,
    /// Where the chunk's bytes are in the transfer.
    start: usize,
    bytes: usize,
}

struct InFlight {
    export: usize,
    job: Job,
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

    fn take<P: Platform>(
        &mut self,
        host: &mut DriverHost<P>,
        bytes: usize,
    ) -> Result<Resource<DmaBuffer>, ErrorCode> {
        let class = Self::class(bytes);
        match self.free.get_mut(&class).and_then(Vec::pop) {
            Some(buffer) => Ok(buffer),
            None => host.allocate_buffer(class),
        }
    }

    fn give<P: Platform>(&mut self, host: &mut DriverHost<P>, buffer: Resource<DmaBuffer>) {
        let Some(size) = host.buffer_size(&buffer) else {
            return;
        };
        let class = self.free.entry(size).or_default();
        if class.len() < POOLED_PER_CLASS {
            class.push(buffer);
        }
    }
}

/// Requests served, for the summary at the end.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlockCounters {
    pub reads: u64,
    pub writes: u64,
    pub flushes: u64,
    pub bytes_read: u64,
    pub bytes_written: u64,
    pub errors: u64,
}

/// Every disk of one block driver instance, each on its NBD connection.
pub struct BlockServer {
    exports: Vec<Export>,
    transfers: BTreeMap<u64, Transfer>,
    next_transfer: u64,
    in_flight: BTreeMap<u64, InFlight>,
    next_tag: u64,
    pool: BufferPool,
    pub counters: BlockCounters,
}

/// Writes all of `bytes` to a non-blocking stream, waiting whenever its buffer is full (the
/// kernel's receive thread empties it independently of what it sends).
fn write_all(stream: &mut UnixStream, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        match stream.write(bytes) {
            Ok(0) => return Err(io::Error::from(io::ErrorKind::WriteZero)),
            Ok(written) => bytes = &bytes[written..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                sys::poll(&[(stream.as_fd(), Interest::Write)], None)?;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

impl BlockServer {
    /// Serves `disk` on `stream` (the server's end of the connection), named `name` in logs.
    pub fn new(disks: Vec<(String, DiskInfo, UnixStream)>) -> io::Result<BlockServer> {
        let mut exports = Vec::new();
        for (name, disk, stream) in disks {
            stream.set_nonblocking(true)?;
            exports.push(Export {
                name,
                disk,
                stream,
                reader: RequestReader::default(),
                state: Connection::Open,
                in_driver: 0,
                waiting: VecDeque::new(),
            });
        }
        Ok(BlockServer {
            exports,
            transfers: BTreeMap::new(),
            next_transfer: 0,
            in_flight: BTreeMap::new(),
            next_tag: 0,
            pool: BufferPool::default(),
            counters: BlockCounters::default(),
        })
    }

    pub fn exports(&self) -> &[Export] {
        &self.exports
    }

    /// Whether every connection is closed (the server has nothing left to do).
    pub fn finished(&self) -> bool {
        self.exports.iter().all(|e| e.state == Connection::Closed)
    }

    /// One round: new requests from the connections, driver requests into free slots, the
    /// interrupt cause (if it `fired`), completions and their replies. Returns whether driver
    /// requests are in flight or waiting.
    pub fn round<P: Platform>(
        &mut self,
        store: &mut Store<DriverHost<P>>,
        driver: &BlockDriver,
        fired: bool,
    ) -> Result<bool, String> {
        for index in 0..self.exports.len() {
            self.read_requests(index);
        }
        let mut batch = Vec::new();
        for index in 0..self.exports.len() {
            self.dispatch(store, index, &mut batch);
        }
        let in_flight = !self.in_flight.is_empty();
        for completion in wasi_dd::exchange_block(store, driver, &batch, fired, in_flight)? {
            self.complete(store, completion.tag, completion.outcome, completion.buffer);
        }
        for index in 0..self.exports.len() {
            let export = &mut self.exports[index];
            let idle = export.in_driver == 0
                && export.waiting.is_empty()
                && !self.transfers.values().any(|t| t.export == index);
            if export.state == Connection::Draining && idle {
                let _ = export.stream.shutdown(std::net::Shutdown::Both);
                export.state = Connection::Closed;
            }
        }
        Ok(!self.in_flight.is_empty() || self.exports.iter().any(|e| !e.waiting.is_empty()))
    }

    /// Reads what the connection has, and starts its complete requests.
    fn read_requests(&mut self, index: usize) {
        let mut chunk = vec![0u8; 256 << 10];
        let export = &mut self.exports[index];
        if export.state != Connection::Open {
            return;
        }
        loop {
            match export.stream.read(&mut chunk) {
                Ok(0) => {
                    // The kernel closed its end: nobody reads replies any more.
                    export.state = Connection::Closed;
                    return;
                }
                Ok(length) => export.reader.feed(&chunk[..length]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    eprintln!("wasi-dd-run: {}: reading requests: {e}", export.name);
                    export.state = Connection::Closed;
                    return;
                }
            }
        }
        loop {
            let export = &mut self.exports[index];
            if export.state != Connection::Open {
                return;
            }
            match export.reader.next_request() {
                Ok(Some(request)) => self.start_request(index, request),
                Ok(None) => return,
                Err(e) => {
                    eprintln!("wasi-dd-run: {}: NBD protocol broken: {e}", export.name);
                    let _ = export.stream.shutdown(std::net::Shutdown::Both);
                    export.state = Connection::Closed;
                    return;
                }
            }
        }
    }

    fn start_request(&mut self, index: usize, request: nbd::Request) {
        let export = &mut self.exports[index];
        let op = match request.command {
            Command::Read => Op::Read,
            Command::Write => Op::Write,
            Command::Flush => Op::Flush,
            Command::Disconnect => {
                export.state = Connection::Draining;
                return;
            }
            Command::Other(_) => {
                self.counters.errors += 1;
                self.reply(index, request.handle, errno::EINVAL, &[]);
                return;
            }
        };
        let transfer = self.next_transfer;
        let mut jobs = Vec::new();
        let data = if op == Op::Flush {
            jobs.push(Job {
                transfer,
                op,
                lba: 0,
                count: 0,
                start: 0,
                bytes: 0,
            });
            Vec::new()
        } else {
            let (lba, count) = match nbd::sectors_of(
                request.offset,
                request.length,
                export.disk.sector_size,
                export.disk.sector_count,
            ) {
                Ok(span) => span,
                Err(error) => {
                    self.counters.errors += 1;
                    self.reply(index, request.handle, error, &[]);
                    return;
                }
            };
            let size = export.disk.sector_size as usize;
            for (lba, count, done) in nbd::chunks(lba, count, export.chunk_sectors()) {
                jobs.push(Job {
                    transfer,
                    op,
                    lba,
                    count,
                    start: done as usize * size,
                    bytes: count as usize * size,
                });
            }
            if op == Op::Write {
                request.data
            } else {
                vec![0; request.length as usize]
            }
        };
        if jobs.is_empty() {
            // A transfer of no sectors: nothing to do.
            self.reply(index, request.handle, 0, &[]);
            return;
        }
        self.next_transfer += 1;
        self.transfers.insert(
            transfer,
            Transfer {
                export: index,
                handle: request.handle,
                op,
                data,
                chunks_left: jobs.len(),
                error: 0,
            },
        );
        self.exports[index].waiting.extend(jobs);
    }

    /// Moves waiting jobs of export `index` into `batch` while the disk has free slots.
    fn dispatch<P: Platform>(
        &mut self,
        store: &mut Store<DriverHost<P>>,
        index: usize,
        batch: &mut Vec<BlockRequest>,
    ) {
        loop {
            let export = &mut self.exports[index];
            if export.in_driver >= export.disk.queue_depth.max(1) {
                return;
            }
            let Some(job) = export.waiting.pop_front() else {
                return;
            };
            let disk = export.disk.index;
            let buffer = if job.op == Op::Flush {
                None
            } else {
                let buffer = match self.pool.take(store.data_mut(), job.bytes) {
                    Ok(buffer) => buffer,
                    Err(ErrorCode::OutOfMemory) if !self.in_flight.is_empty() => {
                        // The instance's DMA memory is in use: try again when some comes back.
                        self.exports[index].waiting.push_front(job);
                        return;
                    }
                    Err(code) => {
                        self.finish_chunk(job.transfer, errno_of(code));
                        continue;
                    }
                };
                if job.op == Op::Write {
                    let range = job.start..job.start + job.bytes;
                    let written = self
                        .transfers
                        .get(&job.transfer)
                        .map(|t| store.data_mut().write_buffer(&buffer, 0, &t.data[range]));
                    if let Some(Err(code)) = written {
                        self.pool.give(store.data_mut(), buffer);
                        self.finish_chunk(job.transfer, errno_of(code));
                        continue;
                    }
                }
                Some(buffer)
            };
            let tag = self.next_tag;
            self.next_tag += 1;
            self.exports[index].in_driver += 1;
            self.in_flight.insert(tag, InFlight { export: index, job });
            batch.push(BlockRequest {
                tag,
                disk,
                op: match job.op {
                    Op::Read => BlockOp::Read,
                    Op::Write => BlockOp::Write,
                    Op::Flush => BlockOp::Flush,
                },
                lba: job.lba,
                count: job.count,
                buffer,
            });
        }
    }

    fn complete<P: Platform>(
        &mut self,
        store: &mut Store<DriverHost<P>>,
        tag: u64,
        outcome: Result<(), ErrorCode>,
        buffer: Option<Resource<DmaBuffer>>,
    ) {
        let Some(InFlight { export, job }) = self.in_flight.remove(&tag) else {
            // Not a tag we gave: the driver is confused. Its buffer goes back to the pool.
            if let Some(buffer) = buffer {
                self.pool.give(store.data_mut(), buffer);
            }
            return;
        };
        let slot = &mut self.exports[export].in_driver;
        *slot = slot.saturating_sub(1);
        if outcome == Err(ErrorCode::InUse) {
            // No free slot after all (the disk's queue depth was optimistic): again later.
            if let Some(buffer) = buffer {
                self.pool.give(store.data_mut(), buffer);
            }
            self.exports[export].waiting.push_front(job);
            return;
        }
        let mut error = match outcome {
            Ok(()) => 0,
            Err(code) => errno_of(code),
        };
        match buffer {
            Some(buffer) => {
                if error == 0
                    && job.op == Op::Read
                    && let Some(transfer) = self.transfers.get_mut(&job.transfer)
                {
                    let range = job.start..job.start + job.bytes;
                    if let Err(code) =
                        store
                            .data_mut()
                            .read_buffer(&buffer, 0, &mut transfer.data[range])
                    {
                        error = errno_of(code);
                    }
                }
                self.pool.give(store.data_mut(), buffer);
            }
            None if job.op != Op::Flush && error == 0 => error = errno::EIO,
            None => {}
        }
        self.finish_chunk(job.transfer, error);
    }

    /// One chunk of `transfer` is done (`error` 0 for success); the last one sends the reply.
    fn finish_chunk(&mut self, transfer: u64, error: u32) {
        let Some(state) = self.transfers.get_mut(&transfer) else {
            return;
        };
        if state.error == 0 {
            state.error = error;
        }
        state.chunks_left -= 1;
        if state.chunks_left > 0 {
            return;
        }
        let Some(done) = self.transfers.remove(&transfer) else {
            return;
        };
        let counters = &mut self.counters;
        if done.error != 0 {
            counters.errors += 1;
        } else {
            match done.op {
                Op::Read => {
                    counters.reads += 1;
                    counters.bytes_read += done.data.len() as u64;
                }
                Op::Write => {
                    counters.writes += 1;
                    counters.bytes_written += done.data.len() as u64;
                }
                Op::Flush => counters.flushes += 1,
            }
        }
        let payload = if done.op == Op::Read && done.error == 0 {
            &done.data[..]
        } else {
            &[]
        };
        self.reply(done.export, done.handle, done.error, payload);
    }

    fn reply(&mut self, index: usize, handle: u64, error: u32, payload: &[u8]) {
        let export = &mut self.exports[index];
        if export.state == Connection::Closed {
            return;
        }
        let mut message = Vec::with_capacity(nbd::REPLY_BYTES + payload.len());
        message.extend_from_slice(&nbd::reply_header(handle, error));
        message.extend_from_slice(payload);
        if let Err(e) = write_all(&mut export.stream, &message) {
            eprintln!("wasi-dd-run: {}: sending a reply: {e}", export.name);
            export.state = Connection::Closed;
        }
    }
}

/// Serves the connections until every one is closed. `stop` (a signalfd) asks for a clean
/// end: `disconnect` is called once (the runner asks the kernel to disconnect each device, the
/// kernel sends NBD disconnects, the connections drain and close); a second signal ends at once.
pub fn serve<P: Platform>(
    store: &mut Store<DriverHost<P>>,
    driver: &BlockDriver,
    server: &mut BlockServer,
    interrupt: impl Fn() -> Option<Arc<IrqState>>,
    stop: &File,
    mut disconnect: impl FnMut(),
) -> Result<(), String> {
    let mut fired = false;
    let mut stopping = false;
    loop {
        let busy = server.round(store, driver, fired)?;
        if server.finished() {
            return Ok(());
        }
        let irq = interrupt();
        let mut fds = vec![(stop.as_fd(), Interest::Read)];
        fds.extend(
            server
                .exports
                .iter()
                .filter(|e| e.state == Connection::Open)
                .map(|e| (e.stream.as_fd(), Interest::Read)),
        );
        if let Some(irq) = &irq {
            fds.push((irq.fd(), Interest::Read));
        }
        let timeout = if busy { IN_FLIGHT_POLL } else { IDLE };
        let ready = sys::poll(&fds, Some(timeout)).map_err(|e| format!("poll: {e}"))?;
        if ready[0] {
            let mut signal = [0u8; 128];
            let _ = (&*stop).read(&mut signal);
            if stopping {
                return Err(String::from("stopped before the disks were disconnected"));
            }
            stopping = true;
            disconnect();
        }
        fired = irq.as_ref().is_some_and(|irq| irq.take());
    }
}
