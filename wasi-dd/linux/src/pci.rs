//! PCI functions as Linux's sysfs shows them: addresses, the driver a function is bound to, its
//! IOMMU group, class and BARs, and handing it to `vfio-pci` (or, without an IOMMU,
//! `uio_pci_generic`).

use std::fmt::Write as _;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use wasi_dd::types::{BarKind, PciAddress};

/// Parses `SSSS:BB:DD.F` or `BB:DD.F` (segment 0), hexadecimal as `lspci` prints them.
pub fn parse_address(text: &str) -> Result<PciAddress, String> {
    let bad = |why: &str| {
        format!(
            "'{text}' is not a PCI address ({why}; want SSSS:BB:DD.F or BB:DD.F, as lspci -D prints)"
        )
    };
    let parts: Vec<&str> = text.split(':').collect();
    let (segment, bus, slot) = match parts.as_slice() {
        [segment, bus, slot] => (*segment, *bus, *slot),
        [bus, slot] => ("0", *bus, *slot),
        _ => return Err(bad("wrong number of ':'")),
    };
    let (device, function) = slot.split_once('.').ok_or_else(|| bad("no '.F'"))?;
    let hex = |field: &str, digits: usize, what: &str| {
        if field.is_empty() || field.len() > digits || !field.bytes().all(|b| b.is_ascii_hexdigit())
        {
            return Err(bad(&format!("{what} '{field}'")));
        }
        u32::from_str_radix(field, 16).map_err(|_| bad(what))
    };
    let segment = hex(segment, 4, "segment")? as u16;
    let bus = hex(bus, 2, "bus")? as u8;
    let device = hex(device, 2, "device")?;
    if device > 0x1f {
        return Err(bad("device above 1f"));
    }
    let function = hex(function, 1, "function")?;
    if function > 7 {
        return Err(bad("function above 7"));
    }
    Ok(PciAddress {
        segment,
        bus,
        device: device as u8,
        function: function as u8,
    })
}

/// The address as sysfs and VFIO name it: `0000:00:03.0`.
pub fn address_name(address: PciAddress) -> String {
    format!(
        "{:04x}:{:02x}:{:02x}.{:x}",
        address.segment, address.bus, address.device, address.function
    )
}

/// Where sysfs keeps PCI devices (a parameter, so that tests can use a fake tree).
#[derive(Clone, Debug)]
pub struct Sysfs {
    root: PathBuf,
}

impl Default for Sysfs {
    fn default() -> Self {
        Sysfs {
            root: PathBuf::from("/sys"),
        }
    }
}

/// One PCI function in sysfs.
#[derive(Clone, Debug)]
pub struct SysfsFunction {
    sysfs: Sysfs,
    pub address: PciAddress,
    pub name: String,
    path: PathBuf,
}

/// The class code of Linux's `class` file: `0x020000` is class 02, subclass 00, prog-if 00.
pub fn class_of(text: &str) -> Option<(u8, u8)> {
    let code = u32::from_str_radix(text.trim().trim_start_matches("0x"), 16).ok()?;
    Some(((code >> 16) as u8, (code >> 8) as u8))
}

/// A human name for a PCI base class (the ones a driver world is chosen by, and a few more).
pub fn class_name(class: u8) -> &'static str {
    match class {
        0x01 => "mass storage controller",
        0x02 => "network controller",
        0x03 => "display controller",
        0x04 => "multimedia controller",
        0x06 => "bridge",
        0x0c => "serial bus controller",
        0xff => "unassigned class",
        _ => "device",
    }
}

impl Sysfs {
    pub fn at(root: impl Into<PathBuf>) -> Sysfs {
        Sysfs { root: root.into() }
    }

    fn devices(&self) -> PathBuf {
        self.root.join("bus/pci/devices")
    }

    fn drivers(&self) -> PathBuf {
        self.root.join("bus/pci/drivers")
    }

    /// The function at `address`, if Linux sees one there.
    pub fn function(&self, address: PciAddress) -> Result<SysfsFunction, String> {
        let name = address_name(address);
        let path = self.devices().join(&name);
        if !path.exists() {
            return Err(format!(
                "there is no PCI function {name} (lspci -D lists the functions present)"
            ));
        }
        Ok(SysfsFunction {
            sysfs: self.clone(),
            address,
            name,
            path,
        })
    }

    /// Whether Linux has the vfio-pci driver (built in or loaded).
    pub fn has_vfio_pci(&self) -> bool {
        self.has_driver(VFIO_PCI.name)
    }

    /// Whether Linux has PCI driver `name` (built in or loaded).
    pub fn has_driver(&self, name: &str) -> bool {
        self.drivers().join(name).is_dir()
    }
}

fn link_name(path: &Path) -> Option<String> {
    let target = fs::read_link(path).ok()?;
    Some(target.file_name()?.to_string_lossy().into_owned())
}

impl SysfsFunction {
    /// The driver bound to the function now, if any.
    pub fn driver(&self) -> Option<String> {
        link_name(&self.path.join("driver"))
    }

    /// The IOMMU group, if the machine has an IOMMU (and Linux uses it).
    pub fn iommu_group(&self) -> Option<u32> {
        link_name(&self.path.join("iommu_group"))?.parse().ok()
    }

    /// Class and subclass.
    pub fn class(&self) -> Result<(u8, u8), String> {
        let text = fs::read_to_string(self.path.join("class"))
            .map_err(|e| format!("reading the class of {}: {e}", self.name))?;
        class_of(&text).ok_or_else(|| format!("{}: unreadable class '{}'", self.name, text.trim()))
    }

    /// The other functions of the same IOMMU group and their drivers.
    pub fn group_members(&self) -> Vec<(String, Option<String>)> {
        let Some(group) = self.iommu_group() else {
            return Vec::new();
        };
        let devices = self
            .sysfs
            .root
            .join(format!("kernel/iommu_groups/{group}/devices"));
        let mut members: Vec<(String, Option<String>)> = fs::read_dir(devices)
            .into_iter()
            .flatten()
            .flatten()
            .map(|entry| {
                let name = entry.file_name().to_string_lossy().into_owned();
                let driver = link_name(&entry.path().join("driver"));
                (name, driver)
            })
            .filter(|(name, _)| *name != self.name)
            .collect();
        members.sort();
        members
    }

    /// What to type to hand the function to vfio-pci.
    pub fn bind_instructions(&self) -> String {
        self.instructions_for(VFIO_PCI)
    }

    /// What to type to hand the function to `driver`.
    pub fn instructions_for(&self, driver: &KernelDriver) -> String {
        let name = &self.name;
        let mut text = String::new();
        if !self.sysfs.has_driver(driver.name) {
            let _ = writeln!(text, "  modprobe {}", driver.module);
        }
        let _ = writeln!(
            text,
            "  echo {} > /sys/bus/pci/devices/{name}/driver_override",
            driver.name
        );
        if self.driver().is_some() {
            let _ = writeln!(
                text,
                "  echo {name} > /sys/bus/pci/devices/{name}/driver/unbind"
            );
        }
        let _ = write!(text, "  echo {name} > /sys/bus/pci/drivers_probe");
        text
    }

    /// Hands the function to vfio-pci: the steps of [`SysfsFunction::bind_instructions`]
    /// (loading the module with `modprobe` if it is missing).
    pub fn bind_vfio(&self) -> Result<(), String> {
        self.bind_to(VFIO_PCI)
    }

    /// Hands the function to `driver` (loading its module with `modprobe` if it is missing).
    pub fn bind_to(&self, driver: &KernelDriver) -> Result<(), String> {
        let wanted = driver.name;
        if !self.sysfs.has_driver(wanted) {
            let loaded = std::process::Command::new("modprobe")
                .arg(driver.module)
                .status()
                .map(|status| status.success())
                .unwrap_or(false);
            if !loaded || !self.sysfs.has_driver(wanted) {
                return Err(format!(
                    "this kernel has no {wanted} driver (modprobe {} failed): it needs {}",
                    driver.module, driver.config
                ));
            }
        }
        let write = |path: PathBuf, value: &str| -> Result<(), String> {
            fs::write(&path, value)
                .map_err(|e| format!("writing '{value}' to {}: {e}", path.display()))
        };
        write(self.path.join("driver_override"), wanted)?;
        if let Some(current) = self.driver()
            && current != wanted
        {
            write(self.path.join("driver/unbind"), &self.name)?;
        }
        if self.driver().is_none() {
            write(self.sysfs.root.join("bus/pci/drivers_probe"), &self.name)?;
        }
        match self.driver() {
            Some(bound) if bound == wanted => Ok(()),
            Some(other) => Err(format!("{} is bound to {other} after binding", self.name)),
            None => Err(format!(
                "{wanted} did not take {} (dmesg says why{})",
                self.name, driver.refusal_hint
            )),
        }
    }

    /// The function's directory in sysfs (`config`, `resource`, `resourceN`, `uio/`).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `/dev/uioN` of the function, once `uio_pci_generic` has it.
    pub fn uio_device(&self) -> Option<PathBuf> {
        let entry = fs::read_dir(self.path.join("uio")).ok()?.flatten().next()?;
        Some(PathBuf::from("/dev").join(entry.file_name()))
    }
}

/// A Linux driver the runner hands functions to, and how to get it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelDriver {
    /// Its name under `/sys/bus/pci/drivers`.
    pub name: &'static str,
    pub module: &'static str,
    pub config: &'static str,
    /// Appended to "dmesg says why" when it refuses the function.
    pub refusal_hint: &'static str,
}

/// VFIO: device access with DMA confined by the IOMMU.
pub const VFIO_PCI: &KernelDriver = &KernelDriver {
    name: "vfio-pci",
    module: "vfio-pci",
    config: "CONFIG_VFIO_PCI",
    refusal_hint: "; without an IOMMU it refuses devices",
};

/// UIO's generic PCI driver: an interrupt file for INTx, nothing else; DMA unconfined.
pub const UIO_PCI_GENERIC: &KernelDriver = &KernelDriver {
    name: "uio_pci_generic",
    module: "uio_pci_generic",
    config: "CONFIG_UIO_PCI_GENERIC",
    refusal_hint: "; it needs a device that can mask INTx, PCI 2.3",
};

/// One BAR as Linux's `resource` file of a function lists it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SysfsResource {
    pub index: u8,
    pub start: u64,
    pub size: u64,
    pub kind: BarKind,
    pub prefetchable: bool,
}

/// `IORESOURCE_*` flags of the `resource` file (include/linux/ioport.h).
const IORESOURCE_IO: u64 = 0x100;
const IORESOURCE_MEM: u64 = 0x200;
const IORESOURCE_PREFETCH: u64 = 0x2000;
const IORESOURCE_MEM_64: u64 = 0x0010_0000;

/// The BARs of a `resource` file: a line `start end flags` (hex) per resource, the six BARs
/// first; unused ones are all zeros.
pub fn parse_resources(text: &str) -> Vec<SysfsResource> {
    text.lines()
        .take(6)
        .enumerate()
        .filter_map(|(index, line)| {
            let mut fields = line
                .split_whitespace()
                .map(|f| u64::from_str_radix(f.trim_start_matches("0x"), 16));
            let (start, end, flags) = (
                fields.next()?.ok()?,
                fields.next()?.ok()?,
                fields.next()?.ok()?,
            );
            if end <= start && flags == 0 || end < start {
                return None;
            }
            let kind = if flags & IORESOURCE_IO != 0 {
                BarKind::Io
            } else if flags & IORESOURCE_MEM == 0 {
                return None;
            } else if flags & IORESOURCE_MEM_64 != 0 {
                BarKind::Memory64
            } else {
                BarKind::Memory32
            };
            Some(SysfsResource {
                index: index as u8,
                start,
                size: end - start + 1,
                kind,
                prefetchable: flags & IORESOURCE_PREFETCH != 0,
            })
        })
        .collect()
}

/// Explains why an IOMMU group is not viable: its members still bound to other drivers.
pub fn group_blockers(members: &[(String, Option<String>)]) -> Vec<String> {
    members
        .iter()
        .filter_map(|(name, driver)| match driver.as_deref() {
            None | Some("vfio-pci") | Some("pci-stub") | Some("pcieport") => None,
            Some(driver) => Some(format!("{name} (bound to {driver})")),
        })
        .collect()
}

/// Reads a file of a function's sysfs directory (for `info`).
pub fn read_attribute(function: &SysfsFunction, name: &str) -> io::Result<String> {
    fs::read_to_string(function.path.join(name)).map(|s| s.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn address(segment: u16, bus: u8, device: u8, function: u8) -> PciAddress {
        PciAddress {
            segment,
            bus,
            device,
            function,
        }
    }

    #[test]
    fn parses_the_forms_lspci_prints() {
        assert_eq!(parse_address("0000:00:03.0"), Ok(address(0, 0, 3, 0)));
        assert_eq!(parse_address("00:1f.2"), Ok(address(0, 0, 0x1f, 2)));
        assert_eq!(parse_address("0001:A0:1F.7"), Ok(address(1, 0xa0, 0x1f, 7)));
        assert_eq!(parse_address("0:0:3.0"), Ok(address(0, 0, 3, 0)));
        assert_eq!(address_name(address(1, 0xa0, 0x1f, 7)), "0001:a0:1f.7");
    }

    #[test]
    fn refuses_malformed_addresses_saying_why() {
        for (text, why) in [
            ("", "wrong number of ':'"),
            ("00:03", "no '.F'"),
            ("0000:00:03", "no '.F'"),
            ("0000:00:20.0", "device above 1f"),
            ("0000:00:03.8", "function above 7"),
            ("0000:100:03.0", "bus '100'"),
            ("00000:00:03.0", "segment '00000'"),
            ("0000:00:03.x", "function 'x'"),
            ("0000:0g:03.0", "bus '0g'"),
            ("0000:00:+3.0", "device '+3'"),
            ("a:b:c:d.0", "wrong number of ':'"),
        ] {
            let error = parse_address(text).unwrap_err();
            assert!(error.contains(why), "{text}: {error}");
            assert!(error.contains("SSSS:BB:DD.F"), "{error}");
        }
    }

    #[test]
    fn reads_class_codes() {
        assert_eq!(class_of("0x020000\n"), Some((0x02, 0x00)));
        assert_eq!(class_of("0x010601"), Some((0x01, 0x06)));
        assert_eq!(class_of("0x00ff00"), Some((0x00, 0xff)));
        assert_eq!(class_of("nonsense"), None);
    }

    /// A fake sysfs tree with one function bound to `driver`, in IOMMU group 7 with a sibling.
    #[test]
    fn reads_bars_from_the_resource_file() {
        // An e1000 as QEMU shows it: a 128 KiB memory BAR, a 64-port I/O BAR, then unused
        // BARs, the expansion ROM and bridge windows (only the first six lines are BARs).
        let text = "0x00000000febc0000 0x00000000febdffff 0x0000000000040200\n\
                    0x000000000000c000 0x000000000000c03f 0x0000000000040101\n\
                    0x0000000000000000 0x0000000000000000 0x0000000000000000\n\
                    0x00000000fe000000 0x00000000fe003fff 0x000000000014220c\n\
                    0x0000000000000000 0x0000000000000000 0x0000000000000000\n\
                    0x0000000000000000 0x0000000000000000 0x0000000000000000\n\
                    0x00000000feb80000 0x00000000febbffff 0x0000000000046200\n";
        let bars = parse_resources(text);
        assert_eq!(
            bars,
            vec![
                SysfsResource {
                    index: 0,
                    start: 0xfebc_0000,
                    size: 128 << 10,
                    kind: BarKind::Memory32,
                    prefetchable: false,
                },
                SysfsResource {
                    index: 1,
                    start: 0xc000,
                    size: 64,
                    kind: BarKind::Io,
                    prefetchable: false,
                },
                SysfsResource {
                    index: 3,
                    start: 0xfe00_0000,
                    size: 16 << 10,
                    kind: BarKind::Memory64,
                    prefetchable: true,
                },
            ]
        );
        assert!(parse_resources("garbage\n0x10 0x0f 0x200\n").is_empty());
    }

    fn fake_sysfs(driver: Option<&str>, sibling_driver: &str) -> (PathBuf, Sysfs) {
        let root = std::env::temp_dir().join(format!(
            "wasi-dd-linux-sysfs-{}-{}",
            std::process::id(),
            driver.unwrap_or("none")
        ));
        let _ = fs::remove_dir_all(&root);
        let device = root.join("bus/pci/devices/0000:00:03.0");
        fs::create_dir_all(&device).unwrap();
        fs::write(device.join("class"), "0x020000\n").unwrap();
        let group = root.join("kernel/iommu_groups/7/devices");
        fs::create_dir_all(&group).unwrap();
        std::os::unix::fs::symlink(
            root.join("kernel/iommu_groups/7"),
            device.join("iommu_group"),
        )
        .unwrap();
        if let Some(driver) = driver {
            let path = root.join("bus/pci/drivers").join(driver);
            fs::create_dir_all(&path).unwrap();
            std::os::unix::fs::symlink(&path, device.join("driver")).unwrap();
        }
        let sibling = root.join("bus/pci/devices/0000:00:03.1");
        fs::create_dir_all(&sibling).unwrap();
        let sibling_driver_path = root.join("bus/pci/drivers").join(sibling_driver);
        fs::create_dir_all(&sibling_driver_path).unwrap();
        std::os::unix::fs::symlink(&sibling_driver_path, sibling.join("driver")).unwrap();
        std::os::unix::fs::symlink(&device, group.join("0000:00:03.0")).unwrap();
        std::os::unix::fs::symlink(&sibling, group.join("0000:00:03.1")).unwrap();
        (root.clone(), Sysfs::at(root))
    }

    #[test]
    fn reads_driver_group_and_class_and_says_how_to_bind() {
        let (root, sysfs) = fake_sysfs(Some("e1000"), "lpc_ich");
        let function = sysfs.function(parse_address("00:03.0").unwrap()).unwrap();
        assert_eq!(function.driver().as_deref(), Some("e1000"));
        assert_eq!(function.iommu_group(), Some(7));
        assert_eq!(function.class(), Ok((0x02, 0x00)));
        let members = function.group_members();
        assert_eq!(
            members,
            vec![("0000:00:03.1".to_string(), Some("lpc_ich".to_string()))]
        );
        assert_eq!(
            group_blockers(&members),
            vec!["0000:00:03.1 (bound to lpc_ich)"]
        );
        let instructions = function.bind_instructions();
        assert_eq!(
            instructions,
            "  modprobe vfio-pci\n\
             \x20 echo vfio-pci > /sys/bus/pci/devices/0000:00:03.0/driver_override\n\
             \x20 echo 0000:00:03.0 > /sys/bus/pci/devices/0000:00:03.0/driver/unbind\n\
             \x20 echo 0000:00:03.0 > /sys/bus/pci/drivers_probe"
        );
        let missing = sysfs
            .function(parse_address("00:04.0").unwrap())
            .unwrap_err();
        assert!(
            missing.contains("no PCI function 0000:00:04.0"),
            "{missing}"
        );
        fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn a_group_of_vfio_and_stub_devices_has_no_blockers() {
        let members = vec![
            ("0000:00:03.1".to_string(), Some("vfio-pci".to_string())),
            ("0000:00:03.2".to_string(), None),
            ("0000:00:1c.0".to_string(), Some("pcieport".to_string())),
        ];
        assert!(group_blockers(&members).is_empty());
    }
}
