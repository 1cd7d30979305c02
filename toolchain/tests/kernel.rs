//! QEMU integration tests: boot the Keel image and check the shell's contract over the serial port.
//!
//! Run by `make test` after `keel image` (`cargo test -p keel-toolchain --test kernel`); the image
//! is `$KEEL_ISO` or `target/keel/keel.iso`. Each test boots its own VM. Timeouts are hang guards
//! for QEMU under TCG, not performance thresholds. A failing test prints the serial transcript.

use std::thread;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail, ensure};
use keel_toolchain::vm::{BOOT_TIMEOUT, PROMPT, Vm};

/// The task states `ps` may show.
const TASK_STATES: [&str; 5] = ["running", "ready", "blocked", "sleeping", "exited"];
/// The commands the shell contract names; `help` must list each of them.
const SHELL_COMMANDS: [&str; 12] = [
    "help", "ps", "mem", "uptime", "kill", "selftest", "bench", "shutdown", "lspci", "drivers",
    "ifconfig", "ping",
];
const FAULT_KINDS: [&str; 5] = ["page", "div", "ud", "gp", "stack"];
/// Hang guard for the heavier self-tests.
const SELFTEST_TIMEOUT: Duration = Duration::from_secs(120);

/// Boots a VM to its prompt and runs `test` on it; a failure panics with the serial transcript.
fn with_vm(test: impl FnOnce(&mut Vm, &str) -> Result<()>) {
    let (mut vm, boot_log) = Vm::boot_to_prompt().unwrap_or_else(|error| panic!("{error:#}"));
    if let Err(error) = test(&mut vm, &boot_log) {
        panic!("{:#}", vm.with_transcript(error));
    }
}

/// Keel's memory goal: it boots and runs its shell and tasks in 64 MiB of guest RAM.
#[test]
fn runs_in_64_mib_of_memory() {
    let (mut vm, _) =
        Vm::boot_to_prompt_with_memory("64M").unwrap_or_else(|error| panic!("{error:#}"));
    let result = (|| -> Result<()> {
        let mem = vm.command("mem")?;
        let frames = line_starting(&mem, "frames:")?;
        let total = field(frames, "total")?;
        ensure!(
            total * 4096 <= 64 << 20,
            "more than 64 MiB of frames reported: {frames}"
        );
        let output = vm.command_with_timeout("selftest tasks 200", SELFTEST_TIMEOUT)?;
        let line = line_starting(&output, "tasks:")?;
        ensure!(
            field(line, "joined")? == 200,
            "not all tasks joined: {line}"
        );
        ensure!(
            field(line, "sum")? == field(line, "expected")?,
            "wrong results: {line}"
        );
        Ok(())
    })();
    if let Err(error) = result {
        panic!("{:#}", vm.with_transcript(error));
    }
}

/// The lines of a command's output, without trailing whitespace.
fn lines(output: &str) -> Vec<&str> {
    output.lines().map(str::trim_end).collect()
}

/// The value of `key=<n>` in `line`.
fn field(line: &str, key: &str) -> Result<u64> {
    let prefix = format!("{key}=");
    let word = line
        .split_whitespace()
        .find_map(|word| word.strip_prefix(&prefix))
        .with_context(|| format!("no {key}= in {line:?}"))?;
    word.parse()
        .with_context(|| format!("{key}={word:?} in {line:?} is not a number"))
}

/// The line of `output` that starts with `prefix`.
fn line_starting<'a>(output: &'a str, prefix: &str) -> Result<&'a str> {
    lines(output)
        .into_iter()
        .find(|line| line.starts_with(prefix))
        .with_context(|| format!("no line starting with {prefix:?} in {output:?}"))
}

/// Whether `line` looks like `[    0.012345] text`.
fn is_boot_log_line(line: &str) -> bool {
    let Some((stamp, text)) = line.strip_prefix('[').and_then(|l| l.split_once("] ")) else {
        return false;
    };
    let Some((seconds, micros)) = stamp.trim_start().split_once('.') else {
        return false;
    };
    stamp.len() >= 12
        && !seconds.is_empty()
        && seconds.bytes().all(|b| b.is_ascii_digit())
        && micros.len() == 6
        && micros.bytes().all(|b| b.is_ascii_digit())
        && !text.is_empty()
}

/// Seconds from `uptime`'s `up <s.ssssss> s`.
fn uptime(vm: &mut Vm) -> Result<f64> {
    let output = vm.command("uptime")?;
    let line = line_starting(&output, "up ")?;
    let seconds = line
        .strip_prefix("up ")
        .and_then(|rest| rest.strip_suffix(" s"))
        .with_context(|| format!("uptime line {line:?} is not `up <seconds> s`"))?;
    ensure!(
        seconds
            .split_once('.')
            .is_some_and(|(_, frac)| frac.len() == 6),
        "uptime {seconds:?} does not have 6 decimals"
    );
    seconds
        .parse()
        .with_context(|| format!("uptime {seconds:?} is not a number"))
}

/// One row of `ps`.
#[derive(Debug, PartialEq)]
struct TaskRow {
    id: u64,
    state: String,
    name: String,
}

/// Parses `{id:>4}  {state:<8}  {name}`.
fn parse_task_row(line: &str) -> Result<TaskRow> {
    let mut words = line.split_whitespace();
    let (Some(id), Some(state)) = (words.next(), words.next()) else {
        bail!("ps row {line:?} has no id and state");
    };
    let name_start = line
        .find(state)
        .map(|at| at + state.len())
        .context("state not found")?;
    let name = line[name_start..].trim();
    let expected = format!("{id:>4}  {state:<8}  {name}");
    ensure!(
        line == expected,
        "ps row {line:?} is not laid out as {expected:?}"
    );
    ensure!(TASK_STATES.contains(&state), "unknown task state {state:?}");
    ensure!(!name.is_empty(), "ps row {line:?} has no name");
    Ok(TaskRow {
        id: id.parse().with_context(|| format!("task id {id:?}"))?,
        state: state.to_string(),
        name: name.to_string(),
    })
}

/// The tasks `ps` lists.
fn ps(vm: &mut Vm) -> Result<Vec<TaskRow>> {
    let output = vm.command("ps")?;
    let mut rows = lines(&output).into_iter().skip_while(|l| l.is_empty());
    let header = rows.next().context("ps printed nothing")?;
    ensure!(header == "  ID  STATE     NAME", "ps header is {header:?}");
    rows.filter(|line| !line.is_empty())
        .map(parse_task_row)
        .collect()
}

/// Sends raw bytes and a `\r`, and waits for the prompt to come back.
fn send_and_expect_prompt(vm: &mut Vm, bytes: &[u8]) -> Result<()> {
    let mut line = bytes.to_vec();
    line.push(b'\r');
    vm.send_bytes(&line)?;
    vm.wait_for(PROMPT, BOOT_TIMEOUT)?;
    Ok(())
}

#[test]
fn boots_to_the_prompt_with_a_timestamped_log() {
    with_vm(|_, boot_log| {
        let stamped = boot_log
            .lines()
            .map(|line| line.trim_end_matches('\r'))
            .filter(|line| is_boot_log_line(line))
            .count();
        ensure!(stamped > 0, "no `[    0.012345] text` line in the boot log");
        Ok(())
    });
}

#[test]
fn help_lists_the_commands() {
    with_vm(|vm, _| {
        let help = vm.command("help")?;
        for command in SHELL_COMMANDS {
            ensure!(
                help.split(|c: char| !c.is_ascii_alphanumeric() && c != '-')
                    .any(|word| word == command),
                "help does not mention {command:?}"
            );
        }
        Ok(())
    });
}

#[test]
fn unknown_command_is_reported() {
    with_vm(|vm, _| {
        let output = vm.command("frobnicate")?;
        ensure!(
            lines(&output).contains(&"unknown command: frobnicate (try 'help')"),
            "unexpected output {output:?}"
        );
        uptime(vm)?;
        Ok(())
    });
}

#[test]
fn kill_rejects_bad_task_ids() {
    with_vm(|vm, _| {
        let output = vm.command("kill abc")?;
        ensure!(
            lines(&output).contains(&"kill: invalid task id 'abc'"),
            "kill abc printed {output:?}"
        );
        let output = vm.command("kill 99999")?;
        ensure!(
            lines(&output).contains(&"kill: no task with id 99999"),
            "kill 99999 printed {output:?}"
        );
        Ok(())
    });
}

#[test]
fn ps_lists_tasks_in_columns() {
    with_vm(|vm, _| {
        let tasks = ps(vm)?;
        ensure!(!tasks.is_empty(), "ps lists no task");
        ensure!(
            tasks.iter().any(|task| task.state == "running"),
            "no running task in {tasks:?} (the shell runs ps)"
        );
        Ok(())
    });
}

#[test]
fn mem_reports_frames_and_heap() {
    with_vm(|vm, _| {
        let output = vm.command("mem")?;
        let frames = line_starting(&output, "frames: ")?;
        let (free, used, total) = (
            field(frames, "free")?,
            field(frames, "used")?,
            field(frames, "total")?,
        );
        ensure!(total > 0, "no frames: {frames:?}");
        ensure!(free + used == total, "free + used != total: {frames:?}");

        let heap = line_starting(&output, "heap: ")?;
        let (used, free, size) = (
            field(heap, "used")?,
            field(heap, "free")?,
            field(heap, "size")?,
        );
        ensure!(size > 0, "empty heap: {heap:?}");
        ensure!(used + free == size, "used + free != size: {heap:?}");
        Ok(())
    });
}

#[test]
fn uptime_increases() {
    with_vm(|vm, _| {
        let first = uptime(vm)?;
        thread::sleep(Duration::from_secs(1));
        let second = uptime(vm)?;
        ensure!(
            second > first,
            "uptime went from {first} to {second} over 1 s"
        );
        Ok(())
    });
}

#[test]
fn selftest_spawns_and_joins_1000_tasks() {
    with_vm(|vm, _| {
        let output = vm.command_with_timeout("selftest tasks 1000", SELFTEST_TIMEOUT)?;
        let line = line_starting(&output, "tasks: ")?;
        ensure!(field(line, "spawned")? == 1000, "{line:?}");
        ensure!(field(line, "joined")? == 1000, "{line:?}");
        ensure!(
            field(line, "sum")? == field(line, "expected")?,
            "sum differs from expected: {line:?}"
        );
        Ok(())
    });
}

#[test]
fn selftest_unwind_frees_everything() {
    with_vm(|vm, _| {
        let output = vm.command_with_timeout("selftest unwind", SELFTEST_TIMEOUT)?;
        let caught = line_starting(&output, "unwind: caught panic: ")?;
        let message = caught.trim_start_matches("unwind: caught panic: ").trim();
        ensure!(!message.is_empty(), "empty panic message: {caught:?}");
        for resource in ["frames", "heap"] {
            let line = line_starting(&output, &format!("unwind: {resource} before="))?;
            let (before, after) = (field(line, "before")?, field(line, "after")?);
            ensure!(before == after, "{resource} leaked: {line:?}");
        }
        ensure!(
            lines(&output).contains(&"unwind: lock free=yes"),
            "the lock was not released: {output:?}"
        );
        Ok(())
    });
}

#[test]
fn faults_kill_only_the_faulting_task() {
    with_vm(|vm, _| {
        for kind in FAULT_KINDS {
            let output =
                vm.command_with_timeout(&format!("selftest fault {kind}"), SELFTEST_TIMEOUT)?;
            let output_lines = lines(&output);
            let killed = output_lines
                .iter()
                .position(|line| line.contains("killed by"))
                .ok_or_else(|| anyhow!("fault {kind}: no `killed by` report in {output:?}"))?;
            let ended = output_lines
                .iter()
                .position(|line| line.starts_with("fault: task ended: "))
                .ok_or_else(|| anyhow!("fault {kind}: no `fault: task ended:` in {output:?}"))?;
            ensure!(
                killed < ended,
                "fault {kind}: report after `task ended` in {output:?}"
            );
            let report = output_lines[ended].trim_start_matches("fault: task ended: ");
            ensure!(!report.trim().is_empty(), "fault {kind}: empty report");
            uptime(vm).with_context(|| format!("uptime after fault {kind}"))?;
        }
        Ok(())
    });
}

#[test]
fn busy_task_is_preempted_and_killable() {
    with_vm(|vm, _| {
        let output = vm.command("selftest busy")?;
        let line = line_starting(&output, "busy: spawned task ")?;
        let id: u64 = line
            .trim_start_matches("busy: spawned task ")
            .trim()
            .parse()
            .with_context(|| format!("no task id in {line:?}"))?;

        let tasks = ps(vm)?;
        ensure!(
            tasks.iter().any(|t| t.id == id && t.name == "busy-loop"),
            "ps does not list task {id} as busy-loop: {tasks:?}"
        );
        for _ in 0..3 {
            uptime(vm).context("uptime while busy-loop runs")?;
        }

        let output = vm.command(&format!("kill {id}"))?;
        let expected = format!("killed task {id} (busy-loop)");
        ensure!(
            lines(&output).contains(&expected.as_str()),
            "kill {id} printed {output:?}"
        );
        let tasks = ps(vm)?;
        ensure!(
            !tasks.iter().any(|t| t.id == id),
            "task {id} still listed after kill: {tasks:?}"
        );
        Ok(())
    });
}

#[test]
fn bad_input_keeps_the_shell_alive() {
    with_vm(|vm, _| {
        let long_line = "x".repeat(300);
        send_and_expect_prompt(vm, long_line.as_bytes()).context("300-character line")?;
        uptime(vm)?;
        send_and_expect_prompt(vm, b"\x1b[5~\x01\x02").context("control bytes")?;
        uptime(vm)?;
        send_and_expect_prompt(vm, b"").context("empty line")?;
        uptime(vm)?;
        Ok(())
    });
}

#[test]
fn shutdown_exits_qemu() {
    with_vm(|vm, _| {
        vm.send_line("shutdown")?;
        vm.wait_exit(Duration::from_secs(20))?;
        Ok(())
    });
}

/// One `lspci` summary line: `bb:dd.f <class name> [cccc]: <vendor> <device> [vvvv:dddd]...`.
#[derive(Debug, PartialEq)]
struct PciRow {
    address: String,
    class_name: String,
    class: u16,
    names: String,
    vendor: u16,
    device: u16,
}

fn parse_pci_row(line: &str) -> Result<PciRow> {
    let bad = || anyhow!("lspci line {line:?} is not `bb:dd.f class [cccc]: names [vvvv:dddd]`");
    let (address, rest) = line.split_once(' ').ok_or_else(bad)?;
    let (class_part, rest) = rest.split_once("]: ").ok_or_else(bad)?;
    let (class_name, class) = class_part.rsplit_once(" [").ok_or_else(bad)?;
    let ids_at = rest.rfind(" [").ok_or_else(bad)?;
    let (names, ids) = (&rest[..ids_at], &rest[ids_at + 2..]);
    let ids = ids.split(']').next().ok_or_else(bad)?;
    let (vendor, device) = ids.split_once(':').ok_or_else(bad)?;
    let hex = |s: &str| u16::from_str_radix(s, 16).map_err(|_| bad());
    let address_ok = address.len() == 7
        && address.as_bytes()[2] == b':'
        && address.as_bytes()[5] == b'.'
        && u8::from_str_radix(&address[..2], 16).is_ok()
        && u8::from_str_radix(&address[3..5], 16).is_ok_and(|d| d < 32)
        && address[6..].parse::<u8>().is_ok_and(|f| f < 8);
    ensure!(address_ok, "bad address in {line:?}");
    ensure!(
        class.len() == 4 && vendor.len() == 4 && device.len() == 4,
        "ids in {line:?} are not 4 hex digits"
    );
    Ok(PciRow {
        address: address.to_string(),
        class_name: class_name.to_string(),
        class: hex(class)?,
        names: names.to_string(),
        vendor: hex(vendor)?,
        device: hex(device)?,
    })
}

/// A BAR line of `lspci -v`: `BAR<n>: <kind> at 0x<base> [size <size>...]`; returns the kind,
/// the base and the size in bytes.
fn parse_bar(line: &str) -> Result<(String, u64, u64)> {
    let bad = || anyhow!("BAR line {line:?} is not `BARn: kind at 0xbase [size s]`");
    let (_, rest) = line.split_once(": ").ok_or_else(bad)?;
    let (kind, rest) = rest.split_once(" at 0x").ok_or_else(bad)?;
    let (base, rest) = rest.split_once(" [size ").ok_or_else(bad)?;
    let size = rest.split([']', ',']).next().ok_or_else(bad)?;
    let (digits, unit) = match size.as_bytes().last() {
        Some(b'K') => (&size[..size.len() - 1], 1 << 10),
        Some(b'M') => (&size[..size.len() - 1], 1 << 20),
        Some(b'G') => (&size[..size.len() - 1], 1 << 30),
        _ => (size, 1),
    };
    let size: u64 = digits.parse().map_err(|_| bad())?;
    let base = u64::from_str_radix(base, 16).map_err(|_| bad())?;
    Ok((kind.to_string(), base, size * unit))
}

/// The detail lines of the function `vendor:device` in `lspci -v` output (tab-indented lines
/// under its summary, up to the blank line before the next function).
fn lspci_block<'a>(output: &'a str, vendor_device: &str) -> Result<Vec<&'a str>> {
    let all = lines(output);
    let start = all
        .iter()
        .position(|l| !l.starts_with('\t') && l.contains(&format!("[{vendor_device}]")))
        .with_context(|| format!("no function [{vendor_device}] in lspci -v"))?;
    Ok(all[start + 1..]
        .iter()
        .take_while(|l| l.starts_with('\t'))
        .map(|l| l.trim_start())
        .collect())
}

/// Checks that `block` has the BAR `bar` of `kind` and `size`, at a nonzero base aligned to
/// its size (as the firmware must assign it).
fn expect_bar(block: &[&str], bar: &str, kind: &str, size: u64) -> Result<()> {
    let line = block
        .iter()
        .find(|l| l.starts_with(&format!("{bar}: ")))
        .with_context(|| format!("no {bar} in {block:?}"))?;
    let (found_kind, base, found_size) = parse_bar(line)?;
    ensure!(
        found_kind == kind && found_size == size,
        "{line:?}: expected {kind} of {size} bytes"
    );
    ensure!(
        base != 0 && base % size == 0,
        "{line:?}: base not assigned or not aligned to the size"
    );
    if kind == "memory32" {
        ensure!(base < 1 << 32, "{line:?}: memory32 above 4 GiB");
    }
    Ok(())
}

#[test]
fn lspci_lists_the_host_bridge_e1000_and_ahci() {
    with_vm(|vm, boot_log| {
        let logged = boot_log
            .lines()
            .find_map(|l| {
                let (_, rest) = l.split_once("pci: ")?;
                rest.split_once(" functions found")?.0.parse::<usize>().ok()
            })
            .context("the boot log does not say how many PCI functions were found")?;

        let output = vm.command("lspci")?;
        let rows: Vec<PciRow> = lines(&output)
            .into_iter()
            .filter(|l| !l.is_empty())
            .map(parse_pci_row)
            .collect::<Result<_>>()?;
        ensure!(
            rows.len() == logged,
            "lspci lists {} functions, the boot log said {logged}",
            rows.len()
        );
        let mut addresses: Vec<&str> = rows.iter().map(|r| r.address.as_str()).collect();
        addresses.dedup();
        ensure!(addresses.len() == rows.len(), "a function is listed twice");

        let host = rows
            .iter()
            .find(|r| r.class == 0x0600)
            .context("no host bridge")?;
        ensure!(
            host.address == "00:00.0" && host.class_name == "Host bridge",
            "{host:?}"
        );
        ensure!(host.names.starts_with("Intel Corporation "), "{host:?}");

        let nic = rows
            .iter()
            .find(|r| (r.vendor, r.device) == (0x8086, 0x100e))
            .context("no e1000 (8086:100e)")?;
        ensure!(
            nic.class == 0x0200
                && nic.class_name == "Ethernet controller"
                && nic.names.starts_with("Intel Corporation ")
                && nic.names.contains("82540EM"),
            "{nic:?}"
        );

        let ahci = rows
            .iter()
            .find(|r| (r.vendor, r.device) == (0x8086, 0x2922))
            .context("no AHCI controller (8086:2922)")?;
        ensure!(
            ahci.address == "00:1f.2"
                && ahci.class == 0x0106
                && ahci.class_name == "SATA controller"
                && ahci.names.contains("AHCI"),
            "{ahci:?}"
        );

        let verbose = vm.command("lspci -v")?;
        let nic_block = lspci_block(&verbose, "8086:100e")?;
        expect_bar(&nic_block, "BAR0", "memory32", 128 << 10)?;
        expect_bar(&nic_block, "BAR1", "io", 64)?;
        ensure!(
            nic_block.iter().any(|l| l.starts_with("Interrupt: pin A")),
            "no interrupt pin in {nic_block:?}"
        );
        let ahci_block = lspci_block(&verbose, "8086:2922")?;
        expect_bar(&ahci_block, "BAR5", "memory32", 4 << 10)?;
        expect_bar(&ahci_block, "BAR4", "io", 32)?;
        ensure!(
            ahci_block.iter().any(|l| l.ends_with("]: MSI")),
            "ICH9 AHCI lists no MSI capability: {ahci_block:?}"
        );

        for (args, message) in [
            ("-x", "lspci: unknown option '-x' (usage: lspci [-v])"),
            (
                "foo",
                "lspci: unexpected argument 'foo' (usage: lspci [-v])",
            ),
            ("-v -v", "lspci: too many arguments (usage: lspci [-v])"),
        ] {
            let output = vm.command(&format!("lspci {args}"))?;
            ensure!(
                lines(&output).contains(&message),
                "lspci {args} printed {output:?}"
            );
        }
        Ok(())
    });
}

mod parsing {
    use super::*;

    #[test]
    fn parses_lspci_rows_and_bars() {
        assert_eq!(
            parse_pci_row(
                "00:02.0 Ethernet controller [0200]: Intel Corporation 82540EM Gigabit \
                 Ethernet Controller [8086:100e] (rev 03)"
            )
            .unwrap(),
            PciRow {
                address: "00:02.0".into(),
                class_name: "Ethernet controller".into(),
                class: 0x0200,
                names: "Intel Corporation 82540EM Gigabit Ethernet Controller".into(),
                vendor: 0x8086,
                device: 0x100e,
            }
        );
        assert!(parse_pci_row("00:02.0 Ethernet controller: Intel").is_err());
        assert!(parse_pci_row("00:40.0 Class [ff00]: Device [1234:5678]").is_err());
        assert_eq!(
            parse_bar("BAR0: memory32 at 0xfeb80000 [size 128K]").unwrap(),
            ("memory32".into(), 0xfeb8_0000, 128 << 10)
        );
        assert_eq!(
            parse_bar("BAR2: memory64 at 0xfe000000 [size 16K, prefetchable]").unwrap(),
            ("memory64".into(), 0xfe00_0000, 16 << 10)
        );
        assert_eq!(
            parse_bar("BAR1: io at 0xc000 [size 64]").unwrap(),
            ("io".into(), 0xc000, 64)
        );
        assert!(parse_bar("BAR1: io at c000").is_err());
    }

    #[test]
    fn recognises_boot_log_lines() {
        assert!(is_boot_log_line("[    0.012345] text"));
        assert!(is_boot_log_line("[12345.000001] more text"));
        assert!(!is_boot_log_line("[    0.01234] text"));
        assert!(!is_boot_log_line("[    0.012345]"));
        assert!(!is_boot_log_line("keel> "));
    }

    #[test]
    fn parses_ps_rows() {
        assert_eq!(
            parse_task_row("  12  sleeping  busy-loop").unwrap(),
            TaskRow {
                id: 12,
                state: "sleeping".into(),
                name: "busy-loop".into()
            }
        );
        assert!(parse_task_row("12 running shell").is_err());
        assert!(parse_task_row("   1  zombie    shell").is_err());
    }

    #[test]
    fn reads_fields() {
        assert_eq!(field("frames: free=10 used=2 total=12", "used").unwrap(), 2);
        assert!(field("frames: free=x", "free").is_err());
        assert!(field("frames:", "free").is_err());
    }
}

/// The WASI-dd path end to end on an emulated device: the `test-edu` driver component from the
/// boot image is bound to QEMU's `edu` device, reads and writes its registers, gets a factorial
/// by interrupt (MSI) and moves a buffer through the device by DMA both ways.
#[test]
fn drivers_binds_the_edu_test_driver_which_uses_mmio_interrupts_and_dma() {
    with_vm(|vm, boot_log| {
        ensure!(
            boot_log
                .lines()
                .any(|l| l.contains("drivers: ") && l.ends_with(" in the boot image")),
            "the boot log does not mention the drivers"
        );
        // The driver manager runs beside the shell.
        let output = vm.command_until("drivers", |o| {
            o.lines()
                .any(|l| l.contains("test-edu") && !l.contains(" starting "))
        })?;
        let row = output
            .lines()
            .find(|l| l.contains("test-edu"))
            .with_context(|| format!("test-edu is not bound: {output:?}"))?;
        let fields: Vec<&str> = row.split_whitespace().collect();
        ensure!(
            fields.len() > 5 && fields[1] == "1234:11e8" && fields[2] == "test-edu",
            "row: {row:?}"
        );
        ensure!(
            fields[4] == "finished",
            "the driver did not finish: {row:?}"
        );
        ensure!(
            row.contains("10! = 3628800 by interrupt")
                && row.contains("DMA 256 B round trip ok")
                && row.contains("interrupts=3 "),
            "report: {row:?}"
        );
        let verbose = vm.command("drivers -v")?;
        ensure!(
            verbose.contains("info: test-edu: edu "),
            "drivers -v does not show the driver's log: {verbose:?}"
        );
        let lspci = vm.command("lspci")?;
        ensure!(
            lspci.contains("[1234:11e8]"),
            "lspci does not list the edu device: {lspci:?}"
        );
        let up = vm.command("uptime")?;
        ensure!(up.starts_with("up "), "shell still answers: {up:?}");
        Ok(())
    });
}

/// The e1000 driver component serves Keel's network stack: DHCP gives QEMU's user network
/// address, and the gateway answers ping.
#[test]
fn e1000_driver_gets_a_dhcp_lease_and_pings_the_gateway() {
    with_vm(|vm, _| {
        let drivers = vm.command("drivers")?;
        let row = drivers
            .lines()
            .find(|l| l.contains("8086:100e"))
            .with_context(|| format!("no driver bound to the e1000: {drivers:?}"))?;
        ensure!(
            row.contains(" e1000 ") && row.contains(" running "),
            "e1000 driver row: {row:?}"
        );
        // DHCP over QEMU's user network takes a few round trips.
        let ifconfig = vm.command_until("ifconfig", |o| o.contains("inet 10.0.2.15/24"))?;
        ensure!(
            ifconfig.contains("inet 10.0.2.15/24") && ifconfig.contains("router 10.0.2.2"),
            "no DHCP lease: {ifconfig:?}"
        );
        ensure!(
            ifconfig.contains("link up") && ifconfig.contains("ether 52:54:00:12:34:56"),
            "ifconfig: {ifconfig:?}"
        );
        let ping = vm.command_with_timeout("ping 10.0.2.2 3", Duration::from_secs(30))?;
        ensure!(
            ping.contains("reply from 10.0.2.2: icmp_seq=0") && ping.contains("3 sent, 3 received"),
            "ping: {ping:?}"
        );
        let bad = vm.command("ping 10.0.2")?;
        ensure!(bad.contains("not an IPv4 address"), "bad address: {bad:?}");
        let counters = vm.command("ifconfig")?;
        let packets = |prefix: &str| -> Result<u64> {
            let line = counters
                .lines()
                .find(|l| l.trim_start().starts_with(prefix))
                .with_context(|| format!("no {prefix} line: {counters:?}"))?;
            line.split_whitespace()
                .nth(2)
                .context("no packet count")?
                .parse()
                .context("packet count")
        };
        ensure!(
            packets("RX")? >= 5 && packets("TX")? >= 5,
            "counters: {counters:?}"
        );
        Ok(())
    });
}

/// The e1000 driver's row of `drivers`, once it matches `want`.
fn e1000_row(vm: &mut Vm, want: &str) -> Result<String> {
    vm.driver_row("e1000", want)
}

/// Waits for the link and the DHCP lease together: both show in one `ifconfig` only once a
/// running driver's first round has been served (a lease from before a restart is still there
/// while the link is down).
fn wait_for_lease(vm: &mut Vm) -> Result<()> {
    vm.command_until("ifconfig", |o| {
        o.contains("link up") && o.contains("inet 10.0.2.15/24")
    })
    .map(drop)
}

/// A NIC driver that dies takes the network down and nothing else, and `drivers restart`
/// brings it back: first its task is killed, then it traps for real (a Wasm `unreachable`
/// from the fault it is told to inject after 40 frames, mid-ping). Each time the instance is
/// reported failed, the interface says link down, the shell and the other drivers go on; each
/// restart gets the lease again and pings.
#[test]
fn a_nic_driver_that_dies_is_contained_and_restarts() {
    with_vm(|vm, _| {
        wait_for_lease(vm)?;
        let task = vm.running_driver_task("e1000")?;
        let running = vm.command("drivers restart e1000")?;
        ensure!(
            running.contains("no ended instance"),
            "a running driver must not be restarted: {running:?}"
        );
        vm.kill_task(task)?;
        e1000_row(vm, " failed ")?;
        let ifconfig = vm.command("ifconfig")?;
        ensure!(ifconfig.contains("link down"), "ifconfig: {ifconfig:?}");
        let up = vm.command("uptime")?;
        ensure!(up.starts_with("up "), "shell: {up:?}");

        let bad = vm.command("drivers restart e1000 speed=fast")?;
        ensure!(bad.contains("1 instance(s) restarted"), "restart: {bad:?}");
        let refused = e1000_row(vm, " failed ")?;
        ensure!(
            refused.contains("unsupported"),
            "an unknown parameter must fail init: {refused:?}"
        );

        let out = vm.command("drivers restart e1000 fault-after-frames=40")?;
        ensure!(out.contains("1 instance(s) restarted"), "restart: {out:?}");
        e1000_row(vm, " running ")?;
        wait_for_lease(vm)?;
        let ping = vm.command_with_timeout("ping 10.0.2.2 30", Duration::from_secs(90))?;
        let trapped = e1000_row(vm, " failed ")?;
        ensure!(
            trapped.contains("trap") || trapped.contains("unreachable"),
            "the driver should have trapped: {trapped:?} (ping: {ping:?})"
        );
        let log = vm.command("drivers -v")?;
        ensure!(
            log.contains("fault-after-frames=40"),
            "drivers -v shows the parameters: {log:?}"
        );
        let ifconfig = vm.command("ifconfig")?;
        ensure!(ifconfig.contains("link down"), "ifconfig: {ifconfig:?}");
        let up = vm.command("uptime")?;
        ensure!(up.starts_with("up "), "shell: {up:?}");
        let others = vm.command("drivers")?;
        ensure!(
            others
                .lines()
                .any(|l| l.contains("test-edu") && l.contains(" finished ")),
            "the other drivers are untouched: {others:?}"
        );

        // A driver that never returns from a call: it spins in its own code until killed.
        let out = vm.command("drivers restart e1000 hang-after-frames=40")?;
        ensure!(out.contains("1 instance(s) restarted"), "restart: {out:?}");
        wait_for_lease(vm)?;
        vm.command_with_timeout("ping 10.0.2.2 30", Duration::from_secs(90))?;
        let log = vm.command_until("drivers -v", |o| o.contains("hanging"))?;
        let task = vm.running_driver_task("e1000")?;
        vm.kill_task(task)
            .with_context(|| format!("the hung driver (log: {log:?})"))?;
        let killed = e1000_row(vm, " failed ")?;
        ensure!(killed.contains("killed"), "why it stopped: {killed:?}");

        let out = vm.command("drivers restart e1000")?;
        ensure!(out.contains("1 instance(s) restarted"), "restart: {out:?}");
        e1000_row(vm, " running ")?;
        wait_for_lease(vm)?;
        let ping = vm.command_with_timeout("ping 10.0.2.2 3", Duration::from_secs(30))?;
        ensure!(
            ping.contains("3 sent, 3 received"),
            "ping after the restart: {ping:?}"
        );
        Ok(())
    });
}

/// Pulling the cable (QEMU's `set_link`) is noticed through the driver's link-change
/// interrupt, and traffic resumes when it is back.
#[test]
fn link_down_and_up_is_noticed_and_traffic_resumes() {
    with_vm(|vm, _| {
        let look = |vm: &mut Vm, want: &str| vm.command_until("ifconfig", |o| o.contains(want));
        let ifconfig = look(vm, "inet 10.0.2.15/24")?;
        ensure!(ifconfig.contains("link up"), "before: {ifconfig:?}");
        vm.monitor_command("set_link n0 off")?;
        let ifconfig = look(vm, "link down")?;
        ensure!(ifconfig.contains("link down"), "cable out: {ifconfig:?}");
        vm.monitor_command("set_link n0 on")?;
        let ifconfig = look(vm, "link up")?;
        ensure!(ifconfig.contains("link up"), "cable back: {ifconfig:?}");
        let ifconfig = look(vm, "inet 10.0.2.15/24")?;
        ensure!(
            ifconfig.contains("inet 10.0.2.15/24"),
            "address again: {ifconfig:?}"
        );
        let ping = vm.command_with_timeout("ping 10.0.2.2 2", Duration::from_secs(30))?;
        ensure!(ping.contains("2 sent, 2 received"), "ping after: {ping:?}");
        Ok(())
    });
}
