//! `wasmtime_sync_*`: the lock words behind Wasmtime's `no_std` `Mutex` and `RwLock`, used when
//! Wasmtime is built with `custom-sync-primitives` (otherwise unused, and Wasmtime panics as
//! soon as two tasks contend for one of its locks, e.g. its global code registry).
//!
//! Each lock is the `usize` Wasmtime hands over, used in place as an atomic: zero means
//! unlocked, so a never-used lock needs no initialization and freeing has nothing to do (and
//! Wasmtime may move an unlocked lock). Waiters spin briefly, then yield to other tasks, so a
//! preempted holder gets to run. Wasm tasks are killed cooperatively, so a holder is never
//! unwound while it holds one.

use core::hint::spin_loop;
use core::sync::atomic::{AtomicUsize, Ordering};

/// `RwLock` word: held for writing.
const WRITER: usize = 1 << (usize::BITS - 1);
/// `RwLock` word: a writer is waiting, new readers hold back (no writer starvation).
const WRITER_WAITING: usize = 1 << (usize::BITS - 2);
/// Mutex word: held.
const LOCKED: usize = 1;

/// # Safety
/// `lock` must be the aligned, live lock word that Wasmtime passes, only ever accessed through
/// these functions while the lock exists.
unsafe fn word<'a>(lock: *mut usize) -> &'a AtomicUsize {
    // SAFETY: per this function's contract, `lock` is valid and aligned for the lifetime of the
    // lock and every access to it is atomic (through this module).
    unsafe { AtomicUsize::from_ptr(lock) }
}

/// Spins a few times, then yields the processor on every further round.
struct Backoff(u32);

impl Backoff {
    const SPINS: u32 = 64;

    fn wait(&mut self) {
        if self.0 < Self::SPINS {
            self.0 += 1;
            spin_loop();
        } else {
            keel_task::yield_now();
        }
    }
}

/// Frees a mutex: nothing to do (the lock lives in the word itself).
///
/// # Safety
/// `lock` is a Wasmtime lock word (see the module documentation).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn wasmtime_sync_lock_free(_lock: *mut usize) {}

/// Acquires a mutex, blocking (spinning, then yielding) until it is free.
///
/// # Safety
/// `lock` is a live Wasmtime lock word.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn wasmtime_sync_lock_acquire(lock: *mut usize) {
    // SAFETY: the caller passes a live lock word.
    let word = unsafe { word(lock) };
    let mut backoff = Backoff(0);
    while word
        .compare_exchange_weak(0, LOCKED, Ordering::Acquire, Ordering::Relaxed)
        .is_err()
    {
        backoff.wait();
    }
}

/// Releases a mutex acquired with `wasmtime_sync_lock_acquire`.
///
/// # Safety
/// `lock` is a live Wasmtime lock word held by the caller.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn wasmtime_sync_lock_release(lock: *mut usize) {
    // SAFETY: the caller passes a live lock word.
    unsafe { word(lock) }.store(0, Ordering::Release);
}

/// Acquires a read lock: waits while a writer holds or waits for the lock.
///
/// # Safety
/// `lock` is a live Wasmtime lock word.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn wasmtime_sync_rwlock_read(lock: *mut usize) {
    // SAFETY: the caller passes a live lock word.
    let word = unsafe { word(lock) };
    let mut backoff = Backoff(0);
    loop {
        let state = word.load(Ordering::Relaxed);
        if state & (WRITER | WRITER_WAITING) == 0 {
            if word
                .compare_exchange_weak(state, state + 1, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
            {
                return;
            }
            continue;
        }
        backoff.wait();
    }
}

/// Releases a read lock.
///
/// # Safety
/// `lock` is a live Wasmtime lock word on which the caller holds a read lock.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn wasmtime_sync_rwlock_read_release(lock: *mut usize) {
    // SAFETY: the caller passes a live lock word.
    unsafe { word(lock) }.fetch_sub(1, Ordering::Release);
}

/// Acquires the write lock: announces itself (stopping new readers), then waits until no
/// reader or writer holds the lock.
///
/// # Safety
/// `lock` is a live Wasmtime lock word.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn wasmtime_sync_rwlock_write(lock: *mut usize) {
    // SAFETY: the caller passes a live lock word.
    let word = unsafe { word(lock) };
    let mut backoff = Backoff(0);
    loop {
        let state = word.load(Ordering::Relaxed);
        if state & !WRITER_WAITING == 0 {
            // Taking the lock also clears the waiting bit; other waiting writers set it again.
            if word
                .compare_exchange_weak(state, WRITER, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
            {
                return;
            }
            continue;
        }
        if state & WRITER_WAITING == 0 {
            word.fetch_or(WRITER_WAITING, Ordering::Relaxed);
        }
        backoff.wait();
    }
}

/// Releases the write lock.
///
/// # Safety
/// `lock` is a live Wasmtime lock word whose write lock the caller holds.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn wasmtime_sync_rwlock_write_release(lock: *mut usize) {
    // SAFETY: the caller passes a live lock word.
    unsafe { word(lock) }.store(0, Ordering::Release);
}

/// Frees an `RwLock`: nothing to do.
///
/// # Safety
/// `lock` is a Wasmtime lock word.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn wasmtime_sync_rwlock_free(_lock: *mut usize) {}
