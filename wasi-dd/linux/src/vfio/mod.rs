//! Opening a PCI function through VFIO: its IOMMU group, a container (the function's own I/O
//! address space, type1 IOMMU), and the device file whose regions are its configuration space
//! and BARs. Explains every refusal in terms of what to do about it.

#[allow(unsafe_code)]
pub mod uapi;

use std::io;
use std::sync::Arc;

use crate::iova::{DEFAULT_WINDOW, IovaAllocator, MSI_WINDOW};
use crate::pci::{SysfsFunction, group_blockers};
use uapi::{Container, Device, DeviceInfo, Group};

/// What to say when a function has no IOMMU group.
pub const NO_IOMMU: &str = "no IOMMU group: VFIO cannot confine this device's DMA (boot with \
                            intel_iommu=on, or amd_iommu=on, if the machine has an IOMMU). \
                            --unconfined drives it through UIO instead, with DMA unconfined";

/// An opened VFIO device: the container (its IOMMU context), the group, the device file.
pub struct Vfio {
    pub container: Arc<Container>,
    /// Kept open: closing the group would detach the container while the device is in use.
    _group: Group,
    pub device: Arc<Device>,
    pub info: DeviceInfo,
    pub group: u32,
}

/// The IOMMU's page sizes and the IOVA ranges it accepts, from `VFIO_IOMMU_GET_INFO`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IommuLayout {
    /// The smallest IOMMU page.
    pub page: u64,
    /// Usable IOVA ranges, start and end exclusive (everything if the kernel reports none).
    pub usable: Vec<(u64, u64)>,
}

impl IommuLayout {
    /// An allocator over the usable ranges inside [`DEFAULT_WINDOW`], without the MSI window.
    pub fn allocator(&self) -> IovaAllocator {
        IovaAllocator::new(&self.usable, DEFAULT_WINDOW, &[MSI_WINDOW], self.page)
    }
}

fn read_u16(bytes: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(bytes.get(at..at + 2)?.try_into().ok()?))
}

fn read_u32(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

fn read_u64(bytes: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_ne_bytes(bytes.get(at..at + 8)?.try_into().ok()?))
}

/// Reads `struct vfio_iommu_type1_info` and its capability chain (`argsz` at 0, `flags` at 4,
/// `iova_pgsizes` at 8, `cap_offset` at 16; each capability starts with `id` (u16), `version`
/// (u16) and `next` (u32, an offset from the start, 0 at the end); the IOVA range capability
/// then has `nr_iovas` (u32), a reserved u32 and `nr_iovas` pairs of u64 start and inclusive
/// end).
pub fn parse_iommu_info(bytes: &[u8], fallback_page: u64) -> IommuLayout {
    let flags = read_u32(bytes, 4).unwrap_or(0);
    let page_sizes = read_u64(bytes, 8).unwrap_or(0);
    let page = if page_sizes == 0 {
        fallback_page
    } else {
        1 << page_sizes.trailing_zeros()
    };
    let mut usable = Vec::new();
    if flags & uapi::IOMMU_INFO_CAPS != 0 {
        let mut at = read_u32(bytes, 16).unwrap_or(0) as usize;
        // Bounded: a chain that loops ends the walk.
        for _ in 0..64 {
            if at == 0 {
                break;
            }
            let (Some(id), Some(next)) = (read_u16(bytes, at), read_u32(bytes, at + 4)) else {
                break;
            };
            if id == uapi::IOMMU_TYPE1_INFO_CAP_IOVA_RANGE {
                let count = read_u32(bytes, at + 8).unwrap_or(0) as usize;
                for i in 0..count.min(256) {
                    let entry = at + 16 + 16 * i;
                    if let (Some(start), Some(last)) =
                        (read_u64(bytes, entry), read_u64(bytes, entry + 8))
                    {
                        usable.push((start, last.saturating_add(1)));
                    }
                }
            }
            at = next as usize;
        }
    }
    if usable.is_empty() {
        usable.push((0, u64::MAX));
    }
    IommuLayout { page, usable }
}

fn os_error(what: &str, error: &io::Error) -> String {
    format!("{what}: {error}")
}

impl Vfio {
    /// Opens `function` (bound to vfio-pci) through its IOMMU group in a new container.
    pub fn open(function: &SysfsFunction) -> Result<(Vfio, IommuLayout), String> {
        let name = &function.name;
        let group_number = function.iommu_group().ok_or(NO_IOMMU)?;
        let container = Container::open().map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => String::from(
                "there is no /dev/vfio/vfio: this kernel has no VFIO (CONFIG_VFIO) or its \
                 module is not loaded (modprobe vfio-pci)",
            ),
            _ => os_error("opening /dev/vfio/vfio", &e),
        })?;
        let version = container
            .api_version()
            .map_err(|e| os_error("VFIO_GET_API_VERSION", &e))?;
        if version != uapi::API_VERSION {
            return Err(format!(
                "this kernel's VFIO API is version {version}; wasi-dd-run speaks version {}",
                uapi::API_VERSION
            ));
        }
        let model = if container.supports(uapi::TYPE1V2_IOMMU).unwrap_or(false) {
            uapi::TYPE1V2_IOMMU
        } else if container.supports(uapi::TYPE1_IOMMU).unwrap_or(false) {
            uapi::TYPE1_IOMMU
        } else {
            return Err(String::from(
                "VFIO offers no type1 IOMMU on this machine (modprobe vfio_iommu_type1; the \
                 machine needs an IOMMU that Linux uses: intel_iommu=on or amd_iommu=on)",
            ));
        };
        let group = Group::open(group_number).map_err(|e| match e.raw_os_error() {
            Some(libc::EBUSY) => format!(
                "{name} is already in use: its IOMMU group {group_number} is open in another \
                 process (another wasi-dd-run, or a virtual machine)"
            ),
            Some(libc::ENOENT) => format!(
                "there is no /dev/vfio/{group_number}: {name} (IOMMU group {group_number}) is not \
                 bound to vfio-pci"
            ),
            Some(libc::EACCES | libc::EPERM) => format!(
                "no permission to open /dev/vfio/{group_number}: run as root (or give this user \
                 the group file)"
            ),
            _ => os_error(&format!("opening /dev/vfio/{group_number}"), &e),
        })?;
        if !group
            .is_viable()
            .map_err(|e| os_error("VFIO_GROUP_GET_STATUS", &e))?
        {
            let blockers = group_blockers(&function.group_members());
            return Err(format!(
                "IOMMU group {group_number} of {name} is not viable: every function in it must be \
                 bound to vfio-pci (or to no driver), and {} {} not. A device shares its \
                 group with the other functions of a multi-function slot and everything behind \
                 a bridge without ACS.",
                if blockers.is_empty() {
                    String::from("some")
                } else {
                    blockers.join(", ")
                },
                if blockers.len() == 1 { "is" } else { "are" }
            ));
        }
        group
            .set_container(&container)
            .map_err(|e| os_error("VFIO_GROUP_SET_CONTAINER", &e))?;
        container
            .set_iommu(model)
            .map_err(|e| match e.raw_os_error() {
                Some(libc::EPERM) => String::from(
                    "VFIO refuses the IOMMU: the machine has no interrupt remapping, so a device \
                 could forge interrupts (in QEMU: -machine q35,kernel-irqchip=split -device \
                 intel-iommu,intremap=on; or, knowingly, modprobe vfio_iommu_type1 \
                 allow_unsafe_interrupts=1)",
                ),
                _ => os_error("VFIO_SET_IOMMU", &e),
            })?;
        let layout = match container.iommu_info() {
            Ok(bytes) => parse_iommu_info(&bytes, crate::sys::page_size()),
            Err(_) => parse_iommu_info(&[], crate::sys::page_size()),
        };
        let device = group.device(name).map_err(|e| match e.raw_os_error() {
            Some(libc::EBUSY) => format!("{name} is already in use (its VFIO device is open)"),
            _ => os_error(&format!("VFIO_GROUP_GET_DEVICE_FD {name}"), &e),
        })?;
        let info = device
            .info()
            .map_err(|e| os_error("VFIO_DEVICE_GET_INFO", &e))?;
        if info.flags & uapi::DEVICE_FLAGS_PCI == 0 {
            return Err(format!("{name} is not a PCI device as VFIO sees it"));
        }
        if info.regions <= uapi::PCI_CONFIG_REGION_INDEX {
            return Err(format!(
                "VFIO gives {name} {} regions, and no configuration space",
                info.regions
            ));
        }
        Ok((
            Vfio {
                container: Arc::new(container),
                _group: group,
                device: Arc::new(device),
                info,
                group: group_number,
            },
            layout,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(flags: u32, page_sizes: u64, chain: &[(u16, Vec<u8>)]) -> Vec<u8> {
        let mut bytes = vec![0u8; 24];
        bytes[4..8].copy_from_slice(&flags.to_ne_bytes());
        bytes[8..16].copy_from_slice(&page_sizes.to_ne_bytes());
        if !chain.is_empty() {
            bytes[16..20].copy_from_slice(&24u32.to_ne_bytes());
        }
        for (i, (id, body)) in chain.iter().enumerate() {
            let start = bytes.len();
            let next = if i + 1 == chain.len() {
                0
            } else {
                (start + 8 + body.len()) as u32
            };
            bytes.extend(id.to_ne_bytes());
            bytes.extend(1u16.to_ne_bytes());
            bytes.extend(next.to_ne_bytes());
            bytes.extend(body);
        }
        bytes
    }

    fn ranges(ranges: &[(u64, u64)]) -> Vec<u8> {
        let mut body = Vec::new();
        body.extend((ranges.len() as u32).to_ne_bytes());
        body.extend(0u32.to_ne_bytes());
        for (start, last) in ranges {
            body.extend(start.to_ne_bytes());
            body.extend(last.to_ne_bytes());
        }
        body
    }

    #[test]
    fn reads_page_size_and_iova_ranges() {
        // 4 KiB, 2 MiB and 1 GiB pages; x86's ranges around the MSI window; a capability of
        // another kind before it.
        let bytes = info(
            uapi::IOMMU_INFO_CAPS | 1,
            0x4020_1000,
            &[
                (2, vec![0; 8]),
                (
                    uapi::IOMMU_TYPE1_INFO_CAP_IOVA_RANGE,
                    ranges(&[(0, 0xfedf_ffff), (0xfef0_0000, 0x7f_ffff_ffff)]),
                ),
            ],
        );
        let layout = parse_iommu_info(&bytes, 4096);
        assert_eq!(layout.page, 4096);
        assert_eq!(
            layout.usable,
            vec![(0, 0xfee0_0000), (0xfef0_0000, 0x80_0000_0000)]
        );
        let mut allocator = layout.allocator();
        assert_eq!(allocator.allocate(4096, 4096), Some(1 << 20));
    }

    #[test]
    fn without_capabilities_everything_is_usable() {
        let layout = parse_iommu_info(&info(1, 0x1000, &[]), 4096);
        assert_eq!(layout.usable, vec![(0, u64::MAX)]);
        let layout = parse_iommu_info(&[], 16384);
        assert_eq!(layout.page, 16384);
    }

    #[test]
    fn a_looping_or_truncated_chain_ends_the_walk() {
        let mut bytes = info(uapi::IOMMU_INFO_CAPS, 0x1000, &[(2, vec![0; 8])]);
        // Point the only capability's `next` at itself.
        bytes[28..32].copy_from_slice(&24u32.to_ne_bytes());
        assert_eq!(parse_iommu_info(&bytes, 4096).usable, vec![(0, u64::MAX)]);
        let truncated = &info(
            uapi::IOMMU_INFO_CAPS,
            0x1000,
            &[(
                uapi::IOMMU_TYPE1_INFO_CAP_IOVA_RANGE,
                ranges(&[(0, 0xffff)]),
            )],
        )[..40];
        assert_eq!(
            parse_iommu_info(truncated, 4096).usable,
            vec![(0, u64::MAX)]
        );
    }
}
