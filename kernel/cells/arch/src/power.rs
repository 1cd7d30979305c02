//! Leaving the machine: ACPI soft-off, reset, and QEMU's debug-exit device for tests.

use x86_64::instructions::port::Port;

/// Writes SLP_TYPa | SLP_EN to the ACPI PM1a control block.
pub fn acpi_soft_off(pm1a_control_port: u16, slp_typ: u16) {
    // SAFETY: the port comes from the FADT; writing SLP_EN there is the ACPI way to power off.
    unsafe { Port::<u16>::new(pm1a_control_port).write((slp_typ << 10) | (1 << 13)) };
}

/// QEMU's `isa-debug-exit` at 0xf4: QEMU exits with status `(code << 1) | 1`.
pub fn qemu_debug_exit(code: u8) {
    // SAFETY: an absent device ignores the write.
    unsafe { Port::<u32>::new(0xF4).write(code as u32) };
}

/// Resets through the keyboard controller.
pub fn reset() {
    // SAFETY: pulses the CPU reset line; nothing after this runs.
    unsafe { Port::<u8>::new(0x64).write(0xFE) };
}
