//! `bench`: in-kernel microbenchmarks in the style of Theseus's LMBench set. Each reports the
//! median of per-iteration TSC samples. Benchmarks, not tests: nothing here passes or fails.

use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, Ordering};
use keel_arch::cpu::read_tsc;
use keel_console::println;
use keel_memory::MapFlags;
use keel_task::{Builder, channel, yield_now};

const ITERATIONS: usize = 2000;

fn report(name: &str, mut samples: Vec<u64>) {
    samples.sort_unstable();
    let median = samples.get(samples.len() / 2).copied().unwrap_or(0);
    let ns = keel_time::tsc_to_ns(median);
    println!(
        "BENCH {{\"name\":\"{name}\",\"median_ns\":{ns:.1},\"iterations\":{}}}",
        samples.len()
    );
}

pub fn run(args: &[String]) -> Result<(), String> {
    if !args.is_empty() {
        return Err(String::from("takes no arguments"));
    }
    context_switch()?;
    spawn_join()?;
    channel_round_trip()?;
    map_unmap_page()?;
    heap_alloc_free();
    wasm_programs();
    wasi_dd_mmio();
    println!("bench: done");
    Ok(())
}

/// Two tasks yield to each other; one sample is a round trip, i.e. two switches.
fn context_switch() -> Result<(), String> {
    let stop = Arc::new(AtomicBool::new(false));
    let partner_stop = stop.clone();
    let partner = Builder::new("bench-yield")
        .spawn(move || {
            while !partner_stop.load(Ordering::Relaxed) {
                yield_now();
            }
        })
        .map_err(|e| alloc::format!("{e}"))?;
    yield_now();
    let mut samples = Vec::with_capacity(ITERATIONS);
    for _ in 0..ITERATIONS {
        let start = read_tsc();
        yield_now();
        samples.push((read_tsc() - start) / 2);
    }
    stop.store(true, Ordering::Relaxed);
    let _ = partner.join();
    report("context_switch", samples);
    Ok(())
}

fn spawn_join() -> Result<(), String> {
    let mut samples = Vec::with_capacity(ITERATIONS);
    for i in 0..ITERATIONS as u64 {
        let start = read_tsc();
        let handle = Builder::new("bench-spawn")
            .stack_size(16 * 1024)
            .spawn(move || i)
            .map_err(|e| alloc::format!("{e}"))?;
        let _ = handle.join();
        samples.push(read_tsc() - start);
    }
    report("spawn_join", samples);
    Ok(())
}

fn channel_round_trip() -> Result<(), String> {
    let (to_echo, echo_in) = channel::<u64>(1);
    let (echo_out, from_echo) = channel::<u64>(1);
    let echo = Builder::new("bench-echo")
        .spawn(move || {
            while let Ok(v) = echo_in.recv() {
                if echo_out.send(v).is_err() {
                    break;
                }
            }
        })
        .map_err(|e| alloc::format!("{e}"))?;
    let mut samples = Vec::with_capacity(ITERATIONS);
    for i in 0..ITERATIONS as u64 {
        let start = read_tsc();
        to_echo
            .send(i)
            .map_err(|_| String::from("echo task gone"))?;
        from_echo
            .recv()
            .map_err(|_| String::from("echo task gone"))?;
        samples.push(read_tsc() - start);
    }
    drop(to_echo);
    let _ = echo.join();
    report("channel_round_trip", samples);
    Ok(())
}

fn map_unmap_page() -> Result<(), String> {
    let mut samples = Vec::with_capacity(ITERATIONS);
    for _ in 0..ITERATIONS {
        let start = read_tsc();
        let mapping = keel_memory::map_new(1, MapFlags::DATA).map_err(|e| alloc::format!("{e}"))?;
        drop(core::hint::black_box(mapping));
        samples.push(read_tsc() - start);
    }
    report("map_unmap_page", samples);
    Ok(())
}

fn heap_alloc_free() {
    let mut samples = Vec::with_capacity(ITERATIONS);
    for _ in 0..ITERATIONS {
        let start = read_tsc();
        let block = core::hint::black_box(alloc::vec![0u8; 64]);
        drop(block);
        samples.push(read_tsc() - start);
    }
    report("heap_alloc_free", samples);
}

/// Wall time of one foreground run of a program, in TSC ticks.
fn time_program(name: &str, args: &[&str]) -> Option<u64> {
    let args: Vec<String> = args.iter().map(|a| String::from(*a)).collect();
    let start = read_tsc();
    crate::programs::run_program(name, &args).ok()?;
    Some(read_tsc() - start)
}

/// WebAssembly figures, when the image carries the programs: `hello` cold (loading the
/// precompiled module included) and warm, the cost of one WASI call, and two CPU-bound programs.
fn wasm_programs() {
    if !crate::programs::has("hello") {
        return;
    }
    if let Some(cold) = time_program("hello", &[]) {
        report("wasm_run_hello_cold", alloc::vec![cold]);
    }
    let warm: Vec<u64> = (0..20).filter_map(|_| time_program("hello", &[])).collect();
    report("wasm_run_hello_warm", warm);
    const CALLS: u64 = 200_000;
    if let (Some(empty), Some(full)) = (
        time_program("hostcall", &["0"]),
        time_program("hostcall", &["200000"]),
    ) {
        report(
            "wasi_null_call",
            alloc::vec![full.saturating_sub(empty) / CALLS],
        );
    }
    if let Some(t) = time_program("shabench", &["64"]) {
        report("wasm_sha256_64mib", alloc::vec![t]);
    }
    if let Some(t) = time_program("sortbench", &["10000000"]) {
        report("wasm_sort_10m_ints", alloc::vec![t]);
    }
}

/// QEMU's `edu` device, whose BAR 0 the MMIO benchmark reads.
const EDU: (u16, u16) = (0x1234, 0x11e8);
/// A register of the edu device that reads without side effects (undecoded: all ones).
const EDU_SCRATCH: usize = 0x100;

/// One 32-bit MMIO read of the edu device: native (a volatile load through Keel's own mapping)
/// against the `test-cost` driver component doing the same through WASI-dd, one call per read
/// and in batches of 32 (`batch` and `batch-packed`) and 256 (`batch-packed`). Each figure is the median over rounds of
/// a per-read cost; a WASI-dd round is the difference of a long and a short run divided by the
/// extra reads, so instantiating the driver does not count.
fn wasi_dd_mmio() {
    let Some(function) = crate::drivers::function_with_id(EDU.0, EDU.1) else {
        return;
    };
    let Some(bar) = function.bars.iter().find(|b| b.index == 0) else {
        return;
    };
    const READS: u64 = 8192;
    const ROUNDS: usize = 7;
    {
        let Ok(mapping) = keel_memory::map_device(keel_memory::PhysAddr::new(bar.base), bar.size)
        else {
            return;
        };
        let rounds = (0..ROUNDS)
            .map(|_| {
                let start = read_tsc();
                for _ in 0..READS {
                    let _ = core::hint::black_box(mapping.read_volatile::<u32>(EDU_SCRATCH));
                }
                (read_tsc() - start) / READS
            })
            .collect();
        report("mmio_read_native", rounds);
        // The mapping (and its claim on the BAR) ends here, before the driver maps it.
    }
    let timed = |scenario: &str| -> Option<u64> {
        let start = read_tsc();
        keel_dd_host::manager::run_manual("test-cost", &function, scenario).ok()?;
        Some(read_tsc() - start)
    };
    let per_read = |short: &str, long: &str| -> Vec<u64> {
        (0..ROUNDS)
            .filter_map(|_| {
                let (short, long) = (timed(short)?, timed(long)?);
                Some(long.saturating_sub(short) / READS)
            })
            .collect()
    };
    let long = |kind: &str, batch: &str| alloc::format!("{kind} {} {batch}", 64 + READS);
    for (name, kind, batch) in [
        ("mmio_read_wasi_dd_single", "read", ""),
        ("mmio_read_wasi_dd_batch32", "batch-read", "32"),
        ("mmio_read_wasi_dd_packed32", "packed-read", "32"),
        ("mmio_read_wasi_dd_packed256", "packed-read", "256"),
    ] {
        let short = alloc::format!("{kind} 64 {batch}");
        let rounds = per_read(short.trim_end(), long(kind, batch).trim_end());
        if !rounds.is_empty() {
            report(name, rounds);
        }
    }
}
