//! The Keel kernel image: the boot sequence that brings the cells up in order, and the shell
//! commands that belong to the whole system (memory, power, self-tests, benchmarks).
#![no_std]
#![no_main]
#![deny(unsafe_code)]
#![feature(lang_items)]
#![allow(internal_features)]

extern crate alloc;

mod bench;
mod boot;
mod commands;
mod drivers;
mod files;
mod net;
mod programs;
mod selftest;
mod storage;
mod tty;

use keel_heap::KernelHeap;
// Wasmtime's platform symbols live there; nothing names them from Rust.
use keel_wasm_platform as _;

#[global_allocator]
static HEAP: KernelHeap = KernelHeap::new();

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    keel_unwind::on_panic(info)
}

/// Named by the compiler in every unwind table entry. Keel's unwinder (`keel-unwind`) reads
/// the language-specific data itself and never calls a personality routine.
#[lang = "eh_personality"]
extern "C" fn eh_personality() {}

/// Called by the assembly entry in `keel-arch` with the multiboot2 magic and information.
#[allow(unsafe_code)] // an exported symbol: the assembly entry calls it by name
#[unsafe(no_mangle)]
extern "C" fn keel_boot_entry(magic: u32, info_address: u32) -> ! {
    boot::start(magic, info_address)
}
