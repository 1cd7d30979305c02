//! Stopping a killed task that is running compiled Wasm code, without epoch checks in it.
//!
//! Wasmtime's epoch interruption puts a check at every function entry and loop header, and its
//! slow path (a call) makes loop-carried values live across calls: measured, it more than
//! doubles the instructions of a sort loop. Keel has no need of it: a task running Wasm is
//! preempted by the timer like any other. When such a task has been asked to die and a tick
//! finds it inside a compiled Wasm function, the tick hands Wasmtime a trap there, through the
//! same path a CPU fault in Wasm code takes ([`crate::traps::stop_for_kill`]): Wasmtime unwinds
//! the Wasm frames to the store's entry and the host, seeing the trap and the kill request,
//! reports the kill.
//!
//! Wasmtime attributes a trap by its program counter, which must be one of the trap sites it
//! recorded for the code object. [`KillableCode`] finds one from the artifact's
//! `.wasmtime.traps` section; the trap reported is that site's (the host reports a kill, not
//! the trap). Only function bodies count as interruptible: in Wasmtime's trampolines the
//! store's entry state may not be complete yet.
//!
//! The kill request stays set until the task ends: a task must not run the same guest again
//! after it was stopped this way (programs and drivers end).

use alloc::vec::Vec;
use core::ops::Range;
use core::sync::atomic::{AtomicU64, Ordering};

use keel_sync::IrqSafeMutex;

/// One registered code object.
struct Entry {
    id: u64,
    /// Absolute address ranges of the compiled Wasm function bodies, sorted.
    bodies: Vec<Range<usize>>,
    /// An absolute address Wasmtime knows as a trap site of this code object.
    trap_site: usize,
}

static REGISTRY: IrqSafeMutex<Vec<Entry>> = IrqSafeMutex::new(Vec::new());
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// A loaded module's or component's code, registered as stoppable for as long as this value
/// lives: keep it beside the `Module` or `Component` it describes.
#[derive(Debug)]
pub struct KillableCode {
    id: u64,
}

impl KillableCode {
    /// Registers the code of a deserialized module or component: `artifact` is the bytes it was
    /// deserialized from, `text` its loaded `.text` (`Module::text`, `Component::text`) and
    /// `functions` its Wasm function bodies as (offset in `text`, length).
    pub fn register(
        artifact: &[u8],
        text: &[u8],
        functions: impl Iterator<Item = (usize, usize)>,
    ) -> Result<KillableCode, &'static str> {
        let offset = first_trap_site(artifact)?;
        if offset >= text.len() {
            return Err("the trap site lies outside the code");
        }
        let base = text.as_ptr() as usize;
        let mut bodies: Vec<Range<usize>> = functions
            .filter(|&(start, len)| len > 0 && start.saturating_add(len) <= text.len())
            .map(|(start, len)| base + start..base + start + len)
            .collect();
        bodies.sort_by_key(|r| r.start);
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        REGISTRY.lock().push(Entry {
            id,
            bodies,
            trap_site: base + offset,
        });
        Ok(KillableCode { id })
    }
}

impl Drop for KillableCode {
    fn drop(&mut self) {
        REGISTRY.lock().retain(|entry| entry.id != self.id);
    }
}

/// The trap site to report for a task stopped at `pc`, if `pc` is inside a registered Wasm
/// function body.
pub fn trap_site_for(pc: usize) -> Option<usize> {
    let registry = REGISTRY.lock();
    registry.iter().find_map(|entry| {
        let after = entry.bodies.partition_point(|r| r.start <= pc);
        let body = entry.bodies.get(after.checked_sub(1)?)?;
        body.contains(&pc).then_some(entry.trap_site)
    })
}

/// The text offset of the first trap Wasmtime recorded in an artifact. Nearly every compiled
/// function has one (its stack-overflow check; only frameless leaf functions skip it): code
/// with none at all is refused, as the kill could not stop it.
fn first_trap_site(artifact: &[u8]) -> Result<usize, &'static str> {
    use object::{Object, ObjectSection};
    let file = object::File::parse(artifact).map_err(|_| "not an ELF artifact")?;
    let section = file
        .section_by_name(".wasmtime.traps")
        .ok_or("no .wasmtime.traps section")?;
    let data = section.data().map_err(|_| "unreadable trap section")?;
    let (offset, _) = wasmtime_environ::iterate_traps(data)
        .ok_or("malformed trap section")?
        .next()
        .ok_or("no trap site in the code")?;
    Ok(offset as usize)
}
