//! The `ahci` driver (`drivers-wasm/ahci`, built by `keel build-drivers`) against the fake ICH9
//! AHCI HBA of `common/ahci.rs`: finding disks beside an ATAPI drive and empty ports, data in
//! and out by DMA, many requests in flight, refusals that never reach the device, task-file
//! errors (as AHCI and as QEMU report them), timeouts, flushes, interrupts, and no access
//! outside what the driver was given.

mod common;

use std::collections::BTreeMap;

use common::ahci::*;
use wasi_dd::bindings::block_driver::exports::wasi_dd::dd::block::{
    BlockCompletion, BlockOp, BlockRequest, DiskInfo,
};
use wasi_dd::bindings::host::wasi_dd::dd::dma::DmaBuffer;
use wasi_dd::{BlockDriver, DriverHost, ErrorCode, Limits};
use wasmtime::Store;
use wasmtime::component::Resource;

/// Where the tests put the disk and the CD-ROM (q35 puts `-drive ...,bus=ide.0` on port 0 and
/// `-cdrom` on port 2).
const DISK: u32 = 0;
const CDROM: usize = 2;
const SECTORS: usize = 4096;
const SECTOR: usize = 512;
const TIMEOUT_NS: u64 = 30_000_000_000;

struct Controller {
    platform: FakeAhci,
    store: Store<DriverHost<FakeAhci>>,
    driver: BlockDriver,
}

/// A completion as the host sees it: the buffer's contents are read when it is back.
struct Finished {
    tag: u64,
    outcome: Result<(), ErrorCode>,
    buffer: Option<Resource<DmaBuffer>>,
}

/// Bytes that differ with `seed` (xorshift).
fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

/// A q35-like HBA: a disk on port 0, the CD-ROM on port 2, the other ports empty.
fn q35(disk: Disk) -> FakeAhci {
    FakeAhci::new(vec![Attached::Disk(disk), Attached::Empty, Attached::Atapi])
}

impl Controller {
    fn new(platform: FakeAhci) -> Controller {
        Controller::with_limits(platform, Limits::default())
    }

    fn with_limits(platform: FakeAhci, limits: Limits) -> Controller {
        let (store, driver) = instance(&platform, limits);
        Controller {
            platform,
            store,
            driver,
        }
    }

    /// Started on `platform`; returns the disks it reported too.
    fn start(platform: FakeAhci) -> (Controller, Vec<DiskInfo>) {
        let mut controller = Controller::new(platform);
        let disks = controller.init().expect("init");
        (controller, disks)
    }

    fn started() -> Controller {
        Controller::start(q35(Disk::new(SECTORS))).0
    }

    fn init(&mut self) -> Result<Vec<DiskInfo>, ErrorCode> {
        let device = self.store.data_mut().device().unwrap();
        self.driver
            .wasi_dd_dd_block()
            .call_init(&mut self.store, device)
            .unwrap()
    }

    fn buffer(&mut self, size: usize, contents: &[u8]) -> Resource<DmaBuffer> {
        let host = self.store.data_mut();
        let buffer = host.allocate_buffer(size as u64).unwrap();
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

    fn read(&mut self, tag: u64, lba: u64, count: u32) -> BlockRequest {
        let buffer = self.buffer(count as usize * SECTOR, &[]);
        request(tag, DISK, BlockOp::Read, lba, count, Some(buffer))
    }

    fn write(&mut self, tag: u64, lba: u64, data: &[u8]) -> BlockRequest {
        let buffer = self.buffer(data.len(), data);
        let count = (data.len() / SECTOR) as u32;
        request(tag, DISK, BlockOp::Write, lba, count, Some(buffer))
    }

    fn submit(&mut self, requests: Vec<BlockRequest>) {
        self.driver
            .wasi_dd_dd_block()
            .call_submit(&mut self.store, &requests)
            .unwrap()
    }

    fn completions(&mut self) -> Vec<Finished> {
        let done: Vec<BlockCompletion> = self
            .driver
            .wasi_dd_dd_block()
            .call_completions(&mut self.store)
            .unwrap();
        done.into_iter()
            .map(|c| Finished {
                tag: c.tag,
                outcome: c.outcome,
                buffer: c.buffer,
            })
            .collect()
    }

    fn handle_interrupt(&mut self) -> bool {
        self.driver
            .wasi_dd_dd_block()
            .call_handle_interrupt(&mut self.store)
            .unwrap()
    }

    /// What a host does: submit, then on the interrupt handle it and collect, until every
    /// request is back. Returns the completions by tag.
    fn run(&mut self, requests: Vec<BlockRequest>) -> BTreeMap<u64, Finished> {
        let expected = requests.len();
        self.submit(requests);
        let mut finished = BTreeMap::new();
        for _ in 0..10 {
            if self.platform.state().interrupts > 0 {
                self.handle_interrupt();
            }
            for done in self.completions() {
                assert!(
                    finished.insert(done.tag, done).is_none(),
                    "a request came back twice"
                );
            }
            if finished.len() == expected {
                return finished;
            }
        }
        panic!("{} of {expected} requests came back", finished.len());
    }

    fn run_one(&mut self, request: BlockRequest) -> Finished {
        let tag = request.tag;
        self.run(vec![request]).remove(&tag).unwrap()
    }

    fn disk_bytes(&self, lba: u64, len: usize) -> Vec<u8> {
        let state = self.platform.state();
        let start = lba as usize * state.disk(DISK as usize).sector_size;
        state.disk(DISK as usize).data[start..start + len].to_vec()
    }

    fn executed(&self) -> Vec<Executed> {
        self.platform.state().port(DISK as usize).executed.clone()
    }

    fn assert_clean(&self) {
        assert_eq!(self.platform.state().violations, Vec::<String>::new());
    }
}

fn request(
    tag: u64,
    disk: u32,
    op: BlockOp,
    lba: u64,
    count: u32,
    buffer: Option<Resource<DmaBuffer>>,
) -> BlockRequest {
    BlockRequest {
        tag,
        disk,
        op,
        lba,
        count,
        buffer,
    }
}

fn flush(tag: u64) -> BlockRequest {
    request(tag, DISK, BlockOp::Flush, 0, 0, None)
}

fn outcomes(finished: &BTreeMap<u64, Finished>) -> Vec<(u64, Result<(), ErrorCode>)> {
    finished.values().map(|f| (f.tag, f.outcome)).collect()
}

#[test]
fn init_lists_the_disks_and_leaves_the_cdrom_and_empty_ports_alone() {
    let mut second = Disk::new(1000);
    second.model = "SECOND DISK".into();
    second.serial = "SN-2".into();
    let platform = FakeAhci::new(vec![
        Attached::Disk(Disk::new(SECTORS)),
        Attached::Empty,
        Attached::Atapi,
        Attached::Empty,
        Attached::Disk(second),
    ]);
    let (controller, disks) = Controller::start(platform);
    let listed: Vec<_> = disks
        .iter()
        .map(|d| {
            (
                d.index,
                d.sector_size,
                d.sector_count,
                d.model.as_str(),
                d.serial.as_str(),
                d.queue_depth,
                d.max_sectors,
            )
        })
        .collect();
    assert_eq!(
        listed,
        vec![
            (
                0,
                512,
                SECTORS as u64,
                "QEMU HARDDISK",
                "QM00005",
                32,
                65535
            ),
            (4, 512, 1000, "SECOND DISK", "SN-2", 32, 65535),
        ]
    );
    let state = controller.platform.state();
    assert_eq!(state.resets, 1);
    assert_eq!(state.ghc, GHC_AE | GHC_IE);
    assert!(state.bus_master());
    for disk in [0, 4] {
        let port = state.port(disk);
        assert_eq!(port.cmd & (CMD_ST | CMD_FRE), CMD_ST | CMD_FRE);
        assert_ne!(port.ie, 0, "port {disk} interrupts");
        assert!(port.clb.is_multiple_of(1024) && port.fb.is_multiple_of(256));
        let commands: Vec<u8> = port.executed.iter().map(|e| e.command).collect();
        assert_eq!(commands, [IDENTIFY_DEVICE]);
        // The command list and FIS area are in memory the driver allocated.
        assert!(
            state
                .allocations
                .iter()
                .any(|(a, size)| *a <= port.clb && port.fb + 256 <= a + size)
        );
    }
    let cdrom = state.port(CDROM);
    assert!(cdrom.executed.is_empty(), "no command to the CD-ROM");
    assert_eq!(cdrom.cmd & (CMD_ST | CMD_FRE), 0, "CD-ROM port stopped");
    assert!(!cdrom.cr && !cdrom.fr);
    assert_eq!(cdrom.ie, 0);
    for empty in [1, 3, 5] {
        for register in [PX_CLB, PX_FB, PX_CMD, PX_IE, PX_CI] {
            assert!(
                state.port_writes(empty, register).is_empty(),
                "port {empty} register {register:#x} written"
            );
        }
    }
    assert!(
        state
            .logs
            .iter()
            .any(|(_, line)| line.contains("port 2: ATAPI")),
        "{:?}",
        state.logs
    );
    drop(state);
    controller.assert_clean();
}

#[test]
fn identify_gives_28_bit_capacity_and_large_logical_sectors() {
    let mut old = Disk::new(3000);
    old.lba48 = false;
    let mut large = Disk::new(0);
    large.sector_size = 4096;
    large.data = vec![0; 512 * 4096];
    let (mut controller, disks) = Controller::start(FakeAhci::new(vec![
        Attached::Disk(old),
        Attached::Disk(large),
    ]));
    let listed: Vec<_> = disks
        .iter()
        .map(|d| (d.index, d.sector_size, d.sector_count, d.max_sectors))
        .collect();
    assert_eq!(listed, vec![(0, 512, 3000, 256), (1, 4096, 512, 8192)]);

    // 256 sectors on the 28-bit disk: READ/WRITE DMA with a count of 0.
    let data = pattern(1, 256 * SECTOR);
    let write = controller.write(1, 2000, &data);
    assert_eq!(controller.run_one(write).outcome, Ok(()));
    assert_eq!(controller.disk_bytes(2000, data.len()), data);
    let read = controller.read(2, 2000, 256);
    let back = controller.run_one(read);
    assert_eq!(back.outcome, Ok(()));
    assert_eq!(controller.contents(&back.buffer.unwrap(), data.len()), data);
    let commands: Vec<_> = controller.executed()[1..]
        .iter()
        .map(|e| (e.command, e.lba, e.count))
        .collect();
    assert_eq!(commands, [(WRITE_DMA, 2000, 256), (READ_DMA, 2000, 256)]);
    let flushed = controller.run_one(flush(3));
    assert_eq!(flushed.outcome, Ok(()));
    assert_eq!(controller.executed().last().unwrap().command, FLUSH_CACHE);

    // Three 4 KiB sectors on the other disk.
    let data = pattern(2, 3 * 4096);
    let buffer = controller.buffer(data.len(), &data);
    let write = request(4, 1, BlockOp::Write, 100, 3, Some(buffer));
    assert_eq!(controller.run_one(write).outcome, Ok(()));
    let state = controller.platform.state();
    assert_eq!(state.disk(1).data[100 * 4096..103 * 4096], data[..]);
    drop(state);
    controller.assert_clean();
}

#[test]
fn written_data_reads_back() {
    let mut controller = Controller::started();
    let writes: Vec<(u64, usize)> = vec![(0, 1), (7, 8), (100, 129), (2000, 1000), (4095, 1)];
    let mut requests = Vec::new();
    for (i, (lba, count)) in writes.iter().enumerate() {
        let data = pattern(i as u64 + 10, count * SECTOR);
        requests.push(controller.write(i as u64, *lba, &data));
    }
    let written = controller.run(requests);
    assert!(written.values().all(|f| f.outcome == Ok(())));
    for (i, (lba, count)) in writes.iter().enumerate() {
        let data = pattern(i as u64 + 10, count * SECTOR);
        assert_eq!(controller.disk_bytes(*lba, data.len()), data, "lba {lba}");
    }
    let requests = writes
        .iter()
        .enumerate()
        .map(|(i, (lba, count))| controller.read(100 + i as u64, *lba, *count as u32))
        .collect();
    let read = controller.run(requests);
    for (i, (_, count)) in writes.iter().enumerate() {
        let done = &read[&(100 + i as u64)];
        assert_eq!(done.outcome, Ok(()));
        let data = controller.contents(done.buffer.as_ref().unwrap(), count * SECTOR);
        assert_eq!(data, pattern(i as u64 + 10, count * SECTOR));
    }
    let commands: Vec<u8> = controller.executed().iter().map(|e| e.command).collect();
    assert_eq!(commands[1..6], [WRITE_DMA_EXT; 5]);
    assert_eq!(commands[6..], [READ_DMA_EXT; 5]);
    controller.assert_clean();
}

#[test]
fn many_requests_are_in_flight_at_once() {
    let mut controller = Controller::started();
    let contents = pattern(3, SECTORS * SECTOR);
    controller.platform.state().disk_mut(0).data = contents.clone();
    controller.platform.state().hold = true;
    let requests = (0..16)
        .map(|i| controller.read(i, i * 200, 1 + i as u32))
        .collect();
    controller.submit(requests);
    assert!(controller.completions().is_empty());
    {
        let state = controller.platform.state();
        assert_eq!(state.port(0).ci.count_ones(), 16);
        assert_eq!(state.port(0).max_outstanding, 16);
    }
    assert!(!controller.handle_interrupt(), "nothing finished yet");
    controller.platform.state().run_commands();
    assert!(controller.handle_interrupt());
    let done = controller.completions();
    assert_eq!(done.len(), 16);
    for finished in done {
        assert_eq!(finished.outcome, Ok(()));
        let i = finished.tag;
        let len = (1 + i as usize) * SECTOR;
        let start = i as usize * 200 * SECTOR;
        let data = controller.contents(&finished.buffer.unwrap(), len);
        assert_eq!(data, contents[start..start + len], "request {i}");
    }
    let slots: std::collections::BTreeSet<usize> =
        controller.executed()[1..].iter().map(|e| e.slot).collect();
    assert_eq!(slots.len(), 16, "each request in its own slot");
    controller.assert_clean();
}

#[test]
fn refused_requests_come_back_at_once_without_touching_the_device() {
    let mut controller = Controller::started();
    let before = {
        let state = controller.platform.state();
        (state.writes.len(), state.reads)
    };
    let executed = controller.executed().len();
    let small = controller.buffer(2048, &[]);
    let zero = controller.buffer(SECTOR, &[]);
    let small_rep = small.rep();
    let last = SECTORS as u64 - 1;
    let mut requests = vec![
        controller.read(1, last, 2),
        controller.read(2, u64::MAX, 1),
        request(3, DISK, BlockOp::Read, 0, 0, Some(zero)),
        request(4, DISK, BlockOp::Read, 0, 65536, None),
        request(5, DISK, BlockOp::Read, 0, 8, Some(small)),
        request(6, DISK, BlockOp::Write, 0, 1, None),
    ];
    let mut cdrom = controller.read(7, 0, 1);
    cdrom.disk = CDROM as u32;
    requests.push(cdrom);
    let mut nowhere = controller.read(8, 0, 1);
    nowhere.disk = 99;
    requests.push(nowhere);
    let reps: Vec<Option<u32>> = requests
        .iter()
        .map(|r| r.buffer.as_ref().map(|b| b.rep()))
        .collect();
    let memory_writes = controller.platform.state().memory_writes;
    controller.submit(requests);
    {
        let state = controller.platform.state();
        assert_eq!(state.writes.len(), before.0, "no register written");
        assert_eq!(state.reads, before.1, "no register read");
        assert_eq!(state.memory_writes, memory_writes, "no descriptor written");
    }
    let done = controller.completions();
    let got: Vec<_> = done.iter().map(|d| (d.tag, d.outcome)).collect();
    use ErrorCode::*;
    assert_eq!(
        got,
        vec![
            (1, Err(OutOfRange)),
            (2, Err(OutOfRange)),
            (3, Err(OutOfRange)),
            (4, Err(OutOfRange)),
            (5, Err(OutOfRange)),
            (6, Err(OutOfRange)),
            (7, Err(NoSuchResource)),
            (8, Err(NoSuchResource)),
        ]
    );
    let back: Vec<Option<u32>> = done
        .iter()
        .map(|d| d.buffer.as_ref().map(|b| b.rep()))
        .collect();
    assert_eq!(back, reps, "every buffer comes back");
    assert_eq!(back[4], Some(small_rep));
    assert_eq!(controller.executed().len(), executed);
    let ok = controller.read(9, last, 1);
    assert_eq!(controller.run_one(ok).outcome, Ok(()));
    controller.assert_clean();
}

#[test]
fn a_task_file_error_fails_its_request_and_the_others_go_on() {
    let mut disk = Disk::new(SECTORS);
    disk.bad_lbas = vec![100];
    let (mut controller, _) = Controller::start(q35(disk));
    let data = pattern(4, 4 * SECTOR);
    let requests = vec![
        controller.read(1, 10, 8),
        controller.read(2, 96, 8),
        controller.write(3, 200, &data),
    ];
    let done = controller.run(requests);
    use ErrorCode::*;
    assert_eq!(
        outcomes(&done),
        vec![(1, Ok(())), (2, Err(DeviceError)), (3, Ok(()))]
    );
    assert_eq!(controller.disk_bytes(200, data.len()), data);
    {
        let state = controller.platform.state();
        let port = state.port(0);
        assert_eq!(port.stops, 1, "the port was stopped");
        assert_eq!(port.starts, 2, "and started again");
        assert_eq!(port.comresets, 0, "the device was not busy");
        assert!(!port.halted);
        assert!(state.port_writes(0, PX_SERR).len() >= 2, "PxSERR cleared");
        // The write went in after the restart: the HBA had stopped with it still issued.
        let commands: Vec<_> = port.executed.iter().map(|e| (e.command, e.ok)).collect();
        assert_eq!(
            commands[1..],
            [
                (READ_DMA_EXT, true),
                (READ_DMA_EXT, false),
                (WRITE_DMA_EXT, true)
            ]
        );
    }
    // Later requests work; the bad sector still fails.
    let requests = vec![controller.read(4, 0, 8), controller.read(5, 100, 1)];
    let done = controller.run(requests);
    assert_eq!(outcomes(&done), vec![(4, Ok(())), (5, Err(DeviceError))]);
    let again = controller.read(6, 101, 4);
    assert_eq!(controller.run_one(again).outcome, Ok(()));
    controller.assert_clean();
}

#[test]
fn a_device_left_busy_by_an_error_gets_a_link_reset() {
    let mut disk = Disk::new(SECTORS);
    disk.bad_lbas = vec![7];
    let (mut controller, _) = Controller::start(q35(disk));
    controller.platform.state().busy_after_error = true;
    let requests = vec![controller.read(1, 0, 8), controller.read(2, 8, 8)];
    let done = controller.run(requests);
    use ErrorCode::*;
    assert_eq!(outcomes(&done), vec![(1, Err(DeviceError)), (2, Ok(()))]);
    {
        let state = controller.platform.state();
        assert_eq!(state.port(0).comresets, 1);
        assert_eq!(state.port(0).tfd & (STATUS_BSY | STATUS_DRQ), 0);
    }
    let next = controller.read(3, 16, 8);
    assert_eq!(controller.run_one(next).outcome, Ok(()));
    controller.assert_clean();
}

#[test]
fn an_error_reported_the_qemu_way_is_still_pinned_on_its_request() {
    let mut disk = Disk::new(SECTORS);
    disk.bad_lbas = vec![100];
    let (mut controller, _) = Controller::start(q35(disk));
    controller.platform.state().qemu_errors = true;
    controller.platform.state().hold = true;
    let requests = vec![
        controller.read(1, 0, 8),
        controller.read(2, 99, 4),
        controller.read(3, 200, 8),
        request(4, DISK, BlockOp::Flush, 0, 0, None),
    ];
    controller.submit(requests);
    controller.platform.state().run_commands();
    {
        let state = controller.platform.state();
        assert_eq!(
            state.port(0).ci,
            0,
            "QEMU cleared every bit, the failed one too"
        );
    }
    assert!(controller.handle_interrupt());
    let done: BTreeMap<u64, Finished> = controller
        .completions()
        .into_iter()
        .map(|f| (f.tag, f))
        .collect();
    use ErrorCode::*;
    assert_eq!(
        outcomes(&done),
        vec![(1, Ok(())), (2, Err(DeviceError)), (3, Ok(())), (4, Ok(()))]
    );
    controller.platform.state().hold = false;
    let next = controller.read(5, 8, 8);
    assert_eq!(controller.run_one(next).outcome, Ok(()));
    controller.assert_clean();
}

#[test]
fn a_command_that_never_finishes_times_out_and_the_port_recovers() {
    let mut disk = Disk::new(SECTORS);
    disk.hang_lba = Some(50);
    let (mut controller, _) = Controller::start(q35(disk));
    let requests = vec![controller.read(1, 48, 4), controller.read(2, 0, 1)];
    controller.submit(requests);
    assert!(controller.completions().is_empty());
    controller.platform.state().now += TIMEOUT_NS / 2;
    assert!(controller.completions().is_empty(), "not yet");
    controller.platform.state().now += TIMEOUT_NS / 2 + 1;
    let done = controller.completions();
    let got: Vec<_> = done.iter().map(|d| (d.tag, d.outcome)).collect();
    assert_eq!(got, vec![(1, Err(ErrorCode::TimedOut))]);
    assert!(done[0].buffer.is_some());
    {
        let state = controller.platform.state();
        assert_eq!(state.port(0).comresets, 1);
        assert_eq!(state.port(0).hung, None);
    }
    let done = controller.completions();
    let got: Vec<_> = done.iter().map(|d| (d.tag, d.outcome)).collect();
    assert_eq!(got, vec![(2, Ok(()))], "re-issued after the reset");
    let again = controller.read(3, 48, 4);
    assert_eq!(controller.run_one(again).outcome, Ok(()));
    controller.assert_clean();
}

#[test]
fn a_flush_reaches_the_disk() {
    let mut controller = Controller::started();
    let data = pattern(5, 2 * SECTOR);
    // A flush covers the writes that completed before it was submitted.
    let write = controller.write(1, 30, &data);
    assert_eq!(controller.run_one(write).outcome, Ok(()));
    let done = controller.run_one(flush(2));
    assert_eq!(done.outcome, Ok(()));
    assert!(done.buffer.is_none());
    assert_eq!(controller.platform.state().disk(0).flushes, 1);
    let last = controller.executed().last().unwrap().clone();
    assert_eq!((last.command, last.prdt.len()), (FLUSH_CACHE_EXT, 0));
    controller.assert_clean();
}

#[test]
fn requests_beyond_the_queue_depth_come_back_in_use_and_none_is_lost() {
    let mut controller = Controller::started();
    controller.platform.state().hold = true;
    let requests = (0..40).map(|i| controller.read(i, i, 1)).collect();
    controller.submit(requests);
    let refused = controller.completions();
    let got: Vec<_> = refused.iter().map(|d| (d.tag, d.outcome)).collect();
    let expected: Vec<_> = (32..40).map(|i| (i, Err(ErrorCode::InUse))).collect();
    assert_eq!(got, expected);
    assert!(refused.iter().all(|d| d.buffer.is_some()));
    assert_eq!(controller.platform.state().port(0).ci.count_ones(), 32);
    controller.platform.state().run_commands();
    assert!(controller.handle_interrupt());
    let done = controller.completions();
    let mut tags: Vec<u64> = done.iter().map(|d| d.tag).collect();
    tags.sort();
    assert_eq!(tags, (0..32).collect::<Vec<_>>());
    assert!(done.iter().all(|d| d.outcome == Ok(())));
    controller.platform.state().hold = false;
    let requests = (40..48).map(|i| controller.read(i, i, 1)).collect();
    let done = controller.run(requests);
    assert!(done.values().all(|d| d.outcome == Ok(())));
    controller.assert_clean();
}

#[test]
fn handle_interrupt_reads_and_clears_the_cause() {
    let mut controller = Controller::started();
    assert!(!controller.handle_interrupt(), "nothing pending after init");
    let interrupts = controller.platform.state().interrupts;
    let read = controller.read(1, 0, 1);
    controller.submit(vec![read]);
    {
        let state = controller.platform.state();
        assert_eq!(state.interrupts, interrupts + 1);
        assert_eq!(state.hba_is, 1);
        assert_ne!(state.port(0).is & IS_DHRS, 0);
    }
    let acknowledged = controller.platform.state().acknowledged;
    assert!(controller.handle_interrupt());
    {
        let state = controller.platform.state();
        assert_eq!((state.hba_is, state.port(0).is), (0, 0));
        assert_eq!(state.acknowledged, acknowledged + 1);
    }
    assert!(!controller.handle_interrupt());
    let done = controller.completions();
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].outcome, Ok(()));
    controller.assert_clean();
}

#[test]
fn a_lost_interrupt_loses_no_request() {
    let mut controller = Controller::started();
    let read = controller.read(1, 5, 3);
    controller.submit(vec![read]);
    let done = controller.completions();
    assert_eq!(done.len(), 1);
    assert_eq!((done[0].tag, done[0].outcome), (1, Ok(())));
    assert!(controller.completions().is_empty());
    controller.assert_clean();
}

#[test]
fn large_requests_are_split_over_prd_entries() {
    let limits = Limits {
        max_dma_buffer: 64 << 20,
        max_dma_total: 256 << 20,
        ..Limits::default()
    };
    let mut controller = Controller::with_limits(q35(Disk::new(65536)), limits);
    controller.init().unwrap();
    let contents = pattern(6, 65536 * SECTOR);
    controller.platform.state().disk_mut(0).data = contents.clone();
    for (tag, count) in [(1u64, 20000usize), (2, 65535)] {
        let read = controller.read(tag, 1, count as u32);
        let done = controller.run_one(read);
        assert_eq!(done.outcome, Ok(()));
        let len = count * SECTOR;
        let data = controller.contents(&done.buffer.unwrap(), len);
        assert!(data == contents[SECTOR..SECTOR + len], "request {tag}");
        let prdt = controller.executed().last().unwrap().prdt.clone();
        let sizes: Vec<u32> = prdt.iter().map(|(_, bytes)| *bytes).collect();
        const PRD_MAX: usize = 4 << 20;
        let mut expected = vec![PRD_MAX as u32; len / PRD_MAX];
        if !len.is_multiple_of(PRD_MAX) {
            expected.push((len % PRD_MAX) as u32);
        }
        assert_eq!(sizes, expected);
        for pair in prdt.windows(2) {
            assert_eq!(pair[0].0 + u64::from(pair[0].1), pair[1].0, "contiguous");
        }
    }
    controller.assert_clean();
}

#[test]
fn an_hba_that_never_finishes_its_reset_fails_init() {
    let platform = q35(Disk::new(SECTORS));
    {
        let mut state = platform.state();
        state.reset_never_ends = true;
        state.clock_step = 1_000_000;
    }
    let mut controller = Controller::new(platform);
    assert_eq!(controller.init().unwrap_err(), ErrorCode::TimedOut);
    let read = controller.read(1, 0, 1);
    controller.submit(vec![read]);
    let done = controller.completions();
    assert_eq!(done[0].outcome, Err(ErrorCode::NoSuchResource));
    let state = controller.platform.state();
    assert!(state.port(0).executed.is_empty());
    assert!(!state.bus_master(), "no DMA allowed");
    drop(state);
    controller.assert_clean();
}

#[test]
fn requests_before_init_come_back_refused() {
    let mut controller = Controller::new(q35(Disk::new(SECTORS)));
    let read = controller.read(1, 0, 1);
    let rep = read.buffer.as_ref().unwrap().rep();
    controller.submit(vec![read]);
    let done = controller.completions();
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].outcome, Err(ErrorCode::NoSuchResource));
    assert_eq!(done[0].buffer.as_ref().map(|b| b.rep()), Some(rep));
    assert!(!controller.handle_interrupt());
    assert!(controller.completions().is_empty());
    let state = controller.platform.state();
    assert!(state.writes.is_empty() && state.reads == 0);
    drop(state);
    controller.assert_clean();
}
