//! WebAssembly programs carried in the boot image (multiboot2 modules named by their command
//! line), and the `run` and `apps` commands.

use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};
use keel_console::println;
use keel_sync::Once;
use keel_task::{Builder, Mutex};
use keel_wasm::{ExitStatus, Program};

/// A precompiled program as the boot loader left it in memory.
pub struct BootProgram {
    pub name: String,
    pub artifact: &'static [u8],
}

static BOOT_PROGRAMS: Once<Vec<BootProgram>> = Once::new();
static LOADED: Mutex<BTreeMap<String, Program>> = Mutex::new(BTreeMap::new());
/// The program the shell is waiting for: Ctrl-C ends it.
static FOREGROUND: AtomicU64 = AtomicU64::new(0);

/// The console's Ctrl-C hook: interrupts the foreground program, if any.
pub fn interrupt_foreground() -> bool {
    let id = FOREGROUND.load(Ordering::Acquire);
    id != 0 && keel_task::request_kill(id).is_ok()
}

/// Each program task gets this much kernel stack: more than Wasmtime's Wasm stack limit plus the
/// host calls made from it.
const PROGRAM_STACK: usize = 1 << 20;

pub fn register(programs: Vec<BootProgram>) {
    BOOT_PROGRAMS.call_once(|| programs);
}

fn boot_programs() -> &'static [BootProgram] {
    BOOT_PROGRAMS.get().map_or(&[], |p| p.as_slice())
}

/// Loads (once) and returns the program `name`.
fn program(name: &str) -> Result<Program, String> {
    if let Some(program) = LOADED.lock().get(name) {
        return Ok(program.clone());
    }
    let boot = boot_programs()
        .iter()
        .find(|p| p.name == name)
        .ok_or_else(|| format!("no program named '{name}' (try 'apps')"))?;
    let artifact = lz4_flex::decompress_size_prepended(boot.artifact)
        .map_err(|e| format!("not a usable Keel program: its compressed image is damaged ({e})"))?;
    let program = keel_wasm::load(name, &artifact).map_err(|e| e.to_string())?;
    LOADED.lock().insert(name.to_string(), program.clone());
    Ok(program)
}

/// Prints how a program ended (nothing for a clean exit).
fn report(
    name: &str,
    outcome: Result<Result<ExitStatus, keel_wasm::RunError>, keel_task::Failure>,
) {
    match outcome {
        Ok(Ok(ExitStatus::Exited(0))) => {}
        Ok(Ok(ExitStatus::Exited(code))) => println!("{name}: exited with status {code}"),
        Ok(Ok(ExitStatus::Killed)) => println!("{name}: killed"),
        Ok(Ok(ExitStatus::Trapped { trap, backtrace })) => {
            println!("{name}: trapped: {trap}");
            const SHOWN: usize = 12;
            for frame in backtrace.iter().take(SHOWN) {
                println!("    at {frame}");
            }
            if backtrace.len() > SHOWN {
                println!("    ... {} more frames", backtrace.len() - SHOWN);
            }
        }
        Ok(Err(e)) => println!("{name}: {e}"),
        Err(failure) => println!("{name}: task {failure}"),
    }
}

/// Runs `name` with `args` in its own task and store. In the foreground (the shell waits, and
/// Ctrl-C ends the program) unless the last argument is `&`; a background program reports its
/// end itself.
pub fn run_program(name: &str, args: &[String]) -> Result<(), String> {
    let background = args.last().is_some_and(|a| a == "&");
    let args = if background {
        &args[..args.len() - 1]
    } else {
        args
    };
    run_with_directories(
        name,
        args,
        background,
        alloc::vec![String::from("/")],
        Vec::new(),
        Vec::new(),
    )
}

fn run_with_directories(
    name: &str,
    args: &[String],
    background: bool,
    preopens: Vec<String>,
    listen: Vec<u16>,
    connect: Vec<String>,
) -> Result<(), String> {
    let program = program(name)?;
    let mut connected: Vec<keel_net::SocketHandle> = Vec::with_capacity(connect.len());
    for target in &connect {
        match crate::net::connect(target) {
            Ok(handle) => connected.push(handle),
            Err(why) => {
                close_connections(&connected);
                return Err(why);
            }
        }
    }
    let mut argv = Vec::with_capacity(args.len() + 1);
    argv.push(name.to_string());
    argv.extend(args.iter().cloned());
    let task_name = name.to_string();
    // Handles are plain indices: these let a failed spawn close what the closure would own.
    let opened = connected.clone();
    let handle = Builder::new(name)
        .stack_size(PROGRAM_STACK)
        .cooperative_kill()
        .spawn(move || {
            let directories = keel_wasm::Directories {
                vfs: crate::files::vfs(),
                preopens,
                listen,
                connected,
                network: Some(keel_wasm::NetworkAccess {
                    stack: &keel_dd_host::nic::NETWORK,
                    activity: &keel_dd_host::nic::ACTIVITY,
                    kick: keel_dd_host::nic::kick,
                }),
            };
            let outcome = keel_wasm::run(
                &program,
                argv,
                (crate::tty::read_stdin, crate::tty::stdin_ready),
                directories,
            );
            if background {
                report(&task_name, Ok(outcome));
                None
            } else {
                Some(outcome)
            }
        })
        .map_err(|e| {
            close_connections(&opened);
            format!("cannot start a task: {e}")
        })?;
    if background {
        println!("[{}] {name}", handle.id());
        return Ok(());
    }
    FOREGROUND.store(handle.id(), Ordering::Release);
    let outcome = handle.join();
    FOREGROUND.store(0, Ordering::Release);
    match outcome {
        Ok(Some(result)) => report(name, Ok(result)),
        Ok(None) => {}
        Err(failure) => report(name, Err(failure)),
    }
    Ok(())
}

/// `run [--dir=PATH]... [--listen=PORT]... [--connect=HOST:PORT]... <program> [args...] [&]`:
/// each `--dir` gives the program that directory (and what is below it; without any, it gets
/// `/`); each `--listen` gives it a listening TCP socket on that port (the first one's
/// descriptor is in `LISTEN_FD`); each `--connect` a TCP connection the kernel opens before the
/// program starts, HOST being an address or a name looked up by DNS (`CONNECT_FD`).
pub fn run(args: &[String]) -> Result<(), String> {
    const USAGE: &str = "usage: run [--dir=PATH]... [--listen=PORT]... [--connect=HOST:PORT]... \
                         <program> [args...] [&]";
    let mut preopens = Vec::new();
    let mut listen = Vec::new();
    let mut connect = Vec::new();
    let mut rest = args;
    while let Some((first, tail)) = rest.split_first() {
        if let Some(path) = first.strip_prefix("--dir=") {
            if !path.starts_with('/') {
                return Err(format!("--dir needs an absolute path, not '{path}'"));
            }
            preopens.push(String::from(path));
        } else if let Some(port) = first.strip_prefix("--listen=") {
            let port = port
                .parse::<u16>()
                .ok()
                .filter(|&p| p != 0)
                .ok_or_else(|| format!("--listen needs a port from 1 to 65535, not '{port}'"))?;
            listen.push(port);
        } else if let Some(target) = first.strip_prefix("--connect=") {
            connect.push(String::from(target));
        } else {
            break;
        }
        rest = tail;
    }
    let (name, rest) = rest.split_first().ok_or(USAGE)?;
    if preopens.is_empty() {
        preopens.push(String::from("/"));
    }
    let background = rest.last().is_some_and(|a| a == "&");
    let rest = if background {
        &rest[..rest.len() - 1]
    } else {
        rest
    };
    run_with_directories(name, rest, background, preopens, listen, connect)
}

/// Closes connections opened for a program that did not start.
fn close_connections(handles: &[keel_net::SocketHandle]) {
    if let Some(stack) = keel_dd_host::nic::NETWORK.lock().as_mut() {
        for &handle in handles {
            stack.tcp_close(handle);
        }
    }
}

/// `apps`: the programs in the boot image.
pub fn apps(args: &[String]) -> Result<(), String> {
    if !args.is_empty() {
        return Err(String::from("takes no arguments"));
    }
    for p in boot_programs() {
        println!("{:<12} {:>8} bytes", p.name, p.artifact.len());
    }
    Ok(())
}

/// Whether the boot image carries a program called `name`.
pub fn has(name: &str) -> bool {
    boot_programs().iter().any(|p| p.name == name)
}

/// The shell's fallback: a bare program name runs it.
pub fn run_by_name(name: &str, args: &[String]) -> Option<Result<(), String>> {
    boot_programs()
        .iter()
        .any(|p| p.name == name)
        .then(|| run_program(name, args))
}
