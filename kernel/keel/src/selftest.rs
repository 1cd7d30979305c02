//! `selftest`: checks of the kernel's core guarantees that a person (or the QEMU tests) can run
//! from the shell. Each prints the measured facts; the caller judges them.

use crate::HEAP;
use alloc::format;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec;
use alloc::vec::Vec;
use keel_arch::cpu::deliberate_fault;
use keel_console::println;
use keel_memory::MapFlags;
use keel_task::{Builder, Failure, Mutex};

pub fn run(args: &[String]) -> Result<(), String> {
    let words: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
    match words.as_slice() {
        ["tasks", n] => {
            let n: u64 = n.parse().map_err(|_| format!("invalid task count '{n}'"))?;
            if n == 0 || n > 10_000 {
                return Err(String::from("task count must be 1..=10000"));
            }
            tasks(n)
        }
        ["unwind"] => unwind(),
        ["fault", kind] => fault(kind),
        ["busy"] => busy(),
        _ => Err(String::from(
            "usage: selftest tasks <n> | unwind | fault <page|div|ud|gp|stack> | busy",
        )),
    }
}

/// Spawns `n` tasks that each compute a square, then joins them all.
fn tasks(n: u64) -> Result<(), String> {
    let mut handles = Vec::with_capacity(n as usize);
    for i in 0..n {
        let handle = Builder::new("square")
            .stack_size(16 * 1024)
            .spawn(move || i * i)
            .map_err(|e| format!("spawn {i} failed: {e}"))?;
        handles.push(handle);
    }
    let spawned = handles.len();
    let mut joined = 0u64;
    let mut sum = 0u64;
    for handle in handles {
        match handle.join() {
            Ok(v) => {
                joined += 1;
                sum += v;
            }
            Err(f) => println!("tasks: a task failed: {f}"),
        }
    }
    let expected: u64 = (0..n).map(|i| i * i).sum();
    println!("tasks: spawned={spawned} joined={joined} sum={sum} expected={expected}");
    Ok(())
}

/// One run of the unwinding scenario: a task takes a lock, maps pages, allocates heap memory,
/// and panics. Returns the panic message as the joiner saw it.
fn panic_holding_resources(lock: &Arc<Mutex<u32>>) -> Result<String, String> {
    let lock = lock.clone();
    let handle = Builder::new("unwind-test")
        .spawn(move || {
            let mut guard = lock.lock();
            *guard += 1;
            let pages = keel_memory::map_new(16, MapFlags::DATA).expect("map 16 pages");
            let heap = vec![0xA5u8; 256 * 1024];
            core::hint::black_box((&pages, &heap));
            panic!("deliberate panic while holding 16 mapped pages, 256 KiB of heap and a lock");
        })
        .map_err(|e| format!("spawn failed: {e}"))?;
    match handle.join() {
        Err(Failure::Panic(message)) => Ok(message),
        Err(other) => Err(format!("task ended otherwise: {other}")),
        Ok(()) => Err(String::from("task returned instead of panicking")),
    }
}

fn unwind() -> Result<(), String> {
    let lock = Arc::new(Mutex::new(0u32));
    // A first run grows the heap and page tables once; the measured run must then give back
    // exactly what it took.
    panic_holding_resources(&lock)?;
    let frames_before = keel_memory::frame_stats().free;
    let heap_before = HEAP.stats().used;
    let message = panic_holding_resources(&lock)?;
    println!("unwind: caught panic: {message}");
    drop(message);
    let frames_after = keel_memory::frame_stats().free;
    let heap_after = HEAP.stats().used;
    let lock_free = lock.try_lock().is_some();
    println!("unwind: frames before={frames_before} after={frames_after}");
    println!("unwind: heap before={heap_before} after={heap_after}");
    println!("unwind: lock free={}", if lock_free { "yes" } else { "no" });
    Ok(())
}

/// Recurses until the stack runs out.
#[inline(never)]
#[allow(unconditional_recursion)] // the point: it only ends by overflowing the stack
fn recurse(depth: u64) -> u64 {
    let frame = core::hint::black_box([depth; 16]);
    recurse(depth + 1) + frame[3]
}

fn overflow_stack() {
    core::hint::black_box(recurse(0));
}

fn fault(kind: &str) -> Result<(), String> {
    let trigger: fn() = match kind {
        "stack" => overflow_stack,
        "page" => deliberate_fault::page_fault,
        "div" => deliberate_fault::divide_error,
        "ud" => deliberate_fault::invalid_opcode,
        "gp" => deliberate_fault::general_protection,
        other => {
            return Err(format!(
                "unknown fault '{other}' (page, div, ud, gp, stack)"
            ));
        }
    };
    let name = format!("fault-{kind}");
    let handle = Builder::new(&name)
        .spawn(move || {
            let _owned = vec![1u8; 4096];
            trigger();
        })
        .map_err(|e| format!("spawn failed: {e}"))?;
    match handle.join() {
        Err(failure) => println!("fault: task ended: {failure}"),
        Ok(()) => println!("fault: task ended normally (no fault raised)"),
    }
    Ok(())
}

fn busy() -> Result<(), String> {
    let handle = Builder::new("busy-loop")
        .spawn(|| {
            loop {
                core::hint::spin_loop();
            }
        })
        .map_err(|e| format!("spawn failed: {e}"))?;
    println!("busy: spawned task {}", handle.id());
    Ok(())
}
