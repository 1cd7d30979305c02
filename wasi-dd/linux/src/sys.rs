//! The Linux system calls this crate needs beyond `std`: memory mappings (device BARs and DMA
//! memory) with volatile access, `ppoll`, eventfd, signalfd, `RLIMIT_MEMLOCK`, and the TAP and
//! NBD ioctls. With `vfio::uapi`, this is the only module with `unsafe` code: every function
//! here is safe to call with any argument, because each wraps one specific system call on a
//! file this module opened or checked itself (no generic "ioctl with a pointer" escapes).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::ptr::NonNull;
use std::sync::atomic::{Ordering, fence};
use std::time::Duration;

use wasi_dd::types::Access;

fn check(result: libc::c_int) -> io::Result<libc::c_int> {
    if result < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(result)
    }
}

/// A new file descriptor returned by a system call, owned from here on.
fn owned(fd: libc::c_int) -> io::Result<OwnedFd> {
    let fd = check(fd)?;
    // SAFETY: the system call just returned `fd` as a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// An `ioctl` whose third argument is an integer.
///
/// # Safety
/// `request` on `fd` must take an integer (or nothing), never an address: then the kernel
/// touches no memory of this process.
pub(crate) unsafe fn ioctl_value(
    fd: BorrowedFd<'_>,
    request: u32,
    value: libc::c_ulong,
) -> io::Result<libc::c_int> {
    // SAFETY: the caller guarantees that `value` is not used as an address.
    check(unsafe { libc::ioctl(fd.as_raw_fd(), request as libc::Ioctl, value) })
}

/// An `ioctl` whose third argument points to `T`, which the kernel may read and write.
///
/// # Safety
/// `request` on `fd` must read and write at most `size_of::<T>()` bytes at the pointer, and
/// every bit pattern the kernel writes there must be a valid `T` (plain integers).
pub(crate) unsafe fn ioctl_pointer<T>(
    fd: BorrowedFd<'_>,
    request: u32,
    arg: &mut T,
) -> io::Result<()> {
    // SAFETY: `arg` is a live, exclusive `T`; the caller guarantees the kernel stays within it
    // and writes only valid values.
    check(unsafe { libc::ioctl(fd.as_raw_fd(), request as libc::Ioctl, arg as *mut T) }).map(drop)
}

/// A memory mapping this process owns: device registers (a BAR of a VFIO device file) or
/// anonymous DMA memory. Accessed only through raw pointers, never through references, because
/// the device reads and writes it behind the compiler's back. Unmapped on drop.
pub struct Mapping {
    base: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is plain memory owned by this value; every access goes through the
// methods below, which use volatile or fenced raw-pointer accesses, so sharing between threads
// is no different from sharing device memory, which has no Rust-level invariants.
unsafe impl Send for Mapping {}
// SAFETY: as above: `&Mapping` gives only raw-pointer accesses, never references into it.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Fresh anonymous memory: zeroed by the kernel, private, populated now (so that pinning
    /// it for DMA does not fault in pages one by one).
    pub fn anonymous(len: usize) -> io::Result<Mapping> {
        Self::map(
            None,
            0,
            len,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
        )
    }

    /// `len` bytes (a multiple of 2 MiB) of huge pages: each physically contiguous, populated
    /// and locked now, so that a device given their physical addresses (no IOMMU) reaches them
    /// for as long as the mapping lives. Shared, so that a fork (`modprobe`) cannot make a
    /// write copy a page to elsewhere.
    pub fn huge(len: usize) -> io::Result<Mapping> {
        Self::map(
            None,
            0,
            len,
            libc::MAP_SHARED
                | libc::MAP_ANONYMOUS
                | libc::MAP_HUGETLB
                | libc::MAP_HUGE_2MB
                | libc::MAP_POPULATE
                | libc::MAP_LOCKED,
        )
    }

    /// `len` bytes of `file` from `offset`, shared (a VFIO region: device registers).
    pub fn shared(file: BorrowedFd<'_>, offset: u64, len: usize) -> io::Result<Mapping> {
        Self::map(Some(file), offset, len, libc::MAP_SHARED)
    }

    fn map(
        file: Option<BorrowedFd<'_>>,
        offset: u64,
        len: usize,
        flags: libc::c_int,
    ) -> io::Result<Mapping> {
        if len == 0 {
            return Err(io::Error::from(io::ErrorKind::InvalidInput));
        }
        let offset = libc::off_t::try_from(offset)
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        let fd = file.map_or(-1, |f| f.as_raw_fd());
        // SAFETY: a new mapping at an address the kernel chooses; it overlaps nothing Rust owns.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                flags,
                fd,
                offset,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let base = NonNull::new(base.cast::<u8>()).ok_or_else(io::Error::last_os_error)?;
        Ok(Mapping { base, len })
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The virtual address of byte 0 (what `VFIO_IOMMU_MAP_DMA` pins, or where the page map
    /// is read for a huge page's physical address).
    pub fn address(&self) -> u64 {
        self.base.as_ptr() as u64
    }

    /// A pointer to `offset` if `width` bytes fit there and `offset` is a multiple of `width`.
    fn at(&self, offset: u64, width: u64) -> Option<*mut u8> {
        let end = offset.checked_add(width)?;
        if end > self.len as u64 || !offset.is_multiple_of(width) {
            return None;
        }
        // SAFETY: `offset + width <= len`, so the result stays inside the mapping.
        Some(unsafe { self.base.as_ptr().add(offset as usize) })
    }

    /// A volatile, naturally aligned read; `None` if it does not fit (a bug in the caller's
    /// checks: wasi-dd checked the offset already).
    pub fn read_value(&self, offset: u64, access: Access) -> Option<u64> {
        let at = self.at(offset, access.bytes())?;
        // SAFETY: `at` is inside the mapping and aligned to the width (the base is page aligned
        // and `offset` a multiple of the width); mapped memory is readable.
        let value = unsafe {
            match access {
                Access::W8 => u64::from(at.read_volatile()),
                Access::W16 => u64::from(at.cast::<u16>().read_volatile()),
                Access::W32 => u64::from(at.cast::<u32>().read_volatile()),
                Access::W64 => at.cast::<u64>().read_volatile(),
            }
        };
        Some(value)
    }

    /// A volatile, naturally aligned write; `None` if it does not fit.
    pub fn write_value(&self, offset: u64, access: Access, value: u64) -> Option<()> {
        let at = self.at(offset, access.bytes())?;
        // SAFETY: as in `read_value`; mapped memory is writable (PROT_WRITE).
        unsafe {
            match access {
                Access::W8 => at.write_volatile(value as u8),
                Access::W16 => at.cast::<u16>().write_volatile(value as u16),
                Access::W32 => at.cast::<u32>().write_volatile(value as u32),
                Access::W64 => at.cast::<u64>().write_volatile(value),
            }
        }
        Some(())
    }

    /// Copies bytes out of DMA memory; `None` if the span does not fit.
    pub fn read_bytes(&self, offset: u64, out: &mut [u8]) -> Option<()> {
        let at = self.at(offset, 1)?;
        let end = offset.checked_add(out.len() as u64)?;
        if end > self.len as u64 {
            return None;
        }
        // Whatever the device wrote before the driver handed the buffer back is visible.
        fence(Ordering::SeqCst);
        // SAFETY: `offset..end` lies inside the mapping and `out` is a distinct Rust buffer.
        unsafe { std::ptr::copy_nonoverlapping(at, out.as_mut_ptr(), out.len()) };
        Some(())
    }

    /// Copies bytes into DMA memory; `None` if the span does not fit.
    pub fn write_bytes(&self, offset: u64, data: &[u8]) -> Option<()> {
        let at = self.at(offset, 1)?;
        let end = offset.checked_add(data.len() as u64)?;
        if end > self.len as u64 {
            return None;
        }
        // SAFETY: as in `read_bytes`, in the other direction.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), at, data.len()) };
        // The bytes are in memory before any register write that hands the buffer over.
        fence(Ordering::SeqCst);
        Some(())
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `base..base + len` is this value's own mapping and nothing points into it
        // any more (accesses only happen through `&self`).
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.len) };
    }
}

/// The system page size.
pub fn page_size() -> u64 {
    // SAFETY: sysconf has no memory effects.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(size).ok().filter(|&s| s > 0).unwrap_or(4096)
}

/// A non-blocking, close-on-exec eventfd (VFIO signals interrupts on it).
pub fn eventfd() -> io::Result<File> {
    // SAFETY: creates a new descriptor; no memory is passed.
    let fd = owned(unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) })?;
    Ok(File::from(fd))
}

/// What to wait for on one descriptor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Interest {
    Read,
    Write,
}

/// Waits until one of `fds` is ready (or `timeout` passes; `None` waits forever). Returns, for
/// each descriptor, whether it is ready (readable, writable, or hung up / in error, which a
/// read or write then reports). An interrupted wait returns no descriptor ready.
pub fn poll(
    fds: &[(BorrowedFd<'_>, Interest)],
    timeout: Option<Duration>,
) -> io::Result<Vec<bool>> {
    let mut entries: Vec<libc::pollfd> = fds
        .iter()
        .map(|(fd, interest)| libc::pollfd {
            fd: fd.as_raw_fd(),
            events: match interest {
                Interest::Read => libc::POLLIN,
                Interest::Write => libc::POLLOUT,
            },
            revents: 0,
        })
        .collect();
    let timespec = timeout.map(|t| libc::timespec {
        // A day at most: every wait here is far shorter, and it fits any `time_t`.
        tv_sec: t.as_secs().min(86_400) as _,
        tv_nsec: t.subsec_nanos() as libc::c_long,
    });
    let timeout_ptr = timespec
        .as_ref()
        .map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: `entries` is a live array of `entries.len()` pollfd structures the kernel may
    // update; `timeout_ptr` is null or points to a live timespec; no signal mask change.
    let result = unsafe {
        libc::ppoll(
            entries.as_mut_ptr(),
            entries.len() as libc::nfds_t,
            timeout_ptr,
            std::ptr::null(),
        )
    };
    if result < 0 {
        let error = io::Error::last_os_error();
        if error.kind() == io::ErrorKind::Interrupted {
            return Ok(vec![false; fds.len()]);
        }
        return Err(error);
    }
    Ok(entries.iter().map(|e| e.revents != 0).collect())
}

/// Blocks SIGINT, SIGTERM and SIGHUP in this thread (and the threads it starts from now on)
/// and returns a signalfd that becomes readable when one arrives: the runner's loops poll it
/// to stop cleanly (drivers quiesced, NBD disconnected, TAP closed) instead of dying mid-DMA.
pub fn termination_signals() -> io::Result<File> {
    // SAFETY: `sigset_t` is plain data; sigemptyset initializes it before any use.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a live sigset_t; these calls only write it.
    unsafe {
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGHUP);
    }
    // SAFETY: `set` is initialized; the old mask is not asked for.
    let error = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if error != 0 {
        return Err(io::Error::from_raw_os_error(error));
    }
    // SAFETY: creates a new descriptor from an initialized set.
    let fd = owned(unsafe { libc::signalfd(-1, &set, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK) })?;
    Ok(File::from(fd))
}

/// Raises `RLIMIT_MEMLOCK` (what pinned DMA memory counts against) to unlimited if allowed,
/// else the soft limit to the hard one. Returns the soft limit now in force (`None`:
/// unlimited).
pub fn raise_memlock_limit() -> io::Result<Option<u64>> {
    let unlimited = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: reads a live rlimit structure.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) } == 0 {
        return Ok(None);
    }
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: writes a live rlimit structure.
    check(unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut limit) })?;
    limit.rlim_cur = limit.rlim_max;
    // SAFETY: reads a live rlimit structure.
    check(unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &limit) })?;
    Ok((limit.rlim_cur != libc::RLIM_INFINITY).then_some(limit.rlim_cur))
}

/// `struct ifreq` (40 bytes on 64-bit Linux): an interface name and a union, of which the TAP
/// code uses the flags (`short` at 0) and the hardware address (`struct sockaddr` at 0).
#[repr(C, align(8))]
struct InterfaceRequest {
    name: [u8; libc::IFNAMSIZ],
    data: [u8; 24],
}

impl InterfaceRequest {
    fn new(name: &str) -> io::Result<InterfaceRequest> {
        let bytes = name.as_bytes();
        if bytes.is_empty() || bytes.len() >= libc::IFNAMSIZ || bytes.contains(&0) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "'{name}' is not an interface name (1 to {} bytes)",
                    libc::IFNAMSIZ - 1
                ),
            ));
        }
        let mut request = InterfaceRequest {
            name: [0; libc::IFNAMSIZ],
            data: [0; 24],
        };
        request.name[..bytes.len()].copy_from_slice(bytes);
        Ok(request)
    }

    fn name(&self) -> String {
        let end = self
            .name
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(self.name.len());
        String::from_utf8_lossy(&self.name[..end]).into_owned()
    }

    fn flags(&self) -> i16 {
        i16::from_ne_bytes([self.data[0], self.data[1]])
    }

    fn set_flags(&mut self, flags: i16) {
        self.data[..2].copy_from_slice(&flags.to_ne_bytes());
    }
}

const TUNSETIFF: u32 = 0x4004_54ca;
const TUNSETCARRIER: u32 = 0x4004_54e2;
const IFF_TAP: i16 = 0x0002;
const IFF_NO_PI: i16 = 0x1000;
const SIOCGIFFLAGS: u32 = 0x8913;
const SIOCSIFFLAGS: u32 = 0x8914;
const SIOCSIFHWADDR: u32 = 0x8924;
const ARPHRD_ETHER: u16 = 1;

/// A TAP interface: Ethernet frames in and out of Linux's network stack through a file.
pub struct Tap {
    file: File,
    name: String,
}

impl Tap {
    /// Creates (or attaches to) TAP interface `name`, non-blocking, without packet headers.
    pub fn open(name: &str) -> io::Result<Tap> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open("/dev/net/tun")?;
        let mut request = InterfaceRequest::new(name)?;
        request.set_flags(IFF_TAP | IFF_NO_PI);
        // SAFETY: TUNSETIFF on the tun device reads and writes one `struct ifreq`, which
        // `InterfaceRequest` is (same size and layout; the kernel writes only a name).
        unsafe { ioctl_pointer(file.as_fd(), TUNSETIFF, &mut request)? };
        Ok(Tap {
            file,
            name: request.name(),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn file(&self) -> &File {
        &self.file
    }

    /// Sets the interface's MAC address (the one the driver's `init` reported).
    pub fn set_mac(&self, mac: [u8; 6]) -> io::Result<()> {
        let mut request = InterfaceRequest::new(&self.name)?;
        request.data[..2].copy_from_slice(&ARPHRD_ETHER.to_ne_bytes());
        request.data[2..8].copy_from_slice(&mac);
        let socket = control_socket()?;
        // SAFETY: SIOCSIFHWADDR on an inet socket reads one `struct ifreq`.
        unsafe { ioctl_pointer(socket.as_fd(), SIOCSIFHWADDR, &mut request) }
    }

    /// Brings the interface up (`ip link set NAME up`).
    pub fn set_up(&self) -> io::Result<()> {
        let mut request = InterfaceRequest::new(&self.name)?;
        let socket = control_socket()?;
        // SAFETY: SIOCGIFFLAGS on an inet socket reads and writes one `struct ifreq`.
        unsafe { ioctl_pointer(socket.as_fd(), SIOCGIFFLAGS, &mut request)? };
        request.set_flags(request.flags() | libc::IFF_UP as i16);
        // SAFETY: SIOCSIFFLAGS on an inet socket reads one `struct ifreq`.
        unsafe { ioctl_pointer(socket.as_fd(), SIOCSIFFLAGS, &mut request) }
    }

    /// Tells Linux whether the cable is in (the driver's link state), so that the interface
    /// shows `NO-CARRIER` while the device has no link.
    pub fn set_carrier(&self, up: bool) -> io::Result<()> {
        let mut value: libc::c_uint = up.into();
        // SAFETY: TUNSETCARRIER on a tun file reads one `unsigned int`.
        unsafe { ioctl_pointer(self.file.as_fd(), TUNSETCARRIER, &mut value) }
    }
}

/// A datagram socket for interface ioctls.
fn control_socket() -> io::Result<OwnedFd> {
    // SAFETY: creates a new descriptor; no memory is passed.
    owned(unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) })
}

/// The block major number of Linux's network block device.
const NBD_MAJOR: u64 = 43;

/// `ioctl`s of `linux/nbd.h` (`_IO(0xab, n)`): all take an integer or nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NbdControl {
    /// The kernel's end of the connection.
    SetSocket(libc::c_int),
    SetBlockSize(u64),
    SetSizeBlocks(u64),
    SetFlags(u64),
    /// Seconds before a request times out.
    SetTimeout(u64),
    /// Runs the device until it is disconnected (blocks: call it from a thread of its own).
    DoIt,
    ClearSocket,
    ClearQueue,
    Disconnect,
}

impl NbdControl {
    fn request(self) -> (u32, libc::c_ulong) {
        let (number, value) = match self {
            NbdControl::SetSocket(fd) => (0, fd as libc::c_ulong),
            NbdControl::SetBlockSize(size) => (1, size as libc::c_ulong),
            NbdControl::DoIt => (3, 0),
            NbdControl::ClearSocket => (4, 0),
            NbdControl::ClearQueue => (5, 0),
            NbdControl::SetSizeBlocks(blocks) => (7, blocks as libc::c_ulong),
            NbdControl::Disconnect => (8, 0),
            NbdControl::SetTimeout(seconds) => (9, seconds as libc::c_ulong),
            NbdControl::SetFlags(flags) => (10, flags as libc::c_ulong),
        };
        (0xab00 | number, value)
    }
}

/// An opened `/dev/nbdN` (checked to be one: a block device of major 43).
pub struct NbdDevice {
    file: File,
}

impl NbdDevice {
    pub fn open(path: &Path) -> io::Result<NbdDevice> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(path)?;
        let metadata = file.metadata()?;
        let rdev = metadata.rdev();
        let major = ((rdev >> 8) & 0xfff) | ((rdev >> 32) & !0xfff);
        if !metadata.file_type().is_block_device() || major != NBD_MAJOR {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} is not a network block device", path.display()),
            ));
        }
        Ok(NbdDevice { file })
    }

    pub fn control(&self, control: NbdControl) -> io::Result<()> {
        let (request, value) = control.request();
        // SAFETY: the file is an NBD device (checked in `open`), and every `NbdControl`
        // request takes an integer argument.
        unsafe { ioctl_value(self.file.as_fd(), request, value) }.map(drop)
    }
}

/// `fd` as a raw descriptor number, for `NbdControl::SetSocket`.
pub fn raw(fd: BorrowedFd<'_>) -> libc::c_int {
    fd.as_raw_fd()
}
