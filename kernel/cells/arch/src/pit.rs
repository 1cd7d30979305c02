//! The 8254 PIT, used once at boot as a known-frequency reference to calibrate the TSC and the
//! local APIC timer.

use x86_64::instructions::port::Port;

pub const PIT_HZ: u64 = 1_193_182;

/// Busy-waits for `micros` microseconds (at most ~54 ms) using PIT channel 2, calling `before`
/// when the countdown starts and returning what `after` returns when it ends.
pub fn measure<R>(micros: u64, before: impl FnOnce(), after: impl FnOnce() -> R) -> R {
    let count = (PIT_HZ * micros / 1_000_000).clamp(1, 0xFFFF) as u16;
    // SAFETY: channel 2 and port 0x61 belong to the PIT/speaker, used by nothing else.
    unsafe {
        let mut gate = Port::<u8>::new(0x61);
        let mut command = Port::<u8>::new(0x43);
        let mut channel2 = Port::<u8>::new(0x42);
        let g = gate.read();
        gate.write((g & !0x02) | 0x01);
        command.write(0b1011_0000); // channel 2, lobyte/hibyte, mode 0
        channel2.write(count as u8);
        channel2.write((count >> 8) as u8);
        let g = gate.read() & !0x01;
        gate.write(g);
        gate.write(g | 0x01);
        before();
        while gate.read() & 0x20 == 0 {
            core::hint::spin_loop();
        }
        after()
    }
}
