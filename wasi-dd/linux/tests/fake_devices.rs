//! The runner's serving loops with the real driver components (`e1000`, `ahci`, built by `keel
//! build-drivers`) on the fake devices of `wasi-dd/tests/common` (shared with wasi-dd's own
//! driver tests): the NIC frame loop with a queue standing in for the TAP (and, with
//! `--ignored` as root, a real TAP and Linux's network stack), and the NBD server with a socket
//! pair standing in for the kernel's `nbd`.

#[allow(dead_code)]
#[path = "../../tests/common/ahci.rs"]
mod ahci;
#[allow(dead_code)]
#[path = "../../tests/common/e1000.rs"]
mod e1000;

use std::collections::{BTreeMap, VecDeque};
use std::io::{self, Read, Write};
use std::net::UdpSocket;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use wasi_dd::Limits;
use wasi_dd::RX_BUFFERS;
use wasi_dd_linux::block::{self, BlockServer};
use wasi_dd_linux::nbd::{self, Command, errno};
use wasi_dd_linux::nic::{FramePort, NicLoop, TX_BATCH};
use wasi_dd_linux::world::{self, World};
use wasmtime::component::Component;
use wasmtime::{Config, Engine};

/// The engine the fakes' `instance` functions use (`super::engine()` in them).
fn engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(|| {
        let mut config = Config::new();
        config.wasm_component_model(true);
        Engine::new(&config).expect("a host engine")
    })
}

fn drivers_dir() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => root.join(dir).join("drivers-wasm"),
        None => root.join("target/drivers-wasm"),
    }
}

fn driver_path(name: &str) -> PathBuf {
    let path = drivers_dir().join(format!("{name}.wasm"));
    assert!(
        path.is_file(),
        "{} is missing: build the driver components first with `keel build-drivers` \
         (`cargo run -p keel-toolchain -- build-drivers`, or `make test`)",
        path.display()
    );
    path
}

/// A driver component, compiled once per test process (`super::driver(...)` in the fakes).
fn driver(name: &'static str) -> Component {
    static CACHE: Mutex<Vec<(&'static str, Component)>> = Mutex::new(Vec::new());
    let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, component)) = cache.iter().find(|(n, _)| *n == name) {
        return component.clone();
    }
    let component = Component::from_file(engine(), driver_path(name)).unwrap();
    cache.push((name, component.clone()));
    component
}

#[test]
fn worlds_are_read_from_the_components() {
    for (name, expected) in [
        ("e1000", World::Nic),
        ("ahci", World::Block),
        ("test-conformance", World::Test),
        ("test-conformance-c", World::Test),
    ] {
        assert_eq!(
            world::detect(engine(), &driver(name)),
            Ok(expected),
            "{name}"
        );
    }
    // An empty component (preamble only) is valid and exports nothing.
    let empty = Component::from_binary(engine(), b"\0asm\x0d\0\x01\0").unwrap();
    let error = world::detect(engine(), &empty).unwrap_err();
    assert!(error.contains("exports none of"), "{error}");
    assert!(error.contains("(its exports: none)"), "{error}");
}

#[test]
fn the_runner_refuses_files_that_are_not_driver_components() {
    let engine = wasi_dd_linux::runner::engine().unwrap();
    let dir = std::env::temp_dir().join(format!("wasi-dd-linux-files-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let core = dir.join("core.wasm");
    std::fs::write(&core, b"\0asm\x01\0\0\0").unwrap();
    let text = dir.join("notes.wasm");
    std::fs::write(&text, b"hello, world").unwrap();
    let missing = dir.join("missing.wasm");
    let cases = [
        (core, "core WebAssembly module, not a component"),
        (text, "not WebAssembly"),
        (missing, "cannot read"),
    ];
    for (path, why) in cases {
        let error = wasi_dd_linux::runner::load_driver(&engine, &path).unwrap_err();
        assert!(error.contains(why), "{}: {error}", path.display());
    }
    let (_, world) = wasi_dd_linux::runner::load_driver(&engine, &driver_path("ahci")).unwrap();
    assert_eq!(world, World::Block);
    std::fs::remove_dir_all(dir).unwrap();
}

/// Linux's side of the TAP, as queues.
#[derive(Default)]
struct QueuePort {
    from_linux: VecDeque<Vec<u8>>,
    to_linux: Vec<Vec<u8>>,
    links: Vec<bool>,
}

impl FramePort for QueuePort {
    fn read_frame(&mut self, buffer: &mut [u8]) -> io::Result<Option<usize>> {
        Ok(self.from_linux.pop_front().map(|frame| {
            let length = frame.len().min(buffer.len());
            buffer[..length].copy_from_slice(&frame[..length]);
            length
        }))
    }

    fn write_frame(&mut self, frame: &[u8]) -> io::Result<()> {
        self.to_linux.push(frame.to_vec());
        Ok(())
    }

    fn set_link(&mut self, up: bool) {
        self.links.push(up);
    }
}

fn frame(seed: usize, len: usize) -> Vec<u8> {
    let mut bytes = vec![0xff; 6];
    bytes.extend(e1000::MAC);
    bytes.extend([0x88, 0xb5]);
    bytes.extend((0..len - 14).map(|i| (i * 7 + seed * 31) as u8));
    bytes
}

#[test]
fn the_frame_loop_moves_frames_both_ways_through_the_e1000_driver() {
    let platform = e1000::FakeE1000::new();
    let (mut store, driver) = e1000::instance(&platform);
    let (mut nic, mac) = NicLoop::start(&mut store, &driver).unwrap();
    assert_eq!(mac, e1000::MAC);
    let mut port = QueuePort::default();

    // The first round reads the link (as if the interrupt fired) and tells Linux.
    nic.round(&mut store, &driver, &mut port, true, true)
        .unwrap();
    assert_eq!(port.links, vec![true]);
    assert_eq!(nic.link().map(|l| (l.up, l.speed_mbps)), Some((true, 1000)));

    // Linux to the wire.
    let outgoing: Vec<Vec<u8>> = (0..3).map(|i| frame(i, 60 + i * 100)).collect();
    port.from_linux.extend(outgoing.iter().cloned());
    nic.round(&mut store, &driver, &mut port, true, true)
        .unwrap();
    let sent: Vec<Vec<u8>> = platform
        .state()
        .sent
        .iter()
        .map(|s| s.bytes.clone())
        .collect();
    assert_eq!(sent, outgoing);
    assert_eq!(nic.counters.sent, 3);

    // The wire to Linux.
    let incoming: Vec<Vec<u8>> = (0..2).map(|i| frame(10 + i, 1514)).collect();
    for bytes in &incoming {
        assert!(platform.state().inject(bytes));
    }
    nic.round(&mut store, &driver, &mut port, true, true)
        .unwrap();
    assert_eq!(port.to_linux, incoming);
    assert_eq!(nic.counters.received, 2);
    assert_eq!(nic.counters.received_bytes, 2 * 1514);

    // The cable pulled: Linux hears of it once.
    platform.state().set_cable(false);
    nic.round(&mut store, &driver, &mut port, true, true)
        .unwrap();
    nic.round(&mut store, &driver, &mut port, true, true)
        .unwrap();
    assert_eq!(port.links, vec![true, false]);

    assert!(
        platform.state().violations.is_empty(),
        "{:?}",
        platform.state().violations
    );
}

#[test]
fn a_full_transmit_ring_keeps_frames_queued_in_order_and_drops_none() {
    let platform = e1000::FakeE1000::new();
    let (mut store, driver) = e1000::instance(&platform);
    let (mut nic, _) = NicLoop::start(&mut store, &driver).unwrap();
    let mut port = QueuePort::default();
    nic.round(&mut store, &driver, &mut port, true, true)
        .unwrap();
    platform.state().tx_paused = true;
    let outgoing: Vec<Vec<u8>> = (0..100).map(|i| frame(i, 64)).collect();
    port.from_linux.extend(outgoing.iter().cloned());
    let mut rounds = 0;
    while nic.counters.sent < 100 {
        rounds += 1;
        assert!(rounds < 100, "stuck at {} frames sent", nic.counters.sent);
        nic.round(&mut store, &driver, &mut port, true, true)
            .unwrap();
        // Every other round, the device sends what is in its ring (the wire drains it).
        if rounds % 2 == 0 {
            platform.state().run_tx();
        }
    }
    // The last frames the driver took are still in its ring.
    platform.state().run_tx();
    let sent: Vec<Vec<u8>> = platform
        .state()
        .sent
        .iter()
        .map(|s| s.bytes.clone())
        .collect();
    let seeds = |frames: &[Vec<u8>]| frames.iter().map(|f| f[14]).collect::<Vec<_>>();
    assert_eq!(seeds(&sent), seeds(&outgoing));
    assert!(sent == outgoing);
    assert_eq!(nic.counters.sent_dropped, 0);
    // Transmit buffers are reused: far fewer allocated than frames sent (beyond the receive
    // buffers and the driver's two rings).
    let allocations = platform.state().allocations.len();
    assert!(
        allocations < RX_BUFFERS + 2 + 3 * TX_BATCH,
        "{allocations} DMA allocations"
    );
    assert!(platform.state().violations.is_empty());
}

#[test]
fn frames_longer_than_a_buffer_are_dropped_and_counted() {
    let platform = e1000::FakeE1000::new();
    let (mut store, driver) = e1000::instance(&platform);
    let (mut nic, _) = NicLoop::start(&mut store, &driver).unwrap();
    let mut port = QueuePort::default();
    port.from_linux.push_back(frame(1, 9000));
    port.from_linux.push_back(frame(2, 100));
    nic.round(&mut store, &driver, &mut port, true, true)
        .unwrap();
    assert_eq!(nic.counters.sent_dropped, 1);
    assert_eq!(nic.counters.sent, 1);
    assert_eq!(platform.state().sent.len(), 1);
}

/// The kernel's side of an NBD connection: sends requests, collects replies on a thread.
/// A read's handle carries its length in the low 32 bits (so the reader knows the payload).
struct FakeKernel {
    stream: UnixStream,
    /// Requests go out on a thread of their own, as the kernel sends independently of what the
    /// server answers (a big write fills the socket before the server reads it).
    requests: std::sync::mpsc::Sender<Vec<u8>>,
    replies: std::sync::mpsc::Receiver<(u32, u64, Vec<u8>)>,
    next: u64,
}

impl FakeKernel {
    fn new(stream: UnixStream) -> FakeKernel {
        let mut reader = stream.try_clone().unwrap();
        let (sender, replies) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            loop {
                let mut header = [0u8; nbd::REPLY_BYTES];
                if reader.read_exact(&mut header).is_err() {
                    return;
                }
                let (error, handle) = nbd::parse_reply(&header).expect("reply magic");
                let length = if error == 0 { handle & 0xffff_ffff } else { 0 };
                let mut data = vec![0; length as usize];
                reader.read_exact(&mut data).unwrap();
                if sender.send((error, handle, data)).is_err() {
                    return;
                }
            }
        });
        let mut writer = stream.try_clone().unwrap();
        let (requests, outgoing) = std::sync::mpsc::channel::<Vec<u8>>();
        std::thread::spawn(move || {
            for bytes in outgoing {
                if writer.write_all(&bytes).is_err() {
                    return;
                }
            }
        });
        FakeKernel {
            stream,
            requests,
            replies,
            next: 0,
        }
    }

    /// Sends a request; returns its handle.
    fn send(&mut self, command: Command, offset: u64, length: u32, data: &[u8]) -> u64 {
        self.next += 1;
        let payload = if command == Command::Read {
            u64::from(length)
        } else {
            0
        };
        let handle = (self.next << 32) | payload;
        self.requests
            .send(nbd::encode_request(command, handle, offset, length, data))
            .unwrap();
        handle
    }
}

/// Runs rounds until `count` replies have come from each kernel.
fn serve_until(
    server: &mut BlockServer,
    store: &mut wasmtime::Store<wasi_dd::DriverHost<ahci::FakeAhci>>,
    driver: &wasi_dd::BlockDriver,
    kernels: &mut [(&mut FakeKernel, usize)],
) -> Vec<BTreeMap<u64, (u32, Vec<u8>)>> {
    let mut got: Vec<BTreeMap<u64, (u32, Vec<u8>)>> = vec![BTreeMap::new(); kernels.len()];
    for _ in 0..1000 {
        server.round(store, driver, true).unwrap();
        for (i, (kernel, _)) in kernels.iter().enumerate() {
            while let Ok((error, handle, data)) =
                kernel.replies.recv_timeout(Duration::from_millis(1))
            {
                assert!(
                    got[i].insert(handle, (error, data)).is_none(),
                    "two replies for {handle:#x}"
                );
            }
        }
        if kernels
            .iter()
            .zip(&got)
            .all(|((_, wanted), got)| got.len() >= *wanted)
        {
            return got;
        }
    }
    panic!(
        "replies missing: got {:?}",
        got.iter().map(BTreeMap::len).collect::<Vec<_>>()
    );
}

fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(13).wrapping_add(seed))
        .collect()
}

#[test]
fn the_nbd_server_serves_each_disk_of_the_ahci_driver() {
    const SECTORS: usize = 8192; // 4 MiB
    let mut first = ahci::Disk::new(SECTORS);
    first.data = pattern(1, SECTORS * 512);
    let platform = ahci::FakeAhci::new(vec![
        ahci::Attached::Disk(first),
        ahci::Attached::Empty,
        ahci::Attached::Atapi,
        ahci::Attached::Disk(ahci::Disk::new(2048)),
    ]);
    let (mut store, driver) = ahci::instance(&platform, Limits::default());
    let disks = block::start(&mut store, &driver).unwrap();
    assert_eq!(
        disks
            .iter()
            .map(|d| (d.index, d.sector_count, d.sector_size))
            .collect::<Vec<_>>(),
        vec![(0, SECTORS as u64, 512), (3, 2048, 512)]
    );
    let (ours0, theirs0) = UnixStream::pair().unwrap();
    let (ours1, theirs1) = UnixStream::pair().unwrap();
    let mut server = BlockServer::new(vec![
        ("nbd0".into(), disks[0].clone(), ours0),
        ("nbd1".into(), disks[1].clone(), ours1),
    ])
    .unwrap();
    let mut kernel0 = FakeKernel::new(theirs0);
    let mut kernel1 = FakeKernel::new(theirs1);

    // A write longer than one driver request (1 MiB), read back; a read on the other disk.
    let data = pattern(7, (1 << 20) + (1 << 19));
    let write = kernel0.send(Command::Write, 4096, data.len() as u32, &data);
    let other = kernel1.send(Command::Read, 0, 4096, &[]);
    let got = serve_until(
        &mut server,
        &mut store,
        &driver,
        &mut [(&mut kernel0, 1), (&mut kernel1, 1)],
    );
    assert_eq!(got[0][&write], (0, Vec::new()));
    assert_eq!(got[1][&other], (0, vec![0; 4096]));
    assert_eq!(
        &platform.state().disk(0).data[4096..4096 + data.len()],
        &data[..]
    );
    let read = kernel0.send(Command::Read, 4096, data.len() as u32, &[]);
    let got = serve_until(&mut server, &mut store, &driver, &mut [(&mut kernel0, 1)]);
    assert_eq!(got[0][&read], (0, data));

    // More requests at once than the disk's queue depth (32): all answered, with the right data.
    let expected: Vec<(u64, Vec<u8>)> = (0..48u64)
        .map(|i| {
            let offset = 3 * (1 << 20) + i * 8192;
            let handle = kernel0.send(Command::Read, offset, 8192, &[]);
            let start = offset as usize;
            (
                handle,
                pattern(1, SECTORS * 512)[start..start + 8192].to_vec(),
            )
        })
        .collect();
    let flush = kernel0.send(Command::Flush, 0, 0, &[]);
    let got = serve_until(&mut server, &mut store, &driver, &mut [(&mut kernel0, 49)]);
    for (handle, data) in &expected {
        assert_eq!(&got[0][handle], &(0, data.clone()));
    }
    assert_eq!(got[0][&flush], (0, Vec::new()));
    assert_eq!(platform.state().disk(0).flushes, 1);

    // Refusals: past the end, not sector aligned, a command not offered.
    let past = kernel1.send(Command::Read, 2047 * 512, 1024, &[]);
    let odd = kernel1.send(Command::Write, 100, 512, &[0; 512]);
    let trim = kernel1.send(Command::Other(4), 0, 512, &[]);
    let got = serve_until(&mut server, &mut store, &driver, &mut [(&mut kernel1, 3)]);
    assert_eq!(got[0][&past].0, errno::ENOSPC);
    assert_eq!(got[0][&odd].0, errno::EINVAL);
    assert_eq!(got[0][&trim].0, errno::EINVAL);

    // Disconnects: each connection closes once its requests are answered.
    kernel0.send(Command::Disconnect, 0, 0, &[]);
    kernel1.send(Command::Disconnect, 0, 0, &[]);
    for _ in 0..100 {
        if server.finished() {
            break;
        }
        server.round(&mut store, &driver, true).unwrap();
    }
    assert!(server.finished());
    let mut rest = Vec::new();
    kernel0
        .stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    assert_eq!(
        kernel0.stream.read_to_end(&mut rest).unwrap(),
        0,
        "closed after the disconnect"
    );
    assert_eq!(server.counters.writes, 1);
    assert_eq!(server.counters.reads, 50);
    assert_eq!(server.counters.flushes, 1);
    assert_eq!(server.counters.errors, 3);
    assert!(
        platform.state().violations.is_empty(),
        "{:?}",
        platform.state().violations
    );
}

#[test]
fn a_kernel_that_breaks_the_protocol_loses_its_connection_only() {
    let platform = ahci::FakeAhci::new(vec![ahci::Attached::Disk(ahci::Disk::new(64))]);
    let (mut store, driver) = ahci::instance(&platform, Limits::default());
    let disks = block::start(&mut store, &driver).unwrap();
    let (ours, mut theirs) = UnixStream::pair().unwrap();
    let mut server = BlockServer::new(vec![("nbd0".into(), disks[0].clone(), ours)]).unwrap();
    theirs.write_all(&[0xde; nbd::REQUEST_BYTES]).unwrap();
    server.round(&mut store, &driver, true).unwrap();
    assert!(server.finished());
}

/// With a real TAP: Linux's ARP request for a neighbour reaches the fake e1000's wire, and a
/// UDP datagram injected on the wire reaches a socket of Linux. Needs root (CAP_NET_ADMIN) and
/// /dev/net/tun; adds interface `wddtest0` with 10.250.0.1/24 while it runs.
#[test]
#[ignore = "needs root and /dev/net/tun: cargo test -p wasi-dd-linux -- --ignored"]
fn linux_talks_to_the_e1000_driver_through_a_tap() {
    use wasi_dd_linux::sys::Tap;
    let platform = e1000::FakeE1000::new();
    let (mut store, driver) = e1000::instance(&platform);
    let mut tap = Tap::open("wddtest0").expect("a TAP interface");
    let (mut nic, mac) = NicLoop::start(&mut store, &driver).unwrap();
    tap.set_mac(mac).unwrap();
    tap.set_up().unwrap();
    let status = std::process::Command::new("ip")
        .args(["addr", "add", "10.250.0.1/24", "dev", "wddtest0"])
        .status()
        .unwrap();
    assert!(status.success());
    let address = std::fs::read_to_string("/sys/class/net/wddtest0/address").unwrap();
    assert_eq!(address.trim(), "52:54:00:12:34:56");
    let carrier = || std::fs::read_to_string("/sys/class/net/wddtest0/carrier").unwrap();
    nic.round(&mut store, &driver, &mut tap, true, true)
        .unwrap();
    assert_eq!(carrier().trim(), "1", "the driver's link is up");
    platform.state().set_cable(false);
    nic.round(&mut store, &driver, &mut tap, true, true)
        .unwrap();
    assert_eq!(carrier().trim(), "0", "the cable is out");
    platform.state().set_cable(true);
    nic.round(&mut store, &driver, &mut tap, true, true)
        .unwrap();
    assert_eq!(carrier().trim(), "1");

    // Linux → wire: sending to a neighbour makes Linux ask for its MAC address.
    let socket = UdpSocket::bind("10.250.0.1:0").unwrap();
    socket.send_to(b"ping", "10.250.0.2:9").unwrap();
    let mut arp = None;
    for _ in 0..200 {
        nic.round(&mut store, &driver, &mut tap, true, true)
            .unwrap();
        arp = platform
            .state()
            .sent
            .iter()
            .find(|s| s.bytes.len() >= 42 && s.bytes[12..14] == [0x08, 0x06])
            .map(|s| s.bytes.clone());
        if arp.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let arp = arp.expect("an ARP request on the wire");
    assert_eq!(&arp[6..12], &mac, "from the interface's MAC");
    assert_eq!(&arp[38..42], &[10, 250, 0, 2], "asking for 10.250.0.2");

    // Wire → Linux: a UDP datagram from 10.250.0.2 to the socket.
    let receiver = UdpSocket::bind("10.250.0.1:5555").unwrap();
    receiver.set_nonblocking(true).unwrap();
    let datagram = udp_frame(
        mac,
        [10, 250, 0, 2],
        [10, 250, 0, 1],
        5555,
        b"hello from the wire",
    );
    assert!(platform.state().inject(&datagram));
    let mut buffer = [0u8; 64];
    let mut got = None;
    for _ in 0..200 {
        nic.round(&mut store, &driver, &mut tap, true, true)
            .unwrap();
        if let Ok((length, from)) = receiver.recv_from(&mut buffer) {
            got = Some((buffer[..length].to_vec(), from));
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let (payload, from) = got.expect("the datagram at the socket");
    assert_eq!(payload, b"hello from the wire");
    assert_eq!(from.to_string(), "10.250.0.2:4444");
    assert!(nic.counters.received >= 1 && nic.counters.sent >= 1);
}

/// An Ethernet frame with an IPv4/UDP datagram (from port 4444) to `mac`.
fn udp_frame(
    mac: [u8; 6],
    source: [u8; 4],
    destination: [u8; 4],
    port: u16,
    payload: &[u8],
) -> Vec<u8> {
    let mut frame = Vec::new();
    frame.extend(mac);
    frame.extend([0x02, 0, 0, 0, 0, 0x02]);
    frame.extend([0x08, 0x00]);
    let total = (20 + 8 + payload.len()) as u16;
    let mut ip = vec![0x45, 0, 0, 0, 0, 1, 0x40, 0, 64, 17, 0, 0];
    ip[2..4].copy_from_slice(&total.to_be_bytes());
    ip.extend(source);
    ip.extend(destination);
    let mut sum: u32 = ip
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    ip[10..12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    frame.extend(ip);
    frame.extend(4444u16.to_be_bytes());
    frame.extend(port.to_be_bytes());
    frame.extend(((8 + payload.len()) as u16).to_be_bytes());
    frame.extend([0, 0]);
    frame.extend_from_slice(payload);
    frame
}
