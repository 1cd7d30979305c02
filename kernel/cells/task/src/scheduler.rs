//! The scheduler: task records, the ready queue, sleeping, spawning, exiting and killing.

use crate::switch;
use crate::wait::WaitQueue;
use alloc::borrow::ToOwned;
use alloc::boxed::Box;
use alloc::collections::{BTreeMap, VecDeque};
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::cell::UnsafeCell;
use core::fmt;
use core::ops::Range;
use core::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use core::time::Duration;
use keel_arch::context::{SavedContext, prepare_stack};
use keel_arch::interrupts::{Fault, InterruptedContext};
use keel_memory::{AllocatedPages, MapFlags, MappedPages, MemoryError, PAGE_SIZE};
use keel_sync::{HeldInterrupts, IrqSafeMutex};
use keel_unwind::{AsyncCause, Failure};

pub type TaskId = u64;

/// Timer interrupts per second; a task runs for at most `SLICE_TICKS` before the next one.
pub const TICK_HZ: u64 = 1000;
const SLICE_TICKS: u64 = 5;
const DEFAULT_STACK_SIZE: usize = 64 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum TaskState {
    Running = 0,
    Ready = 1,
    Blocked = 2,
    Sleeping = 3,
    Exited = 4,
}

impl TaskState {
    fn from_u8(v: u8) -> Self {
        match v {
            0 => TaskState::Running,
            1 => TaskState::Ready,
            2 => TaskState::Blocked,
            3 => TaskState::Sleeping,
            _ => TaskState::Exited,
        }
    }
    pub fn name(&self) -> &'static str {
        match self {
            TaskState::Running => "running",
            TaskState::Ready => "ready",
            TaskState::Blocked => "blocked",
            TaskState::Sleeping => "sleeping",
            TaskState::Exited => "exited",
        }
    }
}

impl fmt::Display for TaskState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.name())
    }
}

/// A task's stack: mapped pages with an unmapped guard page below, so an overflow faults.
struct Stack {
    _mapping: MappedPages,
    _guard: AllocatedPages,
}

pub(crate) struct Task {
    id: TaskId,
    name: String,
    /// Kernel tasks (idle, shell) cannot be killed.
    critical: bool,
    /// Killed only by noticing [`kill_requested`] itself (tasks running WebAssembly, whose
    /// frames the unwinder cannot walk), never by an unwind injected from outside.
    cooperative_kill: bool,
    state: AtomicU8,
    pub(crate) context: UnsafeCell<SavedContext>,
    stack: IrqSafeMutex<Option<Stack>>,
    stack_bounds: Range<u64>,
    kill_requested: AtomicBool,
    failure: IrqSafeMutex<Option<Failure>>,
    /// Set once the task has exited and its stack is freed.
    reaped: AtomicBool,
    joiners: WaitQueue,
    /// One word of task-local storage (Wasmtime keeps its per-thread state pointer here).
    tls: AtomicU64,
    /// Memory the task reports holding beyond its stack (a program's linear memory), bytes.
    memory_use: AtomicU64,
}

impl Task {
    pub(crate) fn state(&self) -> TaskState {
        TaskState::from_u8(self.state.load(Ordering::Acquire))
    }
    pub(crate) fn set_state(&self, state: TaskState) {
        self.state.store(state as u8, Ordering::Release);
    }
}

struct Scheduler {
    current: Option<Arc<Task>>,
    idle: Option<Arc<Task>>,
    ready: VecDeque<Arc<Task>>,
    sleepers: Vec<(u64, Arc<Task>)>,
    tasks: BTreeMap<TaskId, Arc<Task>>,
    /// The task that just exited; its stack is freed by the next task after the switch.
    reap: Option<Arc<Task>>,
    slice_left: u64,
}

static SCHEDULER: IrqSafeMutex<Scheduler> = IrqSafeMutex::new(Scheduler {
    current: None,
    idle: None,
    ready: VecDeque::new(),
    sleepers: Vec::new(),
    tasks: BTreeMap::new(),
    reap: None,
    slice_left: SLICE_TICKS,
});
static NEXT_ID: AtomicU64 = AtomicU64::new(1);
static TICKS: AtomicU64 = AtomicU64::new(0);

/// Turns the boot context into the idle task (id 0) and installs the scheduler's hooks.
/// `boot_stack` is the range of the stack the boot code runs on.
pub fn init(boot_stack: Range<u64>) {
    let idle = Arc::new(Task {
        id: 0,
        name: "idle".to_owned(),
        critical: true,
        cooperative_kill: false,
        state: AtomicU8::new(TaskState::Running as u8),
        context: UnsafeCell::new(SavedContext::new(0)),
        stack: IrqSafeMutex::new(None),
        stack_bounds: boot_stack,
        kill_requested: AtomicBool::new(false),
        failure: IrqSafeMutex::new(None),
        reaped: AtomicBool::new(false),
        joiners: WaitQueue::new(),
        tls: AtomicU64::new(0),
        memory_use: AtomicU64::new(0),
    });
    {
        let mut s = SCHEDULER.lock();
        s.tasks.insert(0, idle.clone());
        s.idle = Some(idle.clone());
        s.current = Some(idle);
    }
    keel_arch::interrupts::set_tick_hook(on_tick);
    keel_arch::interrupts::set_fault_hook(on_fault);
    keel_unwind::set_uncaught_hook(on_uncaught);
    keel_unwind::set_stack_bounds_hook(current_stack_bounds);
}

pub(crate) fn current_task() -> Arc<Task> {
    SCHEDULER
        .lock()
        .current
        .clone()
        .expect("scheduler initialised")
}

pub fn current_id() -> TaskId {
    SCHEDULER.lock().current.as_ref().map_or(0, |t| t.id)
}

pub fn ticks() -> u64 {
    TICKS.load(Ordering::Relaxed)
}

fn current_stack_bounds() -> Option<Range<u64>> {
    SCHEDULER
        .lock()
        .current
        .as_ref()
        .map(|t| t.stack_bounds.clone())
}

/// Makes `task` ready if it is blocked or sleeping; returns whether it was.
pub(crate) fn wake(task: &Arc<Task>) -> bool {
    let mut s = SCHEDULER.lock();
    match task.state() {
        TaskState::Blocked | TaskState::Sleeping => {
            task.set_state(TaskState::Ready);
            s.ready.push_back(task.clone());
            true
        }
        _ => false,
    }
}

/// Picks the next task and switches to it. The current task must already have set its state
/// (Ready to run again, Blocked/Sleeping if something will wake it, Exited).
pub(crate) fn schedule() {
    let _held = HeldInterrupts::hold();
    let (prev, next): (*const Task, *const Task) = {
        let mut s = SCHEDULER.lock();
        let Some(prev) = s.current.clone() else {
            return;
        };
        let is_idle = |t: &Arc<Task>| t.id == 0;
        match prev.state() {
            TaskState::Running | TaskState::Ready => {
                if s.ready.is_empty() {
                    prev.set_state(TaskState::Running);
                    return;
                }
                prev.set_state(TaskState::Ready);
                if !is_idle(&prev) {
                    s.ready.push_back(prev.clone());
                }
            }
            TaskState::Exited => s.reap = Some(prev.clone()),
            TaskState::Blocked | TaskState::Sleeping => {}
        }
        let next = match s.ready.pop_front() {
            Some(t) => t,
            None => s.idle.clone().expect("idle task exists"),
        };
        next.set_state(TaskState::Running);
        s.slice_left = SLICE_TICKS;
        prev.tls
            .store(CURRENT_TLS.load(Ordering::Relaxed), Ordering::Relaxed);
        CURRENT_TLS.store(next.tls.load(Ordering::Relaxed), Ordering::Relaxed);
        let pointers = (Arc::as_ptr(&prev), Arc::as_ptr(&next));
        s.current = Some(next);
        pointers
        // `prev` and `next` (the clones) drop here: nothing owning stays on a stack that may
        // never run again. `s.current` and `s.reap`/the ready queue keep both alive.
    };
    if prev != next {
        // SAFETY-free: the pointers are kept alive as described above; `switch` is the
        // sanctioned place for the raw context access.
        switch::switch(task_ref(prev), task_ref(next));
    }
    finish_switch();
}

/// Borrows a task through a pointer that the scheduler keeps alive for the switch.
fn task_ref<'a>(ptr: *const Task) -> &'a Task {
    // The scheduler's own references (current task, ready queue, reap slot) keep the task
    // alive for longer than this borrow is used; see `schedule`.
    TaskPtr(ptr).get()
}

struct TaskPtr(*const Task);
impl TaskPtr {
    #[allow(unsafe_code)]
    fn get<'a>(self) -> &'a Task {
        // SAFETY: see `task_ref`.
        unsafe { &*self.0 }
    }
}

/// Runs on the new task right after a switch: frees the stack of a task that just exited and
/// tells its joiners.
fn finish_switch() {
    let reaped = SCHEDULER.lock().reap.take();
    if let Some(task) = reaped {
        let stack = task.stack.lock().take();
        drop(stack);
        SCHEDULER.lock().tasks.remove(&task.id);
        task.reaped.store(true, Ordering::Release);
        task.joiners.notify_all();
    }
}

/// Gives the processor to another ready task, if any.
pub fn yield_now() {
    schedule();
    unwind_if_killed();
}

/// Ticks that cover at least `duration` (at least one).
pub(crate) fn ticks_for(duration: Duration) -> u64 {
    (duration.as_nanos() as u64)
        .div_ceil(1_000_000_000 / TICK_HZ)
        .max(1)
}

/// Wakes `task` at tick `deadline` if it is then still blocked or sleeping. A task that was
/// woken earlier sees at most a spurious wake-up, which every blocking loop re-checks.
pub(crate) fn wake_at(deadline: u64, task: Arc<Task>) {
    SCHEDULER.lock().sleepers.push((deadline, task));
}

/// Sleeps for at least `duration`.
pub fn sleep(duration: Duration) {
    let deadline = ticks() + ticks_for(duration);
    while ticks() < deadline {
        {
            let _held = HeldInterrupts::hold();
            let current = current_task();
            current.set_state(TaskState::Sleeping);
            SCHEDULER.lock().sleepers.push((deadline, current));
            schedule();
        }
        unwind_if_killed();
    }
}

/// Starts unwinding the current task if someone asked to kill it.
pub(crate) fn unwind_if_killed() {
    let task = current_task();
    // Taking the request (swap) makes sure one kill starts one unwind, not one per tick.
    if !task.critical && !task.cooperative_kill && task.kill_requested.swap(false, Ordering::AcqRel)
    {
        drop(task);
        let _ = keel_unwind::start_unwind(Failure::Killed);
        on_uncaught(Failure::Killed);
    }
}

fn on_tick(context: &mut InterruptedContext) {
    let now = TICKS.fetch_add(1, Ordering::Relaxed) + 1;
    let due: Vec<Arc<Task>> = {
        let mut s = SCHEDULER.lock();
        let mut due = Vec::new();
        let mut i = 0;
        while i < s.sleepers.len() {
            if s.sleepers[i].0 <= now {
                due.push(s.sleepers.swap_remove(i).1);
            } else {
                i += 1;
            }
        }
        due
    };
    for task in &due {
        wake(task);
    }
    drop(due);
    let preempt = {
        let mut s = SCHEDULER.lock();
        let idle = s.current.as_ref().is_none_or(|t| t.id == 0);
        s.slice_left = s.slice_left.saturating_sub(1);
        !s.ready.is_empty() && (idle || s.slice_left == 0)
    };
    if preempt {
        schedule();
    }
    let task = current_task();
    if !task.critical && !task.cooperative_kill && task.kill_requested.swap(false, Ordering::AcqRel)
    {
        drop(task);
        keel_unwind::unwind_interrupted(context, AsyncCause::Kill);
    } else if task.cooperative_kill && task.kill_requested.load(Ordering::Acquire) {
        // A guest runtime's task ends through the runtime, which sees the request stay set.
        drop(task);
        if let Some(stop) = GUEST_KILL_STOP.get() {
            stop(context);
        }
    }
}

/// Stops a cooperatively killed task that the tick interrupted in guest code (compiled Wasm),
/// by making its runtime unwind the guest frames; returns false where it cannot (host code,
/// which checks the kill request itself).
pub type GuestKillStop = fn(&mut InterruptedContext) -> bool;
static GUEST_KILL_STOP: spin::Once<GuestKillStop> = spin::Once::new();

pub fn set_guest_kill_stop(stop: GuestKillStop) {
    GUEST_KILL_STOP.call_once(|| stop);
}

/// Tried first for every fault in a task: a guest runtime (Wasmtime) may claim faults in its
/// compiled code as traps of its own.
pub type GuestFaultFilter = fn(&Fault, &mut InterruptedContext) -> bool;
static GUEST_FAULT_FILTER: spin::Once<GuestFaultFilter> = spin::Once::new();

pub fn set_guest_fault_filter(filter: GuestFaultFilter) {
    GUEST_FAULT_FILTER.call_once(|| filter);
}

fn on_fault(fault: &Fault, context: &mut InterruptedContext) -> bool {
    let in_task = SCHEDULER.lock().current.as_ref().is_some_and(|t| t.id != 0);
    if in_task
        && GUEST_FAULT_FILTER
            .get()
            .is_some_and(|filter| filter(fault, context))
    {
        return true;
    }
    let (task, bounds) = {
        let s = SCHEDULER.lock();
        match s.current.as_ref() {
            Some(t) if t.id != 0 => ((t.id, t.name.clone()), t.stack_bounds.clone()),
            _ => return false,
        }
    };
    let guard_page = bounds.start.saturating_sub(PAGE_SIZE)..bounds.start;
    if fault.address.is_some_and(|a| guard_page.contains(&a)) {
        // The stack is exhausted: nothing can run on it, so nothing can unwind. End the task
        // from the top of its own stack; what it held is not given back.
        let _ = core::fmt::Write::write_fmt(
            &mut keel_arch::serial::EmergencyWriter,
            format_args!(
                "\r\ntask {} ({}) killed by stack overflow (rip={:#x}); its resources are not reclaimed\r\n",
                task.0, task.1, fault.rip
            ),
        );
        switch::restart_on_own_stack(context, bounds.end, stack_overflow_exit);
        return true;
    }
    let _ = core::fmt::Write::write_fmt(
        &mut keel_arch::serial::EmergencyWriter,
        format_args!("\r\ntask {} ({}) killed by {}\r\n", task.0, task.1, fault),
    );
    keel_unwind::unwind_interrupted(context, AsyncCause::Fault(*fault));
    true
}

extern "C" fn stack_overflow_exit() -> ! {
    exit_current(Some(Failure::Fault(String::from("stack overflow"))))
}

/// An unwind found no catcher: end the task where it stands.
fn on_uncaught(failure: Failure) -> ! {
    exit_current(Some(failure))
}

fn exit_current(failure: Option<Failure>) -> ! {
    {
        let task = current_task();
        *task.failure.lock() = failure;
    }
    keel_arch::cpu::disable_interrupts();
    current_task_state_exit();
    schedule();
    keel_unwind::fatal(format_args!("an exited task was scheduled again"))
}

fn current_task_state_exit() {
    if let Some(task) = SCHEDULER.lock().current.as_ref() {
        task.set_state(TaskState::Exited);
    }
}

extern "C" fn task_entry(arg: u64) -> ! {
    finish_switch();
    keel_arch::cpu::enable_interrupts();
    let body = EntryArg(arg).take();
    let outcome = keel_unwind::catch_unwind(body);
    exit_current(outcome.err())
}

type Body = Box<dyn FnOnce() + Send>;

/// The boxed task body, passed through the new stack as a pointer.
struct EntryArg(u64);
impl EntryArg {
    fn new(body: Body) -> Self {
        EntryArg(Box::into_raw(Box::new(body)) as u64)
    }
    #[allow(unsafe_code)]
    fn take(self) -> Body {
        // SAFETY: made by `EntryArg::new` and taken exactly once, by the task it was made for.
        *unsafe { Box::from_raw(self.0 as *mut Body) }
    }
}

/// Configures a task before spawning it.
pub struct Builder {
    name: String,
    stack_size: usize,
    critical: bool,
    cooperative_kill: bool,
}

impl Builder {
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            stack_size: DEFAULT_STACK_SIZE,
            critical: false,
            cooperative_kill: false,
        }
    }
    pub fn stack_size(mut self, bytes: usize) -> Self {
        self.stack_size = bytes.max(8 * 1024);
        self
    }
    /// A task that ends itself when it sees [`kill_requested`] instead of being unwound.
    pub fn cooperative_kill(mut self) -> Self {
        self.cooperative_kill = true;
        self
    }

    /// A kernel task that `kill` refuses.
    pub fn critical(mut self) -> Self {
        self.critical = true;
        self
    }

    pub fn spawn<F, R>(self, f: F) -> Result<JoinHandle<R>, MemoryError>
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        let pages = (self.stack_size as u64).div_ceil(PAGE_SIZE);
        let mut reservation = keel_memory::allocate_pages(pages + 1)?;
        let guard = reservation.split_front(1)?;
        let frames = keel_memory::allocate_frames(pages)?;
        let mut mapping = keel_memory::map(reservation, frames, MapFlags::DATA)?;
        let bounds = mapping.start_address().as_u64()
            ..mapping.start_address().as_u64() + mapping.size_in_bytes();

        let result: Arc<IrqSafeMutex<Option<R>>> = Arc::new(IrqSafeMutex::new(None));
        let slot = result.clone();
        let body: Body = Box::new(move || {
            let value = f();
            *slot.lock() = Some(value);
        });
        let arg = EntryArg::new(body);
        let words = mapping.size_in_bytes() as usize / 8;
        let rsp = prepare_stack(mapping.as_slice_mut::<u64>(0, words)?, task_entry, arg.0)
            .ok_or(MemoryError::OutOfBounds)?;

        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let task = Arc::new(Task {
            id,
            name: self.name,
            critical: self.critical,
            cooperative_kill: self.cooperative_kill,
            state: AtomicU8::new(TaskState::Ready as u8),
            context: UnsafeCell::new(SavedContext::new(rsp)),
            stack: IrqSafeMutex::new(Some(Stack {
                _mapping: mapping,
                _guard: guard,
            })),
            stack_bounds: bounds,
            kill_requested: AtomicBool::new(false),
            failure: IrqSafeMutex::new(None),
            reaped: AtomicBool::new(false),
            joiners: WaitQueue::new(),
            tls: AtomicU64::new(0),
            memory_use: AtomicU64::new(0),
        });
        {
            let mut s = SCHEDULER.lock();
            s.tasks.insert(id, task.clone());
            s.ready.push_back(task.clone());
        }
        Ok(JoinHandle { task, result })
    }
}

/// Spawns a task with default settings.
pub fn spawn<F, R>(name: &str, f: F) -> Result<JoinHandle<R>, MemoryError>
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    Builder::new(name).spawn(f)
}

/// Owns the right to a task's result. Dropping it detaches the task.
pub struct JoinHandle<R> {
    task: Arc<Task>,
    result: Arc<IrqSafeMutex<Option<R>>>,
}

impl<R> JoinHandle<R> {
    pub fn id(&self) -> TaskId {
        self.task.id
    }

    pub fn is_finished(&self) -> bool {
        self.task.reaped.load(Ordering::Acquire)
    }

    /// Waits until the task has ended and its stack is freed; its result, or why it failed.
    pub fn join(self) -> Result<R, Failure> {
        let task = self.task.clone();
        task.joiners
            .wait_until(|| task.reaped.load(Ordering::Acquire).then_some(()));
        let failure = task.failure.lock().take();
        match failure {
            Some(failure) => Err(failure),
            None => self.result.lock().take().ok_or(Failure::Killed),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KillError {
    NoSuchTask(TaskId),
    KernelTask(TaskId, String),
}

impl fmt::Display for KillError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KillError::NoSuchTask(id) => write!(f, "no task with id {id}"),
            KillError::KernelTask(id, name) => {
                write!(
                    f,
                    "task {id} ({name}) is a kernel task and cannot be killed"
                )
            }
        }
    }
}

/// Asks task `id` to die without waiting (usable from an interrupt handler).
pub fn request_kill(id: TaskId) -> Result<(), KillError> {
    let task = SCHEDULER
        .lock()
        .tasks
        .get(&id)
        .cloned()
        .ok_or(KillError::NoSuchTask(id))?;
    if task.critical {
        return Err(KillError::KernelTask(id, task.name.clone()));
    }
    task.kill_requested.store(true, Ordering::Release);
    if !task.cooperative_kill {
        wake(&task);
    }
    Ok(())
}

/// Asks task `id` to die and waits (up to `timeout`) until it has. Returns its name.
pub fn kill(id: TaskId, timeout: Duration) -> Result<String, KillError> {
    let task = SCHEDULER
        .lock()
        .tasks
        .get(&id)
        .cloned()
        .ok_or(KillError::NoSuchTask(id))?;
    request_kill(id)?;
    let deadline = ticks() + (timeout.as_millis() as u64 * TICK_HZ / 1000).max(1);
    while !task.reaped.load(Ordering::Acquire) && ticks() < deadline {
        sleep(Duration::from_millis(1));
    }
    Ok(task.name.clone())
}

/// A snapshot of one task for `ps`.
#[derive(Clone, Debug)]
pub struct TaskInfo {
    pub id: TaskId,
    pub name: String,
    pub state: TaskState,
    /// Reported memory beyond the stack (0 if none), bytes.
    pub memory_use: u64,
}

pub fn task_list() -> Vec<TaskInfo> {
    let s = SCHEDULER.lock();
    s.tasks
        .values()
        .map(|t| TaskInfo {
            id: t.id,
            name: t.name.clone(),
            state: t.state(),
            memory_use: t.memory_use.load(Ordering::Relaxed),
        })
        .collect()
}

/// The idle task's body: halts until an interrupt, and lets other tasks run.
pub fn idle_loop() -> ! {
    loop {
        let has_work = !SCHEDULER.lock().ready.is_empty();
        if has_work {
            schedule();
        } else {
            keel_arch::cpu::enable_interrupts_and_halt();
        }
    }
}

/// The running task's task-local word. Wasmtime reads and writes it on every entry into and
/// exit from Wasm, so it lives here rather than behind the scheduler lock; `schedule` saves it
/// into the outgoing task and loads the incoming one's (per-CPU once Keel runs on several).
static CURRENT_TLS: AtomicU64 = AtomicU64::new(0);

/// The current task's task-local word.
pub fn tls_get() -> u64 {
    CURRENT_TLS.load(Ordering::Relaxed)
}

/// Sets the current task's task-local word.
pub fn tls_set(value: u64) {
    CURRENT_TLS.store(value, Ordering::Relaxed);
}

/// Whether someone asked the current task to end (for tasks that end themselves).
pub fn kill_requested() -> bool {
    SCHEDULER
        .lock()
        .current
        .as_ref()
        .is_some_and(|t| t.kill_requested.load(Ordering::Acquire))
}

/// The current task's kill request, to look at without the scheduler's lock: for hooks that
/// run on every call (a guest runtime's host calls).
#[derive(Clone)]
pub struct KillWatch(Arc<Task>);

impl KillWatch {
    pub fn requested(&self) -> bool {
        self.0.kill_requested.load(Ordering::Acquire)
    }
}

/// A [`KillWatch`] on the current task.
pub fn kill_watch() -> KillWatch {
    KillWatch(current_task())
}

/// Records how much memory the current task holds beyond its stack (shown by `ps`).
pub fn report_memory_use(bytes: u64) {
    if let Some(t) = SCHEDULER.lock().current.as_ref() {
        t.memory_use.store(bytes, Ordering::Relaxed);
    }
}
