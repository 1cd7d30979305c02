//! What `lspci` prints for a function.
//!
//! ```text
//! 00:02.0 Ethernet controller [0200]: Intel Corporation 82540EM Gigabit Ethernet Controller [8086:100e] (rev 03)
//! ```
//!
//! and with `-v` the details below it, one per line, indented by a tab.

use crate::enumerate::{BarKind, Function};
use crate::names;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::Write;

/// The one-line summary. `verbose` adds the programming interface, as `lspci -v` does.
pub fn summary(function: &Function, verbose: bool) -> String {
    let class = names::class(function.class, function.subclass).unwrap_or("Class");
    let vendor = names::vendor(function.vendor_id);
    let device = names::device(function.vendor_id, function.device_id).unwrap_or("Device");
    let mut line = format!(
        "{} {} [{:04x}]: ",
        function.address,
        class,
        function.class_code()
    );
    if let Some(vendor) = vendor {
        line.push_str(vendor);
        line.push(' ');
    }
    let _ = write!(
        line,
        "{} [{:04x}:{:04x}]",
        device, function.vendor_id, function.device_id
    );
    if function.revision != 0 {
        let _ = write!(line, " (rev {:02x})", function.revision);
    }
    if verbose && function.prog_if != 0 {
        let _ = write!(line, " (prog-if {:02x}", function.prog_if);
        if let Some(name) = names::prog_if(function.class, function.subclass, function.prog_if) {
            let _ = write!(line, " [{name}]");
        }
        line.push(')');
    }
    line
}

/// The detail lines of `lspci -v` (without indentation).
pub fn details(function: &Function) -> Vec<String> {
    let mut lines = Vec::new();
    if let Some(subsystem) = function.subsystem {
        let name = names::subsystem(function.vendor_id, function.device_id, subsystem);
        let vendor = names::vendor(subsystem.0);
        let mut line = String::from("Subsystem: ");
        match (vendor, name) {
            (Some(vendor), Some(name)) => {
                let _ = write!(line, "{vendor} {name}");
            }
            (Some(vendor), None) => {
                let _ = write!(line, "{vendor} Device");
            }
            (None, Some(name)) => line.push_str(name),
            (None, None) => line.push_str("Device"),
        }
        let _ = write!(line, " [{:04x}:{:04x}]", subsystem.0, subsystem.1);
        lines.push(line);
    }
    if let Some(pin) = interrupt_pin(function.interrupt_pin) {
        let line = match function.interrupt_line {
            0xFF => format!("Interrupt: pin {pin}, no line assigned"),
            irq => format!("Interrupt: pin {pin}, line {irq}"),
        };
        lines.push(line);
    }
    if let Some(buses) = function.bridge {
        lines.push(format!(
            "Bus: primary={:02x}, secondary={:02x}, subordinate={:02x}",
            buses.primary, buses.secondary, buses.subordinate
        ));
    }
    for bar in &function.bars {
        let kind = match bar.kind {
            BarKind::Memory32 => "memory32",
            BarKind::Memory64 => "memory64",
            BarKind::Io => "io",
        };
        let prefetchable = if bar.prefetchable {
            ", prefetchable"
        } else {
            ""
        };
        lines.push(format!(
            "BAR{}: {} at {:#x} [size {}{}]",
            bar.index,
            kind,
            bar.base,
            size(bar.size),
            prefetchable
        ));
    }
    if let Some(rom) = function.rom {
        let state = if rom.enabled { "" } else { ", disabled" };
        lines.push(format!(
            "Expansion ROM at {:#x} [size {}{}]",
            rom.base,
            size(rom.size),
            state
        ));
    }
    for capability in &function.capabilities {
        lines.push(format!(
            "Capability [{:02x}]: {}",
            capability.offset,
            names::capability(capability.id)
        ));
    }
    for capability in &function.extended_capabilities {
        lines.push(format!(
            "Extended capability [{:03x}]: {} (v{})",
            capability.offset,
            names::extended_capability(capability.id),
            capability.version
        ));
    }
    lines
}

/// INTA# to INTD# as lspci names them.
fn interrupt_pin(pin: u8) -> Option<char> {
    match pin {
        1..=4 => Some((b'A' + pin - 1) as char),
        _ => None,
    }
}

/// A power-of-two size in the largest unit that divides it: 64, 4K, 128K, 16M, 2G.
pub fn size(bytes: u64) -> String {
    const UNITS: [(u64, &str); 4] = [
        (1 << 40, "T"),
        (1 << 30, "G"),
        (1 << 20, "M"),
        (1 << 10, "K"),
    ];
    for (unit, suffix) in UNITS {
        if bytes >= unit && bytes.is_multiple_of(unit) {
            return format!("{}{}", bytes / unit, suffix);
        }
    }
    format!("{bytes}")
}
