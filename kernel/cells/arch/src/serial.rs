//! COM1, the console. Output is polled; input raises IRQ 4.

use keel_sync::IrqSafeMutex;
use uart_16550::SerialPort;

pub const COM1_IRQ: u8 = 4;

static COM1: IrqSafeMutex<Option<SerialPort>> = IrqSafeMutex::new(None);

pub fn init() {
    // SAFETY: 0x3F8 is COM1 on every PC-compatible machine QEMU emulates.
    let mut port = unsafe { SerialPort::new(0x3F8) };
    port.init();
    *COM1.lock() = Some(port);
}

pub fn write_bytes(bytes: &[u8]) {
    if let Some(port) = COM1.lock().as_mut() {
        for &b in bytes {
            port.send_raw(b);
        }
    }
}

/// Takes one received byte, if any.
pub fn try_read_byte() -> Option<u8> {
    COM1.lock().as_mut().and_then(|p| p.try_receive().ok())
}

/// Writes without taking the console lock: for fault and panic reports, when the lock may be
/// held by the code that failed.
pub fn emergency_write(bytes: &[u8]) {
    // SAFETY: a second handle to COM1; concurrent output may interleave, which is acceptable in
    // an emergency report.
    let mut port = unsafe { SerialPort::new(0x3F8) };
    for &b in bytes {
        port.send_raw(b);
    }
}

pub struct EmergencyWriter;

impl core::fmt::Write for EmergencyWriter {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        emergency_write(s.as_bytes());
        Ok(())
    }
}
