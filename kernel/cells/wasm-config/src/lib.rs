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
    // Explicit bounds and stack checks: traps never depend on page faults.
    config.signals_based_traps(false);
    config.memory_reservation(0);
    config.memory_guard_size(0);
    config.guard_before_linear_memory(false);
    config.memory_reservation_for_growth(1 << 20);
    config.memory_may_move(true);
    config.memory_init_cow(false);
    config.max_wasm_stack(MAX_WASM_STACK);
    config.epoch_interruption(true);
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
