//! The test drivers (`drivers-wasm/`, built by `keel build-drivers`) against the fake device:
//! the conformance driver's report and every access it made, and each hostile scenario's
//! answers with proof that nothing out of bounds reached the platform.

mod common;

use common::*;
use wasi_dd::Limits;
use wasi_dd::platform::LogLevel;
use wasi_dd::types::Access;

fn mmio_events(events: &[Event]) -> Vec<Event> {
    events
        .iter()
        .filter(|e| matches!(e, Event::MmioRead { .. } | Event::MmioWrite { .. }))
        .cloned()
        .collect()
}

fn port_events(events: &[Event]) -> Vec<Event> {
    events
        .iter()
        .filter(|e| matches!(e, Event::PortRead { .. } | Event::PortWrite { .. }))
        .cloned()
        .collect()
}

fn config_writes(events: &[Event]) -> Vec<Event> {
    events
        .iter()
        .filter(|e| matches!(e, Event::ConfigWrite { .. }))
        .cloned()
        .collect()
}

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

fn command(value: u32) -> Event {
    Event::ConfigWrite {
        offset: 0x04,
        width: Access::W16,
        value,
    }
}

/// Runs a hostile scenario that must answer; returns its report and the platform.
fn hostile(scenario: &str, limits: Limits) -> (String, FakePlatform) {
    let (result, platform) = run("test-hostile", scenario, limits);
    let report = result
        .unwrap_or_else(|trap| panic!("{scenario} trapped: {trap:#}"))
        .unwrap_or_else(|failure| panic!("{scenario} failed: {failure}"));
    assert_eq!(platform.violations(), Vec::<String>::new(), "{scenario}");
    (report, platform)
}

#[test]
fn conformance_driver_uses_every_interface() {
    let (result, platform) = run("test-conformance", "conformance", Limits::default());
    let report = result.expect("no trap").expect("the scenario passes");
    let expected = [
        "device 0000:00:03.0 id 8086:100e sub 1af4:1100 class 02.00.00 rev 03 bars 0:memory32:4096 1:io:64 2:memory64:8192:prefetchable",
        "config 100e8086 100e 03 cap-ptr=50 scratch=deadbeef 00561234",
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
    // The poll reads until the self-clearing bit is gone.
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
    assert_eq!(mmio_events(&events), expected_mmio);

    let port = |offset: u64| (PORT_BASE + offset) as u16;
    assert_eq!(
        port_events(&events),
        vec![
            Event::PortWrite {
                port: port(0),
                width: Access::W8,
                value: 0x5a
            },
            Event::PortRead {
                port: port(0),
                width: Access::W8
            },
            Event::PortWrite {
                port: port(2),
                width: Access::W16,
                value: 0xbeef
            },
            Event::PortRead {
                port: port(2),
                width: Access::W16
            },
            Event::PortWrite {
                port: port(4),
                width: Access::W32,
                value: 0xcafe_f00d
            },
            Event::PortRead {
                port: port(4),
                width: Access::W32
            },
            Event::PortWrite {
                port: port(8),
                width: Access::W32,
                value: 0x1122_3344
            },
            Event::PortRead {
                port: port(8),
                width: Access::W16
            },
            Event::PortRead {
                port: port(8),
                width: Access::W32
            },
            Event::PortWrite {
                port: port(8),
                width: Access::W32,
                value: 0x1122_5544
            },
            Event::PortRead {
                port: port(8),
                width: Access::W32
            },
        ]
    );

    // The driver's own config writes, and the host's read-modify-writes of the command
    // register: memory decoding (map-bar), I/O decoding (io-bar), bus mastering on and off.
    assert_eq!(
        config_writes(&events),
        vec![
            Event::ConfigWrite {
                offset: 0x80,
                width: Access::W32,
                value: 0xdead_beef
            },
            Event::ConfigWrite {
                offset: 0x84,
                width: Access::W16,
                value: 0x1234
            },
            Event::ConfigWrite {
                offset: 0x86,
                width: Access::W8,
                value: 0x56
            },
            command(0x2),
            command(0x3),
            command(0x7),
            command(0x3),
            // The instance ended: INTx off (and bus mastering, already off) by the host.
            command(0x403),
        ]
    );

    let sleeps: Vec<u64> = events
        .iter()
        .filter_map(|e| match e {
            Event::Sleep(ns) => Some(*ns),
            _ => None,
        })
        .collect();
    assert_eq!(sleeps, vec![500, 100, 10_000]);
    assert!(events.contains(&Event::Log(
        LogLevel::Info,
        "test-conformance: conformance: every interface answered".into()
    )));
    let allocations: Vec<(u64, u64)> = events
        .iter()
        .filter_map(|e| match e {
            Event::AllocateDma { size, align, .. } => Some((*size, *align)),
            _ => None,
        })
        .collect();
    assert_eq!(allocations, vec![(4096, 4096), (100, 64)]);
    assert_eq!(
        events
            .iter()
            .filter(|e| **e == Event::RouteInterrupt)
            .count(),
        1
    );
    // The store is gone: every buffer and the mapping were given back.
    assert!(platform.state().dma_live.is_empty());
    assert!(events.contains(&Event::UnmapMmio { base: BAR0_BASE }));
}

#[test]
fn unknown_scenarios_are_refused() {
    let (result, _) = run("test-conformance", "no-such-scenario", Limits::default());
    assert_eq!(
        result.unwrap(),
        Err("unknown scenario \"no-such-scenario\"".to_string())
    );
}

#[test]
fn mmio_offsets_are_checked_and_batches_stop_at_the_first_failure() {
    let (report, platform) = hostile("mmio-range", Limits::default());
    assert_eq!(
        report,
        "read-end=out-of-range read-straddle=out-of-range read-max=out-of-range \
         read-wrap=out-of-range write-end=out-of-range write-wide-value=out-of-range \
         last-byte=ok batch=3:out-of-range before-failure=2 after-failure=0"
    );
    assert_eq!(
        mmio_events(&platform.events()),
        vec![
            r(4095, Access::W8),
            w(0x200, Access::W32, 1),
            w(0x204, Access::W32, 2),
            r(0x200, Access::W32),
            r(0x204, Access::W32),
            r(0x208, Access::W32),
        ]
    );
}

#[test]
fn misaligned_accesses_are_refused() {
    let (report, platform) = hostile("misaligned", Limits::default());
    assert_eq!(
        report,
        "w32-at-1=misaligned w16-at-1=misaligned w64-at-4=misaligned \
         write-w32-at-2=misaligned batch=1:misaligned"
    );
    assert_eq!(mmio_events(&platform.events()), vec![r(0x100, Access::W32)]);
}

#[test]
fn ports_are_bounded_to_the_io_bar() {
    let (report, platform) = hostile("ports", Limits::default());
    assert_eq!(
        report,
        "io-bar-of-memory-bar=no-such-resource map-bar-of-io-bar=no-such-resource \
         map-bar-absent=no-such-resource map-bar-255=no-such-resource \
         io-bar-absent=no-such-resource read-end=out-of-range read-straddle=out-of-range \
         read-max=out-of-range read-w64=unsupported write-w64=unsupported \
         write-wide-value=out-of-range misaligned=misaligned batch=1:out-of-range \
         batch-w64=0:unsupported batch-far=0:out-of-range"
    );
    assert_eq!(
        port_events(&platform.events()),
        vec![Event::PortWrite {
            port: PORT_BASE as u16,
            width: Access::W8,
            value: 1
        }]
    );
    assert!(
        !platform
            .events()
            .iter()
            .any(|e| matches!(e, Event::MapMmio { .. }))
    );
}

#[test]
fn config_space_header_and_interrupt_capabilities_are_the_hosts() {
    let (report, platform) = hostile("config", Limits::default());
    assert_eq!(
        report,
        "write-vendor=denied write-command=denied write-bar0=denied write-bar5=denied \
         write-interrupt-line=denied write-3f=denied write-msi=denied \
         write-msi-address=denied write-vendor-cap=ok write-end=out-of-range \
         write-wide-value=out-of-range write-w64=unsupported read-end=out-of-range \
         read-straddle=out-of-range read-misaligned=misaligned read-w64=unsupported \
         read-max=out-of-range"
    );
    assert_eq!(
        config_writes(&platform.events()),
        vec![Event::ConfigWrite {
            offset: 0x62,
            width: Access::W16,
            value: 0xabcd
        }]
    );
    let state = platform.state();
    assert_eq!(&state.config[0x10..0x14], &(BAR0_BASE as u32).to_le_bytes());
    assert_eq!(state.config[MSI_CAPABILITY], 0x05);
}

#[test]
fn bars_and_the_interrupt_are_handed_out_once() {
    let (report, platform) = hostile("double-map", Limits::default());
    assert_eq!(
        report,
        "map-again=in-use io-again=in-use interrupt-again=in-use map-after-drop=in-use \
         map-other-bar=ok"
    );
    let maps: Vec<Event> = platform
        .events()
        .into_iter()
        .filter(|e| matches!(e, Event::MapMmio { .. } | Event::RouteInterrupt))
        .collect();
    assert_eq!(
        maps,
        vec![
            Event::MapMmio {
                base: BAR0_BASE,
                size: BAR0_SIZE
            },
            Event::RouteInterrupt,
            Event::MapMmio {
                base: BAR2_BASE,
                size: BAR2_SIZE
            },
        ]
    );
}

#[test]
fn dma_sizes_alignments_and_totals_are_limited() {
    let limits = Limits {
        max_dma_total: 1 << 20,
        ..Limits::default()
    };
    let (report, platform) = hostile("dma-limits", limits);
    assert_eq!(
        report,
        "size-0=out-of-range size-over-16mib=out-of-range size-max=out-of-range \
         align-0=out-of-range align-3=out-of-range align-8192=unsupported \
         held-256kib=4 then=out-of-memory free-one=ok allocate-after-free=ok"
    );
    let sizes: Vec<u64> = platform
        .events()
        .iter()
        .filter_map(|e| match e {
            Event::AllocateDma { size, .. } => Some(*size),
            _ => None,
        })
        .collect();
    assert_eq!(sizes, vec![256 << 10; 5]);
    assert!(platform.state().dma_live.is_empty());
}

#[test]
fn dma_accesses_stay_inside_the_buffer() {
    let (report, platform) = hostile("dma-overrun", Limits::default());
    assert_eq!(
        report,
        "read-straddle=out-of-range read-empty-at-end=ok read-past-end=out-of-range \
         read-wrap=out-of-range read-huge=out-of-range write-straddle=out-of-range \
         write-wrap=out-of-range batch=1:out-of-range batch-misaligned=0:misaligned \
         first-op-kept=[7, 0, 0, 0]"
    );
    let accesses: Vec<Event> = platform
        .events()
        .into_iter()
        .filter(|e| matches!(e, Event::DmaRead { .. } | Event::DmaWrite { .. }))
        .collect();
    let address = DMA_BASE;
    assert_eq!(
        accesses,
        vec![
            Event::DmaRead {
                address,
                offset: 4096,
                len: 0
            },
            Event::DmaWrite {
                address,
                offset: 0,
                len: 4
            },
            Event::DmaRead {
                address,
                offset: 0,
                len: 4
            },
        ]
    );
}

#[test]
fn freed_dma_buffers_answer_stale_handle() {
    let (report, platform) = hostile("use-after-free", Limits::default());
    assert_eq!(
        report,
        "free=ok read=stale-handle write=stale-handle batch=0:stale-handle \
         device-address=stale-handle free-again=stale-handle size=128"
    );
    let events = platform.events();
    let free_at = events
        .iter()
        .position(|e| matches!(e, Event::FreeDma { .. }))
        .expect("the buffer was freed");
    assert!(
        !events[free_at..]
            .iter()
            .any(|e| matches!(e, Event::DmaRead { .. } | Event::DmaWrite { .. }))
    );
    assert_eq!(
        events
            .iter()
            .filter(|e| matches!(e, Event::FreeDma { .. }))
            .count(),
        1
    );
}

#[test]
fn polls_time_out_on_the_platform_clock() {
    let (report, platform) = hostile("poll-timeout", Limits::default());
    assert_eq!(report, "batch=0:timed-out write-after-timeout-ran=false");
    let status_reads = mmio_events(&platform.events())
        .iter()
        .filter(|e| **e == r(STATUS, Access::W32))
        .count() as u64;
    // The clock moves CLOCK_STEP_NS per look at it: one read per step until 10 us passed.
    assert_eq!(status_reads, 10_000 / CLOCK_STEP_NS);
}

/// A forged handle index, or the index of another resource type, traps that instance in the
/// canonical ABI before any host code runs; the host and later instances are unaffected.
#[test]
fn forged_handles_trap_only_their_instance() {
    let cases = [
        ("forge-handle", "unknown handle index 16777200"),
        ("forge-type", "handle index 2 used with the wrong type"),
    ];
    for (scenario, expected) in cases {
        let (result, platform) = run("test-hostile", scenario, Limits::default());
        let trap = result.expect_err("a forged handle must trap");
        let cause = trap.root_cause().to_string();
        assert!(cause.starts_with(expected), "{scenario}: {cause}");
        assert!(mmio_events(&platform.events()).is_empty(), "{scenario}");
        assert_eq!(platform.violations(), Vec::<String>::new());

        let (store, driver) = instance("test-conformance", &platform, Limits::default());
        let mut store = store;
        let device = store.data_mut().device().unwrap();
        let report = driver
            .call_run(&mut store, device, "conformance")
            .expect("a new instance runs")
            .expect("and passes");
        assert!(report.starts_with("device 0000:00:03.0"), "{report}");
    }
}

/// `batch-packed` reaches the device exactly as `batch` does: the same accesses, in order.
#[test]
fn packed_batches_make_the_same_accesses_as_typed_batches() {
    let accesses = |scenario: &str| {
        let (result, platform) = run("test-cost", scenario, Limits::default());
        let answer = result
            .unwrap_or_else(|trap| panic!("{scenario} trapped: {trap:#}"))
            .unwrap_or_else(|failure| panic!("{scenario} failed: {failure}"));
        assert_eq!(platform.violations(), Vec::<String>::new(), "{scenario}");
        (answer, mmio_events(&platform.events()))
    };
    for access in ["read", "write"] {
        let (typed_answer, typed) = accesses(&format!("batch-{access} 64 16"));
        let (packed_answer, packed) = accesses(&format!("packed-{access} 64 16"));
        assert_eq!(typed.len(), 64, "{access}: {typed:?}");
        assert_eq!(packed, typed, "{access}");
        assert_eq!(packed_answer, typed_answer, "{access}");
    }
}
