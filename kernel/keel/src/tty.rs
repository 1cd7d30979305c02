//! Standard input for programs: the console in line mode, as a terminal delivers it. A line is
//! edited (with echo) until Enter, then handed out with a trailing newline; Ctrl-D on an empty
//! line is end of input.

use alloc::collections::VecDeque;
use alloc::string::String;
use keel_line_editor::{LineEditor, Outcome};
use keel_task::Mutex;

struct Tty {
    pending: VecDeque<u8>,
    editor: Option<LineEditor>,
}

static TTY: Mutex<Tty> = Mutex::new(Tty {
    pending: VecDeque::new(),
    editor: None,
});

/// Reads console input into `buf`; returns how many bytes, 0 at end of input.
pub fn read_stdin(buf: &mut [u8]) -> usize {
    let mut tty = TTY.lock();
    if tty.pending.is_empty() {
        let editor = tty.editor.get_or_insert_with(|| LineEditor::new(32, 4096));
        let mut echo = String::new();
        loop {
            let byte = keel_shell::read_byte();
            echo.clear();
            let outcome = editor.feed(byte, &mut echo);
            keel_console::write_raw(echo.as_bytes());
            match outcome {
                Outcome::Pending => continue,
                Outcome::Submitted(line) => {
                    tty.pending.extend(line.bytes());
                    tty.pending.push_back(b'\n');
                    break;
                }
                Outcome::EndOfInput | Outcome::Interrupted => return 0,
            }
        }
    }
    let n = buf.len().min(tty.pending.len());
    for (slot, byte) in buf.iter_mut().zip(tty.pending.drain(..n)) {
        *slot = byte;
    }
    n
}

/// Whether [`read_stdin`] would return without waiting: a line (or part of one) is pending, or
/// typed bytes are waiting to be edited into one.
pub fn stdin_ready() -> bool {
    if TTY.try_lock().is_some_and(|tty| !tty.pending.is_empty()) {
        return true;
    }
    keel_console::drain_uart();
    keel_console::has_input()
}
