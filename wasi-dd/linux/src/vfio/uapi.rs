//! The VFIO user API (`linux/vfio.h`): request numbers, argument structures, and one safe
//! function per request on the three kinds of VFIO file (container, group, device). The only
//! `unsafe` code besides `crate::sys`. Each file type is opened here, so a request can only go
//! to the kind of file it is meant for.
//!
//! Facts used (from the kernel UAPI): every VFIO request is `_IO(';', 100 + n)`, so its number
//! is `0x3b64 + n` with no size or direction bits; each structure starts with `argsz` (the
//! caller's size of it) and `flags`.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::fs::OpenOptionsExt;

use crate::sys::{self, Mapping};

const fn request(n: u32) -> u32 {
    (b';' as u32) << 8 | (100 + n)
}

const GET_API_VERSION: u32 = request(0);
const CHECK_EXTENSION: u32 = request(1);
const SET_IOMMU: u32 = request(2);
const GROUP_GET_STATUS: u32 = request(3);
const GROUP_SET_CONTAINER: u32 = request(4);
const GROUP_GET_DEVICE_FD: u32 = request(6);
const DEVICE_GET_INFO: u32 = request(7);
const DEVICE_GET_REGION_INFO: u32 = request(8);
const DEVICE_GET_IRQ_INFO: u32 = request(9);
const DEVICE_SET_IRQS: u32 = request(10);
const DEVICE_RESET: u32 = request(11);
/// On a container (the same number as `VFIO_DEVICE_GET_PCI_HOT_RESET_INFO` on a device).
const IOMMU_GET_INFO: u32 = request(12);
const IOMMU_MAP_DMA: u32 = request(13);
const IOMMU_UNMAP_DMA: u32 = request(14);

/// `VFIO_API_VERSION`.
pub const API_VERSION: i32 = 0;
/// IOMMU models (`VFIO_CHECK_EXTENSION`, `VFIO_SET_IOMMU`).
pub const TYPE1_IOMMU: u32 = 1;
pub const TYPE1V2_IOMMU: u32 = 3;

pub const GROUP_FLAGS_VIABLE: u32 = 1 << 0;

pub const DEVICE_FLAGS_RESET: u32 = 1 << 0;
pub const DEVICE_FLAGS_PCI: u32 = 1 << 1;

/// Region indices of a vfio-pci device.
pub const PCI_BAR0_REGION_INDEX: u32 = 0;
pub const PCI_CONFIG_REGION_INDEX: u32 = 7;
pub const REGION_INFO_FLAG_READ: u32 = 1 << 0;
pub const REGION_INFO_FLAG_WRITE: u32 = 1 << 1;
pub const REGION_INFO_FLAG_MMAP: u32 = 1 << 2;

/// Interrupt indices of a vfio-pci device.
pub const PCI_INTX_IRQ_INDEX: u32 = 0;
pub const PCI_MSI_IRQ_INDEX: u32 = 1;
pub const IRQ_INFO_EVENTFD: u32 = 1 << 0;
pub const IRQ_INFO_MASKABLE: u32 = 1 << 1;
pub const IRQ_INFO_AUTOMASKED: u32 = 1 << 2;

const IRQ_SET_DATA_NONE: u32 = 1 << 0;
const IRQ_SET_DATA_EVENTFD: u32 = 1 << 2;
const IRQ_SET_ACTION_MASK: u32 = 1 << 3;
const IRQ_SET_ACTION_UNMASK: u32 = 1 << 4;
const IRQ_SET_ACTION_TRIGGER: u32 = 1 << 5;

const DMA_MAP_FLAG_READ: u32 = 1 << 0;
const DMA_MAP_FLAG_WRITE: u32 = 1 << 1;

/// `VFIO_IOMMU_INFO_CAPS`: the info is followed by a capability chain.
pub const IOMMU_INFO_CAPS: u32 = 1 << 1;
/// `VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE`: the IOVA ranges a device may use.
pub const IOMMU_TYPE1_INFO_CAP_IOVA_RANGE: u16 = 1;

#[repr(C)]
struct GroupStatus {
    argsz: u32,
    flags: u32,
}

#[repr(C)]
struct DeviceInfoRaw {
    argsz: u32,
    flags: u32,
    num_regions: u32,
    num_irqs: u32,
}

#[repr(C)]
struct RegionInfoRaw {
    argsz: u32,
    flags: u32,
    index: u32,
    cap_offset: u32,
    size: u64,
    offset: u64,
}

#[repr(C)]
struct IrqInfoRaw {
    argsz: u32,
    flags: u32,
    index: u32,
    count: u32,
}

/// `struct vfio_irq_set` with no data.
#[repr(C)]
struct IrqSetNone {
    argsz: u32,
    flags: u32,
    index: u32,
    start: u32,
    count: u32,
}

/// `struct vfio_irq_set` with one eventfd.
#[repr(C)]
struct IrqSetEventfd {
    argsz: u32,
    flags: u32,
    index: u32,
    start: u32,
    count: u32,
    fd: i32,
}

#[repr(C)]
struct DmaMap {
    argsz: u32,
    flags: u32,
    vaddr: u64,
    iova: u64,
    size: u64,
}

#[repr(C)]
struct DmaUnmap {
    argsz: u32,
    flags: u32,
    iova: u64,
    size: u64,
}

/// `struct vfio_iommu_type1_info` and room for its capability chain, as bytes: `argsz` at 0,
/// `flags` at 4, `iova_pgsizes` at 8, `cap_offset` at 16; capability offsets count from 0.
#[repr(C, align(8))]
struct IommuInfoBuffer([u8; IOMMU_INFO_BYTES]);

const IOMMU_INFO_BYTES: usize = 4096;

/// The size of `T` as the `argsz` field wants it.
fn argsz<T>() -> u32 {
    std::mem::size_of::<T>() as u32
}

fn open(path: &str) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
}

/// `/dev/vfio/vfio`: one IOMMU context (address space) for the groups set into it.
pub struct Container(File);

impl Container {
    pub fn open() -> io::Result<Container> {
        open("/dev/vfio/vfio").map(Container)
    }

    pub fn api_version(&self) -> io::Result<i32> {
        // SAFETY: VFIO_GET_API_VERSION takes no argument.
        unsafe { sys::ioctl_value(self.0.as_fd(), GET_API_VERSION, 0) }
    }

    pub fn supports(&self, extension: u32) -> io::Result<bool> {
        // SAFETY: VFIO_CHECK_EXTENSION takes the extension number as an integer.
        unsafe { sys::ioctl_value(self.0.as_fd(), CHECK_EXTENSION, extension.into()) }
            .map(|answer| answer > 0)
    }

    pub fn set_iommu(&self, model: u32) -> io::Result<()> {
        // SAFETY: VFIO_SET_IOMMU takes the model number as an integer.
        unsafe { sys::ioctl_value(self.0.as_fd(), SET_IOMMU, model.into()) }.map(drop)
    }

    /// `VFIO_IOMMU_GET_INFO` with room for a capability chain: the structure as the kernel
    /// filled it (see `IommuInfoBuffer` for the layout; `vfio::parse_iommu_info` reads it).
    pub fn iommu_info(&self) -> io::Result<Vec<u8>> {
        let mut buffer = Box::new(IommuInfoBuffer([0; IOMMU_INFO_BYTES]));
        buffer.0[..4].copy_from_slice(&(IOMMU_INFO_BYTES as u32).to_ne_bytes());
        // SAFETY: VFIO_IOMMU_GET_INFO writes at most `argsz` bytes (the whole buffer), and any
        // bytes are valid in a byte array.
        unsafe { sys::ioctl_pointer(self.0.as_fd(), IOMMU_GET_INFO, &mut *buffer)? };
        Ok(buffer.0.to_vec())
    }

    /// Makes `memory` (all of it) reachable by the container's devices at `iova`, for reads
    /// and writes. VFIO pins its pages until [`Container::unmap_dma`].
    pub fn map_dma(&self, memory: &Mapping, iova: u64) -> io::Result<()> {
        let mut map = DmaMap {
            argsz: argsz::<DmaMap>(),
            flags: DMA_MAP_FLAG_READ | DMA_MAP_FLAG_WRITE,
            vaddr: memory.address(),
            iova,
            size: memory.len() as u64,
        };
        // SAFETY: VFIO_IOMMU_MAP_DMA reads one `struct vfio_iommu_type1_dma_map`. The pages it
        // pins belong to `memory`, a mapping made for DMA alone: the device can reach nothing
        // that Rust code holds references into.
        unsafe { sys::ioctl_pointer(self.0.as_fd(), IOMMU_MAP_DMA, &mut map) }
    }

    pub fn unmap_dma(&self, iova: u64, size: u64) -> io::Result<()> {
        let mut unmap = DmaUnmap {
            argsz: argsz::<DmaUnmap>(),
            flags: 0,
            iova,
            size,
        };
        // SAFETY: VFIO_IOMMU_UNMAP_DMA reads and writes (the size unmapped) one
        // `struct vfio_iommu_type1_dma_unmap`.
        unsafe { sys::ioctl_pointer(self.0.as_fd(), IOMMU_UNMAP_DMA, &mut unmap) }
    }
}

/// `/dev/vfio/N`: an IOMMU group, the unit of isolation VFIO hands out.
pub struct Group(File);

impl Group {
    pub fn open(number: u32) -> io::Result<Group> {
        open(&format!("/dev/vfio/{number}")).map(Group)
    }

    /// Whether every device of the group is bound to vfio-pci (or to no driver).
    pub fn is_viable(&self) -> io::Result<bool> {
        let mut status = GroupStatus {
            argsz: argsz::<GroupStatus>(),
            flags: 0,
        };
        // SAFETY: VFIO_GROUP_GET_STATUS reads and writes one `struct vfio_group_status`.
        unsafe { sys::ioctl_pointer(self.0.as_fd(), GROUP_GET_STATUS, &mut status)? };
        Ok(status.flags & GROUP_FLAGS_VIABLE != 0)
    }

    pub fn set_container(&self, container: &Container) -> io::Result<()> {
        let mut fd: i32 = container.0.as_raw_fd();
        // SAFETY: VFIO_GROUP_SET_CONTAINER reads one `int` (the container's descriptor).
        unsafe { sys::ioctl_pointer(self.0.as_fd(), GROUP_SET_CONTAINER, &mut fd) }
    }

    /// The device file of `name` (`0000:00:03.0`), a member of this group.
    pub fn device(&self, name: &str) -> io::Result<Device> {
        let mut bytes: Vec<u8> = name.bytes().filter(|&b| b != 0).collect();
        bytes.push(0);
        // SAFETY: VFIO_GROUP_GET_DEVICE_FD reads a NUL-terminated string (which `bytes` is,
        // and nothing past it) and returns a new descriptor.
        let fd = unsafe {
            libc::ioctl(
                self.0.as_raw_fd(),
                GROUP_GET_DEVICE_FD as libc::Ioctl,
                bytes.as_ptr(),
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the kernel returned a new descriptor that nothing else owns.
        let file = unsafe { <File as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        Ok(Device(file))
    }
}

/// What `VFIO_DEVICE_GET_INFO` says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceInfo {
    pub flags: u32,
    pub regions: u32,
    pub irqs: u32,
}

/// One region of a device (a BAR, the ROM, configuration space): where it is in the device
/// file and what may be done with it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RegionInfo {
    pub index: u32,
    pub flags: u32,
    pub size: u64,
    /// Where the region starts in the device file (for pread/pwrite and mmap).
    pub offset: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IrqInfo {
    pub index: u32,
    pub flags: u32,
    pub count: u32,
}

/// A VFIO device file: its regions are read and written at offsets of the file (and memory
/// BARs mapped from it); its interrupts are signalled on eventfds.
pub struct Device(File);

impl Device {
    pub fn file(&self) -> &File {
        &self.0
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }

    pub fn info(&self) -> io::Result<DeviceInfo> {
        let mut info = DeviceInfoRaw {
            argsz: argsz::<DeviceInfoRaw>(),
            flags: 0,
            num_regions: 0,
            num_irqs: 0,
        };
        // SAFETY: VFIO_DEVICE_GET_INFO writes at most `argsz` bytes of integers.
        unsafe { sys::ioctl_pointer(self.0.as_fd(), DEVICE_GET_INFO, &mut info)? };
        Ok(DeviceInfo {
            flags: info.flags,
            regions: info.num_regions,
            irqs: info.num_irqs,
        })
    }

    pub fn region(&self, index: u32) -> io::Result<RegionInfo> {
        let mut info = RegionInfoRaw {
            argsz: argsz::<RegionInfoRaw>(),
            flags: 0,
            index,
            cap_offset: 0,
            size: 0,
            offset: 0,
        };
        // SAFETY: VFIO_DEVICE_GET_REGION_INFO writes at most `argsz` bytes of integers (a
        // capability chain that does not fit is left out, with `argsz` raised).
        unsafe { sys::ioctl_pointer(self.0.as_fd(), DEVICE_GET_REGION_INFO, &mut info)? };
        Ok(RegionInfo {
            index,
            flags: info.flags,
            size: info.size,
            offset: info.offset,
        })
    }

    pub fn irq(&self, index: u32) -> io::Result<IrqInfo> {
        let mut info = IrqInfoRaw {
            argsz: argsz::<IrqInfoRaw>(),
            flags: 0,
            index,
            count: 0,
        };
        // SAFETY: VFIO_DEVICE_GET_IRQ_INFO reads and writes one `struct vfio_irq_info`.
        unsafe { sys::ioctl_pointer(self.0.as_fd(), DEVICE_GET_IRQ_INFO, &mut info)? };
        Ok(IrqInfo {
            index,
            flags: info.flags,
            count: info.count,
        })
    }

    /// Signals vector 0 of interrupt `index` on `eventfd` (and enables it).
    pub fn trigger_eventfd(&self, index: u32, eventfd: BorrowedFd<'_>) -> io::Result<()> {
        let mut set = IrqSetEventfd {
            argsz: argsz::<IrqSetEventfd>(),
            flags: IRQ_SET_DATA_EVENTFD | IRQ_SET_ACTION_TRIGGER,
            index,
            start: 0,
            count: 1,
            fd: eventfd.as_raw_fd(),
        };
        // SAFETY: VFIO_DEVICE_SET_IRQS reads `argsz` bytes: the header and one eventfd.
        unsafe { sys::ioctl_pointer(self.0.as_fd(), DEVICE_SET_IRQS, &mut set) }
    }

    /// Turns every vector of interrupt `index` off.
    pub fn disable_irq(&self, index: u32) -> io::Result<()> {
        self.irq_action(index, IRQ_SET_ACTION_TRIGGER, 0)
    }

    /// Unmasks interrupt `index` (INTx is masked by VFIO each time it fires).
    pub fn unmask_irq(&self, index: u32) -> io::Result<()> {
        self.irq_action(index, IRQ_SET_ACTION_UNMASK, 1)
    }

    pub fn mask_irq(&self, index: u32) -> io::Result<()> {
        self.irq_action(index, IRQ_SET_ACTION_MASK, 1)
    }

    fn irq_action(&self, index: u32, action: u32, count: u32) -> io::Result<()> {
        let mut set = IrqSetNone {
            argsz: argsz::<IrqSetNone>(),
            flags: IRQ_SET_DATA_NONE | action,
            index,
            start: 0,
            count,
        };
        // SAFETY: VFIO_DEVICE_SET_IRQS with DATA_NONE reads the header alone.
        unsafe { sys::ioctl_pointer(self.0.as_fd(), DEVICE_SET_IRQS, &mut set) }
    }

    /// A function-level (or bus) reset, if the device supports one.
    pub fn reset(&self) -> io::Result<()> {
        // SAFETY: VFIO_DEVICE_RESET takes no argument.
        unsafe { sys::ioctl_value(self.0.as_fd(), DEVICE_RESET, 0) }.map(drop)
    }
}
