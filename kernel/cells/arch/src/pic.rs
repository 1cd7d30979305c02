//! The legacy 8259 PICs: remapped away from the exception vectors and fully masked, since Keel
//! routes device interrupts through the IOAPIC.

use x86_64::instructions::port::Port;

pub fn disable() {
    // SAFETY: standard 8259 initialisation sequence on the fixed ISA ports; it only affects the
    // PICs, which nothing else in Keel uses.
    unsafe {
        let mut cmd1 = Port::<u8>::new(0x20);
        let mut data1 = Port::<u8>::new(0x21);
        let mut cmd2 = Port::<u8>::new(0xA0);
        let mut data2 = Port::<u8>::new(0xA1);
        cmd1.write(0x11);
        cmd2.write(0x11);
        data1.write(0xF0); // vectors 0xF0..0xF7
        data2.write(0xF8); // vectors 0xF8..0xFF
        data1.write(4);
        data2.write(2);
        data1.write(1);
        data2.write(1);
        data1.write(0xFF);
        data2.write(0xFF);
    }
}
