//! The registry: the access method and the functions the enumeration found, for the shell and
//! the driver host.

use crate::access::{Address, ConfigAccess, PciError, Width, check_access};
use crate::enumerate::{Function, enumerate};
use alloc::boxed::Box;
use alloc::vec::Vec;

// In the kernel the lock keeps interrupts off (the driver host may reach configuration space
// from any task); host tests have no interrupts to mask.
#[cfg(target_os = "none")]
type Lock<T> = keel_sync::IrqSafeMutex<T>;
#[cfg(not(target_os = "none"))]
type Lock<T> = spin::Mutex<T>;

struct Registry {
    access: Box<dyn ConfigAccess>,
    functions: Vec<Function>,
}

static REGISTRY: Lock<Option<Registry>> = Lock::new(None);

/// Enumerates everything reachable from `roots` (segment, bus) through `access` and keeps the
/// result and the access method, replacing any earlier registry. Returns how many functions
/// were found.
pub fn install(mut access: Box<dyn ConfigAccess>, roots: &[(u16, u8)]) -> usize {
    let functions = enumerate(access.as_mut(), roots);
    let count = functions.len();
    *REGISTRY.lock() = Some(Registry { access, functions });
    count
}

/// Every function found, sorted by address.
pub fn functions() -> Vec<Function> {
    REGISTRY
        .lock()
        .as_ref()
        .map(|r| r.functions.clone())
        .unwrap_or_default()
}

/// The function at `address`, if the enumeration found one there.
pub fn function(address: Address) -> Option<Function> {
    REGISTRY
        .lock()
        .as_ref()?
        .functions
        .iter()
        .find(|f| f.address == address)
        .cloned()
}

/// The name of the configuration access method in use.
pub fn mechanism() -> Option<&'static str> {
    REGISTRY.lock().as_ref().map(|r| r.access.name())
}

fn with_function<R>(
    address: Address,
    f: impl FnOnce(&mut dyn ConfigAccess) -> Result<R, PciError>,
) -> Result<R, PciError> {
    let mut guard = REGISTRY.lock();
    let registry = guard.as_mut().ok_or(PciError::NotInitialized)?;
    if !registry.functions.iter().any(|f| f.address == address) {
        return Err(PciError::NoSuchFunction);
    }
    f(registry.access.as_mut())
}

/// Bytes of configuration space of the function at `address`: 4096 with ECAM, 256 with the
/// legacy ports.
pub fn config_space_size(address: Address) -> Result<u16, PciError> {
    with_function(address, |access| Ok(access.space_size()))
}

/// Reads a `width` register at `offset` of a function the enumeration found.
pub fn config_read(address: Address, offset: u16, width: Width) -> Result<u32, PciError> {
    with_function(address, |access| {
        check_access(offset, width, access.space_size())?;
        Ok(access.read(address, offset, width))
    })
}

/// Writes a `width` register at `offset` of a function the enumeration found (the low bytes of
/// `value`). Enumeration results are not updated: a driver that moves a BAR knows where it is.
pub fn config_write(
    address: Address,
    offset: u16,
    width: Width,
    value: u32,
) -> Result<(), PciError> {
    with_function(address, |access| {
        check_access(offset, width, access.space_size())?;
        access.write(address, offset, width, width.truncate(value));
        Ok(())
    })
}
