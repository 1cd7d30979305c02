//! The C test driver (`drivers-wasm/c/test-conformance-c`: wit-bindgen's C bindings, clang,
//! componentized by `keel build-drivers`) against the fake device: its exact report, every
//! access the device saw, and that it gives back every handle and every byte the canonical ABI
//! hands it.

mod common;

use std::sync::Arc;

use common::*;
use wasi_dd::platform::LogLevel;
use wasi_dd::types::Access;
use wasi_dd::{DriverHost, Limits, TestDriver};
use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Engine, Store};

const DRIVER: &str = "test-conformance-c";

fn r(offset: u64, width: Access) -> Event {
    Event::MmioRead {
        base: BAR0_BASE,
        offset,
        width,
    }
}

fn w(offset: u64, width: Access, value: u64) -> Event {
    Event::MmioWrite {
        base: BAR0_BASE,
        offset,
        width,
        value,
    }
}

fn port_read(offset: u64, width: Access) -> Event {
    Event::PortRead {
        port: (PORT_BASE + offset) as u16,
        width,
    }
}

fn port_write(offset: u64, width: Access, value: u32) -> Event {
    Event::PortWrite {
        port: (PORT_BASE + offset) as u16,
        width,
        value,
    }
}

fn config_read(offset: u16, width: Access) -> Event {
    Event::ConfigRead { offset, width }
}

fn config_write(offset: u16, width: Access, value: u32) -> Event {
    Event::ConfigWrite {
        offset,
        width,
        value,
    }
}

fn dma_read(address: u64, offset: u64, len: u64) -> Event {
    Event::DmaRead {
        address,
        offset,
        len,
    }
}

fn dma_write(address: u64, offset: u64, len: u64) -> Event {
    Event::DmaWrite {
        address,
        offset,
        len,
    }
}

fn only(events: &[Event], keep: impl Fn(&Event) -> bool) -> Vec<Event> {
    events.iter().filter(|e| keep(e)).cloned().collect()
}

fn position(events: &[Event], event: &Event) -> usize {
    events
        .iter()
        .position(|e| e == event)
        .unwrap_or_else(|| panic!("{event:?} missing from {events:#?}"))
}

#[test]
fn c_conformance_driver_uses_every_interface() {
    let platform = FakePlatform::new();
    let (mut store, driver) = instance(DRIVER, &platform, Limits::default());
    let device = store.data_mut().device().unwrap();
    let report = driver
        .call_run(&mut store, device, "conformance-c")
        .expect("no trap")
        .expect("the scenario passes");
    // The driver dropped every handle it was given or asked for, the device's included.
    assert!(store.data_mut().table().is_empty());
    drop(store);

    let expected = [
        "device 0000:00:03.0 id 8086:100e sub 1af4:1100 class 02.00.00 rev 03 bars 0:memory32:4096 1:io:64 2:memory64:8192:prefetchable",
        "config 100e8086 100e 03 cap-ptr=50 scratch=deadbeef 00561234 bar0-write=denied",
        "regions mmio=4096 ports=64",
        "mmio 12345678 56 1234 0123456789abcdef cdef00ab",
        "mmio-batch 0 83 12345601 123456789abcdef",
        "ports 5a beef cafef00d batch 3344 11225544",
        "dma size=4096 aligned=true read=1,2,3,4,5 batch 5a5a5a5aa5a5a5a5 11 a5a5a511 small=100 aligned=true after-free=stale-handle",
        "irq count=0 idle=false fired=true icr=1,0 masked=false unmasked=true count=2",
        "command 0003 0007 0003",
        "time slept-at-least-10us=true",
    ];
    assert_eq!(report.lines().collect::<Vec<_>>(), expected);
    assert_eq!(platform.violations(), Vec::<String>::new());

    let events = platform.events();
    let mut expected_mmio = vec![
        w(0x100, Access::W32, 0x1234_5678),
        r(0x100, Access::W32),
        r(0x101, Access::W8),
        r(0x102, Access::W16),
        w(0x108, Access::W64, 0x0123_4567_89ab_cdef),
        r(0x108, Access::W64),
        w(0x110, Access::W8, 0xab),
        w(0x112, Access::W16, 0xcdef),
        r(0x110, Access::W32),
        w(CTRL, Access::W32, CTRL_RESET),
    ];
    expected_mmio.extend((0..=RESET_READS).map(|_| r(CTRL, Access::W32)));
    expected_mmio.extend([
        r(STATUS, Access::W32),
        r(0x100, Access::W32),
        w(0x100, Access::W32, 0x1234_5601),
        r(0x100, Access::W32),
        r(0x108, Access::W64),
        w(ICS, Access::W32, 1),
        r(ICR, Access::W32),
        r(ICR, Access::W32),
        w(ICS, Access::W32, 4),
    ]);
    assert_eq!(
        only(&events, |e| matches!(
            e,
            Event::MmioRead { .. } | Event::MmioWrite { .. }
        )),
        expected_mmio
    );

    assert_eq!(
        only(&events, |e| matches!(
            e,
            Event::PortRead { .. } | Event::PortWrite { .. }
        )),
        vec![
            port_write(0, Access::W8, 0x5a),
            port_read(0, Access::W8),
            port_write(2, Access::W16, 0xbeef),
            port_read(2, Access::W16),
            port_write(4, Access::W32, 0xcafe_f00d),
            port_read(4, Access::W32),
            port_write(8, Access::W32, 0x1122_3344),
            port_read(8, Access::W16),
            port_read(8, Access::W32),
            port_write(8, Access::W32, 0x1122_5544),
            port_read(8, Access::W32),
        ]
    );

    // Every configuration access, in order: the driver's; the host's walk of the capability
    // list before the first write (status, pointer, MSI id/control/next, vendor id/next: MSI is
    // the host's to write); and its read-modify-writes of the command register (memory
    // decoding, I/O decoding, bus mastering on and off, then off for good at the end). The
    // refused write to BAR 0 never
    // reached the device.
    let command = 0x04;
    let msi = MSI_CAPABILITY as u16;
    let vendor = VENDOR_CAPABILITY as u16;
    assert_eq!(
        only(&events, |e| matches!(
            e,
            Event::ConfigRead { .. } | Event::ConfigWrite { .. }
        )),
        vec![
            config_read(0x00, Access::W32),
            config_read(0x02, Access::W16),
            config_read(0x08, Access::W8),
            config_read(0x34, Access::W8),
            config_read(0x06, Access::W16),
            config_read(0x34, Access::W8),
            config_read(msi, Access::W8),
            config_read(msi + 2, Access::W16),
            config_read(msi + 1, Access::W8),
            config_read(vendor, Access::W8),
            config_read(vendor + 1, Access::W8),
            config_write(0x80, Access::W32, 0xdead_beef),
            config_write(0x84, Access::W16, 0x1234),
            config_write(0x86, Access::W8, 0x56),
            config_read(0x80, Access::W32),
            config_read(0x84, Access::W32),
            config_read(command, Access::W16),
            config_write(command, Access::W16, 0x2),
            config_read(command, Access::W16),
            config_write(command, Access::W16, 0x3),
            config_read(command, Access::W16),
            config_read(command, Access::W16),
            config_write(command, Access::W16, 0x7),
            config_read(command, Access::W16),
            config_read(command, Access::W16),
            config_write(command, Access::W16, 0x3),
            config_read(command, Access::W16),
            // The instance ended: the host turns INTx (and bus mastering) off.
            config_read(command, Access::W16),
            config_write(command, Access::W16, 0x403),
        ]
    );

    // The ring's accesses (the batch's modify reads then writes its byte), the small buffer
    // freed by `free` (its stale read reaches nothing) and the ring by dropping its handle.
    let ring = DMA_BASE;
    let small = DMA_BASE + 0x1000;
    assert_eq!(
        only(&events, |e| matches!(
            e,
            Event::AllocateDma { .. }
                | Event::FreeDma { .. }
                | Event::DmaRead { .. }
                | Event::DmaWrite { .. }
        )),
        vec![
            Event::AllocateDma {
                size: 4096,
                align: 4096,
                address: ring
            },
            dma_write(ring, 16, 5),
            dma_read(ring, 16, 5),
            dma_write(ring, 0, 4),
            dma_write(ring, 4, 4),
            dma_read(ring, 0, 8),
            dma_read(ring, 0, 1),
            dma_write(ring, 0, 1),
            dma_read(ring, 0, 1),
            dma_read(ring, 0, 4),
            Event::AllocateDma {
                size: 100,
                align: 64,
                address: small
            },
            Event::FreeDma { address: small },
            Event::FreeDma { address: ring },
        ]
    );
    assert!(platform.state().dma_live.is_empty());

    let sleeps = only(&events, |e| matches!(e, Event::Sleep(_)));
    assert_eq!(
        sleeps,
        [Event::Sleep(500), Event::Sleep(100), Event::Sleep(10_000)]
    );
    // Handles go back when the driver drops them, not when the store goes: the ring before
    // the interrupt is asked for, the registers before the closing log line.
    let log = Event::Log(
        LogLevel::Info,
        format!("{DRIVER}: conformance-c: every interface answered"),
    );
    assert!(
        position(&events, &Event::FreeDma { address: ring })
            < position(&events, &Event::RouteInterrupt)
    );
    assert!(position(&events, &Event::UnmapMmio { base: BAR0_BASE }) < position(&events, &log));
    assert_eq!(
        only(&events, |e| matches!(
            e,
            Event::MapMmio { .. } | Event::UnmapMmio { .. } | Event::RouteInterrupt
        )),
        vec![
            Event::MapMmio {
                base: BAR0_BASE,
                size: BAR0_SIZE
            },
            Event::RouteInterrupt,
            Event::UnmapMmio { base: BAR0_BASE },
        ]
    );
}

#[test]
fn c_driver_refuses_unknown_scenarios() {
    let (result, platform) = run(DRIVER, "conformance", Limits::default());
    assert_eq!(
        result.unwrap(),
        Err("unknown scenario \"conformance\"".to_string())
    );
    assert_eq!(platform.events(), Vec::<Event>::new());
}

/// An engine whose instances cannot grow linear memory past 4 MiB.
fn small_memory_engine() -> Engine {
    let mut config = Config::new();
    config
        .wasm_component_model(true)
        .memory_reservation(4 << 20)
        .memory_reservation_for_growth(0)
        .memory_may_move(false);
    Engine::new(&config).unwrap()
}

/// The scenario strings the host copies in and the answers the driver copies out are freed
/// (by the driver, and by its post-return function): 400 calls moving 128 KiB each run in a
/// memory that cannot grow past 4 MiB, and the device handle of every call is dropped.
#[test]
fn c_driver_frees_what_the_canonical_abi_hands_it() {
    let engine = small_memory_engine();
    let component = Component::from_file(&engine, drivers_dir().join(format!("{DRIVER}.wasm")))
        .expect("build the drivers first with `keel build-drivers`");
    let mut linker = Linker::new(&engine);
    wasi_dd::add_to_linker(&mut linker, |host: &mut DriverHost<FakePlatform>| host).unwrap();
    let platform = FakePlatform::new();
    let host = DriverHost::new(Arc::new(platform.clone()), FakePlatform::function());
    let mut store = Store::new(&engine, host);
    let driver = TestDriver::instantiate(&mut store, &component, &linker).unwrap();

    let scenario = "x".repeat(64 << 10);
    for call in 0..400 {
        let device = store.data_mut().device().unwrap();
        let answer = driver
            .call_run(&mut store, device, &scenario)
            .unwrap_or_else(|trap| panic!("call {call} trapped: {trap:#}"));
        assert_eq!(answer, Err(format!("unknown scenario \"{scenario}\"")));
        assert!(store.data_mut().table().is_empty(), "call {call}");
    }
    assert_eq!(platform.events(), Vec::<Event>::new());
}
