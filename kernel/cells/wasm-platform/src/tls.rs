//! `wasmtime_tls_get`/`wasmtime_tls_set`: Wasmtime's thread-local pointers, per Keel task.
//!
//! Slot 0 (always used: the head of the current task's chain of Wasm activations) is the
//! task's word in `keel_task`. Slot 1 is used only with Wasmtime's `component-model-async`;
//! `keel_task` has one word, so slot 1 lives in a side table keyed by task id (an entry exists
//! only while the value is non-null). Other slots are never passed: reads give null, writes are
//! ignored. Every value starts as null.

use alloc::collections::BTreeMap;
use core::ptr;
use keel_sync::IrqSafeMutex;
use keel_task::TaskId;

static SLOT1: IrqSafeMutex<BTreeMap<TaskId, usize>> = IrqSafeMutex::new(BTreeMap::new());

/// The current task's value of `slot`.
#[unsafe(no_mangle)]
pub extern "C" fn wasmtime_tls_get(slot: usize) -> *mut u8 {
    let value = match slot {
        0 => keel_task::tls_get() as usize,
        1 => {
            let id = keel_task::current_id();
            SLOT1.lock().get(&id).copied().unwrap_or(0)
        }
        _ => 0,
    };
    ptr::with_exposed_provenance_mut(value)
}

/// Sets the current task's value of `slot`.
#[unsafe(no_mangle)]
pub extern "C" fn wasmtime_tls_set(slot: usize, ptr: *mut u8) {
    let value = ptr.expose_provenance();
    match slot {
        0 => keel_task::tls_set(value as u64),
        1 => {
            let id = keel_task::current_id();
            let mut table = SLOT1.lock();
            if value == 0 {
                table.remove(&id);
            } else {
                table.insert(id, value);
            }
        }
        _ => {}
    }
}
