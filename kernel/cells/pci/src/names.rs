//! Names for ids: vendors, devices, subsystems and classes from the PCI ID Repository (the
//! `pci-ids` crate compiles its copy into the kernel), capabilities from a small table here.

use pci_ids::{Class, Device, FromId, Subclass, Vendor};

/// The vendor's name, e.g. "Intel Corporation" for 0x8086.
pub fn vendor(vendor: u16) -> Option<&'static str> {
    Vendor::from_id(vendor).map(|v| v.name())
}

/// The device's name, e.g. "82540EM Gigabit Ethernet Controller" for 8086:100e.
pub fn device(vendor: u16, device: u16) -> Option<&'static str> {
    Device::from_vid_pid(vendor, device).map(|d| d.name())
}

/// The name the database gives subsystem `subsystem` of device `vendor:device`.
pub fn subsystem(vendor: u16, device: u16, subsystem: (u16, u16)) -> Option<&'static str> {
    Device::from_vid_pid(vendor, device)?
        .subsystems()
        .find(|s| (s.subvendor(), s.subdevice()) == subsystem)
        .map(|s| s.name())
}

/// The subclass's name, else the class's: "Ethernet controller" for 02/00.
pub fn class(class: u8, subclass: u8) -> Option<&'static str> {
    Subclass::from_cid_sid(class, subclass)
        .map(|s| s.name())
        .or_else(|| Class::from_id(class).map(|c| c.name()))
}

/// The programming interface's name: "AHCI 1.0" for 01/06/01.
pub fn prog_if(class: u8, subclass: u8, prog_if: u8) -> Option<&'static str> {
    Subclass::from_cid_sid(class, subclass)?
        .prog_ifs()
        .find(|p| p.id() == prog_if)
        .map(|p| p.name())
}

/// The name of a standard capability (PCI Local Bus and PCI Express specifications).
pub fn capability(id: u8) -> &'static str {
    match id {
        0x01 => "Power Management",
        0x02 => "AGP",
        0x03 => "Vital Product Data",
        0x04 => "Slot Identification",
        0x05 => "MSI",
        0x06 => "CompactPCI Hot Swap",
        0x07 => "PCI-X",
        0x08 => "HyperTransport",
        0x09 => "Vendor Specific",
        0x0A => "Debug Port",
        0x0B => "CompactPCI Central Resource Control",
        0x0C => "PCI Hot-Plug",
        0x0D => "Bridge Subsystem Vendor ID",
        0x0E => "AGP 8x",
        0x0F => "Secure Device",
        0x10 => "PCI Express",
        0x11 => "MSI-X",
        0x12 => "SATA Data/Index Configuration",
        0x13 => "Advanced Features",
        0x14 => "Enhanced Allocation",
        0x15 => "Flattening Portal Bridge",
        _ => "Unknown",
    }
}

/// The name of a PCI Express extended capability.
pub fn extended_capability(id: u16) -> &'static str {
    match id {
        0x0001 => "Advanced Error Reporting",
        0x0002 | 0x0009 => "Virtual Channel",
        0x0003 => "Device Serial Number",
        0x0004 => "Power Budgeting",
        0x0005 => "Root Complex Link Declaration",
        0x0006 => "Root Complex Internal Link Control",
        0x0007 => "Root Complex Event Collector Endpoint Association",
        0x0008 => "Multi-Function Virtual Channel",
        0x000A => "Root Complex Register Block",
        0x000B => "Vendor Specific",
        0x000D => "Access Control Services",
        0x000E => "Alternative Routing-ID Interpretation",
        0x000F => "Address Translation Services",
        0x0010 => "Single Root I/O Virtualization",
        0x0011 => "Multi-Root I/O Virtualization",
        0x0012 => "Multicast",
        0x0013 => "Page Request Interface",
        0x0015 => "Resizable BAR",
        0x0016 => "Dynamic Power Allocation",
        0x0017 => "TLP Processing Hints",
        0x0018 => "Latency Tolerance Reporting",
        0x0019 => "Secondary PCI Express",
        0x001B => "Process Address Space ID",
        0x001D => "Downstream Port Containment",
        0x001E => "L1 PM Substates",
        0x001F => "Precision Time Measurement",
        0x0023 => "Designated Vendor-Specific",
        0x0025 => "Data Link Feature",
        0x0026 => "Physical Layer 16.0 GT/s",
        _ => "Unknown",
    }
}
