//! A WASI preview1 host: the calls wasi-libc programs make. Console I/O, arguments and
//! environment, clocks, randomness and exit are implemented; calls that need a file system answer
//! `ENOSYS` until one exists; anything else a module imports from `wasi_snapshot_preview1` also
//! answers `ENOSYS`.

use crate::Program;
use alloc::collections::BTreeSet;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt;
use keel_vfs::{FdTable, Vfs};
use rand_chacha::ChaCha20Rng;
use rand_chacha::rand_core::{Rng, SeedableRng};
use wasmtime::{
    Caller, Engine, Extern, InstancePre, IntoFunc, Linker, Memory, Module, ResourceLimiter, Store,
    StoreLimits, StoreLimitsBuilder, Trap, Val, WasmBacktrace,
};

const MODULE: &str = "wasi_snapshot_preview1";

pub(crate) mod errno {
    pub const SUCCESS: i32 = 0;
    pub const BADF: i32 = 8;
    pub const FAULT: i32 = 21;
    pub const INTR: i32 = 27;
    pub const INVAL: i32 = 28;
    pub const NOSYS: i32 = 52;
    pub const SPIPE: i32 = 70;
}

/// Per-program state, owned by its store.
pub struct Ctx {
    pub(crate) vfs: Arc<Vfs>,
    pub(crate) fds: FdTable,
    stdin: StdinReader,
    stdin_ready: StdinReady,
    args: Vec<String>,
    env: Vec<String>,
    limits: MemoryAccounting,
    random: ChaCha20Rng,
    pub(crate) sockets: crate::wasi_sock::Sockets,
}

/// Enforces the program's memory limit and reports its linear memory size to the task list.
struct MemoryAccounting {
    limits: StoreLimits,
}

impl ResourceLimiter for MemoryAccounting {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let allowed = self.limits.memory_growing(current, desired, maximum)?;
        if allowed {
            keel_task::report_memory_use(desired as u64);
        }
        Ok(allowed)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.limits.table_growing(current, desired, maximum)
    }
}

/// Fills the buffer with console input (blocking); 0 means end of input.
pub type StdinReader = fn(&mut [u8]) -> usize;

/// Whether a read of standard input would return without waiting.
pub type StdinReady = fn() -> bool;

/// `proc_exit` unwinds the program with this value.
#[derive(Debug)]
struct Exit(i32);

impl fmt::Display for Exit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "exit({})", self.0)
    }
}

impl core::error::Error for Exit {}

/// How a program ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExitStatus {
    Exited(i32),
    /// It trapped: the trap's name and the Wasm backtrace, innermost frame first.
    Trapped {
        trap: String,
        backtrace: Vec<String>,
    },
    Killed,
}

#[derive(Debug, Clone)]
pub enum RunError {
    Instantiate(String),
    NoStart,
}

impl fmt::Display for RunError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RunError::Instantiate(why) => write!(f, "cannot start: {why}"),
            RunError::NoStart => f.write_str("not a command module (no `_start` export)"),
        }
    }
}

fn memory(caller: &mut Caller<'_, Ctx>) -> Option<Memory> {
    match caller.get_export("memory") {
        Some(Extern::Memory(m)) => Some(m),
        _ => None,
    }
}

/// Reads `len` bytes at `ptr` of the caller's memory, or `None` if out of bounds.
pub(crate) fn read_bytes(caller: &mut Caller<'_, Ctx>, ptr: u32, len: u32) -> Option<Vec<u8>> {
    let mem = memory(caller)?;
    let data = mem.data(&caller);
    let start = ptr as usize;
    data.get(start..start.checked_add(len as usize)?)
        .map(|s| s.to_vec())
}

pub(crate) fn write_bytes(caller: &mut Caller<'_, Ctx>, ptr: u32, bytes: &[u8]) -> bool {
    let Some(mem) = memory(caller) else {
        return false;
    };
    let data = mem.data_mut(caller);
    let start = ptr as usize;
    match start
        .checked_add(bytes.len())
        .and_then(|end| data.get_mut(start..end))
    {
        Some(dest) => {
            dest.copy_from_slice(bytes);
            true
        }
        None => false,
    }
}

pub(crate) fn write_u32(caller: &mut Caller<'_, Ctx>, ptr: u32, value: u32) -> bool {
    write_bytes(caller, ptr, &value.to_le_bytes())
}

pub(crate) fn write_u64(caller: &mut Caller<'_, Ctx>, ptr: u32, value: u64) -> bool {
    write_bytes(caller, ptr, &value.to_le_bytes())
}

fn fd_read(mut caller: Caller<'_, Ctx>, fd: i32, iovs: i32, iovs_len: i32, nread: i32) -> i32 {
    if caller.data().sockets.is_socket(fd) {
        let result = crate::wasi_sock::read(&mut caller, fd, iovs, iovs_len);
        return match result {
            Ok(n) if write_u32(&mut caller, nread as u32, n) => errno::SUCCESS,
            Ok(_) => errno::FAULT,
            Err(e) => e,
        };
    }
    if fd != 0 {
        let result = crate::wasi_fs::file_read(&mut caller, fd, iovs, iovs_len, None);
        return crate::wasi_fs::reply_count(&mut caller, nread, result);
    }
    let Some(table) = read_bytes(
        &mut caller,
        iovs as u32,
        (iovs_len as u32).saturating_mul(8),
    ) else {
        return errno::FAULT;
    };
    // One read fills at most the first non-empty buffer, as a terminal read returns one line.
    let mut count = 0;
    for iov in table.chunks_exact(8) {
        let buf = u32::from_le_bytes([iov[0], iov[1], iov[2], iov[3]]);
        let len = u32::from_le_bytes([iov[4], iov[5], iov[6], iov[7]]).min(64 * 1024);
        if len == 0 {
            continue;
        }
        let mut bytes = alloc::vec![0u8; len as usize];
        count = (caller.data().stdin)(&mut bytes);
        if !write_bytes(&mut caller, buf, &bytes[..count]) {
            return errno::FAULT;
        }
        break;
    }
    if write_u32(&mut caller, nread as u32, count as u32) {
        errno::SUCCESS
    } else {
        errno::FAULT
    }
}

/// Subscriptions and events of `poll_oneoff`, per the WASI preview1 layouts.
const SUBSCRIPTION_SIZE: u32 = 48;
const EVENT_SIZE: usize = 32;

enum Subscription {
    Clock { userdata: u64, deadline: u64 },
    Read { userdata: u64, fd: i32 },
    Write { userdata: u64, fd: i32 },
}

fn parse_subscription(raw: &[u8], now: u64, wall_now: u64) -> Result<Subscription, i32> {
    let u64_at = |o: usize| u64::from_le_bytes(raw[o..o + 8].try_into().unwrap_or([0; 8]));
    let u32_at = |o: usize| u32::from_le_bytes(raw[o..o + 4].try_into().unwrap_or([0; 4]));
    let userdata = u64_at(0);
    match raw[8] {
        0 => {
            let clock = u32_at(16);
            let timeout = u64_at(24);
            let absolute = u16::from_le_bytes([raw[40], raw[41]]) & 1 != 0;
            let deadline = match (clock, absolute) {
                (_, false) => now.saturating_add(timeout),
                (0, true) => now.saturating_add(timeout.saturating_sub(wall_now)),
                (1..=3, true) => timeout,
                _ => return Err(errno::INVAL),
            };
            Ok(Subscription::Clock { userdata, deadline })
        }
        1 => Ok(Subscription::Read {
            userdata,
            fd: u32_at(16) as i32,
        }),
        2 => Ok(Subscription::Write {
            userdata,
            fd: u32_at(16) as i32,
        }),
        _ => Err(errno::INVAL),
    }
}

fn event(userdata: u64, kind: u8, error: i32) -> [u8; EVENT_SIZE] {
    let mut e = [0u8; EVENT_SIZE];
    e[0..8].copy_from_slice(&userdata.to_le_bytes());
    e[8..10].copy_from_slice(&(error as u16).to_le_bytes());
    e[10] = kind;
    e
}

/// `poll_oneoff`: waits until a clock expires or a descriptor is ready. Files and output are
/// always ready; standard input is ready when a line is waiting.
/// `poll_oneoff`, which a kill ends with a trap: a program waiting (sleeping) when it is killed
/// must not take the early return for the end of its sleep.
fn poll_oneoff(
    c: Caller<'_, Ctx>,
    subs: i32,
    events: i32,
    count: i32,
    nevents: i32,
) -> wasmtime::Result<i32> {
    let result = wait_for_events(c, subs, events, count, nevents);
    if keel_task::kill_requested() {
        return Err(Trap::Interrupt.into());
    }
    Ok(result)
}

fn wait_for_events(
    mut c: Caller<'_, Ctx>,
    subs: i32,
    events: i32,
    count: i32,
    nevents: i32,
) -> i32 {
    if count <= 0 {
        return errno::INVAL;
    }
    let Some(raw) = read_bytes(
        &mut c,
        subs as u32,
        (count as u32).saturating_mul(SUBSCRIPTION_SIZE),
    ) else {
        return errno::FAULT;
    };
    let now = keel_time::now_ns();
    let wall = keel_time::wall_clock_ns();
    let mut parsed = Vec::new();
    for chunk in raw.chunks_exact(SUBSCRIPTION_SIZE as usize) {
        match parse_subscription(chunk, now, wall) {
            Ok(s) => parsed.push(s),
            Err(e) => return e,
        }
    }
    loop {
        let now = keel_time::now_ns();
        let seen = c.data().sockets.activity();
        let mut ready: Vec<[u8; EVENT_SIZE]> = Vec::new();
        for sub in &parsed {
            match *sub {
                Subscription::Clock { userdata, deadline } if now >= deadline => {
                    ready.push(event(userdata, 0, errno::SUCCESS));
                }
                Subscription::Read { userdata, fd } if c.data().sockets.is_socket(fd) => {
                    if c.data().sockets.readable(fd) {
                        ready.push(event(userdata, 1, errno::SUCCESS));
                    }
                }
                Subscription::Write { userdata, fd } if c.data().sockets.is_socket(fd) => {
                    if c.data().sockets.writable(fd) {
                        ready.push(event(userdata, 2, errno::SUCCESS));
                    }
                }
                Subscription::Read { userdata, fd } => {
                    if fd != 0 || (c.data().stdin_ready)() {
                        let known = fd == 0 || c.data().fds.get(fd as u32).is_ok();
                        let error = if known { errno::SUCCESS } else { errno::BADF };
                        ready.push(event(userdata, 1, error));
                    }
                }
                Subscription::Write { userdata, fd } => {
                    let known = fd == 1 || fd == 2 || c.data().fds.get(fd as u32).is_ok();
                    let error = if known { errno::SUCCESS } else { errno::BADF };
                    ready.push(event(userdata, 2, error));
                }
                Subscription::Clock { .. } => {}
            }
        }
        if !ready.is_empty() {
            let bytes: Vec<u8> = ready.iter().flatten().copied().collect();
            let ok = write_bytes(&mut c, events as u32, &bytes)
                && write_u32(&mut c, nevents as u32, ready.len() as u32);
            return if ok { errno::SUCCESS } else { errno::FAULT };
        }
        if keel_task::kill_requested() {
            // The call returns a trap for the kill (`poll_oneoff`).
            return if write_u32(&mut c, nevents as u32, 0) {
                errno::SUCCESS
            } else {
                errno::FAULT
            };
        }
        let next_deadline = parsed
            .iter()
            .filter_map(|s| match s {
                Subscription::Clock { deadline, .. } => Some(*deadline),
                _ => None,
            })
            .min()
            .unwrap_or(u64::MAX);
        // Sleep until the earliest deadline, but look at standard input every 10 ms, and at
        // sockets whenever the network moved.
        let wait = next_deadline
            .saturating_sub(now)
            .clamp(1_000_000, 10_000_000);
        let watches_sockets = parsed.iter().any(|s| match *s {
            Subscription::Read { fd, .. } | Subscription::Write { fd, .. } => {
                c.data().sockets.is_socket(fd)
            }
            Subscription::Clock { .. } => false,
        });
        if watches_sockets {
            c.data()
                .sockets
                .wait_activity(seen, core::time::Duration::from_nanos(wait));
        } else {
            keel_task::sleep(core::time::Duration::from_nanos(wait));
        }
    }
}

fn fd_write(mut caller: Caller<'_, Ctx>, fd: i32, iovs: i32, iovs_len: i32, nwritten: i32) -> i32 {
    if caller.data().sockets.is_socket(fd) {
        let result = crate::wasi_sock::write(&mut caller, fd, iovs, iovs_len);
        return match result {
            Ok(n) if write_u32(&mut caller, nwritten as u32, n) => errno::SUCCESS,
            Ok(_) => errno::FAULT,
            Err(e) => e,
        };
    }
    if fd != 1 && fd != 2 {
        let result = crate::wasi_fs::file_write(&mut caller, fd, iovs, iovs_len, None);
        return crate::wasi_fs::reply_count(&mut caller, nwritten, result);
    }
    let Some(table) = read_bytes(
        &mut caller,
        iovs as u32,
        (iovs_len as u32).saturating_mul(8),
    ) else {
        return errno::FAULT;
    };
    let mut total = 0u32;
    for iov in table.chunks_exact(8) {
        let buf = u32::from_le_bytes([iov[0], iov[1], iov[2], iov[3]]);
        let len = u32::from_le_bytes([iov[4], iov[5], iov[6], iov[7]]);
        let Some(bytes) = read_bytes(&mut caller, buf, len) else {
            return errno::FAULT;
        };
        keel_console::write_text(&bytes);
        total = total.saturating_add(len);
    }
    if write_u32(&mut caller, nwritten as u32, total) {
        errno::SUCCESS
    } else {
        errno::FAULT
    }
}

/// Lays out NUL-terminated strings for `args_get`/`environ_get`.
fn put_strings(caller: &mut Caller<'_, Ctx>, strings: &[String], ptrs: u32, buf: u32) -> i32 {
    let mut offset = 0u32;
    for (i, s) in strings.iter().enumerate() {
        let mut bytes = s.as_bytes().to_vec();
        bytes.push(0);
        if !write_u32(caller, ptrs + 4 * i as u32, buf + offset)
            || !write_bytes(caller, buf + offset, &bytes)
        {
            return errno::FAULT;
        }
        offset += bytes.len() as u32;
    }
    errno::SUCCESS
}

fn put_sizes(caller: &mut Caller<'_, Ctx>, strings: &[String], count: u32, size: u32) -> i32 {
    let total: usize = strings.iter().map(|s| s.len() + 1).sum();
    if write_u32(caller, count, strings.len() as u32) && write_u32(caller, size, total as u32) {
        errno::SUCCESS
    } else {
        errno::FAULT
    }
}

/// A ChaCha20 generator for one program, keyed from the CPU's hardware random source (RDSEED,
/// else RDRAND). Without either, the key mixes time-stamp-counter jitter, which is weaker, and
/// the boot log says so.
fn program_rng() -> ChaCha20Rng {
    let mut seed = [0u8; 32];
    for chunk in seed.chunks_exact_mut(8) {
        let word = keel_arch::cpu::hardware_random().unwrap_or_else(|| {
            let mut mix = 0u64;
            for _ in 0..64 {
                mix = mix.rotate_left(7) ^ keel_arch::cpu::read_tsc();
            }
            mix
        });
        chunk.copy_from_slice(&word.to_le_bytes());
    }
    ChaCha20Rng::from_seed(seed)
}

fn add_wasi(host: &mut HostFunctions) -> wasmtime::Result<()> {
    host.wrap("fd_write", fd_write)?;
    host.wrap("fd_read", fd_read)?;
    host.wrap("poll_oneoff", poll_oneoff)?;
    // Arguments and environment share their layout: a count and size call, and a fill call.
    type Strings = fn(&Ctx) -> &[String];
    let lists: [(&str, &str, Strings); 2] = [
        ("args_sizes_get", "args_get", |ctx| &ctx.args),
        ("environ_sizes_get", "environ_get", |ctx| &ctx.env),
    ];
    for (sizes_name, get_name, list) in lists {
        host.wrap(
            sizes_name,
            move |mut c: Caller<'_, Ctx>, count: i32, size: i32| {
                let strings = list(c.data()).to_vec();
                put_sizes(&mut c, &strings, count as u32, size as u32)
            },
        )?;
        host.wrap(
            get_name,
            move |mut c: Caller<'_, Ctx>, ptrs: i32, buf: i32| {
                let strings = list(c.data()).to_vec();
                put_strings(&mut c, &strings, ptrs as u32, buf as u32)
            },
        )?;
    }
    host.wrap(
        "proc_exit",
        |_c: Caller<'_, Ctx>, code: i32| -> wasmtime::Result<()> {
            Err(wasmtime::Error::new(Exit(code)))
        },
    )?;
    host.wrap(
        "clock_time_get",
        |mut c: Caller<'_, Ctx>, id: i32, _precision: i64, out: i32| {
            // 0: realtime; 1: monotonic; 2, 3: process and thread CPU time (approximated by
            // the monotonic clock).
            let now = match id {
                0 => keel_time::wall_clock_ns(),
                1..=3 => keel_time::now_ns(),
                _ => return errno::INVAL,
            };
            if write_u64(&mut c, out as u32, now) {
                errno::SUCCESS
            } else {
                errno::FAULT
            }
        },
    )?;
    host.wrap(
        "clock_res_get",
        |mut c: Caller<'_, Ctx>, id: i32, out: i32| {
            if !(0..=3).contains(&id) {
                return errno::INVAL;
            }
            if write_u64(&mut c, out as u32, 1) {
                errno::SUCCESS
            } else {
                errno::FAULT
            }
        },
    )?;
    host.wrap(
        "random_get",
        |mut c: Caller<'_, Ctx>, buf: i32, len: i32| {
            let mut bytes = alloc::vec![0u8; len.max(0) as usize];
            c.data_mut().random.fill_bytes(&mut bytes);
            if write_bytes(&mut c, buf as u32, &bytes) {
                errno::SUCCESS
            } else {
                errno::FAULT
            }
        },
    )?;
    host.wrap("sched_yield", |_c: Caller<'_, Ctx>| {
        keel_task::yield_now();
        errno::SUCCESS
    })?;
    Ok(())
}

/// The WASI host: a [`Linker`] with every call Keel implements, and their names.
struct WasiLinker {
    linker: Linker<Ctx>,
    defined: BTreeSet<&'static str>,
}

/// Where the WASI calls are defined; records each name, so that the calls a module imports
/// and Keel lacks are known without a second list.
pub(crate) struct HostFunctions<'a> {
    linker: &'a mut Linker<Ctx>,
    defined: &'a mut BTreeSet<&'static str>,
}

impl HostFunctions<'_> {
    pub(crate) fn wrap<Params, Args>(
        &mut self,
        name: &'static str,
        func: impl IntoFunc<Ctx, Params, Args>,
    ) -> wasmtime::Result<()> {
        self.linker.func_wrap(MODULE, name, func)?;
        self.defined.insert(name);
        Ok(())
    }
}

/// The WASI linker of the (one) engine, built on first use.
static WASI_LINKER: spin::Once<WasiLinker> = spin::Once::new();

fn wasi_linker(engine: &Engine) -> wasmtime::Result<&'static WasiLinker> {
    WASI_LINKER.try_call_once(|| {
        let mut linker = Linker::new(engine);
        let mut defined = BTreeSet::new();
        let mut host = HostFunctions {
            linker: &mut linker,
            defined: &mut defined,
        };
        add_wasi(&mut host)?;
        crate::wasi_fs::add(&mut host)?;
        crate::wasi_sock::add(&mut host)?;
        Ok(WasiLinker { linker, defined })
    })
}

/// Resolves `module`'s imports against the WASI host once, for all its runs: calls Keel does
/// not implement answer `ENOSYS`; an import from outside `wasi_snapshot_preview1` is an error.
pub(crate) fn prepare(module: &Module) -> wasmtime::Result<InstancePre<Ctx>> {
    let wasi = wasi_linker(module.engine())?;
    let mut linker = wasi.linker.clone();
    for import in module.imports() {
        if import.module() != MODULE || wasi.defined.contains(import.name()) {
            continue;
        }
        if let wasmtime::ExternType::Func(ty) = import.ty() {
            let returns_errno = ty.results().len() == 1;
            linker.func_new(MODULE, import.name(), ty, move |_c, _params, results| {
                if returns_errno && let Some(r) = results.first_mut() {
                    *r = Val::I32(errno::NOSYS);
                }
                Ok(())
            })?;
        }
    }
    linker.instantiate_pre(module)
}

/// Memory a program may use at most.
pub const MEMORY_LIMIT: usize = 64 << 20;

/// Runs `program`'s `_start` with `args` (args[0] is the program name) on the current task.
/// The directories a program may use: each becomes a preopened directory handle (fd 3, 4, ...).
pub struct Directories {
    pub vfs: Arc<Vfs>,
    pub preopens: Vec<String>,
    /// TCP ports to give the program as listening sockets (`LISTEN_FD` names the first).
    pub listen: Vec<u16>,
    /// Established outgoing TCP connections to give the program (`CONNECT_FD` names the
    /// first); they close with it.
    pub connected: Vec<keel_net::SocketHandle>,
    pub network: Option<crate::wasi_sock::NetworkAccess>,
}

pub fn run(
    program: &Program,
    args: Vec<String>,
    stdin: (StdinReader, StdinReady),
    directories: Directories,
) -> Result<ExitStatus, RunError> {
    let engine = program.module.engine();
    // Sockets first: they take over the connections, which close with them on any error below.
    let (sockets, listen_fds, connected_fds) = crate::wasi_sock::Sockets::open(
        directories.network,
        &directories.listen,
        &directories.connected,
    )
    .map_err(RunError::Instantiate)?;
    let mut fds = FdTable::new();
    for path in &directories.preopens {
        let dir = directories
            .vfs
            .preopen(path)
            .map_err(|e| RunError::Instantiate(format!("cannot give {path}: {e}")))?;
        fds.insert(dir)
            .map_err(|e| RunError::Instantiate(format!("{e}")))?;
    }
    let mut env = alloc::vec![String::from("TERM=vt100"), String::from("HOME=/")];
    if let Some(fd) = listen_fds.first() {
        env.push(format!("LISTEN_FD={fd}"));
    }
    if let Some(fd) = connected_fds.first() {
        env.push(format!("CONNECT_FD={fd}"));
    }
    let ctx = Ctx {
        vfs: directories.vfs,
        fds,
        stdin: stdin.0,
        stdin_ready: stdin.1,
        args,
        env,
        limits: MemoryAccounting {
            limits: StoreLimitsBuilder::new().memory_size(MEMORY_LIMIT).build(),
        },
        random: program_rng(),
        sockets,
    };
    let mut store = Store::new(engine, ctx);
    store.limiter(|ctx| &mut ctx.limits);
    // A killed program is stopped in its own code by the timer tick
    // (keel_wasm_platform::kill); host calls that would block return at once instead. (A call
    // hook that trapped on the way back from every host call cost about 0.4 µs per call.)
    let instance = match program.instance_pre.instantiate(&mut store) {
        Ok(instance) => instance,
        Err(_) if keel_task::kill_requested() => return Ok(ExitStatus::Killed),
        Err(e) => return Err(RunError::Instantiate(format!("{e:#}"))),
    };
    let start = instance
        .get_typed_func::<(), ()>(&mut store, "_start")
        .map_err(|_| RunError::NoStart)?;
    let outcome = start.call(&mut store, ());
    // However the program ended (a trap in its code where the tick stopped it, a host call
    // that returned early, an exit), it ended because it was killed.
    if keel_task::kill_requested() {
        return Ok(ExitStatus::Killed);
    }
    Ok(match outcome {
        Ok(()) => ExitStatus::Exited(0),
        Err(error) => {
            if let Some(Exit(code)) = error.downcast_ref::<Exit>() {
                ExitStatus::Exited(*code)
            } else {
                let trap = match error.downcast_ref::<Trap>() {
                    Some(trap) => trap.to_string(),
                    None => format!("{error:#}"),
                };
                let backtrace = error
                    .downcast_ref::<WasmBacktrace>()
                    .map(|bt| {
                        bt.frames()
                            .iter()
                            .map(|f| match f.func_name() {
                                Some(name) => name.to_string(),
                                None => format!("func[{}]", f.func_index()),
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                ExitStatus::Trapped { trap, backtrace }
            }
        }
    })
}
