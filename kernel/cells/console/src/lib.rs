//! The console on COM1: `print!`/`println!` for plain output, `log!` for boot and kernel
//! messages stamped with the time since boot, and a buffer of received bytes filled by the
//! serial interrupt.
#![no_std]
#![forbid(unsafe_code)]

use core::fmt::{self, Write};
use core::sync::atomic::{AtomicUsize, Ordering};
use keel_sync::IrqSafeMutex;
use spin::Once;

/// A lock so that lines from different tasks do not interleave.
static OUTPUT: IrqSafeMutex<()> = IrqSafeMutex::new(());
static CLOCK: Once<fn() -> u64> = Once::new();

struct Serial;

/// Writes `bytes` to the serial port with LF turned into CRLF, as the terminal wants.
fn write_crlf(bytes: &[u8]) {
    let mut rest = bytes;
    while let Some(pos) = rest.iter().position(|&b| b == b'\n') {
        keel_arch::serial::write_bytes(&rest[..pos]);
        keel_arch::serial::write_bytes(b"\r\n");
        rest = &rest[pos + 1..];
    }
    keel_arch::serial::write_bytes(rest);
}

impl Write for Serial {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        write_crlf(s.as_bytes());
        Ok(())
    }
}

/// Program output (any bytes, not necessarily UTF-8) with newline translation, written as one
/// piece so that it does not interleave with other output.
pub fn write_text(bytes: &[u8]) {
    let _guard = OUTPUT.lock();
    write_crlf(bytes);
}

/// Gives the log its clock (nanoseconds since boot).
pub fn set_clock(clock: fn() -> u64) {
    CLOCK.call_once(|| clock);
}

#[doc(hidden)]
pub fn print_fmt(args: fmt::Arguments) {
    let _guard = OUTPUT.lock();
    let _ = Serial.write_fmt(args);
}

#[doc(hidden)]
pub fn log_fmt(args: fmt::Arguments) {
    let ns = CLOCK.get().map_or(0, |clock| clock());
    let _guard = OUTPUT.lock();
    let _ = write!(
        Serial,
        "[{:5}.{:06}] ",
        ns / 1_000_000_000,
        (ns / 1_000) % 1_000_000
    );
    let _ = Serial.write_fmt(args);
    let _ = Serial.write_str("\n");
}

/// Raw bytes to the terminal (escape sequences, echo), no newline translation.
pub fn write_raw(bytes: &[u8]) {
    let _guard = OUTPUT.lock();
    keel_arch::serial::write_bytes(bytes);
}

/// A `fmt::Write` that goes to the console with newline translation.
pub struct Console;

impl Write for Console {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let _guard = OUTPUT.lock();
        Serial.write_str(s)
    }
}

#[macro_export]
macro_rules! print {
    ($($arg:tt)*) => { $crate::print_fmt(format_args!($($arg)*)) };
}

#[macro_export]
macro_rules! println {
    () => { $crate::print!("\n") };
    ($($arg:tt)*) => { $crate::print_fmt(format_args!("{}\n", format_args!($($arg)*))) };
}

#[macro_export]
macro_rules! log {
    ($($arg:tt)*) => { $crate::log_fmt(format_args!($($arg)*)) };
}

const INPUT_CAPACITY: usize = 1024;

/// Bytes received on the serial line, waiting to be read. Overflow drops new bytes.
struct InputRing {
    bytes: [u8; INPUT_CAPACITY],
    head: usize,
    len: usize,
}

static INPUT: IrqSafeMutex<InputRing> = IrqSafeMutex::new(InputRing {
    bytes: [0; INPUT_CAPACITY],
    head: 0,
    len: 0,
});
static DROPPED_INPUT: AtomicUsize = AtomicUsize::new(0);

/// Called with Ctrl-C (0x03) as it arrives; returns true if it took care of it (then the byte is
/// not buffered), e.g. by interrupting the program in the foreground.
pub type InterruptHook = fn() -> bool;
static INTERRUPT_HOOK: Once<InterruptHook> = Once::new();

pub fn set_interrupt_hook(hook: InterruptHook) {
    INTERRUPT_HOOK.call_once(|| hook);
}

/// Moves received bytes from the UART into the input buffer (called from the serial IRQ, and
/// by readers in case an interrupt was missed). Returns whether anything arrived.
pub fn drain_uart() -> bool {
    let mut any = false;
    while let Some(byte) = keel_arch::serial::try_read_byte() {
        any = true;
        if byte == 0x03 && INTERRUPT_HOOK.get().is_some_and(|hook| hook()) {
            continue;
        }
        let mut ring = INPUT.lock();
        if ring.len == INPUT_CAPACITY {
            DROPPED_INPUT.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        let tail = (ring.head + ring.len) % INPUT_CAPACITY;
        ring.bytes[tail] = byte;
        ring.len += 1;
    }
    any
}

/// Takes the next received byte, if any.
pub fn try_read_byte() -> Option<u8> {
    let mut ring = INPUT.lock();
    if ring.len == 0 {
        return None;
    }
    let byte = ring.bytes[ring.head];
    ring.head = (ring.head + 1) % INPUT_CAPACITY;
    ring.len -= 1;
    Some(byte)
}

/// Whether received bytes are waiting to be read.
pub fn has_input() -> bool {
    INPUT.lock().len > 0
}
