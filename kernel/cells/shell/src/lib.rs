//! The shell on the serial console. It reads bytes that the serial interrupt buffered, edits
//! the line, and runs commands from a table that other cells extend with [`Command`]s.
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

use alloc::string::String;
use alloc::vec::Vec;
use core::time::Duration;
use keel_console::{println, write_raw};
use keel_line_editor::{LineEditor, Outcome, split_words};
use keel_task::WaitQueue;

pub const PROMPT: &str = "keel> ";

/// A shell command: its name, a one-line usage text, and what it runs. The function gets the
/// words after the name; an `Err` is printed as one line.
#[derive(Clone, Copy)]
pub struct Command {
    pub name: &'static str,
    pub usage: &'static str,
    pub run: fn(&[String]) -> Result<(), String>,
}

static INPUT_READY: WaitQueue = WaitQueue::new();

/// Called from the serial interrupt: buffer what arrived and wake the shell.
pub fn on_serial_interrupt(_line: u8) {
    if keel_console::drain_uart() {
        INPUT_READY.notify_all();
    }
}

/// Waits for the next byte typed on the console.
pub fn read_byte() -> u8 {
    INPUT_READY.wait_until(|| {
        keel_console::drain_uart();
        keel_console::try_read_byte()
    })
}

const BUILTINS: &[Command] = &[
    Command {
        name: "ps",
        usage: "ps - list tasks (id, state, name)",
        run: ps,
    },
    Command {
        name: "uptime",
        usage: "uptime - time since boot",
        run: uptime,
    },
    Command {
        name: "kill",
        usage: "kill <id> - end a task (it unwinds)",
        run: kill,
    },
];

/// Tried for a word that names no command (for example, a program to run by its name):
/// `None` means "not mine either".
pub type Fallback = fn(&str, &[String]) -> Option<Result<(), String>>;

/// Runs the shell forever with the built-in commands plus `extra`, and `fallback` for other
/// words.
pub fn run(extra: &'static [Command], fallback: Fallback) -> ! {
    let mut editor = LineEditor::new(64, 256);
    let mut out = String::new();
    write_raw(PROMPT.as_bytes());
    loop {
        let byte = read_byte();
        out.clear();
        let outcome = editor.feed(byte, &mut out);
        write_raw(out.as_bytes());
        match outcome {
            Outcome::Pending | Outcome::EndOfInput => continue,
            Outcome::Interrupted => {}
            Outcome::Submitted(line) => execute(&line, extra, fallback),
        }
        write_raw(PROMPT.as_bytes());
    }
}

fn execute(line: &str, extra: &'static [Command], fallback: Fallback) {
    let words = match split_words(line) {
        Ok(words) => words,
        Err(e) => {
            println!("syntax error: {e:?}");
            return;
        }
    };
    let Some((name, args)) = words.split_first() else {
        return;
    };
    if name == "help" {
        help(extra);
        return;
    }
    let found = BUILTINS
        .iter()
        .chain(extra.iter())
        .find(|c| c.name == name.as_str());
    match found {
        Some(command) => {
            if let Err(message) = (command.run)(args) {
                println!("{}: {}", command.name, message);
            }
        }
        None => match fallback(name, args) {
            Some(Ok(())) => {}
            Some(Err(message)) => println!("{name}: {message}"),
            None => println!("unknown command: {name} (try 'help')"),
        },
    }
}

fn help(extra: &[Command]) {
    println!("commands:");
    println!("  help - this list");
    for command in BUILTINS.iter().chain(extra.iter()) {
        println!("  {}", command.usage);
    }
}

/// Parses the single argument of a command, or explains what is wrong.
pub fn one_arg<'a>(args: &'a [String], what: &str) -> Result<&'a str, String> {
    match args {
        [one] => Ok(one.as_str()),
        [] => Err(alloc::format!("missing {what}")),
        _ => Err(alloc::format!("too many arguments (expected {what})")),
    }
}

fn ps(args: &[String]) -> Result<(), String> {
    if !args.is_empty() {
        return Err(String::from("takes no arguments"));
    }
    let tasks = keel_task::task_list();
    println!("  ID  STATE     NAME");
    for t in tasks {
        if t.memory_use > 0 {
            println!(
                "{:>4}  {:<8}  {}  ({} KiB)",
                t.id,
                t.state,
                t.name,
                t.memory_use / 1024
            );
        } else {
            println!("{:>4}  {:<8}  {}", t.id, t.state, t.name);
        }
    }
    Ok(())
}

fn uptime(args: &[String]) -> Result<(), String> {
    if !args.is_empty() {
        return Err(String::from("takes no arguments"));
    }
    let ns = keel_time::now_ns();
    println!("up {}.{:06} s", ns / 1_000_000_000, (ns / 1000) % 1_000_000);
    Ok(())
}

fn kill(args: &[String]) -> Result<(), String> {
    let word = one_arg(args, "a task id")?;
    let id: u64 = word
        .parse()
        .map_err(|_| alloc::format!("invalid task id '{word}'"))?;
    match keel_task::kill(id, Duration::from_secs(2)) {
        Ok(name) => {
            println!("killed task {id} ({name})");
            Ok(())
        }
        Err(e) => Err(alloc::format!("{e}")),
    }
}

/// Splits a list of words for commands that take several.
pub fn words(args: &[String]) -> Vec<&str> {
    args.iter().map(|s| s.as_str()).collect()
}
