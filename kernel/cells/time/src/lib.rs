//! Monotonic time since boot, from the TSC. The TSC's rate is measured once against the PIT.
#![no_std]
#![forbid(unsafe_code)]

use core::sync::atomic::{AtomicU64, Ordering};
use core::time::Duration;

static TSC_AT_BOOT: AtomicU64 = AtomicU64::new(0);
static TSC_HZ: AtomicU64 = AtomicU64::new(0);

/// Measures the TSC rate over 10 ms of PIT time and starts the clock. Returns the rate (Hz).
pub fn calibrate() -> u64 {
    let mut start = 0;
    let end = keel_arch::pit::measure(
        10_000,
        || start = keel_arch::cpu::read_tsc(),
        keel_arch::cpu::read_tsc,
    );
    let hz = (end - start) * 100;
    TSC_HZ.store(hz.max(1), Ordering::Relaxed);
    if TSC_AT_BOOT.load(Ordering::Relaxed) == 0 {
        TSC_AT_BOOT.store(start, Ordering::Relaxed);
    }
    hz
}

/// Marks "boot" as now if calibration has not happened yet.
pub fn mark_boot() {
    TSC_AT_BOOT.store(keel_arch::cpu::read_tsc(), Ordering::Relaxed);
}

pub fn tsc_hz() -> u64 {
    TSC_HZ.load(Ordering::Relaxed)
}

/// Nanoseconds since boot (0 before calibration).
pub fn now_ns() -> u64 {
    let hz = TSC_HZ.load(Ordering::Relaxed);
    if hz == 0 {
        return 0;
    }
    let ticks = keel_arch::cpu::read_tsc().saturating_sub(TSC_AT_BOOT.load(Ordering::Relaxed));
    ((ticks as u128 * 1_000_000_000) / hz as u128) as u64
}

pub fn now() -> Duration {
    Duration::from_nanos(now_ns())
}

/// Converts a TSC difference to nanoseconds (for benchmarks).
pub fn tsc_to_ns(ticks: u64) -> f64 {
    let hz = TSC_HZ.load(Ordering::Relaxed).max(1);
    ticks as f64 * 1e9 / hz as f64
}
