//! Wasmtime settings that must be identical where modules are compiled (the host AOT tool) and
//! where they run (the kernel). Wasmtime refuses an artifact whose settings differ; keeping them
//! in one function makes a mismatch impossible rather than merely detected.
#![no_std]
#![deny(unsafe_code)]

use wasmtime::Config;

/// The target triple both sides compile and run for.
pub const TARGET: &str = "x86_64-unknown-none";

/// CPU features every module is compiled for; the kernel refuses to load modules if the CPU lacks
/// one. SSE4.1 matters most: without it Cranelift turns float rounding into libcalls whose ABI
/// does not match a soft-float kernel.
pub const REQUIRED_CPU_FEATURES: &[&str] = &[
    "has_sse3",
    "has_ssse3",
    "has_sse41",
    "has_sse42",
    "has_popcnt",
];

/// Largest Wasm stack a module may use (the task's kernel stack is bigger than this).
pub const MAX_WASM_STACK: usize = 256 * 1024;

/// Applies the shared settings.
pub fn configure(config: &mut Config) {
    // Signals-based traps: each linear memory is a 4 GiB reservation plus a guard region, so a
    // 32-bit Wasm address can never leave it and compiled code needs no bounds checks; an access
    // beyond the accessible part faults and Keel's exception handler turns the fault into a
    // Wasm trap (see keel-wasm-platform).
    config.signals_based_traps(true);
    config.memory_reservation(4 << 30);
    config.memory_guard_size(32 << 20);
    config.guard_before_linear_memory(false);
    config.memory_reservation_for_growth(0);
    config.memory_may_move(false);
    config.memory_init_cow(false);
    config.max_wasm_stack(MAX_WASM_STACK);
    // No epoch interruption: its checks at every loop header (and the spills their slow path
    // causes) cost more than half the speed of tight loops. A killed task running Wasm is
    // stopped from the timer tick instead (keel_wasm_platform::kill).
    config.epoch_interruption(false);
    // Keel registers no native unwind tables for Wasm code (its unwinder never walks Wasm
    // frames), and backtraces name functions without wasm offsets: both only enlarge the image.
    config.native_unwind_info(false);
    config.generate_address_map(false);
    config.wasm_backtrace_max_frames(core::num::NonZeroUsize::new(64));
    // The kernel is built soft-float; modules are compiled with SSE4.1+ so no float libcalls
    // cross the ABI boundary (see REQUIRED_CPU_FEATURES).
    #[allow(unsafe_code)]
    // SAFETY: `REQUIRED_CPU_FEATURES` are enabled for every module (the AOT tool sets them and
    // the kernel refuses a CPU without them), which is the condition this setting requires.
    unsafe {
        config.x86_float_abi_ok(true);
    }
}
