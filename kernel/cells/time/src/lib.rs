//! Monotonic time since boot, from the TSC. The TSC's rate is measured once against the PIT.
#![no_std]
#![forbid(unsafe_code)]

use core::sync::atomic::{AtomicU64, Ordering};
use core::time::Duration;

static TSC_AT_BOOT: AtomicU64 = AtomicU64::new(0);
static TSC_HZ: AtomicU64 = AtomicU64::new(0);
/// Wall-clock time (ns since the Unix epoch) at boot, from the RTC.
static WALL_AT_BOOT_NS: AtomicU64 = AtomicU64::new(0);

/// Reads the RTC once and anchors the wall clock to the monotonic clock.
pub fn init_wall_clock() {
    let seconds = keel_arch::rtc::unix_seconds();
    WALL_AT_BOOT_NS.store(
        (seconds * 1_000_000_000).saturating_sub(now_ns()),
        Ordering::Relaxed,
    );
}

/// Nanoseconds since the Unix epoch (RTC at boot plus the monotonic clock since).
pub fn wall_clock_ns() -> u64 {
    WALL_AT_BOOT_NS.load(Ordering::Relaxed) + now_ns()
}

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
