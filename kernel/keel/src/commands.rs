//! Shell commands that concern the whole system.

use crate::{HEAP, bench, selftest};
use alloc::string::String;
use keel_console::println;
use keel_shell::Command;

pub static COMMANDS: &[Command] = &[
    Command {
        name: "mem",
        usage: "mem - physical frames and heap use",
        run: mem,
    },
    Command {
        name: "shutdown",
        usage: "shutdown - power the machine off",
        run: shutdown,
    },
    Command {
        name: "reboot",
        usage: "reboot - reset the machine",
        run: reboot,
    },
    Command {
        name: "selftest",
        usage: "selftest tasks <n> | unwind | fault <page|div|ud|gp|stack> | busy",
        run: selftest::run,
    },
    Command {
        name: "bench",
        usage: "bench - in-kernel microbenchmarks",
        run: bench::run,
    },
    Command {
        name: "run",
        usage: "run [--dir=PATH] [--listen=PORT] [--connect=HOST:PORT] <program> [args...] [&] - run a WebAssembly program (or type its name)",
        run: crate::programs::run,
    },
    Command {
        name: "apps",
        usage: "apps - the WebAssembly programs in the boot image",
        run: crate::programs::apps,
    },
    Command {
        name: "uname",
        usage: "uname - kernel name, version and boot facts",
        run: uname,
    },
    Command {
        name: "lspci",
        usage: "lspci [-v] - PCI functions (-v: BARs, interrupt, capabilities)",
        run: lspci,
    },
    Command {
        name: "ifconfig",
        usage: "ifconfig [-v] - the network interface: address, link, packets and errors (-v: CPU per packet)",
        run: crate::net::ifconfig,
    },
    Command {
        name: "host",
        usage: "host NAME [A.B.C.D[:PORT]] - look a name up by DNS (default server: DHCP's)",
        run: crate::net::host,
    },
    Command {
        name: "ping",
        usage: "ping <a.b.c.d> [count] - ICMP echo requests",
        run: crate::net::ping,
    },
    Command {
        name: "lsblk",
        usage: "lsblk - disks and partitions: size, file system, mount point, model",
        run: crate::storage::lsblk,
    },
    Command {
        name: "df",
        usage: "df - size, use and free space of the mounted file systems",
        run: crate::storage::df,
    },
    Command {
        name: "mount",
        usage: "mount [VOLUME /PATH] - list mounts, or mount a FAT volume (e.g. mount sd0p1 /data)",
        run: crate::storage::mount_command,
    },
    Command {
        name: "umount",
        usage: "umount /PATH - write a volume's changes and detach it",
        run: crate::storage::umount_command,
    },
    Command {
        name: "blk",
        usage: "blk read NAME LBA [COUNT] | blk bench NAME FIRST_LBA MIB - raw sectors (checksum), raw throughput (overwrites!)",
        run: crate::storage::blk_command,
    },
    Command {
        name: "sync",
        usage: "sync - write every mounted file system's changes to its disk",
        run: crate::storage::sync_command,
    },
    Command {
        name: "drivers",
        usage: "drivers [-v] | drivers restart NAME [KEY=VALUE...] - WASI-dd driver instances (-v: their log); start an ended one again",
        run: crate::drivers::list,
    },
];

fn no_args(args: &[String]) -> Result<(), String> {
    if args.is_empty() {
        Ok(())
    } else {
        Err(String::from("takes no arguments"))
    }
}

fn mem(args: &[String]) -> Result<(), String> {
    no_args(args)?;
    let frames = keel_memory::frame_stats();
    let heap = HEAP.stats();
    println!(
        "frames: free={} used={} total={}",
        frames.free,
        frames.used(),
        frames.total
    );
    println!(
        "heap: used={} free={} size={}",
        heap.used, heap.free, heap.size
    );
    println!(
        "wasm: committed={} KiB",
        keel_wasm_platform::committed_bytes() / 1024
    );
    if frames.leaked > 0 {
        println!("frames leaked (allocator list full): {}", frames.leaked);
    }
    Ok(())
}

fn uname(args: &[String]) -> Result<(), String> {
    no_args(args)?;
    let facts = crate::boot::FACTS.get();
    println!(
        "Keel {} x86_64 (booted in {} ms, command line '{}')",
        env!("CARGO_PKG_VERSION"),
        facts.map_or(0, |f| f.boot_ms),
        facts.map_or("", |f| f.command_line.as_str())
    );
    Ok(())
}

fn shutdown(args: &[String]) -> Result<(), String> {
    no_args(args)?;
    crate::storage::unmount_all();
    println!("powering off");
    crate::boot::power_off();
    Err(String::from("the machine did not power off"))
}

fn reboot(args: &[String]) -> Result<(), String> {
    no_args(args)?;
    crate::storage::unmount_all();
    println!("rebooting");
    keel_arch::power::reset();
    Err(String::from("the machine did not reset"))
}

fn lspci(args: &[String]) -> Result<(), String> {
    const USAGE: &str = "usage: lspci [-v]";
    let verbose = match args {
        [] => false,
        [flag] if flag == "-v" => true,
        [word] if word.starts_with('-') => {
            return Err(alloc::format!("unknown option '{word}' ({USAGE})"));
        }
        [word] => return Err(alloc::format!("unexpected argument '{word}' ({USAGE})")),
        _ => return Err(alloc::format!("too many arguments ({USAGE})")),
    };
    if keel_pci::mechanism().is_none() {
        return Err(String::from("PCI was not enumerated"));
    }
    let functions = keel_pci::functions();
    for (i, function) in functions.iter().enumerate() {
        if verbose && i > 0 {
            println!();
        }
        println!("{}", keel_pci::format::summary(function, verbose));
        if verbose {
            for line in keel_pci::format::details(function) {
                println!("\t{line}");
            }
        }
    }
    Ok(())
}
